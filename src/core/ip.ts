/**
 * IP address parsing, normalising and arithmetic. Everything racklb stores is in the canonical text
 * form produced here (dotted quad for IPv4, RFC 5952 for IPv6), so equal addresses compare equal as
 * strings.
 */
import ipaddr from 'ipaddr.js';

import { invalidField } from '../errors.js';
import type { Family } from './types.js';

export interface ParsedIp {
  family: Family;
  value: bigint;
  /** Canonical text form. */
  text: string;
}

/** The longest textual IPv6 address (with an embedded IPv4 tail) is 45 characters. */
const MAX_IP_TEXT = 45;
const V4_DOTTED_TAIL = /^(.*:)(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})$/;

/**
 * Parsed addresses by text, frozen (they are shared). ipaddr.js checks every form an address may
 * take, and that was a tenth of on-service's CPU under load: a batch parses the same pool bounds and
 * allocated addresses again and again. Cleared when full, so it stays small whatever it is fed.
 */
const parsed = new Map<string, Readonly<ParsedIp> | null>();
const PARSED_MAX = 16_384;

/**
 * Parses one address. Returns undefined for anything Go's net.ParseIP (which Kubernetes and PorterLB
 * use) would refuse, and also for forms that would be read differently by different parsers:
 * IPv4 shorthand (`127.1`, `0x7f.0.0.1`), leading zeros, IPv6 zone ids, and IPv4-mapped IPv6
 * addresses (Go silently turns `::ffff:192.0.2.1` into an IPv4 address, ipaddr.js keeps it IPv6).
 */
export function parseIp(text: string): ParsedIp | undefined {
  const known = parsed.get(text);
  if (known !== undefined) return known ?? undefined;
  const ip = parseIpText(text);
  if (parsed.size >= PARSED_MAX) parsed.clear();
  parsed.set(text, ip === undefined ? null : Object.freeze(ip));
  return ip;
}

function parseIpText(text: string): ParsedIp | undefined {
  if (text.length === 0 || text.length > MAX_IP_TEXT) return undefined;
  if (!text.includes(':')) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(text)) return undefined;
    const bytes = ipaddr.IPv4.parse(text).toByteArray();
    return { family: 'ipv4', value: bytesToBigInt(bytes), text: bytes.join('.') };
  }
  if (text.includes('%')) return undefined;
  const hexOnly = embeddedV4ToHex(text);
  if (hexOnly === undefined || !ipaddr.IPv6.isValid(hexOnly)) return undefined;
  const addr = ipaddr.IPv6.parse(hexOnly);
  const value = bytesToBigInt(addr.toByteArray());
  if (value >> 32n === 0xffffn) return undefined;
  return { family: 'ipv6', value, text: addr.toString() };
}

/**
 * ipaddr.js reads `::192.0.2.1` as the IPv4-mapped `::ffff:192.0.2.1`, unlike Go and RFC 4291, so a
 * dotted tail is rewritten into two hex groups before ipaddr.js sees it.
 */
function embeddedV4ToHex(text: string): string | undefined {
  if (!text.includes('.')) return text;
  const m = V4_DOTTED_TAIL.exec(text);
  if (m === null) return undefined;
  const head = m[1] ?? '';
  const tail = m[2] ?? '';
  if (!ipaddr.IPv4.isValidFourPartDecimal(tail)) return undefined;
  const b = ipaddr.IPv4.parse(tail).toByteArray();
  const hi = (((b[0] ?? 0) << 8) | (b[1] ?? 0)).toString(16);
  const lo = (((b[2] ?? 0) << 8) | (b[3] ?? 0)).toString(16);
  return `${head}${hi}:${lo}`;
}

function bytesToBigInt(bytes: readonly number[]): bigint {
  let n = 0n;
  for (const b of bytes) n = (n << 8n) | BigInt(b);
  return n;
}

/** The family as Kubernetes spells it (spec.ipFamilies), for messages. */
export function familyName(family: Family): string {
  return family === 'ipv4' ? 'IPv4' : 'IPv6';
}

export function bitsOf(family: Family): number {
  return family === 'ipv4' ? 32 : 128;
}

/** Canonical text of the address `value` of `family`. `value` must be in range. */
export function formatIp(family: Family, value: bigint): string {
  if (family === 'ipv4') {
    const n = Number(value);
    return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
  }
  return formatIpv6(value);
}

/**
 * RFC 5952 text, as ipaddr.js's toString() gives, written out here because allocation scans format
 * thousands of candidates and ipaddr.js is several times slower at it.
 */
function formatIpv6(value: bigint): string {
  const hex = value.toString(16).padStart(32, '0');
  const groups: number[] = [];
  for (let i = 0; i < 32; i += 4) groups.push(parseInt(hex.slice(i, i + 4), 16));
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const text = (from: number, to: number): string => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return text(0, 8);
  return `${text(0, bestStart)}::${text(bestStart + bestLen, 8)}`;
}

const DOTTED_QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const HEX_GROUP = /^[0-9a-f]{1,4}$/;

/** The 32 hex digits of lower-case hex IPv6 text (no dotted tail), canonical or not. */
function quickIpv6Digits(text: string): string | undefined {
  const gap = text.indexOf('::');
  if (gap !== text.lastIndexOf('::')) return undefined;
  const head = gap < 0 ? text : text.slice(0, gap);
  const tail = gap < 0 ? '' : text.slice(gap + 2);
  const headGroups = head === '' ? [] : head.split(':');
  const tailGroups = tail === '' ? [] : tail.split(':');
  const missing = 8 - headGroups.length - tailGroups.length;
  if (gap < 0 ? missing !== 0 : missing < 1) return undefined;
  let digits = '';
  for (const g of headGroups) {
    if (!HEX_GROUP.test(g)) return undefined;
    digits += '0000'.slice(g.length) + g;
  }
  if (gap >= 0) digits += '0000'.repeat(missing);
  for (const g of tailGroups) {
    if (!HEX_GROUP.test(g)) return undefined;
    digits += '0000'.slice(g.length) + g;
  }
  return digits;
}

/**
 * A string per address for sets of addresses: the dotted quad for IPv4, 32 hex digits for IPv6.
 * Stored addresses are plain dotted quads and lower-case hex, read here without the full parse
 * (slow for IPv6 in ipaddr.js); anything else takes the full parse. Undefined for garbage.
 * Strings rather than bigints because V8 sets hash bigints slowly.
 */
export function ipKey(text: string): string | undefined {
  if (text.length > MAX_IP_TEXT) return undefined;
  if (DOTTED_QUAD.test(text)) return text;
  if (v6Keys.has(text)) return v6Keys.get(text);
  const quick = text.includes(':') ? quickIpv6Digits(text) : undefined;
  let key: string | undefined;
  if (quick !== undefined && !quick.startsWith('00000000000000000000ffff')) key = quick;
  else {
    const parsed = parseIp(text);
    key = parsed === undefined ? undefined : keyOf(parsed.family, parsed.value);
  }
  if (v6Keys.size >= V6_KEY_MEMO) v6Keys.clear();
  v6Keys.set(text, key);
  return key;
}

/**
 * Allocation reads the same stored IPv6 addresses on every call, and even the quick read costs
 * microseconds each. The memo maps strings to strings, so it cannot change an answer; it is
 * dropped whole when full.
 */
const v6Keys = new Map<string, string | undefined>();
const V6_KEY_MEMO = 100_000;

export function keyOf(family: Family, value: bigint): string {
  return family === 'ipv4' ? formatIp('ipv4', value) : value.toString(16).padStart(32, '0');
}

/** Validates `value` as an IP address and returns its canonical form. */
export function normalizeIp(value: unknown, field: string): string {
  return requireIp(value, field).text;
}

export const IP_RULE = 'must be an IPv4 address (dotted quad) or an IPv6 address (no zone, not IPv4-mapped)';

export function requireIp(value: unknown, field: string): ParsedIp {
  const parsed = typeof value === 'string' ? parseIp(value) : undefined;
  if (parsed === undefined) throw invalidField(field, IP_RULE, value);
  return parsed;
}

export function requireIpv4(value: unknown, field: string): string {
  const parsed = typeof value === 'string' ? parseIp(value) : undefined;
  if (parsed?.family !== 'ipv4') throw invalidField(field, 'must be an IPv4 address (dotted quad)', value);
  return parsed.text;
}
