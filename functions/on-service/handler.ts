/**
 * on-service: Service, EndpointSlice and Eip events -> IP allocation from Eip pools and the route
 * intent of every Service IP (which nodes may carry it: all eligible ones, or with
 * externalTrafficPolicy Local only those with a ready endpoint).
 */
import { addressesConsulted, checkPoolOverlap, allocate, lowestFreeAt, type LowestFree } from '../../src/core/ipam.js';
import { parseIp } from '../../src/core/ip.js';
import { identify, parseEip, parseEndpointSlice, parseService } from '../../src/core/objects.js';
import { serviceIpIntent } from '../../src/core/intents.js';
import type { Allocation, EipRecord, EndpointSliceRecord, Outcome, ServiceRecord } from '../../src/core/types.js';
import { decideWrite } from '../../src/core/versions.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { incomingVersion, recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
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
  readonly serviceIps: Map<string, string>;
  /** Service IPs as read, so that an unchanged one is not written (a write would fail every concurrent transaction that WATCHes the hash). */
  private readonly originalServiceIps: ReadonlyMap<string, string>;
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
    this.serviceIps = new Map(Object.entries(serviceIps));
    this.originalServiceIps = new Map(this.serviceIps);
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
    const { current, allocations } = read;
    const currentAllocation = current === undefined ? undefined : allocations.get(current);
    const consulted = record ? addressesConsulted(record, pools, currentAllocation) : [];
    if (!Array.isArray(consulted)) {
      const lowest = (await read.indexComplete) ? await lowestFromIndex(r, consulted.lowestFreeIn, key, currentAllocation) : undefined;
      if (lowest === undefined) return AllocationPlan.load(r);
      const plan = new AllocationPlan(allocations, current === undefined ? {} : { [key]: current });
      plan.lowest = lowest;
      return plan;
    }
    const missing = consulted.filter((ip) => !read.fetched.has(ip));
    if (missing.length > 0) {
      const values = await r.redis.hmget(r.keys.allocations(), ...missing);
      missing.forEach((ip, i) => {
        const a = parseAllocation(values[i] ?? null);
        if (a) allocations.set(ip, a);
      });
    }
    return new AllocationPlan(allocations, current === undefined ? {} : { [key]: current });
  }

  /** Whether `service`'s IP differs from what was read. */
  serviceIpChanged(service: string, ip: string | undefined): boolean {
    return this.originalServiceIps.get(service) !== ip;
  }

  private release(service: string, ip: string): void {
    const a = this.allocations.get(ip);
    if (!a) return;
    const services = a.services.filter((s) => s !== service);
    if (services.length === 0) this.allocations.delete(ip);
    else this.allocations.set(ip, { ...a, services });
    this.touchedIps.add(ip);
  }

  /** Gives `service` an IP (or keeps its own), or records why it has none. Returns a sentence. */
  assign(key: string, record: ServiceRecord | undefined, pools: readonly EipRecord[]): string {
    this.overrides.set(key, record);
    const current = this.serviceIps.get(key);
    const currentAllocation = current === undefined ? undefined : this.allocations.get(current);
    if (current !== undefined) this.release(key, current);
    if (!record || !record.managed) {
      this.setServiceIp(key, undefined);
      this.pendingChanges.set(key, undefined);
      return current ? `released ${current}` : 'not managed by racklb';
    }
    const result = allocate(record, pools, [...this.allocations.values()], currentAllocation, this.lowest);
    if (!result.ok) {
      this.setServiceIp(key, undefined);
      this.pendingChanges.set(key, result.reason);
      return `no IP: ${result.reason}`;
    }
    const held = this.allocations.get(result.ip);
    const services = [...new Set([...(held?.services ?? []), key])].sort();
    this.allocations.set(result.ip, { ip: result.ip, pool: result.pool, services });
    this.touchedIps.add(result.ip);
    this.setServiceIp(key, result.ip);
    this.pendingChanges.set(key, undefined);
    return `${result.ip} from Eip ${result.pool}${result.shared ? ` (shared with ${services.filter((s) => s !== key).join(', ')})` : ''}`;
  }

  private setServiceIp(key: string, ip: string | undefined): void {
    if (ip === undefined) this.serviceIps.delete(key);
    else this.serviceIps.set(key, ip);
    this.serviceIpChanges.set(key, ip);
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

/** A Service's current IP and the allocations at it and at the IP it requests, read together. */
interface ServiceAllocationRead {
  current: string | undefined;
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
 * own current address counts as free when it holds it alone: `assign` releases it before allocating.
 */
async function lowestFromIndex(r: Reader, pools: readonly EipRecord[], key: string, current: Allocation | undefined): Promise<LowestFree | undefined> {
  const bounds = pools.map((p) => ({ pool: p, first: ipv4Number(p.firstIp), last: ipv4Number(p.lastIp) }));
  if (bounds.some((b) => b.first === undefined || b.last === undefined)) return undefined;
  const offsets = await Promise.all(bounds.map((b) => r.lowestFreeOffset(b.first as number, b.last as number)));
  const released = current !== undefined && current.services.every((s) => s === key) ? ipv4Number(current.ip) : undefined;
  const answers = new Map<string, ReturnType<LowestFree>>();
  bounds.forEach((b, i) => {
    let offset = offsets[i];
    const first = b.first as number;
    if (released !== undefined && released >= first && released <= (b.last as number) && (offset === undefined || released - first < offset)) offset = released - first;
    answers.set(b.pool.name, lowestFreeAt(b.pool, offset === undefined ? undefined : BigInt(offset)));
  });
  return (pool) => answers.get(pool.name) ?? { ip: undefined, scanned: 0 };
}

async function readServiceAllocation(r: Reader, key: string, record: ServiceRecord | undefined): Promise<ServiceAllocationRead> {
  const k = r.keys;
  const mayNeedLowest = record?.managed === true && record.requestedIp === undefined;
  const indexComplete = mayNeedLowest ? r.redis.zscore(k.allocationIndex(), ALLOCATION_INDEX_COMPLETE).then((v) => v !== null) : Promise.resolve(false);
  indexComplete.catch(() => undefined);
  const current = (await r.redis.hget(k.serviceIps(), key)) ?? undefined;
  // The addresses `allocate` looks at are almost always the current or the requested one: fetched
  // now, without waiting to know which (see addressesConsulted).
  const fetched = new Set([current, record?.managed ? record.requestedIp : undefined].filter((ip): ip is string => ip !== undefined));
  const ips = [...fetched];
  const values = ips.length > 0 ? await r.redis.hmget(k.allocations(), ...ips) : [];
  const allocations = new Map<string, Allocation>();
  ips.forEach((ip, i) => {
    const a = parseAllocation(values[i] ?? null);
    if (a) allocations.set(ip, a);
  });
  return { current, fetched, allocations, indexComplete };
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
  for (const [service, ip] of plan.serviceIpChanges) {
    if (!plan.serviceIpChanged(service, ip)) continue;
    if (ip) w.multi.hset(k.serviceIps(), service, ip);
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
      const ip = await r.redis.hget(k.serviceIps(), s);
      if (ip) intents.push(...(await planIntents(r, [ip], undefined, { service: s, sliceKey: id.key, slice: record?.service === s ? record : undefined })));
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
      const before = plan.serviceIps.get(key);
      plan.assign(key, records.get(key), pools);
      const after = plan.serviceIps.get(key);
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
