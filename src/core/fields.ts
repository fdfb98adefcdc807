/**
 * Readers for untrusted JSON. Every reader takes the dotted path of the value it reads so that a
 * failure names it, and every object access goes through `own`, so keys such as `__proto__` or
 * `constructor` never reach the prototype chain.
 */
import { invalidField } from '../errors.js';

export type Obj = Record<string, unknown>;

export function isObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `obj[key]` when it is an own property, else undefined. */
export function own(obj: Obj, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

export function hasOwnKey(obj: Readonly<Record<string, unknown>>, key: string): boolean {
  return Object.hasOwn(obj, key);
}

/** `base["key"]`, the path form for map entries (label keys contain dots and slashes). */
export function keyPath(base: string, key: string): string {
  const shown = key.length > 320 ? `${key.slice(0, 317)}...` : key;
  return `${base}[${JSON.stringify(shown)}]`;
}

function absent(value: unknown): value is undefined | null {
  return value === undefined || value === null;
}

export function requireObject(value: unknown, field: string): Obj {
  if (!isObject(value)) throw invalidField(field, 'must be an object', value);
  return value;
}

/** undefined and null (Kubernetes writes both for "not set") give undefined. */
export function optionalObject(value: unknown, field: string): Obj | undefined {
  return absent(value) ? undefined : requireObject(value, field);
}

export function requireString(value: unknown, field: string): string {
  if (typeof value !== 'string') throw invalidField(field, 'must be a string', value);
  return value;
}

/** An absent value and the empty string both give undefined: Go's omitempty writes neither. */
export function optionalString(value: unknown, field: string): string | undefined {
  if (absent(value)) return undefined;
  const s = requireString(value, field);
  return s === '' ? undefined : s;
}

export function optionalBool(value: unknown, field: string): boolean {
  if (absent(value)) return false;
  if (typeof value !== 'boolean') throw invalidField(field, 'must be true or false', value);
  return value;
}

export function optionalArray(value: unknown, field: string): unknown[] {
  if (absent(value)) return [];
  if (!Array.isArray(value)) throw invalidField(field, 'must be a list', value);
  return value;
}

export function intRule(min: number, max: number): string {
  return `must be an integer between ${min} and ${max}`;
}

export function requireInt(value: unknown, field: string, min: number, max: number, rule = intRule(min, max)): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalidField(field, rule, value);
  }
  return value;
}

export function optionalInt(value: unknown, field: string, min: number, max: number, rule?: string): number | undefined {
  return absent(value) ? undefined : requireInt(value, field, min, max, rule);
}

export const MAX_ASN = 4294967295;
export const ASN_RULE = intRule(1, MAX_ASN);

export function requireAsn(value: unknown, field: string): number {
  return requireInt(value, field, 1, MAX_ASN, ASN_RULE);
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

export function isDnsLabel(s: string): boolean {
  return s.length > 0 && s.length <= 63 && DNS_LABEL.test(s);
}

/** Kubernetes' DNS-1123 subdomain: what most object names must be. */
export function isDnsSubdomain(s: string): boolean {
  return s.length > 0 && s.length <= 253 && s.split('.').every((part) => DNS_LABEL.test(part) && part.length <= 63);
}

export const DNS_SUBDOMAIN_RULE =
  'must be a DNS-1123 subdomain: at most 253 characters of lower-case letters, digits, "-" and ".", starting and ending with a letter or digit';
export const DNS_LABEL_RULE =
  'must be a DNS-1123 label: at most 63 characters of lower-case letters, digits and "-", starting and ending with a letter or digit';
export const LABEL_KEY_RULE =
  'must be a label key: an optional DNS-1123 subdomain prefix and "/", then at most 63 characters of letters, digits, "-", "_" and ".", starting and ending with a letter or digit';
export const LABEL_VALUE_RULE =
  'must be a label value: empty, or at most 63 characters of letters, digits, "-", "_" and ".", starting and ending with a letter or digit';

export function requireDnsSubdomain(value: unknown, field: string): string {
  if (typeof value !== 'string' || !isDnsSubdomain(value)) throw invalidField(field, DNS_SUBDOMAIN_RULE, value);
  return value;
}

export function requireDnsLabel(value: unknown, field: string): string {
  if (typeof value !== 'string' || !isDnsLabel(value)) throw invalidField(field, DNS_LABEL_RULE, value);
  return value;
}

export function isLabelKey(key: string): boolean {
  if (key.length === 0 || key.length > 317) return false;
  const slash = key.indexOf('/');
  const prefix = slash < 0 ? undefined : key.slice(0, slash);
  const name = slash < 0 ? key : key.slice(slash + 1);
  if (prefix !== undefined && !isDnsSubdomain(prefix)) return false;
  return name.length > 0 && name.length <= 63 && LABEL_NAME.test(name);
}

export function isLabelValue(value: string): boolean {
  return value === '' || (value.length <= 63 && LABEL_NAME.test(value));
}

export function requireLabelValue(value: unknown, field: string): string {
  if (typeof value !== 'string' || !isLabelValue(value)) throw invalidField(field, LABEL_VALUE_RULE, value);
  return value;
}

/**
 * A label map (`metadata.labels`, `matchLabels`). Keys and values are checked as Kubernetes checks
 * them, which also keeps prototype-polluting keys out. Built with Object.fromEntries, which defines
 * own data properties and never invokes the `__proto__` setter.
 */
export function parseLabelMap(value: unknown, field: string): Record<string, string> {
  const obj = optionalObject(value, field);
  if (obj === undefined) return {};
  const entries: [string, string][] = [];
  for (const key of Object.keys(obj)) {
    const path = keyPath(field, key);
    if (!isLabelKey(key)) throw invalidField(path, LABEL_KEY_RULE);
    entries.push([key, requireLabelValue(obj[key], path)]);
  }
  return Object.fromEntries(entries);
}
