/**
 * on-service: Service, EndpointSlice and Eip events -> IP allocation from Eip pools and the route
 * intent of every Service IP (which nodes may carry it: all eligible ones, or with
 * externalTrafficPolicy Local only those with a ready endpoint).
 */
import { addressesConsulted, allocateFamilies, checkPoolOverlap, familyViews, formatPending, lowestFreeAt, requestsByFamily, type LowestFree } from '../../src/core/ipam.js';
import { familyName, parseIp } from '../../src/core/ip.js';
import { identify, parseEip, parseEndpointSlice, parseService } from '../../src/core/objects.js';
import { serviceIpIntent } from '../../src/core/intents.js';
import type { Allocation, EipRecord, EndpointSliceRecord, Family, Outcome, ServiceRecord } from '../../src/core/types.js';
import { decideWrite } from '../../src/core/versions.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { incomingVersion, recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
import { formatServiceIps, parseServiceIps } from '../../src/store/keys.js';
import { ALLOCATION_INDEX_COMPLETE, storedVersion, type Reader, type TxWriter } from '../../src/store/store.js';

export const definition: FunctionDefinition = { name: 'on-service', kinds: ['Service', 'EndpointSlice', 'Eip'], handle };

type Identity = ReturnType<typeof identify>;

export async function handle(event: KubeEvent, deps: FunctionDeps): Promise<Outcome> {
  const id = identify(event.object);
  const kind = requireKind(definition, id.kind);
  if (kind === 'Service') return handleService(event, deps, id);
  if (kind === 'EndpointSlice') return handleSlice(event, deps, id);
  return handleEip(event, deps, id);
}

/** The allocation state a transaction works on, and what it changed. */
class AllocationPlan {
  readonly allocations: Map<string, Allocation>;
  private readonly original: Map<string, string>;
  /** Service -> its addresses, in spec.ipFamilies order. */
  readonly serviceIps: Map<string, string[]>;
  /** Service IPs as read (the stored values), so that an unchanged one is not written (a write would fail every concurrent transaction that WATCHes the hash). */
  private readonly originalServiceIps: ReadonlyMap<string, string>;
  /** Service -> its stored value as it will be (undefined: deleted). */
  readonly serviceIpChanges = new Map<string, string | undefined>();
  readonly pendingChanges = new Map<string, string | undefined>();
  readonly touchedIps = new Set<string>();
  /** Records as they will be after this transaction, for the Services it changes. */
  readonly overrides = new Map<string, ServiceRecord | undefined>();
  /** The lowest free address per pool from the allocation index, when it answers for this plan. */
  lowest: LowestFree | undefined;
  /** Every allocation was read and the index is not complete: write it whole with this plan. */
  rebuildIndex = false;

  constructor(allocations: Map<string, Allocation>, serviceIps: Record<string, string>) {
    this.allocations = allocations;
    this.original = new Map([...allocations].map(([ip, a]) => [ip, JSON.stringify(a)]));
    this.serviceIps = new Map(Object.entries(serviceIps).map(([key, value]) => [key, parseServiceIps(value)]));
    this.originalServiceIps = new Map(Object.entries(serviceIps));
  }

  static async load(r: Reader): Promise<AllocationPlan> {
    const k = r.keys;
    const [allocations, serviceIps, complete] = await Promise.all([r.hashJson<Allocation>(k.allocations()), r.redis.hgetall(k.serviceIps()), r.redis.zscore(k.allocationIndex(), ALLOCATION_INDEX_COMPLETE)]);
    const plan = new AllocationPlan(allocations, serviceIps);
    // Everything is in hand: the cheapest moment to make the index whole (a store from before it existed).
    plan.rebuildIndex = complete === null;
    return plan;
  }

  /**
   * What allocating one Service reads: its current address, and the allocations `allocate` looks at
   * (the one it keeps or requests), so that a Service event costs the same at 10 or 100,000
   * Services. Only a Service that needs the lowest free address reads every allocation.
   */
  static async loadForService(r: Reader, key: string, record: ServiceRecord | undefined, pools: readonly EipRecord[], read: ServiceAllocationRead): Promise<AllocationPlan> {
    const { stored, allocations } = read;
    const own = stored === undefined ? {} : { [key]: stored };
    const currentAllocations = parseServiceIps(stored).flatMap((ip) => allocations.get(ip) ?? []);
    // Per family of the Service (one for a single-stack Service), as allocateFamilies will ask.
    const perFamily = record ? familyViews(record, pools, currentAllocations).map((v) => (v.ok ? addressesConsulted(v.service, pools, v.current) : [])) : [];
    const consulted = perFamily.flatMap((c) => (Array.isArray(c) ? c : c.addresses));
    const missing = consulted.filter((ip) => !read.fetched.has(ip));
    if (missing.length > 0) {
      const values = await r.redis.hmget(r.keys.allocations(), ...missing);
      missing.forEach((ip, i) => {
        const a = parseAllocation(values[i] ?? null);
        if (a) allocations.set(ip, a);
      });
    }
    if (perFamily.some((c) => !Array.isArray(c))) {
      const searched = perFamily.flatMap((c) => (Array.isArray(c) ? [] : c.lowestFreeIn));
      const lowest = (await read.indexComplete) ? await lowestFromIndex(r, searched, key, currentAllocations) : undefined;
      if (lowest === undefined) return AllocationPlan.load(r);
      const plan = new AllocationPlan(allocations, own);
      plan.lowest = lowest;
      return plan;
    }
    return new AllocationPlan(allocations, own);
  }

  /** Whether `service`'s stored value differs from what was read. */
  serviceIpChanged(service: string, value: string | undefined): boolean {
    return this.originalServiceIps.get(service) !== value;
  }

  private release(service: string, ip: string): void {
    const a = this.allocations.get(ip);
    if (!a) return;
    const services = a.services.filter((s) => s !== service);
    if (services.length === 0) this.allocations.delete(ip);
    else this.allocations.set(ip, { ip: a.ip, pool: a.pool, services, ...(a.fromStatus !== undefined && a.fromStatus !== service ? { fromStatus: a.fromStatus } : {}) });
    this.touchedIps.add(ip);
  }

  /**
   * Gives `service` an IP per family (or keeps its own), or records why a family has none. Every
   * address it held is released first and each family then allocated as a single-stack Service
   * would be, so a move or a release of either family frees the old address. Returns a sentence.
   */
  assign(key: string, record: ServiceRecord | undefined, pools: readonly EipRecord[]): string {
    this.overrides.set(key, record);
    const current = this.serviceIps.get(key) ?? [];
    const currentAllocations = current.flatMap((ip) => this.allocations.get(ip) ?? []);
    for (const ip of current) this.release(key, ip);
    if (!record || !record.managed) {
      this.setServiceIps(key, []);
      this.pendingChanges.set(key, undefined);
      return current.length > 0 ? `released ${current.join(', ')}` : 'not managed by racklb';
    }
    const results = allocateFamilies(record, pools, [...this.allocations.values()], currentAllocations, this.lowest);
    const ips: string[] = [];
    const missing: { family: Family | undefined; reason: string }[] = [];
    const sentences: string[] = [];
    // A family's label only where there are two: a single-stack Service's sentence is as it was.
    const label = (family: Family | undefined): string => (record.dualStack && family ? `${familyName(family)} ` : '');
    for (const { family, result } of results) {
      if (!result.ok) {
        missing.push({ family, reason: result.reason });
        sentences.push(`${record.dualStack && family ? `no ${familyName(family)} IP` : 'no IP'}: ${result.reason}`);
        continue;
      }
      const held = this.allocations.get(result.ip);
      const services = [...new Set([...(held?.services ?? []), key])].sort();
      // Who took the address back from its status stays known for `racklb explain` while it holds it.
      const fromStatus = result.fromStatus ? key : held?.fromStatus;
      this.allocations.set(result.ip, { ip: result.ip, pool: result.pool, services, ...(fromStatus !== undefined ? { fromStatus } : {}) });
      this.touchedIps.add(result.ip);
      ips.push(result.ip);
      const takenBack = result.fromStatus === true && !currentAllocations.some((a) => a.ip === result.ip);
      const note = result.shared ? ` (shared with ${services.filter((s) => s !== key).join(', ')})` : takenBack ? ' (the address its status showed: the store held no allocation for it)' : '';
      sentences.push(`${label(family)}${result.ip} from Eip ${result.pool}${note}`);
    }
    this.setServiceIps(key, ips);
    this.pendingChanges.set(key, formatPending(record, missing));
    return sentences.join('; ');
  }

  private setServiceIps(key: string, ips: string[]): void {
    if (ips.length === 0) this.serviceIps.delete(key);
    else this.serviceIps.set(key, ips);
    this.serviceIpChanges.set(key, formatServiceIps(ips));
  }

  changedAllocations(): { ip: string; json: string | undefined }[] {
    const out: { ip: string; json: string | undefined }[] = [];
    for (const ip of this.touchedIps) {
      const a = this.allocations.get(ip);
      const json = a ? JSON.stringify(a) : undefined;
      if (json !== this.original.get(ip)) out.push({ ip, json });
    }
    return out;
  }
}

/** A Service's current IPs and the allocations at them and at the IPs it requests, read together. */
interface ServiceAllocationRead {
  /** The Service's stored value (see parseServiceIps). */
  stored: string | undefined;
  fetched: Set<string>;
  allocations: Map<string, Allocation>;
  /** Whether the allocation index is complete; asked only when the Service may need the lowest free address. */
  indexComplete: Promise<boolean>;
}

/** The address as a number when it is IPv4 (the allocation index holds only those). */
function ipv4Number(ip: string): number | undefined {
  const p = parseIp(ip);
  return p?.family === 'ipv4' ? Number(p.value) : undefined;
}

/**
 * The lowest free address of each pool from the allocation index, as `allocate` would find it by
 * scanning every allocation; undefined when the index cannot answer (an IPv6 pool). The Service's
 * own current addresses count as free when it holds them alone: `assign` releases them before allocating.
 */
async function lowestFromIndex(r: Reader, pools: readonly EipRecord[], key: string, current: readonly Allocation[]): Promise<LowestFree | undefined> {
  const bounds = pools.map((p) => ({ pool: p, first: ipv4Number(p.firstIp), last: ipv4Number(p.lastIp) }));
  if (bounds.some((b) => b.first === undefined || b.last === undefined)) return undefined;
  const offsets = await Promise.all(bounds.map((b) => r.lowestFreeOffset(b.first as number, b.last as number)));
  const released = current.filter((a) => a.services.every((s) => s === key)).flatMap((a) => ipv4Number(a.ip) ?? []);
  const answers = new Map<string, ReturnType<LowestFree>>();
  bounds.forEach((b, i) => {
    let offset = offsets[i];
    const first = b.first as number;
    for (const ip of released) {
      if (ip >= first && ip <= (b.last as number) && (offset === undefined || ip - first < offset)) offset = ip - first;
    }
    answers.set(b.pool.name, lowestFreeAt(b.pool, offset === undefined ? undefined : BigInt(offset)));
  });
  return (pool) => answers.get(pool.name) ?? { ip: undefined, scanned: 0 };
}

async function readServiceAllocation(r: Reader, key: string, record: ServiceRecord | undefined): Promise<ServiceAllocationRead> {
  const k = r.keys;
  const requests = record?.managed === true ? requestsByFamily(record) : [];
  const mayNeedLowest = requests.some((ip) => ip === undefined);
  const indexComplete = mayNeedLowest ? r.redis.zscore(k.allocationIndex(), ALLOCATION_INDEX_COMPLETE).then((v) => v !== null) : Promise.resolve(false);
  indexComplete.catch(() => undefined);
  const stored = (await r.redis.hget(k.serviceIps(), key)) ?? undefined;
  // The addresses `allocate` looks at are almost always the current, the requested or (the store
  // lost the allocation) the one the status shows, which is mostly the current one: fetched now,
  // without waiting to know which (see addressesConsulted).
  const shown = record?.managed === true ? (record.ingressIps ?? []) : [];
  const fetched = new Set([...parseServiceIps(stored), ...requests, ...shown].filter((ip): ip is string => ip !== undefined));
  const ips = [...fetched];
  const values = ips.length > 0 ? await r.redis.hmget(k.allocations(), ...ips) : [];
  const allocations = new Map<string, Allocation>();
  ips.forEach((ip, i) => {
    const a = parseAllocation(values[i] ?? null);
    if (a) allocations.set(ip, a);
  });
  return { stored, fetched, allocations, indexComplete };
}

/** One stored allocation; a malformed one counts as absent, as `Reader.hashJson` skips it. */
function parseAllocation(json: string | null): Allocation | undefined {
  if (json === null) return undefined;
  try {
    return JSON.parse(json) as Allocation;
  } catch {
    return undefined;
  }
}

/** Route intents of the given IPs as they will be, compared with what is stored. */
async function planIntents(r: Reader, ips: Iterable<string>, plan: AllocationPlan | undefined, sliceOverride?: { service: string; sliceKey: string; slice: EndpointSliceRecord | undefined }): Promise<{ ip: string; json: string | undefined }[]> {
  const k = r.keys;
  const out: { ip: string; json: string | undefined }[] = [];
  for (const ip of ips) {
    // Sent now, read at the end: it travels with the reads below instead of after them.
    const storedIntent = r.redis.hget(k.intents(), ip);
    storedIntent.catch(() => undefined);
    const owners = plan ? (plan.allocations.get(ip)?.services ?? []) : (parseAllocation(await r.redis.hget(k.allocations(), ip))?.services ?? []);
    const fromStore = owners.filter((o) => !plan?.overrides.has(o));
    const services: ServiceRecord[] = [...(await r.records('Service', fromStore))];
    for (const o of owners) {
      const rec = plan?.overrides.get(o);
      if (rec) services.push(rec);
    }
    const managed = services.filter((s) => s.managed);
    let json: string | undefined;
    if (managed.length > 0) {
      const slices: EndpointSliceRecord[] = [];
      // serviceIpIntent reads slices only when every Service of the IP is Local: skip the reads otherwise.
      const local = managed.every((s) => s.externalTrafficPolicy === 'Local');
      for (const s of local ? managed : []) {
        const bySlice = await r.hashJson<EndpointSliceRecord>(k.serviceEndpoints(s.key));
        if (sliceOverride?.service === s.key) {
          if (sliceOverride.slice) bySlice.set(sliceOverride.sliceKey, sliceOverride.slice);
          else bySlice.delete(sliceOverride.sliceKey);
        }
        slices.push(...bySlice.values());
      }
      json = JSON.stringify(serviceIpIntent(ip, managed, slices));
    }
    const stored = (await storedIntent) ?? undefined;
    if (json !== stored) out.push({ ip, json });
  }
  return out;
}

function writeAllocationPlan(w: TxWriter, plan: AllocationPlan): void {
  const k = w.keys;
  for (const { ip, json } of plan.changedAllocations()) {
    if (json) w.multi.hset(k.allocations(), ip, json);
    else w.multi.hdel(k.allocations(), ip);
    // The index follows every allocation write, complete or not, so that it is never ahead of the hash.
    const n = plan.rebuildIndex ? undefined : ipv4Number(ip);
    if (n !== undefined) {
      if (json) w.multi.zadd(k.allocationIndex(), n, ip);
      else w.multi.zrem(k.allocationIndex(), ip);
    }
  }
  if (plan.rebuildIndex) {
    const members: (string | number)[] = [-1, ALLOCATION_INDEX_COMPLETE];
    for (const ip of plan.allocations.keys()) {
      const n = ipv4Number(ip);
      if (n !== undefined) members.push(n, ip);
    }
    w.multi.del(k.allocationIndex());
    w.multi.zadd(k.allocationIndex(), ...members);
  }
  for (const [service, value] of plan.serviceIpChanges) {
    if (!plan.serviceIpChanged(service, value)) continue;
    if (value) w.multi.hset(k.serviceIps(), service, value);
    else w.multi.hdel(k.serviceIps(), service);
  }
  for (const [service, reason] of plan.pendingChanges) {
    if (reason) w.multi.hset(k.pending(), service, reason);
    else w.multi.hdel(k.pending(), service);
  }
}

function writeIntents(w: TxWriter, intents: { ip: string; json: string | undefined }[]): void {
  for (const { ip, json } of intents) {
    if (json) w.multi.hset(w.keys.intents(), ip, json);
    else w.multi.hdel(w.keys.intents(), ip);
    w.notify({ scope: 'all', topic: 'intent', subject: ip });
  }
}

async function handleService(event: KubeEvent, { store }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'Service', parseService);
  const k = store.keys;
  return store.transact<Outcome>([k.object('Service', id.key), k.allocations(), k.allocationIndex(), k.serviceIps(), k.epoch('Eip'), k.serviceEndpoints(id.key)], async (r) => {
    // Independent reads go out together: two round trips instead of five (a Service add waits its
    // turn behind other adds, so its round trips set the rate of adds).
    const [stored, pools, allocation] = await Promise.all([r.object('Service', id.key), r.allRecords('Eip'), readServiceAllocation(r, id.key, record)]);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const plan = await AllocationPlan.loadForService(r, id.key, record, pools, allocation);
    const sentence = plan.assign(id.key, record, pools);
    const intents = await planIntents(r, plan.touchedIps, plan);
    return {
      result: { outcome: 'applied', detail: `Service ${id.key}${deleting ? ' deleted' : ''}: ${sentence}` },
      write: (w) => {
        if (record) w.putObject(record);
        else w.tombstone('Service', id.key, id.uid, id.resourceVersion);
        writeAllocationPlan(w, plan);
        writeIntents(w, intents);
      },
    };
  });
}

async function handleSlice(event: KubeEvent, { store }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'EndpointSlice', parseEndpointSlice);
  const k = store.keys;
  return store.transact<Outcome>([k.object('EndpointSlice', id.key), k.allocations(), k.serviceIps()], async (r) => {
    const stored = await r.object('EndpointSlice', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const prev = stored && !stored.deleted && stored.record.kind === 'EndpointSlice' ? stored.record : undefined;
    const services = [...new Set([prev?.service, record?.service].filter((s): s is string => s !== undefined))];
    for (const s of services) await r.redis.watch(k.serviceEndpoints(s));
    const intents: { ip: string; json: string | undefined }[] = [];
    for (const s of services) {
      const ips = parseServiceIps(await r.redis.hget(k.serviceIps(), s));
      if (ips.length > 0) intents.push(...(await planIntents(r, ips, undefined, { service: s, sliceKey: id.key, slice: record?.service === s ? record : undefined })));
    }
    return {
      result: { outcome: 'applied', detail: `EndpointSlice ${id.key}${deleting ? ' deleted' : `: ready endpoints on ${record?.readyNodes.length ? record.readyNodes.join(', ') : 'no node'}`}` },
      write: (w) => {
        if (record) w.putObject(record);
        else w.tombstone('EndpointSlice', id.key, id.uid, id.resourceVersion);
        if (prev && prev.service !== record?.service) w.multi.hdel(k.serviceEndpoints(prev.service), id.key);
        if (record) w.multi.hset(k.serviceEndpoints(record.service), id.key, JSON.stringify(record));
        writeIntents(w, intents);
      },
    };
  });
}

async function handleEip(event: KubeEvent, { store }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'Eip', parseEip);
  const k = store.keys;
  return store.transact<Outcome>([k.object('Eip', id.key), k.epoch('Eip'), k.allocations(), k.allocationIndex(), k.serviceIps(), k.pending()], async (r) => {
    const stored = await r.object('Eip', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const others = (await r.allRecords('Eip')).filter((e) => e.key !== id.key);
    if (record) checkPoolOverlap(record, others);
    const pools = record ? [...others, record] : others;

    // Services waiting for an IP may get one now; Services holding an IP of this pool are checked
    // again in case the pool shrank or went away.
    const plan = await AllocationPlan.load(r);
    const waiting = Object.keys(await r.redis.hgetall(k.pending()));
    const holders = [...plan.allocations.values()].filter((a) => a.pool === id.name).flatMap((a) => a.services);
    const affected = [...new Set([...waiting, ...holders])].sort();
    const records = new Map((await r.records('Service', affected)).map((s) => [s.key, s]));
    const sentences: string[] = [];
    for (const key of affected) {
      const before = formatServiceIps(plan.serviceIps.get(key) ?? []);
      plan.assign(key, records.get(key), pools);
      const after = formatServiceIps(plan.serviceIps.get(key) ?? []);
      if (before !== after) sentences.push(`${key}: ${before ?? 'none'} -> ${after ?? 'none'}`);
    }
    const intents = await planIntents(r, plan.touchedIps, plan);
    const what = record ? `Eip ${id.name} (${record.address}${record.disable ? ', disabled' : ''})` : `Eip ${id.name} deleted`;
    return {
      result: { outcome: 'applied', detail: `${what}${sentences.length ? `; ${sentences.join('; ')}` : ''}` },
      write: (w) => {
        if (record) w.putObject(record);
        else w.tombstone('Eip', id.key, id.uid, id.resourceVersion);
        writeAllocationPlan(w, plan);
        writeIntents(w, intents);
      },
    };
  });
}
