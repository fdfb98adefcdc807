/**
 * IP allocation from Eip pools, following OpenELB's IPAM (pkg/controllers/ipam): a named pool, else
 * the pool holding a requested IP, else pools bound to the Service's namespace, else the default pool.
 * Addresses are BigInts so IPv6 pools of any size work.
 */
import { invalidField } from '../errors.js';
import { ANNOTATIONS, keyFor, OPT_IN_TEXT, type Allocation, type EipRecord, type Family, type ServiceRecord } from './types.js';
import { keyPath } from './fields.js';
import { bitsOf, familyName, formatIp, ipKey, keyOf, parseIp } from './ip.js';
import { matchesSelector } from './selector.js';

const ADDRESS_RULE = 'must be an IP address, a CIDR (192.0.2.0/24) or a range (192.0.2.10-192.0.2.20)';
const MAX_ADDRESS_TEXT = 2 * 45 + 1;

export interface PoolAddress {
  family: Family;
  first: string;
  last: string;
  size: bigint;
}

/**
 * Unlike Go's ParseCIDR, which PorterLB uses and which silently drops host bits, a CIDR with host
 * bits set is refused: `192.0.2.7/24` is more likely a typo than a wish for 192.0.2.0/24.
 */
export function parsePoolAddress(address: string, field: string): PoolAddress {
  if (address.length === 0 || address.length > MAX_ADDRESS_TEXT) throw invalidField(field, ADDRESS_RULE, address);
  if (address.includes('/')) return parseCidr(address, field);
  if (address.includes('-')) return parseRange(address, field);
  const ip = parseIp(address);
  if (ip === undefined) throw invalidField(field, ADDRESS_RULE, address);
  return { family: ip.family, first: ip.text, last: ip.text, size: 1n };
}

function parseCidr(address: string, field: string): PoolAddress {
  const [ipText = '', prefixText = '', ...rest] = address.split('/');
  const ip = parseIp(ipText);
  if (ip === undefined || rest.length > 0) throw invalidField(field, ADDRESS_RULE, address);
  const bits = bitsOf(ip.family);
  const prefix = /^(0|[1-9]\d{0,2})$/.test(prefixText) ? Number(prefixText) : -1;
  if (prefix < 0 || prefix > bits) throw invalidField(field, `prefix length must be between 0 and ${bits}`, address);
  const hostBits = BigInt(bits - prefix);
  const hostMask = (1n << hostBits) - 1n;
  if ((ip.value & hostMask) !== 0n) {
    const network = formatIp(ip.family, ip.value & ~hostMask);
    throw invalidField(field, `must be a network address without host bits set (did you mean ${network}/${prefix}?)`, address);
  }
  return { family: ip.family, first: ip.text, last: formatIp(ip.family, ip.value | hostMask), size: 1n << hostBits };
}

function parseRange(address: string, field: string): PoolAddress {
  const [aText = '', bText = '', ...rest] = address.split('-');
  const a = parseIp(aText);
  const b = parseIp(bText);
  if (a === undefined || b === undefined || rest.length > 0) throw invalidField(field, ADDRESS_RULE, address);
  if (a.family !== b.family) throw invalidField(field, 'both ends of a range must be of the same IP family', address);
  if (a.value > b.value) throw invalidField(field, 'the first address of a range must not be greater than the last', address);
  return { family: a.family, first: a.text, last: b.text, size: b.value - a.value + 1n };
}

interface Bounds {
  family: Family;
  first: bigint;
  last: bigint;
}

function boundsOf(pool: EipRecord): Bounds | undefined {
  const first = parseIp(pool.firstIp);
  const last = parseIp(pool.lastIp);
  if (first === undefined || last === undefined) return undefined;
  return { family: first.family, first: first.value, last: last.value };
}

export function ipInPool(ip: string, pool: EipRecord): boolean {
  const parsed = parseIp(ip);
  const b = boundsOf(pool);
  return parsed !== undefined && b !== undefined && parsed.family === b.family && parsed.value >= b.first && parsed.value <= b.last;
}

/** The record keeps whether an Eip is the default, not by which product's key: both are named. */
const DEFAULT_FIELD = ANNOTATIONS.defaultEip.map((key) => keyPath('metadata.annotations', key)).join(' or ');

/** The admission checks OpenELB's Eip webhook makes, against the other Eips racklb knows. */
export function checkPoolOverlap(eip: EipRecord, others: readonly EipRecord[]): void {
  const mine = boundsOf(eip);
  const rest = others.filter((o) => o.name !== eip.name).sort((x, y) => cmp(x.name, y.name));
  for (const other of rest) {
    const theirs = boundsOf(other);
    if (mine === undefined || theirs === undefined || mine.family !== theirs.family) continue;
    if (mine.first <= theirs.last && theirs.first <= mine.last) {
      throw invalidField('spec.address', `overlaps Eip "${other.name}" (${other.address})`, eip.address);
    }
  }
  // One per family, so that a dual-stack Service finds a default pool for each of its addresses.
  const otherDefault = eip.isDefault ? rest.find((o) => o.isDefault && o.family === eip.family) : undefined;
  if (otherDefault !== undefined) {
    throw invalidField(DEFAULT_FIELD, `only one Eip per IP family may be the default pool, and Eip "${otherDefault.name}" already is the ${familyName(eip.family)} one`);
  }
}

/** `fromStatus`: the address is the one the Service's status showed, taken back (see Allocation.fromStatus). */
export type AllocationResult = { ok: true; ip: string; pool: string; shared: boolean; fromStatus?: true } | { ok: false; reason: string };

/**
 * Kubernetes labels every namespace with its own name; that label is all racklb knows of a
 * namespace, so a namespaceSelector on any other namespace label never matches.
 */
const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';

/**
 * Where `service` gets its IP. Pure: the caller records the result. `current` is the Service's
 * existing allocation; it is kept while it still fits, even in a pool disabled since, because
 * OpenELB's `disable` stops new allocations and leaves existing Services alone.
 *
 * Without a requested IP or a current allocation, the address the Service's status shows
 * (status.loadBalancer.ingress) is taken back when it lies in a pool the Service may use and no other
 * Service holds it: after Redis restarted empty the Services come back in any order, and the lowest
 * free address would move them (an outage: DNS still names the old address). OpenELB and MetalLB
 * rebuild from the status the same way. Otherwise the lowest address free of other Services is
 * taken, network and broadcast addresses of a CIDR included: PorterLB hands out every address and a
 * /32 route needs no subnet. Only an explicit request (annotation or spec.loadBalancerIP) joins an
 * address another Service holds. A Service that dropped its request keeps a shared address all the
 * same: an Allocation lists holders, not who asked, and OpenELB keeps it too.
 */
export function allocate(
  service: ServiceRecord,
  pools: readonly EipRecord[],
  allocations: readonly Allocation[],
  current: Allocation | undefined,
  /**
   * The lowest address of a pool free of other Services, when the caller knows it without handing
   * over every allocation (an index in the store): it must answer what the scan over `allocations`
   * would. Only called for the pools `addressesConsulted` lists under `lowestFreeIn`.
   */
  lowest?: LowestFree,
): AllocationResult {
  if (!service.managed) {
    return fail(
      `Service ${service.key} is not racklb's: it needs type LoadBalancer and the annotation ${OPT_IN_TEXT}`,
    );
  }
  const heldByOthers = othersHolding(service.key, allocations);
  const isHeld = (ip: string): boolean => {
    const key = ipKey(ip);
    return key !== undefined && heldByOthers.has(key);
  };
  if (current !== undefined && stillFits(service, current, pools)) {
    const shared = isHeld(current.ip) || current.services.some((s) => s !== service.key);
    return { ok: true, ip: current.ip, pool: current.pool, shared, ...(current.fromStatus === service.key ? { fromStatus: true as const } : {}) };
  }
  const choice = choosePools(service, pools);
  if (!choice.ok) return choice;
  const first = choice.pools[0];
  if (service.requestedIp !== undefined && first !== undefined) {
    return { ok: true, ip: service.requestedIp, pool: first.name, shared: isHeld(service.requestedIp) };
  }
  if (current === undefined) {
    const shown = shownInPools(service, choice.pools).find((c) => !isHeld(c.ip));
    if (shown !== undefined) return { ok: true, ip: shown.ip, pool: shown.pool.name, shared: false, fromStatus: true };
  }
  let inUse = 0;
  for (const pool of choice.pools) {
    const found = lowest ? lowest(pool) : lowestFree(pool, heldByOthers);
    if (found.ip !== undefined) return { ok: true, ip: found.ip, pool: pool.name, shared: false };
    inUse += found.scanned;
  }
  if (choice.pools.length === 1 && first !== undefined) return fail(`no free address in pool "${first.name}" (${inUse} in use)`);
  return fail(`no free address in pools ${choice.pools.map((p) => `"${p.name}"`).join(', ')} (${inUse} in use)`);
}

/** The addresses of the Service's status that lie in one of `pools`, each with the first pool holding it, in status order. */
function shownInPools(service: ServiceRecord, pools: readonly EipRecord[]): { ip: string; pool: EipRecord }[] {
  return (service.ingressIps ?? []).flatMap((ip) => {
    const pool = pools.find((p) => ipInPool(ip, p));
    return pool === undefined ? [] : [{ ip, pool }];
  });
}

/**
 * One IP family of a Service as `allocate` sees it: the Service as if it were single-stack in that
 * family, with the address it holds there. A single-stack Service is its own only view (family: its
 * first, or undefined for "whatever the pool gives"), so it is allocated exactly as before
 * dual-stack. A family that the pools the Service names cannot serve has a reason instead.
 */
export type FamilyView =
  | { family: Family | undefined; ok: true; service: ServiceRecord; current: Allocation | undefined }
  | { family: Family; ok: false; reason: string; current: Allocation | undefined };

/**
 * Views made for one family of a dual-stack Service: a reason then names that family rather than
 * the Service's "first" one. Module-private, so a view never leaves this module marked.
 */
const dualStackViews = new WeakSet<ServiceRecord>();

/** `current`: every address the Service holds now (one per family at most). */
export function familyViews(service: ServiceRecord, pools: readonly EipRecord[], current: readonly Allocation[]): FamilyView[] {
  const dual = service.dualStack;
  if (dual === undefined) {
    const family = service.ipFamilies[0];
    return [{ family, ok: true, service, current: currentIn(family, current) }];
  }
  return service.ipFamilies.map((family): FamilyView => {
    const mine = currentIn(family, current);
    const pool = poolOfFamily(dual.requestedPools, family, pools, service.naming);
    if (!pool.ok) return { family, ok: false, reason: pool.reason, current: mine };
    const view: ServiceRecord = { ...service, ipFamilies: [family], requestedIp: dual.requestedIps[family], requestedPool: pool.name, dualStack: undefined };
    dualStackViews.add(view);
    return { family, ok: true, service: view, current: mine };
  });
}

function currentIn(family: Family | undefined, current: readonly Allocation[]): Allocation | undefined {
  return family === undefined ? current[0] : current.find((a) => parseIp(a.ip)?.family === family);
}

/**
 * Which named pool serves `family`. Naming pools restricts every family to them, as a single named
 * pool restricts a single-stack Service: a family none of them serves gets no address.
 */
function poolOfFamily(names: readonly string[], family: Family, pools: readonly EipRecord[], naming: ServiceRecord['naming']): { ok: true; name: string | undefined } | { ok: false; reason: string } {
  if (names.length === 0) return { ok: true, name: undefined };
  const found = names.map((name) => ({ name, pool: pools.find((p) => p.name === name) }));
  const mine = found.filter((f) => f.pool?.family === family);
  if (mine.length > 1) {
    return fail(`pools ${mine.map((f) => `"${f.name}"`).join(' and ')} (annotation ${keyFor(ANNOTATIONS.pool, naming)}) are both ${familyName(family)}: name one pool per IP family`);
  }
  if (mine[0] !== undefined) return { ok: true, name: mine[0].name };
  // An Eip racklb does not know (yet) may be this family's: allocate reports that it does not exist.
  const unknown = found.find((f) => f.pool === undefined);
  if (unknown !== undefined) return { ok: true, name: unknown.name };
  const others = found.map((f) => `"${f.name}" is ${familyName(f.pool?.family ?? family)}`).join(', ');
  return fail(`the annotation ${keyFor(ANNOTATIONS.pool, naming)} names no ${familyName(family)} pool (${others})`);
}

export interface FamilyAllocation {
  family: Family | undefined;
  result: AllocationResult;
}

/**
 * `allocate` for every family of the Service, in spec.ipFamilies order; each family independent of
 * the other, so PreferDualStack and RequireDualStack alike keep what they can get. `current` and
 * `lowest` are as for allocate (`current`: every address the Service holds now).
 */
export function allocateFamilies(
  service: ServiceRecord,
  pools: readonly EipRecord[],
  allocations: readonly Allocation[],
  current: readonly Allocation[],
  lowest?: LowestFree,
): FamilyAllocation[] {
  return familyViews(service, pools, current).map((v) => ({ family: v.family, result: v.ok ? allocate(v.service, pools, allocations, v.current, lowest) : fail(v.reason) }));
}

/** Per family, the address the Service asks for, or undefined where it takes the lowest free one. */
export function requestsByFamily(service: ServiceRecord): (string | undefined)[] {
  const dual = service.dualStack;
  return dual === undefined ? [service.requestedIp] : service.ipFamilies.map((f) => dual.requestedIps[f]);
}

/**
 * The pending reason of a Service (Keys.pending()): a single-stack Service's reason as it is; a
 * dual-stack Service's names each family without an address ("IPv6: no free address ..."), also
 * when the other family has one.
 */
export function formatPending(service: ServiceRecord, missing: readonly { family: Family | undefined; reason: string }[]): string | undefined {
  if (missing.length === 0) return undefined;
  if (service.dualStack === undefined) return missing[0]?.reason;
  return missing.map((m) => `${m.family === undefined ? '' : `${familyName(m.family)}: `}${m.reason}`).join('; ');
}

/** The reason `formatPending` recorded for one family of a dual-stack Service. */
export function pendingOfFamily(pending: string | undefined, family: Family): string | undefined {
  const head = `${familyName(family)}: `;
  return pending?.split(/; (?=IPv[46]: )/).find((part) => part.startsWith(head))?.slice(head.length);
}

/** The lowest free address of a pool and how many addresses the search passed (see lowestFree). */
export type LowestFree = (pool: EipRecord) => { ip: string | undefined; scanned: number };

/**
 * The addresses whose allocations `allocate` looks at for this Service, or, when it may search for
 * the lowest free address, those (the addresses of its status it would take back first) and the
 * pools it searches in order: with the allocations at these addresses alone (and, for a search, a
 * `lowest` that answers for those pools), `allocate` answers exactly as with every allocation. A
 * handler then reads one or two hash fields instead of the whole allocation table
 * (test/unit/core/ipam-consulted.test.ts holds the two to the same answer).
 */
export function addressesConsulted(service: ServiceRecord, pools: readonly EipRecord[], current: Allocation | undefined): string[] | { addresses: string[]; lowestFreeIn: EipRecord[] } {
  if (!service.managed) return [];
  if (current !== undefined && stillFits(service, current, pools)) return [current.ip];
  const choice = choosePools(service, pools);
  if (!choice.ok) return [];
  if (service.requestedIp !== undefined && choice.pools[0] !== undefined) return [service.requestedIp];
  const shown = current === undefined ? shownInPools(service, choice.pools).map((c) => c.ip) : [];
  return { addresses: shown, lowestFreeIn: choice.pools };
}

/**
 * `lowestFree` for a pool whose held addresses below the answer are known as numbers: `firstFree`
 * is the offset from the pool's first address of the lowest address not held (undefined when every
 * address is held). What a full pool reports as scanned is its size, as the scan does.
 */
export function lowestFreeAt(pool: EipRecord, firstFree: bigint | undefined): { ip: string | undefined; scanned: number } {
  const b = boundsOf(pool);
  if (b === undefined) return { ip: undefined, scanned: 0 };
  const size = b.last - b.first + 1n;
  if (firstFree === undefined || firstFree >= size) return { ip: undefined, scanned: Number(size) };
  return { ip: formatIp(b.family, b.first + firstFree), scanned: Number(firstFree) };
}

function fail(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

/** Keys (see ipKey) of the addresses held by some Service other than `self`. */
function othersHolding(self: string, allocations: readonly Allocation[]): Set<string> {
  const held = new Set<string>();
  for (const a of allocations) {
    if (!a.services.some((s) => s !== self)) continue;
    const key = ipKey(a.ip);
    if (key !== undefined) held.add(key);
  }
  return held;
}

function stillFits(service: ServiceRecord, current: Allocation, pools: readonly EipRecord[]): boolean {
  const pool = pools.find((p) => p.name === current.pool);
  if (pool === undefined || !ipInPool(current.ip, pool)) return false;
  const family = service.ipFamilies[0];
  if (family !== undefined && pool.family !== family) return false;
  if (service.requestedIp !== undefined && service.requestedIp !== current.ip) return false;
  return service.requestedPool === undefined || service.requestedPool === current.pool;
}

/** Why a pool is the one a Service's IP comes from, in the order choosePools tries them. */
export type PoolChoiceReason =
  /** The Service names the pool (annotation eip.porter.kubesphere.io/v1alpha2). */
  | 'poolAnnotation'
  /** The pool holds the IP the Service requests. */
  | 'poolOfRequestedIp'
  /** The pool is bound to the Service's namespace (namespaces, namespaceSelector). */
  | 'namespacePool'
  /** The default pool (annotation eip.porter.kubesphere.io/is-default-eip). */
  | 'defaultPool'
  /** Today another pool would be chosen; the Service keeps its IP while it still fits. */
  | 'keptWhileItFits'
  /** The store had lost the Service's allocation (Redis restarted empty, a rebuilt store): it took back the address its status showed. */
  | 'keptFromStatus';

type PoolChoice = { ok: true; pools: EipRecord[]; by: Exclude<PoolChoiceReason, 'keptWhileItFits' | 'keptFromStatus'> } | { ok: false; reason: string };

function choosePools(service: ServiceRecord, pools: readonly EipRecord[]): PoolChoice {
  const family = service.ipFamilies[0];
  const wrongFamily = (what: string, f: Family): PoolChoice =>
    fail(
      dualStackViews.has(service)
        ? `${what} is ${familyName(f)}, not ${familyName(family ?? f)} (a dual-stack Service needs a pool of each family)`
        : `${what} is ${familyName(f)} but the Service's first IP family is ${familyName(family ?? f)}`,
    );
  const ip = service.requestedIp;
  const ipFamily = ip === undefined ? undefined : parseIp(ip)?.family;
  if (ip !== undefined && ipFamily !== undefined && family !== undefined && ipFamily !== family) {
    return wrongFamily(`requested IP ${ip}`, ipFamily);
  }
  if (service.requestedPool !== undefined) {
    const pool = pools.find((p) => p.name === service.requestedPool);
    if (pool === undefined) return fail(`pool "${service.requestedPool}" (annotation ${keyFor(ANNOTATIONS.pool, service.naming)}) does not exist`);
    if (pool.disable) return fail(`pool "${pool.name}" is disabled`);
    if (family !== undefined && pool.family !== family) return wrongFamily(`pool "${pool.name}"`, pool.family);
    if (ip !== undefined && !ipInPool(ip, pool)) return fail(`requested IP ${ip} is not in pool "${pool.name}" (${pool.address})`);
    return { ok: true, pools: [pool], by: 'poolAnnotation' };
  }
  if (ip !== undefined) {
    const holding = pools.filter((p) => ipInPool(ip, p)).sort((a, b) => cmp(a.name, b.name));
    const enabled = holding.find((p) => !p.disable);
    if (enabled !== undefined) return { ok: true, pools: [enabled], by: 'poolOfRequestedIp' };
    const disabled = holding[0];
    if (disabled !== undefined) return fail(`requested IP ${ip} is in pool "${disabled.name}", which is disabled`);
    return fail(`requested IP ${ip} is in no enabled Eip`);
  }
  const bound = namespacePools(service.namespace, pools, family);
  if (bound.length > 0) return { ok: true, pools: bound, by: 'namespacePool' };
  const defaults = pools.filter((p) => p.isDefault).sort((a, b) => cmp(a.name, b.name));
  // One default pool per family: the Service's own family's, else the other's says why not.
  const dflt = defaults.find((p) => family === undefined || p.family === family) ?? defaults[0];
  if (dflt === undefined) return fail(`no enabled Eip is bound to namespace "${service.namespace}" and there is no default Eip`);
  if (dflt.disable) return fail(`the default pool "${dflt.name}" is disabled`);
  if (family !== undefined && dflt.family !== family) return wrongFamily(`the default pool "${dflt.name}"`, dflt.family);
  return { ok: true, pools: [dflt], by: 'defaultPool' };
}

/** Where a Service's IP came from: for `racklb explain`, from the same rules that chose it. */
export interface AllocationOrigin {
  /** The Service asked for this very address (annotation or spec.loadBalancerIP); else it was the lowest free one, or with `by` keptFromStatus the one its status showed. */
  requested: boolean;
  by: PoolChoiceReason;
  /** Other Services holding the same address. */
  sharedWith: string[];
}

export function allocationOrigin(service: ServiceRecord, allocation: Allocation, pools: readonly EipRecord[]): AllocationOrigin {
  // A dual-stack Service's address came from the rules of its family's view.
  const family = parseIp(allocation.ip)?.family;
  const view = familyViews(service, pools, [allocation]).find((v) => service.dualStack === undefined || v.family === family);
  const requestedIp = view?.ok ? view.service.requestedIp : undefined;
  const requested = requestedIp !== undefined && ipKey(requestedIp) === ipKey(allocation.ip);
  const choice = view?.ok ? choosePools(view.service, pools) : undefined;
  // Only the allocation remembers it: in steady state every Service's status shows its address.
  const fromStatus = !requested && allocation.fromStatus === service.key;
  const by: PoolChoiceReason = fromStatus ? 'keptFromStatus' : choice?.ok && choice.pools.some((p) => p.name === allocation.pool) ? choice.by : 'keptWhileItFits';
  return { requested, by, sharedWith: allocation.services.filter((s) => s !== service.key) };
}

/**
 * Enabled pools bound to the namespace, best first. OpenELB documents and sorts `priority` so that a
 * smaller number wins (sort ascending, default 0); racklb keeps that, then orders by name. A full
 * pool is skipped for the next one, as OpenELB sorts full pools last.
 */
function namespacePools(namespace: string, pools: readonly EipRecord[], family: Family | undefined): EipRecord[] {
  const labels = { [NAMESPACE_NAME_LABEL]: namespace };
  return pools
    .filter((p) => !p.disable && (family === undefined || p.family === family))
    .filter(
      (p) => p.namespaces.includes(namespace) || (p.namespaceSelector !== undefined && matchesSelector(p.namespaceSelector, labels)),
    )
    .sort((a, b) => a.priority - b.priority || cmp(a.name, b.name));
}

/**
 * Scans from the pool's first address. Among the first `held.size + 1` addresses at least one is
 * free, so the scan stops there however large the pool (an IPv6 /64 included).
 */
function lowestFree(pool: EipRecord, held: ReadonlySet<string>): { ip: string | undefined; scanned: number } {
  const b = boundsOf(pool);
  if (b === undefined) return { ip: undefined, scanned: 0 };
  const size = b.last - b.first + 1n;
  const limit = size < BigInt(held.size + 1) ? Number(size) : held.size + 1;
  for (let i = 0; i < limit; i++) {
    const value = b.first + BigInt(i);
    if (!held.has(keyOf(b.family, value))) return { ip: formatIp(b.family, value), scanned: i };
  }
  return { ip: undefined, scanned: limit };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
