/**
 * on-service: Service, EndpointSlice and Eip events -> IP allocation from Eip pools and the route
 * intent of every Service IP (which nodes may carry it: all eligible ones, or with
 * externalTrafficPolicy Local only those with a ready endpoint).
 */
import { addressesConsulted, allocateFamilies, checkPoolOverlap, familyViews, formatPending, lowestFreeAt, requestsByFamily, type LowestFree } from '../../src/core/ipam.js';
import { familyName, formatIp, parseIp } from '../../src/core/ip.js';
import { identify, parseEip, parseEndpointSlice, parseService } from '../../src/core/objects.js';
import { serviceIpIntent } from '../../src/core/intents.js';
import type { Allocation, EipRecord, EndpointSliceRecord, Family, Outcome, ServiceRecord } from '../../src/core/types.js';
import { decideWrite } from '../../src/core/versions.js';
import type { KubeEvent } from '../../src/events/codec.js';
import { incomingVersion, recordOf, requireKind, type FunctionDefinition, type FunctionDeps } from '../../src/serve/handler.js';
import { formatServiceIps, parseServiceIps } from '../../src/store/keys.js';
import { groupCommitPerStore, sortByVersion, type QueuedEvent } from '../../src/serve/batch.js';
import type { Settled } from '../../src/store/group-commit.js';
import { ALLOCATION_INDEX_COMPLETE, storedVersion, type Reader, type TxPlan, type TxWriter } from '../../src/store/store.js';

export const definition: FunctionDefinition = { name: 'on-service', kinds: ['Service', 'EndpointSlice', 'Eip'], handle, batches: (store) => [serviceBatchesOf(store)] };

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
  /**
   * Why a Service waits for an IP, as read (absent: it did not), for the Services whose entry was
   * read: an unchanged one is not written. A Service missing here is written whatever it was.
   */
  readonly pendingAsRead = new Map<string, string | undefined>();
  readonly touchedIps = new Set<string>();
  /** Records as they will be after this transaction, for the Services it changes. */
  readonly overrides = new Map<string, ServiceRecord | undefined>();
  /**
   * The lowest free addresses of each pool searched, from the allocation index as read (see
   * freeFromIndex); unset when the plan holds every allocation and `allocate` scans them.
   */
  freeIndex: Map<string, IndexFree> | undefined;
  /** Every address whose allocation this plan read or wrote: the only ones whose holders it knows. */
  private readonly known: Set<string>;
  /** Every allocation was read and the index is not complete: write it whole with this plan. */
  rebuildIndex = false;
  /**
   * Addresses this plan gave out that no allocation it read or made held: found free (in the index
   * or the whole table). Their stored route intents are not read (see planServices).
   */
  readonly foundFree = new Set<string>();

  constructor(allocations: Map<string, Allocation>, serviceIps: Record<string, string>) {
    this.allocations = allocations;
    this.original = new Map([...allocations].map(([ip, a]) => [ip, JSON.stringify(a)]));
    this.serviceIps = new Map(Object.entries(serviceIps).map(([key, value]) => [key, parseServiceIps(value)]));
    this.originalServiceIps = new Map(Object.entries(serviceIps));
    this.known = new Set(allocations.keys());
  }

  static async load(r: Reader): Promise<AllocationPlan> {
    const k = r.keys;
    const [allocations, serviceIps, complete] = await Promise.all([r.hashJson<Allocation>(k.allocations()), r.redis.hgetall(k.serviceIps()), r.redis.zscore(k.allocationIndex(), ALLOCATION_INDEX_COMPLETE)]);
    const plan = new AllocationPlan(allocations, serviceIps);
    // Everything is in hand: the cheapest moment to make the index whole (a store from before it existed).
    plan.rebuildIndex = complete === null;
    return plan;
  }

  /** Whether `service`'s stored value differs from what was read. */
  serviceIpChanged(service: string, value: string | undefined): boolean {
    return this.originalServiceIps.get(service) !== value;
  }

  /** Whether `service`'s pending reason may differ from the stored one (true when it was not read). */
  pendingChanged(service: string, reason: string | undefined): boolean {
    return !this.pendingAsRead.has(service) || this.pendingAsRead.get(service) !== reason;
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
    const results = allocateFamilies(record, pools, [...this.allocations.values()], currentAllocations, this.lowestFor(key));
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
      if (!this.known.has(result.ip)) this.foundFree.add(result.ip);
      this.known.add(result.ip);
      ips.push(result.ip);
      const takenBack = result.fromStatus === true && !currentAllocations.some((a) => a.ip === result.ip);
      const note = result.shared ? ` (shared with ${services.filter((s) => s !== key).join(', ')})` : takenBack ? ' (the address its status showed: the store held no allocation for it)' : '';
      sentences.push(`${label(family)}${result.ip} from Eip ${result.pool}${note}`);
    }
    this.setServiceIps(key, ips);
    this.pendingChanges.set(key, formatPending(record, missing));
    return sentences.join('; ');
  }

  /**
   * The lowest address of a pool free of Services other than `service`, as the scan over every
   * allocation would find it after the decisions this plan made so far: the lowest of the free
   * addresses the index listed and of the addresses this plan knows, that no other Service holds
   * now. Below the index's last listed address, every address the plan does not know is as the
   * index saw it; the index lists one more address than the batch can take, so the answer always
   * lies below it or the pool is full.
   */
  private lowestFor(service: string): LowestFree | undefined {
    const index = this.freeIndex;
    if (index === undefined) return undefined;
    const heldByOthers = (ip: string): boolean => this.allocations.get(ip)?.services.some((s) => s !== service) ?? false;
    return (pool) => {
      const free = index.get(pool.name);
      if (free === undefined) throw new Error(`allocation plan: pool ${pool.name} was not searched in the allocation index`);
      let best = free.offsets.find((offset) => !heldByOthers(formatIp('ipv4', BigInt(free.first + offset))));
      if (best === undefined && !free.complete) throw new Error(`allocation plan: every address the allocation index listed for pool ${pool.name} was taken in one batch`);
      for (const ip of this.known) {
        const n = ipv4Number(ip);
        if (n === undefined || n < free.first || n > free.last) continue;
        const offset = n - free.first;
        if ((best === undefined || offset < best) && !heldByOthers(ip)) best = offset;
      }
      return lowestFreeAt(pool, best === undefined ? undefined : BigInt(best));
    };
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

/** The free addresses of one pool the allocation index listed, lowest first (see AllocationPlan.lowestFor). */
interface IndexFree {
  first: number;
  last: number;
  offsets: number[];
  /** The index listed fewer than asked: no other address of the pool is free. */
  complete: boolean;
}

/** The address as a number when it is IPv4 (the allocation index holds only those). */
function ipv4Number(ip: string): number | undefined {
  const p = parseIp(ip);
  return p?.family === 'ipv4' ? Number(p.value) : undefined;
}

/**
 * The lowest `take + 1` free addresses of each pool, from the allocation index; undefined when the
 * index cannot answer for one of them (an IPv6 pool), and the plan then reads every allocation.
 */
async function freeFromIndex(r: Reader, pools: readonly EipRecord[], take: number): Promise<Map<string, IndexFree> | undefined> {
  const bounds = pools.map((p) => ({ pool: p, first: ipv4Number(p.firstIp), last: ipv4Number(p.lastIp) }));
  if (bounds.some((b) => b.first === undefined || b.last === undefined)) return undefined;
  const asked = take + 1;
  const lists = await Promise.all(bounds.map((b) => r.lowestFreeOffsets(b.first as number, b.last as number, asked)));
  return new Map(bounds.map((b, i) => [b.pool.name, { first: b.first as number, last: b.last as number, offsets: lists[i] ?? [], complete: (lists[i]?.length ?? 0) < asked }]));
}

/** What `allocate` looks at for a Service, every family of it together (see addressesConsulted). */
function consultedBy(record: ServiceRecord, pools: readonly EipRecord[], current: readonly Allocation[]): { addresses: string[]; lowestFreeIn: EipRecord[] } {
  const addresses: string[] = [];
  const lowestFreeIn: EipRecord[] = [];
  for (const v of familyViews(record, pools, current)) {
    if (!v.ok) continue;
    const c = addressesConsulted(v.service, pools, v.current);
    if (Array.isArray(c)) addresses.push(...c);
    else {
      addresses.push(...c.addresses);
      lowestFreeIn.push(...c.lowestFreeIn);
    }
  }
  return { addresses, lowestFreeIn };
}

/**
 * The lowest free addresses of the pools the batch's Service adds would search, asked with the
 * batch's first reads instead of after them (one round trip less for an add): the pools are the
 * Eips as this process last read them, a guess that `guessCovers` checks against the Eips read
 * now. Asked for as many addresses as the batch has events, at least what its adds can take.
 */
function guessLowestFree(r: Reader, items: readonly ServiceEvent[], requests: readonly (string | undefined)[][]): Promise<Map<string, IndexFree> | undefined> | undefined {
  const pools = r.allRecordsLastSeen('Eip');
  if (pools === undefined) return undefined;
  const searched = new Map<string, EipRecord>();
  items.forEach((it, i) => {
    if (it.event.action !== 'add' || it.record?.managed !== true || !requests[i]?.includes(undefined)) return;
    for (const p of consultedBy(it.record, pools, []).lowestFreeIn) searched.set(p.name, p);
  });
  if (searched.size === 0) return undefined;
  const guess = freeFromIndex(r, [...searched.values()], items.length);
  guess.catch(() => undefined);
  return guess;
}

/** The guessed free addresses when they answer for every pool searched, with the same bounds; else undefined. */
function guessCovers(guess: Map<string, IndexFree> | undefined, searched: Iterable<EipRecord>): Map<string, IndexFree> | undefined {
  if (guess === undefined) return undefined;
  for (const pool of searched) {
    const g = guess.get(pool.name);
    if (g === undefined || g.first !== ipv4Number(pool.firstIp) || g.last !== ipv4Number(pool.lastIp)) return undefined;
  }
  return guess;
}

/** A Local Service's route follows its endpoints: they go with the batch's first reads, not after the allocations. */
function readSlicesOfLocal(r: Reader, items: readonly ServiceEvent[]): SlicesAhead {
  const reads = new Map<string, Promise<Map<string, EndpointSliceRecord>>>();
  for (const it of items) {
    if (it.record?.managed !== true || it.record.externalTrafficPolicy !== 'Local') continue;
    const read = r.hashJson<EndpointSliceRecord>(r.keys.serviceEndpoints(it.id.key));
    read.catch(() => undefined);
    reads.set(it.id.key, read);
  }
  return reads;
}

/**
 * WATCH on the transaction's connection, sent ahead of the reads that follow: Redis answers one
 * connection in order, so they are read after it without waiting for its OK, and a failed WATCH
 * fails those reads with it.
 */
function watchBeforeReading(r: Reader, keys: readonly string[]): void {
  if (keys.length === 0) return;
  r.redis.watch(...keys).catch(() => undefined);
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

/** Stored route intents by IP, as read with the allocations (undefined: none stored). */
type IntentsRead = Map<string, string | undefined>;

/** EndpointSlices by Service (Keys.serviceEndpoints), read before planIntents asks for them. */
type SlicesAhead = ReadonlyMap<string, Promise<Map<string, EndpointSliceRecord>>>;

/**
 * Route intents of the given IPs as they will be, compared with what is stored. Every read goes out
 * at once for all the IPs: a batch of Service events touches many. The stored intents already in
 * `intentsRead` are not read again.
 */
async function planIntents(r: Reader, ips: Iterable<string>, plan: AllocationPlan | undefined, opts: { intentsRead?: IntentsRead; slicesAhead?: SlicesAhead; sliceOverride?: { service: string; sliceKey: string; slice: EndpointSliceRecord | undefined } } = {}): Promise<{ ip: string; json: string | undefined }[]> {
  const k = r.keys;
  const { intentsRead, slicesAhead, sliceOverride } = opts;
  const list = [...ips];
  if (list.length === 0) return [];
  const unread = intentsRead ? list.filter((ip) => !intentsRead.has(ip)) : list;
  // Sent now, read at the end: it travels with the reads below instead of after them.
  const storedIntents = unread.length > 0 ? r.redis.hmget(k.intents(), ...unread) : Promise.resolve([]);
  storedIntents.catch(() => undefined);
  const owners = plan ? list.map((ip) => plan.allocations.get(ip)?.services ?? []) : (await r.redis.hmget(k.allocations(), ...list)).map((v) => parseAllocation(v)?.services ?? []);
  const fromStore = [...new Set(owners.flat().filter((o) => !plan?.overrides.has(o)))];
  // Everything an intent is computed from is watched before it is read, as the transaction's own
  // keys are: another transaction (another kind of event, or another replica) that writes one of
  // these Services or its slices before this EXEC must fail it, not have its own intent replaced
  // by one computed without its change.
  watchBeforeReading(r, fromStore.map((key) => k.object('Service', key)));
  const stored = new Map((await r.records('Service', fromStore)).map((s) => [s.key, s]));
  const servicesOf = owners.map((o) => {
    const services: ServiceRecord[] = o.flatMap((key) => (plan?.overrides.has(key) ? [] : (stored.get(key) ?? [])));
    for (const key of o) {
      const rec = plan?.overrides.get(key);
      if (rec) services.push(rec);
    }
    return services.filter((s) => s.managed);
  });
  // serviceIpIntent reads slices only when every Service of the IP is Local: no reads otherwise.
  const local = servicesOf.map((managed) => managed.length > 0 && managed.every((s) => s.externalTrafficPolicy === 'Local'));
  const sliced = [...new Set(servicesOf.flatMap((managed, i) => (local[i] ? managed.map((s) => s.key) : [])))];
  watchBeforeReading(r, sliced.filter((key) => !slicesAhead?.has(key)).map((key) => k.serviceEndpoints(key)));
  const slicesRead = await Promise.all(sliced.map((key) => slicesAhead?.get(key) ?? r.hashJson<EndpointSliceRecord>(k.serviceEndpoints(key))));
  const slicesOf = new Map(sliced.map((key, i) => [key, slicesRead[i] as Map<string, EndpointSliceRecord>]));
  if (sliceOverride !== undefined) {
    const bySlice = slicesOf.get(sliceOverride.service);
    if (bySlice && sliceOverride.slice) bySlice.set(sliceOverride.sliceKey, sliceOverride.slice);
    else if (bySlice) bySlice.delete(sliceOverride.sliceKey);
  }
  const current = new Map(intentsRead);
  (await storedIntents).forEach((v, i) => current.set(unread[i] as string, v ?? undefined));
  const out: { ip: string; json: string | undefined }[] = [];
  list.forEach((ip, i) => {
    const managed = servicesOf[i] ?? [];
    const slices = local[i] ? managed.flatMap((s) => [...(slicesOf.get(s.key)?.values() ?? [])]) : [];
    const json = managed.length > 0 ? JSON.stringify(serviceIpIntent(ip, managed, slices)) : undefined;
    if (json !== current.get(ip)) out.push({ ip, json });
  });
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
    if (!plan.pendingChanged(service, reason)) continue;
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

type ServiceEvent = QueuedEvent<'Service'>;

/** One batch of Service events per store at a time (see GroupCommit). */
export const serviceBatchesOf = groupCommitPerStore<ServiceEvent>((store, round) => {
  const k = store.keys;
  return {
    watch: [k.allocations(), k.allocationIndex(), k.serviceIps(), k.pending(), k.epoch('Eip'), ...round.flatMap((it) => [k.object('Service', it.id.key), k.serviceEndpoints(it.id.key)])],
    body: (r) => planServices(r, round),
  };
});

/**
 * Service events wait while the events before them are decided, and go together as one
 * transaction: every Service event reads and writes the shared allocation keys, so one at a time
 * they would each take a turn of several round trips (the rate of a bulk of adds).
 */
async function handleService(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const record = event.action === 'delete' ? undefined : recordOf(event, 'Service', parseService);
  return serviceBatchesOf(store).submit({ key: id.key, event, id, record, journal });
}

/** Decides a round of Service events (no Service twice) as one after the other would, in order. */
async function planServices(r: Reader, items: readonly ServiceEvent[]): Promise<TxPlan<Settled<Outcome>[]>> {
  const k = r.keys;
  const keys = items.map((it) => it.id.key);
  const requests = items.map((it) => (it.record?.managed === true ? requestsByFamily(it.record) : []));
  const mayNeedLowest = requests.some((rs) => rs.some((ip) => ip === undefined));
  // Independent reads go out together: every object, the pools, the Services' addresses.
  const indexComplete = mayNeedLowest ? r.redis.zscore(k.allocationIndex(), ALLOCATION_INDEX_COMPLETE).then((v) => v !== null) : Promise.resolve(false);
  indexComplete.catch(() => undefined);
  const guessedFree = mayNeedLowest ? guessLowestFree(r, items, requests) : undefined;
  const slicesAhead = readSlicesOfLocal(r, items);
  const [objects, pools, storedIps, pending] = await Promise.all([
    r.redis.mget(keys.map((key) => k.object('Service', key))),
    r.allRecordsCached('Eip'),
    r.redis.hmget(k.serviceIps(), ...keys),
    r.redis.hmget(k.pending(), ...keys),
  ]);

  const { settled, applied: sorted } = sortByVersion(r, 'Service', items, objects);
  const applied = sorted.map((a) => a.i);
  const live = new Set(sorted.filter((a) => a.prev !== undefined).map((a) => a.i));
  if (applied.length === 0) return { result: settled as Settled<Outcome>[] };

  // The allocations `allocate` looks at (see addressesConsulted): the current, the requested and
  // the addresses the status shows, fetched now without waiting to know which, then any other.
  const own: Record<string, string> = {};
  const fetched = new Set<string>();
  for (const i of applied) {
    const it = items[i] as ServiceEvent;
    const value = storedIps[i] ?? undefined;
    if (value !== undefined) own[it.id.key] = value;
    const shown = it.record?.managed === true ? (it.record.ingressIps ?? []) : [];
    for (const ip of [...parseServiceIps(value), ...(requests[i] ?? []), ...shown]) if (ip !== undefined) fetched.add(ip);
  }
  const intentsRead: IntentsRead = new Map();
  const allocations = await readAllocations(r, [...fetched], new Map(), intentsRead);
  const searched = new Map<string, EipRecord>();
  const consulted = new Set<string>();
  for (const i of applied) {
    const it = items[i] as ServiceEvent;
    if (!it.record) continue;
    const current = parseServiceIps(own[it.id.key]).flatMap((ip) => allocations.get(ip) ?? []);
    const c = consultedBy(it.record, pools, current);
    for (const ip of c.addresses) consulted.add(ip);
    for (const p of c.lowestFreeIn) searched.set(p.name, p);
  }
  await readAllocations(r, [...consulted].filter((ip) => !fetched.has(ip)), allocations, intentsRead);
  let plan: AllocationPlan;
  if (searched.size === 0) plan = new AllocationPlan(allocations, own);
  else {
    const free = (await indexComplete) ? (guessCovers(await guessedFree, searched.values()) ?? (await freeFromIndex(r, [...searched.values()], applied.length))) : undefined;
    if (free === undefined) plan = await AllocationPlan.load(r);
    else {
      plan = new AllocationPlan(allocations, own);
      plan.freeIndex = free;
    }
  }

  for (const i of applied) plan.pendingAsRead.set(keys[i] as string, pending[i] ?? undefined);
  const sentences = new Map<number, string>();
  for (const i of applied) {
    const it = items[i] as ServiceEvent;
    sentences.set(i, plan.assign(it.id.key, it.record, pools));
  }
  // An address found free holds no allocation, so a route intent stored there is a leftover that
  // the new one replaces whatever it says: not read, one round trip less for a Service add.
  for (const ip of plan.foundFree) if (!intentsRead.has(ip)) intentsRead.set(ip, undefined);
  const intents = await planIntents(r, plan.touchedIps, plan, { intentsRead, slicesAhead });
  for (const i of applied) {
    const it = items[i] as ServiceEvent;
    settled[i] = { ok: true, value: { outcome: 'applied', detail: `Service ${it.id.key}${it.record ? '' : ' deleted'}: ${sentences.get(i) ?? ''}` } };
  }
  return {
    result: settled as Settled<Outcome>[],
    write: (w) => {
      for (const i of applied) {
        const it = items[i] as ServiceEvent;
        if (it.record) w.putObject(it.record, live.has(i));
        else w.tombstone('Service', it.id.key, it.id.uid, it.id.resourceVersion);
      }
      writeAllocationPlan(w, plan);
      writeIntents(w, intents);
    },
  };
}

/**
 * The allocations at `ips` added to `into` (a malformed one counts as absent), and the route
 * intents stored at them to `intentsRead`, in the same round trip: planIntents needs no read of its
 * own for an address released or kept.
 */
async function readAllocations(r: Reader, ips: readonly string[], into: Map<string, Allocation>, intentsRead: IntentsRead): Promise<Map<string, Allocation>> {
  if (ips.length === 0) return into;
  const [values, intents] = await Promise.all([r.redis.hmget(r.keys.allocations(), ...ips), r.redis.hmget(r.keys.intents(), ...ips)]);
  ips.forEach((ip, i) => {
    const a = parseAllocation(values[i] ?? null);
    if (a) into.set(ip, a);
    intentsRead.set(ip, intents[i] ?? undefined);
  });
  return into;
}

async function handleSlice(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'EndpointSlice', parseEndpointSlice);
  const k = store.keys;
  return store.transact<Outcome>([k.object('EndpointSlice', id.key), k.allocations(), k.serviceIps()], async (r) => {
    const stored = await r.object('EndpointSlice', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id, record, stored));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const prev = stored && !stored.deleted && stored.record.kind === 'EndpointSlice' ? stored.record : undefined;
    const services = [...new Set([prev?.service, record?.service].filter((s): s is string => s !== undefined))];
    for (const s of services) await r.redis.watch(k.serviceEndpoints(s));
    const intents: { ip: string; json: string | undefined }[] = [];
    for (const s of services) {
      const ips = parseServiceIps(await r.redis.hget(k.serviceIps(), s));
      if (ips.length > 0) intents.push(...(await planIntents(r, ips, undefined, { sliceOverride: { service: s, sliceKey: id.key, slice: record?.service === s ? record : undefined } })));
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
  }, { journal });
}

async function handleEip(event: KubeEvent, { store, journal }: FunctionDeps, id: Identity): Promise<Outcome> {
  const deleting = event.action === 'delete';
  const record = deleting ? undefined : recordOf(event, 'Eip', parseEip);
  const k = store.keys;
  return store.transact<Outcome>([k.object('Eip', id.key), k.epoch('Eip'), k.allocations(), k.allocationIndex(), k.serviceIps(), k.pending()], async (r) => {
    const stored = await r.object('Eip', id.key);
    const decision = decideWrite(storedVersion(stored), incomingVersion(event, id, record, stored));
    if (!decision.apply) return { result: { outcome: 'stale', detail: decision.reason } };
    const others = (await r.allRecordsCached('Eip')).filter((e) => e.key !== id.key);
    if (record) checkPoolOverlap(record, others);
    const pools = record ? [...others, record] : others;

    // Services waiting for an IP may get one now; Services holding an IP of this pool are checked
    // again in case the pool shrank or went away.
    const plan = await AllocationPlan.load(r);
    const pending = await r.redis.hgetall(k.pending());
    const waiting = Object.keys(pending);
    const holders = [...plan.allocations.values()].filter((a) => a.pool === id.name).flatMap((a) => a.services);
    const affected = [...new Set([...waiting, ...holders])].sort();
    // What this Eip decides for these Services rests on their records as read now (planIntents).
    watchBeforeReading(r, affected.map((key) => k.object('Service', key)));
    const records = new Map((await r.records('Service', affected)).map((s) => [s.key, s]));
    // The whole hash was read: a Service missing from it is not waiting.
    for (const key of affected) plan.pendingAsRead.set(key, pending[key]);
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
  }, { journal });
}
