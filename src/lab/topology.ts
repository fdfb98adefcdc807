/**
 * The lab's topology file: a spine router, one leaf router per rack, and the Kubernetes nodes of
 * each rack (issue 4). parseTopology validates everything and fills in the uplinks the file leaves
 * out; a malformed file is rejected with invalidField naming the field, e.g.
 * `racks[1].nodes[0].ip: must be inside the rack subnet 192.0.2.64/26`.
 *
 * Names become network namespaces `rl-<name>`. Interface names inside the namespaces are
 * index-based (`br0`, `up0`, `node<i>`, `rack<i>`, `eth0`), so the 15-character interface-name
 * limit never constrains a name: any DNS label (up to 63 characters) works.
 */
import ipaddr from 'ipaddr.js';
import { parseAllDocuments } from 'yaml';
import { RacklbError, invalidField } from '../errors.js';

/** The routing daemon a router runs: BIRD 2 (bird.ts) or FRR (frr.ts). */
export type RouterDaemon = 'bird' | 'frr';

export interface Topology {
  spine: { name: string; asn: number; daemon: RouterDaemon };
  racks: RackTopology[];
}

export interface RackTopology {
  /** Router name and the value of the node label `porter.kubesphere.io/rack`. */
  name: string;
  asn: number;
  /** The rack's L2 segment, e.g. `192.0.2.0/26` (always the network address). */
  subnet: string;
  /** The leaf's address in the rack subnet. */
  router: string;
  /** The /31 between spine and leaf: the spine has the lower address, the leaf the higher. */
  uplink: { spine: string; leaf: string; prefix: string };
  nodes: LabNode[];
  daemon: RouterDaemon;
  /**
   * The rack's IPv6 segment, when the file gives `subnet6`: the leaf's address in it, and an IPv6
   * uplink /127 next to the IPv4 one. Each family has its own BGP sessions (IPv6 routes over IPv6
   * sessions), as a dual-stack rack in a data centre runs them.
   */
  ipv6?: RackIpv6;
  /**
   * TCP-MD5 password the leaf requires from the rack's speakers (the BgpPeer's authPassword must
   * match). Absent: no MD5. Kept out of logs; it is written to the router's config file only.
   */
  password?: string;
}

export interface LabNode {
  name: string;
  ip: string;
  /** The node's IPv6 address in the rack's `subnet6`, when it has one. */
  ip6?: string;
}

export interface RackIpv6 {
  /** e.g. `2001:db8:0:1::/64` (always the network address, canonical text). */
  subnet: string;
  router: string;
  /** The /127 between spine and leaf: the spine has the lower address, the leaf the higher. */
  uplink: { spine: string; leaf: string; prefix: string };
}

/** One address family of a rack as the routers' BGP sessions see it, and the suffix its session names get. */
export interface RackFamily {
  family: 'ipv4' | 'ipv6';
  /** '' for IPv4, whose names predate IPv6 in the lab; '6' for IPv6. */
  suffix: '' | '6';
  router: string;
  subnet: string;
  uplink: { spine: string; leaf: string };
  nodes: { name: string; ip: string; index: number }[];
  /** Prefix of the names BIRD gives dynamic sessions: speaker1, ... / speaker_v6_1, ... */
  dynamicName: string;
}

/** The rack's families: IPv4 always, IPv6 when the rack has `subnet6` (its nodes with an `ip6`). */
export function rackFamilies(rack: RackTopology): RackFamily[] {
  const v4: RackFamily = { family: 'ipv4', suffix: '', router: rack.router, subnet: rack.subnet, uplink: rack.uplink, nodes: rack.nodes.map((n, index) => ({ name: n.name, ip: n.ip, index })), dynamicName: 'speaker' };
  const v6 = rack.ipv6;
  if (v6 === undefined) return [v4];
  const nodes6 = rack.nodes.flatMap((n, index) => (n.ip6 === undefined ? [] : [{ name: n.name, ip: n.ip6, index }]));
  return [v4, { family: 'ipv6', suffix: '6', router: v6.router, subnet: v6.subnet, uplink: v6.uplink, nodes: nodes6, dynamicName: 'speaker_v6_' }];
}

export const MAX_RACKS = 16;
export const MAX_NODES_PER_RACK = 64;
/** Uplink /31s left out of the file are taken from here, in rack order. */
export const UPLINK_POOL = '203.0.113.0/24';
/** IPv6 uplink /127s left out of the file are taken from here, in rack order. */
export const UPLINK6_POOL = '2001:db8:ffff::/64';

/** PorterLB's multi-router example, exactly as issue 4 gives it. */
export const DEFAULT_TOPOLOGY_YAML = `spine: { name: spine, asn: 65000 }
racks:
  - name: leaf1            # router name, and the rack label value
    asn: 65001
    subnet: 192.0.2.0/26
    router: 192.0.2.1      # the leaf's address in the rack subnet
    uplink: 203.0.113.0/31 # optional: the spine takes the lower address, the leaf the higher
    nodes:
      - { name: master1, ip: 192.0.2.3 }
      - { name: worker-p001, ip: 192.0.2.4 }
  - name: leaf2
    asn: 65002
    subnet: 192.0.2.64/26
    router: 192.0.2.65
    uplink: 203.0.113.2/31
    nodes:
      - { name: worker-p002, ip: 192.0.2.66 }
`;

export function defaultTopology(): Topology {
  return parseTopology(DEFAULT_TOPOLOGY_YAML);
}

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_LABEL_RULE = 'must be a DNS label: at most 63 characters, lowercase letters, digits and "-", starting and ending with a letter or digit';

type Mapping = Record<string, unknown>;

interface Cidr {
  /** Network address as an unsigned 32-bit number. */
  base: number;
  len: number;
  text: string;
}

export function parseTopology(yamlText: string): Topology {
  let docs;
  try {
    docs = parseAllDocuments(yamlText);
  } catch (err) {
    throw new RacklbError('RACKLB_LAB', `topology: cannot read YAML: ${(err as Error).message}`, { cause: err });
  }
  if (!Array.isArray(docs)) {
    throw new RacklbError('RACKLB_LAB', 'topology: cannot read YAML');
  }
  if (docs.length !== 1) {
    throw new RacklbError('RACKLB_LAB', `topology: expected exactly one YAML document, found ${docs.length}`);
  }
  const doc = docs[0]!;
  if (doc.errors.length > 0) {
    throw new RacklbError('RACKLB_LAB', `topology: not valid YAML: ${doc.errors[0]!.message}`);
  }
  let root: unknown;
  try {
    root = doc.toJS();
  } catch (err) {
    throw new RacklbError('RACKLB_LAB', `topology: cannot read YAML: ${(err as Error).message}`, { cause: err });
  }
  const top = mapping('(topology)', root, ['spine', 'racks']);

  const spineRaw = mapping('spine', required('spine', top.spine), ['name', 'asn', 'daemon']);
  const spine = {
    name: dnsLabel('spine.name', spineRaw.name),
    asn: asn('spine.asn', spineRaw.asn),
    daemon: daemon('spine.daemon', spineRaw.daemon),
  };

  const racksRaw = required('racks', top.racks);
  if (!Array.isArray(racksRaw)) throw invalidField('racks', 'must be a list of racks', racksRaw);
  if (racksRaw.length === 0) throw invalidField('racks', 'must list at least one rack');
  if (racksRaw.length > MAX_RACKS) throw invalidField('racks', `the lab supports at most ${MAX_RACKS} racks`, `${racksRaw.length} racks`);

  // Names are namespaces (rl-<name>), so they are unique across the spine, racks and nodes.
  const names = new Map<string, string>([[spine.name, 'spine.name']]);
  const claimName = (field: string, name: string): void => {
    const other = names.get(name);
    if (other !== undefined) throw invalidField(field, `must be unique among router and node names, ${other} already uses it`, name);
    names.set(name, field);
  };
  const asns = new Map<number, string>([[spine.asn, 'spine.asn']]);

  interface Partial {
    rack: Omit<RackTopology, 'uplink' | 'ipv6'>;
    subnet: Cidr;
    uplink: Cidr | undefined;
    v6: { subnet: Cidr6; router: string; uplink: Cidr6 | undefined } | undefined;
  }
  const partials: Partial[] = [];

  racksRaw.forEach((raw, i) => {
    const at = `racks[${i}]`;
    const r = mapping(at, raw, ['name', 'asn', 'subnet', 'router', 'uplink', 'nodes', 'daemon', 'password', 'subnet6', 'router6', 'uplink6']);
    const name = dnsLabel(`${at}.name`, r.name);
    claimName(`${at}.name`, name);
    const rackAsn = asn(`${at}.asn`, r.asn);
    const asnOwner = asns.get(rackAsn);
    if (asnOwner !== undefined) throw invalidField(`${at}.asn`, `must differ from every other router's ASN, ${asnOwner} already uses it`, rackAsn);
    asns.set(rackAsn, `${at}.asn`);

    const subnet = cidr(`${at}.subnet`, r.subnet);
    if (subnet.len > 30) throw invalidField(`${at}.subnet`, 'must be /30 or larger, to hold the router and its nodes', subnet.text);
    for (const p of partials) {
      if (overlaps(subnet, p.subnet)) throw invalidField(`${at}.subnet`, `must not overlap ${p.rack.name}'s subnet ${p.subnet.text}`, subnet.text);
    }

    const used = new Map<number, string>();
    const router = hostIn(`${at}.router`, r.router, subnet);
    used.set(toNumber(router), `${at}.router`);

    // IPv6: all three fields or none of subnet6/router6 (uplink6 stays optional, as uplink is).
    let v6: Partial['v6'];
    const used6 = new Map<bigint, string>();
    if (r.subnet6 !== undefined && r.subnet6 !== null) {
      const subnet6 = cidr6(`${at}.subnet6`, r.subnet6);
      if (subnet6.len > 126) throw invalidField(`${at}.subnet6`, 'must be /126 or larger, to hold the router and its nodes', subnet6.text);
      for (const p of partials) {
        if (p.v6 !== undefined && overlaps6(subnet6, p.v6.subnet)) throw invalidField(`${at}.subnet6`, `must not overlap ${p.rack.name}'s subnet6 ${p.v6.subnet.text}`, subnet6.text);
      }
      if (r.router6 === undefined || r.router6 === null) throw invalidField(`${at}.router6`, 'is required with subnet6 (the leaf\'s IPv6 address in it)');
      const router6 = hostIn6(`${at}.router6`, r.router6, subnet6);
      used6.set(toBig6(router6), `${at}.router6`);
      let uplink6: Cidr6 | undefined;
      if (r.uplink6 !== undefined && r.uplink6 !== null) {
        uplink6 = cidr6(`${at}.uplink6`, r.uplink6, 'the lower address of a /127, e.g. 2001:db8:ffff::/127');
        if (uplink6.len !== 127) throw invalidField(`${at}.uplink6`, 'must be a /127 (the spine takes the lower address, the leaf the higher)', uplink6.text);
      }
      v6 = { subnet: subnet6, router: router6, uplink: uplink6 };
    } else {
      for (const f of ['router6', 'uplink6'] as const) {
        if (r[f] !== undefined && r[f] !== null) throw invalidField(`${at}.${f}`, 'needs subnet6 (the rack\'s IPv6 segment) in the same rack');
      }
    }

    const nodesRaw = required(`${at}.nodes`, r.nodes);
    if (!Array.isArray(nodesRaw)) throw invalidField(`${at}.nodes`, 'must be a list of nodes', nodesRaw);
    if (nodesRaw.length > MAX_NODES_PER_RACK) {
      throw invalidField(`${at}.nodes`, `the lab supports at most ${MAX_NODES_PER_RACK} nodes per rack`, `${nodesRaw.length} nodes`);
    }
    const nodes = nodesRaw.map((nraw, j) => {
      const nat = `${at}.nodes[${j}]`;
      const n = mapping(nat, nraw, ['name', 'ip', 'ip6']);
      const nodeName = dnsLabel(`${nat}.name`, n.name);
      claimName(`${nat}.name`, nodeName);
      const ip = hostIn(`${nat}.ip`, n.ip, subnet);
      const owner = used.get(toNumber(ip));
      if (owner !== undefined) throw invalidField(`${nat}.ip`, `must be unique in the rack, ${owner} already uses it`, ip);
      used.set(toNumber(ip), `${nat}.ip`);
      if (n.ip6 === undefined || n.ip6 === null) return { name: nodeName, ip };
      if (v6 === undefined) throw invalidField(`${nat}.ip6`, `needs subnet6 in rack ${name}`, n.ip6);
      const ip6 = hostIn6(`${nat}.ip6`, n.ip6, v6.subnet);
      const owner6 = used6.get(toBig6(ip6));
      if (owner6 !== undefined) throw invalidField(`${nat}.ip6`, `must be unique in the rack, ${owner6} already uses it`, ip6);
      used6.set(toBig6(ip6), `${nat}.ip6`);
      return { name: nodeName, ip, ip6 };
    });

    let uplink: Cidr | undefined;
    if (r.uplink !== undefined && r.uplink !== null) {
      uplink = cidr(`${at}.uplink`, r.uplink, 'the lower address of a /31, e.g. 203.0.113.0/31');
      if (uplink.len !== 31) throw invalidField(`${at}.uplink`, 'must be a /31 (the spine takes the lower address, the leaf the higher)', uplink.text);
    }
    const pw = password(`${at}.password`, r.password);
    partials.push({ rack: { name, asn: rackAsn, subnet: subnet.text, router, nodes, daemon: daemon(`${at}.daemon`, r.daemon), ...(pw === undefined ? {} : { password: pw }) }, subnet, uplink, v6 });
  });

  // Uplinks must not collide with each other or with any rack subnet (checked once every subnet is known).
  partials.forEach((p, i) => {
    if (p.uplink === undefined) return;
    const at = `racks[${i}].uplink`;
    partials.forEach((q, j) => {
      if (overlaps(p.uplink!, q.subnet)) throw invalidField(at, `must not overlap ${q.rack.name}'s subnet ${q.subnet.text}`, p.uplink!.text);
      if (j < i && q.uplink !== undefined && overlaps(p.uplink!, q.uplink)) throw invalidField(at, `must differ from ${q.rack.name}'s uplink`, p.uplink!.text);
    });
  });

  // Fill in missing uplinks from the pool, in rack order, skipping /31s in use.
  const pool = cidr('(uplink pool)', UPLINK_POOL);
  const taken: Cidr[] = [...partials.flatMap((p) => [p.subnet]), ...partials.flatMap((p) => (p.uplink === undefined ? [] : [p.uplink]))];
  let next = pool.base;
  const poolEnd = pool.base + 2 ** (32 - pool.len);
  for (const [i, p] of partials.entries()) {
    if (p.uplink !== undefined) continue;
    while (next < poolEnd && taken.some((c) => overlaps({ base: next, len: 31, text: '' }, c))) next += 2;
    if (next >= poolEnd) throw invalidField(`racks[${i}].uplink`, `no free /31 left in ${UPLINK_POOL}; give the uplink explicitly`);
    p.uplink = { base: next, len: 31, text: `${fromNumber(next)}/31` };
    taken.push(p.uplink);
  }

  // The same for IPv6 uplinks: explicit ones must not collide, missing ones come from the pool.
  partials.forEach((p, i) => {
    const up = p.v6?.uplink;
    if (up === undefined) return;
    const at = `racks[${i}].uplink6`;
    partials.forEach((q, j) => {
      if (q.v6 === undefined) return;
      if (overlaps6(up, q.v6.subnet)) throw invalidField(at, `must not overlap ${q.rack.name}'s subnet6 ${q.v6.subnet.text}`, up.text);
      if (j < i && q.v6.uplink !== undefined && overlaps6(up, q.v6.uplink)) throw invalidField(at, `must differ from ${q.rack.name}'s uplink6`, up.text);
    });
  });
  const pool6 = cidr6('(uplink6 pool)', UPLINK6_POOL);
  const taken6: Cidr6[] = partials.flatMap((p) => (p.v6 === undefined ? [] : [p.v6.subnet, ...(p.v6.uplink === undefined ? [] : [p.v6.uplink])]));
  let next6 = pool6.base;
  for (const p of partials) {
    if (p.v6 === undefined || p.v6.uplink !== undefined) continue;
    const candidate = (): Cidr6 => ({ base: next6, len: 127, text: `${fromBig6(next6)}/127` });
    while (taken6.some((c) => overlaps6(candidate(), c))) next6 += 2n;
    p.v6.uplink = candidate();
    taken6.push(p.v6.uplink);
    next6 += 2n;
  }

  const racks: RackTopology[] = partials.map((p) => ({
    ...p.rack,
    uplink: { spine: fromNumber(p.uplink!.base), leaf: fromNumber(p.uplink!.base + 1), prefix: p.uplink!.text },
    ...(p.v6 === undefined
      ? {}
      : { ipv6: { subnet: p.v6.subnet.text, router: p.v6.router, uplink: { spine: fromBig6(p.v6.uplink!.base), leaf: fromBig6(p.v6.uplink!.base + 1n), prefix: p.v6.uplink!.text } } }),
  }));
  // Key order as declared in the interfaces, for stable JSON.
  return {
    spine,
    racks: racks.map((r) => ({
      name: r.name,
      asn: r.asn,
      subnet: r.subnet,
      router: r.router,
      uplink: r.uplink,
      nodes: r.nodes,
      daemon: r.daemon,
      ...(r.password === undefined ? {} : { password: r.password }),
      ...(r.ipv6 === undefined ? {} : { ipv6: r.ipv6 }),
    })),
  };
}

function required(field: string, value: unknown): unknown {
  if (value === undefined || value === null) throw invalidField(field, 'is required');
  return value;
}

function mapping(field: string, value: unknown, known: string[]): Mapping {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidField(field, 'must be a mapping', value);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) {
      const at = field === '(topology)' ? key : `${field}.${key}`;
      throw invalidField(at, `unknown field (known fields: ${known.join(', ')})`);
    }
  }
  return value as Mapping;
}

function dnsLabel(field: string, value: unknown): string {
  const v = required(field, value);
  if (typeof v !== 'string' || v.length > 63 || !DNS_LABEL.test(v)) throw invalidField(field, DNS_LABEL_RULE, v);
  return v;
}

function asn(field: string, value: unknown): number {
  const v = required(field, value);
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 4294967295) throw invalidField(field, 'must be an integer between 1 and 4294967295', v);
  return v;
}

function daemon(field: string, value: unknown): RouterDaemon {
  if (value === undefined || value === null || value === 'bird') return 'bird';
  if (value === 'frr') return 'frr';
  throw invalidField(field, 'must be "bird" (BIRD 2, the default) or "frr" (FRR\'s zebra and bgpd)', value);
}

/**
 * 1-80 printable ASCII characters (Linux's TCP-MD5 key limit), without spaces, `"` and `\\`, so
 * the password sits unescaped in a BIRD config and as one word in an FRR one. Never echoed in an
 * error.
 */
function password(field: string, value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string' || !/^[\x21-\x7e]{1,80}$/.test(value) || /["\\]/.test(value)) {
    throw invalidField(field, 'must be 1 to 80 printable ASCII characters without spaces, " and \\ (the TCP-MD5 key)');
  }
  return value;
}

function ipv4(field: string, value: unknown): string {
  if (typeof value !== 'string' || !ipaddr.IPv4.isValidFourPartDecimal(value)) throw invalidField(field, 'must be an IPv4 address such as 192.0.2.10', value);
  return ipaddr.IPv4.parse(value).toString();
}

function cidr(field: string, value: unknown, example = 'an IPv4 network such as 192.0.2.0/26'): Cidr {
  const v = required(field, value);
  const rule = `must be ${example}`;
  if (typeof v !== 'string') throw invalidField(field, rule, v);
  const m = /^([^/]+)\/(\d{1,2})$/.exec(v);
  if (m === null || !ipaddr.IPv4.isValidFourPartDecimal(m[1]!) || Number(m[2]) > 32) throw invalidField(field, rule, v);
  const len = Number(m[2]);
  const addr = toNumber(m[1]!);
  const base = len === 0 ? 0 : (addr & (~0 << (32 - len))) >>> 0;
  if (base !== addr) throw invalidField(field, `must be a network address: the host bits are set (did you mean ${fromNumber(base)}/${len}?)`, v);
  return { base, len, text: `${fromNumber(base)}/${len}` };
}

/** An address inside `net` that is neither its network nor its broadcast address. */
function hostIn(field: string, value: unknown, net: Cidr): string {
  const ip = ipv4(field, required(field, value));
  const n = toNumber(ip);
  const size = 2 ** (32 - net.len);
  if (n < net.base || n >= net.base + size) throw invalidField(field, `must be inside the rack subnet ${net.text}`, ip);
  if (n === net.base) throw invalidField(field, `must not be the network address of ${net.text}`, ip);
  if (n === net.base + size - 1) throw invalidField(field, `must not be the broadcast address of ${net.text}`, ip);
  return ip;
}

function overlaps(a: Cidr, b: Cidr): boolean {
  const aEnd = a.base + 2 ** (32 - a.len);
  const bEnd = b.base + 2 ** (32 - b.len);
  return a.base < bEnd && b.base < aEnd;
}

function toNumber(ip: string): number {
  const b = ipaddr.IPv4.parse(ip).toByteArray();
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

function fromNumber(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

interface Cidr6 {
  base: bigint;
  len: number;
  text: string;
}

/** Canonical (RFC 5952) IPv6 text; no zone, no IPv4-mapped or dotted forms. */
function ipv6(field: string, value: unknown): string {
  const rule = 'must be an IPv6 address such as 2001:db8::10';
  if (typeof value !== 'string' || value.includes('%') || value.includes('.') || !ipaddr.IPv6.isValid(value)) throw invalidField(field, rule, value);
  return ipaddr.IPv6.parse(value).toRFC5952String();
}

function cidr6(field: string, value: unknown, example = 'an IPv6 network such as 2001:db8:0:1::/64'): Cidr6 {
  const v = required(field, value);
  const rule = `must be ${example}`;
  if (typeof v !== 'string') throw invalidField(field, rule, v);
  const m = /^([^/]+)\/(\d{1,3})$/.exec(v);
  if (m === null || Number(m[2]) > 128) throw invalidField(field, rule, v);
  let addr: bigint;
  try {
    addr = toBig6(ipv6(field, m[1]));
  } catch {
    throw invalidField(field, rule, v);
  }
  const len = Number(m[2]);
  const hostMask = (1n << BigInt(128 - len)) - 1n;
  const base = addr & ~hostMask;
  if (base !== addr) throw invalidField(field, `must be a network address: the host bits are set (did you mean ${fromBig6(base)}/${len}?)`, v);
  return { base, len, text: `${fromBig6(base)}/${len}` };
}

/** An address inside `net` other than its Subnet-Router anycast address (the network address). */
function hostIn6(field: string, value: unknown, net: Cidr6): string {
  const ip = ipv6(field, required(field, value));
  const n = toBig6(ip);
  if (n < net.base || n >= net.base + (1n << BigInt(128 - net.len))) throw invalidField(field, `must be inside the rack subnet6 ${net.text}`, ip);
  if (n === net.base) throw invalidField(field, `must not be the network (Subnet-Router anycast) address of ${net.text}`, ip);
  return ip;
}

function overlaps6(a: Cidr6, b: Cidr6): boolean {
  return a.base < b.base + (1n << BigInt(128 - b.len)) && b.base < a.base + (1n << BigInt(128 - a.len));
}

function toBig6(ip: string): bigint {
  return ipaddr.IPv6.parse(ip).toByteArray().reduce((acc, b) => (acc << 8n) | BigInt(b), 0n);
}

function fromBig6(n: bigint): string {
  const bytes: number[] = [];
  for (let i = 15; i >= 0; i--) bytes.push(Number((n >> BigInt(i * 8)) & 255n));
  return ipaddr.fromByteArray(bytes).toString();
}
