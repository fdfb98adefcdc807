/**
 * A router's forwarding table as the kernel in its namespace holds it, read with iproute2: prefix
 * -> sorted next-hop addresses. This is what the lab's tests assert on and what
 * `racklb lab routes ROUTER --json` prints.
 */
import ipaddr from 'ipaddr.js';
import { RacklbError } from '../errors.js';
import { netnsName } from './paths.js';
import { runCommand } from './process.js';

interface IpRoute {
  dst?: string;
  gateway?: string;
  via?: { family?: string; host?: string };
  nexthops?: { gateway?: string; via?: { host?: string } }[];
}

/**
 * Reads the main kernel table of `rl-<router>` (`ip -j -n rl-<router> [-6] route show`): prefix
 * (always with a length: `192.0.2.10/32`, `0.0.0.0/0` for default) -> next-hop gateways, sorted
 * numerically (multipath `nexthops[].gateway`, or the single `gateway`). Routes without a gateway
 * (connected, blackhole, unreachable) are left out. Without `family`, both families.
 */
export async function readRoutes(router: string, family?: 'ipv4' | 'ipv6'): Promise<Record<string, string[]>> {
  const families: ('ipv4' | 'ipv6')[] = family === undefined ? ['ipv4', 'ipv6'] : [family];
  const outputs: { family: 'ipv4' | 'ipv6'; json: string }[] = [];
  for (const fam of families) {
    const { stdout } = await runCommand('ip', ['-j', '-n', netnsName(router), fam === 'ipv4' ? '-4' : '-6', 'route', 'show']);
    outputs.push({ family: fam, json: stdout });
  }
  try {
    return routesFromIpJson(outputs);
  } catch (err) {
    throw new RacklbError('RACKLB_LAB', `cannot parse the output of ip -j route show in ${netnsName(router)}: ${(err as Error).message}`, { cause: err });
  }
}

/** The pure half of readRoutes: `ip -j route show` output per family -> prefix -> sorted next hops. */
export function routesFromIpJson(outputs: { family: 'ipv4' | 'ipv6'; json: string }[]): Record<string, string[]> {
  const found = new Map<string, Set<string>>();
  for (const { family: fam, json } of outputs) {
    const rows: unknown = json.trim() === '' ? [] : JSON.parse(json);
    if (!Array.isArray(rows)) continue;
    for (const row of rows as IpRoute[]) {
      if (typeof row.dst !== 'string') continue;
      const gateways: string[] = [];
      if (Array.isArray(row.nexthops)) {
        for (const nh of row.nexthops) {
          const gw = nh.gateway ?? nh.via?.host;
          if (typeof gw === 'string') gateways.push(gw);
        }
      } else {
        const gw = row.gateway ?? row.via?.host;
        if (typeof gw === 'string') gateways.push(gw);
      }
      if (gateways.length === 0) continue;
      const prefix = normalizePrefix(row.dst, fam);
      // IPv6 multipath may be listed as several rows of one prefix: merge them.
      const set = found.get(prefix) ?? new Set<string>();
      for (const gw of gateways) set.add(gw);
      found.set(prefix, set);
    }
  }
  const result: Record<string, string[]> = {};
  for (const prefix of [...found.keys()].sort(comparePrefixes)) {
    result[prefix] = [...found.get(prefix)!].sort(compareAddresses);
  }
  return result;
}

function normalizePrefix(dst: string, family: 'ipv4' | 'ipv6'): string {
  if (dst === 'default') return family === 'ipv4' ? '0.0.0.0/0' : '::/0';
  if (dst.includes('/')) return dst;
  return `${dst}/${family === 'ipv4' ? 32 : 128}`;
}

function bytes(addr: string): number[] {
  try {
    return ipaddr.parse(addr).toByteArray();
  } catch {
    return [];
  }
}

/** Numeric order; IPv4 before IPv6. */
export function compareAddresses(a: string, b: string): number {
  const x = bytes(a);
  const y = bytes(b);
  if (x.length !== y.length) return x.length - y.length;
  for (let i = 0; i < x.length; i++) {
    const d = x[i]! - y[i]!;
    if (d !== 0) return d;
  }
  return a < b ? -1 : a > b ? 1 : 0;
}

function comparePrefixes(a: string, b: string): number {
  const [aa = '', al = '0'] = a.split('/');
  const [ba = '', bl = '0'] = b.split('/');
  return compareAddresses(aa, ba) || Number(al) - Number(bl);
}

/**
 * For people: one line per prefix, the next hops after it.
 * ```
 * 198.51.100.10/32  via 192.0.2.3, 192.0.2.4
 * ```
 */
export function formatRoutes(routes: Record<string, string[]>): string {
  const prefixes = Object.keys(routes);
  if (prefixes.length === 0) return '(no routes with a next hop)\n';
  const width = Math.max(...prefixes.map((p) => p.length));
  return prefixes.map((p) => `${p.padEnd(width)}  via ${(routes[p] ?? []).join(', ')}\n`).join('');
}
