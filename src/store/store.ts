/**
 * racklb's state in Redis. Handlers read and write only through this module, so the key schema
 * (keys.ts) and the atomicity rules live in one place.
 *
 * Atomicity: a handler runs inside `transact`: it WATCHes the keys its decision depends on, reads,
 * decides in pure code, and queues its writes in one MULTI/EXEC. If another writer touched a
 * watched key meanwhile, EXEC does nothing and the whole read-decide-write runs again. So a
 * failure (Redis gone mid-way, conflict) leaves nothing half-written.
 */
import { randomUUID } from 'node:crypto';
import type { ChainableCommander, Cluster, Redis } from 'ioredis';
import { RacklbError } from '../errors.js';
import type { Kind, KubeRecord } from '../core/types.js';
import type { StoredVersion } from '../core/versions.js';
import { Keys, UNRACKED } from './keys.js';
import { connectRedis, lastConnectionError, storeError, type ConnectOptions } from './redis.js';

export type StoredObject =
  | { deleted: false; record: KubeRecord }
  | { deleted: true; kind: Kind; key: string; uid: string; resourceVersion: string; deletedAt: string };

/** How long a tombstone keeps a late add from resurrecting a deleted object. */
export const TOMBSTONE_TTL_MS = 24 * 60 * 60 * 1000;
/** Change notifications kept; a speaker that falls further behind does a full reconcile. */
export const CHANGES_MAXLEN = 100_000;
export const JOURNAL_MAXLEN = 100_000;
const MAX_ATTEMPTS = 50;
/** Records RecordCache keeps parsed by their stored text: the speaker Nodes, BgpPeers and Eips of a large cluster. */
const PARSED_RECORDS_MAX = 4096;
/**
 * Kinds whose every object a handler reads on every batch through the text memo (every BgpPeer in
 * on-bgppeer and on-node-label, every Eip in on-service): what a transaction writes of them is
 * remembered as written, so the next batch does not parse again what this process just stored.
 * Nodes are not: only the speakers among them are read that way, and their reads skip the memo
 * while no Node is written (Reader.speakersCached).
 */
const READ_ON_EVERY_BATCH: ReadonlySet<Kind> = new Set<Kind>(['BgpPeer', 'Eip']);
/** How long the watched keys of a transaction whose EXEC failed count as contended (see `transact`). */
const CONTENDED_MS = 1000;

/**
 * A kind's epoch is a token no other write carries, not a counter: a counter comes back to the same
 * value after Redis is restored from an older snapshot, and then a cached list of the kind's
 * objects (RecordCache) would be taken for current when it is not. One random prefix per process
 * and a sequence make it unique without a round trip.
 */
const EPOCH_PREFIX = randomUUID();
let epochSequence = 0;
export function nextEpochToken(): string {
  return `${EPOCH_PREFIX}.${(++epochSequence).toString(36)}`;
}

/** Where a change applies: one rack, every rack, or one speaker node. */
export type ChangeScope = { rack: string } | { node: string } | 'all';
export type ChangeTopic = 'nexthops' | 'intent' | 'peers' | 'conf' | 'node';

export interface Change {
  scope: ChangeScope;
  topic: ChangeTopic;
  /** What changed: a node name, an IP, a BgpPeer name. */
  subject: string;
}

// One script so the revisions and the stream entries can never disagree. It also creates the
// store's generation the first time anything is written (see docs/state.md, the empty-store guard).
// An intent's entry carries the intent, a next hop's entry the node's candidate, as the transaction
// leaves them (empty: removed), read here at EXEC after every write of the transaction (TxWriter
// queues notifications last). The speakers take the value from the entry instead of reading it
// back: one Redis round trip less per change.
// Every notification of one transaction goes in one call (one command instead of one per change):
// KEYS are the meta hash, the stream and the hashes the entries carry values from; ARGV the
// stream's cap, a generation for a store that has none yet, then five per notification (scope,
// topic, subject, carried field or '', the KEYS index of its hash). The revisions are consecutive.
const NOTIFY_LUA = `
redis.call('HSETNX', KEYS[1], 'generation', ARGV[2])
local n = (#ARGV - 2) / 5
local rev = redis.call('HINCRBY', KEYS[1], 'rev', n) - n
for i = 3, #ARGV, 5 do
  rev = rev + 1
  local entry = {'rev', rev, 'scope', ARGV[i], 'topic', ARGV[i + 1], 'subject', ARGV[i + 2]}
  if ARGV[i + 3] ~= '' then
    entry[#entry + 1] = ARGV[i + 3]
    entry[#entry + 1] = redis.call('HGET', KEYS[tonumber(ARGV[i + 4])], ARGV[i + 2]) or ''
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(entry))
end
return rev
`;

/** The member that marks the allocation index complete (see Keys.allocationIndex). */
export const ALLOCATION_INDEX_COMPLETE = '~complete';

// The lowest `n` addresses of [first, last] not in the index, as offsets from first, in order
// (fewer when fewer are free). Addresses up to from+g are all held iff ZCOUNT(from, from+g) = g+1;
// the first gap lies at an offset no larger than the number held, so a binary search finds each
// gap in O(log^2 n), server-side. A batch of Service events asks for one more than it can take.
const LOWEST_FREE_LUA = `
local first = tonumber(ARGV[1])
local last = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local out = {}
local from = first
while #out < n and from <= last do
  local held = redis.call('ZCOUNT', KEYS[1], from, last)
  if held >= last - from + 1 then break end
  local lo, hi = 0, held
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if redis.call('ZCOUNT', KEYS[1], from, from + mid) < mid + 1 then hi = mid else lo = mid + 1 end
  end
  out[#out + 1] = from + lo - first
  from = from + lo + 1
end
return out
`;

export function encodeScope(scope: ChangeScope): string {
  if (scope === 'all') return 'all';
  return 'rack' in scope ? `rack:${scope.rack}` : `node:${scope.node}`;
}

export function decodeScope(text: string): ChangeScope | undefined {
  if (text === 'all') return 'all';
  if (text.startsWith('rack:')) return { rack: text.slice(5) };
  if (text.startsWith('node:')) return { node: text.slice(5) };
  return undefined;
}

/** What a handler queues inside MULTI. Typed helpers keep key names out of handlers. */
export class TxWriter {
  private readonly notified = new Set<string>();
  private readonly notifications: [scope: string, change: Change][] = [];
  /** Kinds this transaction wrote: each gets one new epoch token, however many of its objects changed. */
  private readonly written = new Set<Kind>();
  /** Objects of the kinds read on every batch, with the text they are stored as (RecordCache.remember). */
  readonly memorable: { key: string; text: string; stored: StoredObject }[] = [];

  constructor(
    readonly multi: ChainableCommander,
    readonly keys: Keys,
  ) {}

  /** `listed`: the stored object is live, so it is in its kind's index already and is not added again. */
  putObject(record: KubeRecord, listed = false): void {
    const stored: StoredObject = { deleted: false, record };
    const name = this.keys.object(record.kind, record.key);
    const text = JSON.stringify(stored);
    this.multi.set(name, text);
    if (!listed) this.multi.sadd(this.keys.index(record.kind), record.key);
    this.written.add(record.kind);
    if (READ_ON_EVERY_BATCH.has(record.kind)) this.memorable.push({ key: name, text, stored });
  }

  tombstone(kind: Kind, key: string, uid: string, resourceVersion: string): void {
    const stored: StoredObject = { deleted: true, kind, key, uid, resourceVersion, deletedAt: new Date().toISOString() };
    const name = this.keys.object(kind, key);
    const text = JSON.stringify(stored);
    this.multi.set(name, text, 'PX', TOMBSTONE_TTL_MS);
    this.multi.srem(this.keys.index(kind), key);
    this.written.add(kind);
    if (READ_ON_EVERY_BATCH.has(kind)) this.memorable.push({ key: name, text, stored });
  }

  /** One change notification, sent after every write; the same change twice in a transaction is sent once. */
  notify(change: Change): void {
    const scope = encodeScope(change.scope);
    const id = `${scope}|${change.topic}|${change.subject}`;
    if (this.notified.has(id)) return;
    this.notified.add(id);
    this.notifications.push([scope, change]);
  }

  /**
   * Queues what goes last in the transaction: the epoch token of every kind written, and every
   * notification in one script call (the values they carry are the final ones).
   */
  finish(): void {
    const k = this.keys;
    for (const kind of this.written) this.multi.set(k.epoch(kind), nextEpochToken());
    this.written.clear();
    const changes = this.notifications.splice(0);
    if (changes.length === 0) return;
    const hashes = [k.meta(), k.changes()];
    const args: string[] = [String(CHANGES_MAXLEN), randomUUID()];
    for (const [scope, change] of changes) {
      const carry = carried(change, k);
      if (carry === undefined) {
        args.push(scope, change.topic, change.subject, '', '0');
        continue;
      }
      let at = hashes.indexOf(carry[1], 2);
      if (at < 0) at = hashes.push(carry[1]) - 1;
      args.push(scope, change.topic, change.subject, carry[0], String(at + 1));
    }
    // The script's text, not its SHA: inside MULTI an EVALSHA that finds no script fails at EXEC,
    // after every other command of the transaction was applied. ioredis sends a script's SHA once
    // it has sent the text on a connection, but a text sent in a MULTI that WATCH then aborted
    // never ran (test/integration/change-notifications.test.ts); a Redis restarted, flushed with
    // SCRIPT FLUSH, or 7.4's eviction of EVAL scripts would do the same. Redis hashes these few
    // hundred bytes once per transaction, which is one per batch.
    this.multi.eval(NOTIFY_LUA, hashes.length, ...hashes, ...args);
  }
}

/**
 * The value a notification carries: field name in the stream entry, and the hash holding it under
 * the change's subject. An intent (subject: its IP); a node's next-hop candidate (subject: the
 * node) in its rack's hash, scope `all` being the nodes without a rack. Nothing for other topics.
 */
function carried(change: Change, k: Keys): [field: string, hash: string] | undefined {
  if (change.topic === 'intent') return ['intent', k.intents()];
  const scope = change.scope;
  if (change.topic === 'nexthops' && scope === 'all') return ['nexthop', k.rackNextHops(UNRACKED)];
  if (change.topic === 'nexthops' && scope !== 'all' && 'rack' in scope) return ['nexthop', k.rackNextHops(scope.rack)];
  return undefined;
}

/**
 * The live objects a handler reads on every event (every Eip, every BgpPeer, the speaker Nodes),
 * kept in this process by the set of keys they were listed in and the epoch token of their kind
 * they were read under. A read whose token is unchanged needs no second round trip for the
 * objects themselves: every write of a kind sets a new token in the same transaction (TxWriter),
 * and the sets read this way (a kind's index, the speakers) are only written together with an
 * object of the kind, so an unchanged token means the same set and the same objects. Inside a
 * transaction the caller WATCHes the epoch, as it would without the cache.
 */
export class RecordCache {
  private readonly bySet = new Map<string, { token: string; records: readonly KubeRecord[] }>();
  /** Single records by Redis key, with the stored text they were parsed from (see `parsed`). */
  private readonly byText = new Map<string, { text: string; stored: StoredObject | undefined }>();
  hits = 0;
  misses = 0;
  /** Stored texts the memo had to parse (`parsed` with a text it did not hold). */
  parses = 0;

  /**
   * The stored object `text` holds, parsed once for as long as the key keeps that text: the same
   * text can only parse to the same object. Bounded (the oldest entries go first), and only used
   * for the few records read on every batch (speaker Nodes, BgpPeers, Eips). Frozen, as above.
   * A text that is not a record gives undefined, or with `strict` throws RACKLB_CORRUPT_RECORD.
   */
  parsed(key: string, text: string | null, opts: { strict?: boolean } = {}): StoredObject | undefined {
    if (text === null) return undefined;
    const entry = this.byText.get(key);
    if (entry !== undefined && entry.text === text) {
      if (entry.stored === undefined && opts.strict) parseStored(text, key);
      return entry.stored;
    }
    this.parses++;
    const stored = opts.strict ? parseStored(text, key) : safeParseStored(text, key);
    this.remember(key, text, stored);
    return stored;
  }

  /**
   * What a committed transaction stored under `key`, as if `parsed` had read it back: the next read
   * that finds the same text takes this object instead of parsing it. Keyed by the text like every
   * entry, so a later write by anyone else (another text) is never mistaken for it. Frozen. It
   * differs from the parsed object only in members set to undefined, which the text leaves out:
   * every reader of these kinds reads such a member as absent, and serializes it the same way.
   * `parsed` keeps what it parses here too (undefined: a text that is no record). Bounded: the
   * entry least recently stored goes first.
   */
  remember(key: string, text: string, stored: StoredObject | undefined): void {
    deepFreeze(stored);
    if (!this.byText.delete(key) && this.byText.size >= PARSED_RECORDS_MAX) this.byText.delete(this.byText.keys().next().value as string);
    this.byText.set(key, { text, stored });
  }

  /** `set`: the Redis key of the set the records were listed in. */
  get<K extends Kind>(_kind: K, set: string, token: string | null): Extract<KubeRecord, { kind: K }>[] | undefined {
    const entry = token === null ? undefined : this.bySet.get(set);
    if (entry === undefined || entry.token !== token) return undefined;
    return entry.records.slice() as Extract<KubeRecord, { kind: K }>[];
  }

  /**
   * The records last kept for `set`, whatever token they were read under: a guess, for a read to
   * send ahead and check against the records read under the current token, never an answer.
   */
  lastSeen<K extends Kind>(_kind: K, set: string): readonly Extract<KubeRecord, { kind: K }>[] | undefined {
    return this.bySet.get(set)?.records as readonly Extract<KubeRecord, { kind: K }>[] | undefined;
  }

  /** The records are frozen: a handler that changed one would change every later event's view. */
  set(set: string, token: string | null, records: readonly KubeRecord[]): void {
    if (token === null) return;
    for (const r of records) deepFreeze(r);
    this.bySet.set(set, { token, records: records.slice() });
  }
}

function deepFreeze(value: unknown): void {
  if (typeof value !== 'object' || value === null || Object.isFrozen(value)) return;
  Object.freeze(value);
  for (const v of Object.values(value)) deepFreeze(v);
}

/** Read helpers over any connection (the watched one inside a transaction). */
export class Reader {
  constructor(
    readonly redis: Redis,
    readonly keys: Keys,
    private readonly cache: RecordCache = new RecordCache(),
  ) {}

  async object(kind: Kind, key: string): Promise<StoredObject | undefined> {
    return parseStored(await this.redis.get(this.keys.object(kind, key)), this.keys.object(kind, key));
  }

  /** A stored object's value as read (by MGET, say); throws RACKLB_CORRUPT_RECORD as `object` does. */
  parseObject(value: string | null, key: string): StoredObject | undefined {
    return parseStored(value, key);
  }

  /** `parseObject` through the text memo (RecordCache.parsed): frozen; throws as it does. */
  parseObjectCached(value: string | null, key: string): StoredObject | undefined {
    return this.cache.parsed(key, value, { strict: true });
  }

  async record<K extends Kind>(kind: K, key: string): Promise<Extract<KubeRecord, { kind: K }> | undefined> {
    const stored = await this.object(kind, key);
    return stored && !stored.deleted ? (stored.record as Extract<KubeRecord, { kind: K }>) : undefined;
  }

  async records<K extends Kind>(kind: K, keys: readonly string[]): Promise<Extract<KubeRecord, { kind: K }>[]> {
    if (keys.length === 0) return [];
    const out: Extract<KubeRecord, { kind: K }>[] = [];
    const values = await this.redis.mget(keys.map((k) => this.keys.object(kind, k)));
    values.forEach((value, i) => {
      const stored = safeParseStored(value, this.keys.object(kind, keys[i] ?? ''));
      if (stored && !stored.deleted && stored.record.kind === kind) out.push(stored.record as Extract<KubeRecord, { kind: K }>);
    });
    return out;
  }

  /** `records`, each parsed only when its stored text changed since this process last read it (RecordCache.parsed); frozen. */
  async recordsCached<K extends Kind>(kind: K, keys: readonly string[]): Promise<Extract<KubeRecord, { kind: K }>[]> {
    if (keys.length === 0) return [];
    const out: Extract<KubeRecord, { kind: K }>[] = [];
    const names = keys.map((k) => this.keys.object(kind, k));
    const values = await this.redis.mget(names);
    values.forEach((value, i) => {
      const stored = this.cache.parsed(names[i] as string, value);
      if (stored && !stored.deleted && stored.record.kind === kind) out.push(stored.record as Extract<KubeRecord, { kind: K }>);
    });
    return out;
  }

  /** Every live object of a kind, sorted by key. Malformed records are skipped, never fatal. */
  async allRecords<K extends Kind>(kind: K): Promise<Extract<KubeRecord, { kind: K }>[]> {
    const keys = (await this.redis.smembers(this.keys.index(kind))).sort();
    return this.records(kind, keys);
  }

  /**
   * `allRecords`, from the store's RecordCache when the kind's epoch token has not moved: one
   * round trip instead of two (a Service or Node event's first reads then go straight to its
   * decision). For small kinds only; the records are frozen.
   */
  async allRecordsCached<K extends Kind>(kind: K): Promise<Extract<KubeRecord, { kind: K }>[]> {
    return this.listedRecordsCached(kind, this.keys.index(kind));
  }

  /** The records of a kind `allRecordsCached` returned last, or none: see RecordCache.lastSeen. */
  allRecordsLastSeen<K extends Kind>(kind: K): readonly Extract<KubeRecord, { kind: K }>[] | undefined {
    return this.cache.lastSeen(kind, this.keys.index(kind));
  }

  /** The speaker Nodes, sorted by name, as `allRecordsCached` reads a kind: their reads skipped while no Node was written. */
  async speakersCached(): Promise<Extract<KubeRecord, { kind: 'Node' }>[]> {
    return this.listedRecordsCached('Node', this.keys.speakers());
  }

  /**
   * The live records of `kind` listed in the set `set`, sorted by key, through the RecordCache.
   * The epoch is read before the set, so a write in between shows as a new token the next time,
   * never as a stale hit.
   */
  private async listedRecordsCached<K extends Kind>(kind: K, set: string): Promise<Extract<KubeRecord, { kind: K }>[]> {
    const tokenRead = this.redis.get(this.keys.epoch(kind));
    const listRead = this.redis.smembers(set);
    listRead.catch(() => undefined);
    const token = await tokenRead;
    const cached = this.cache.get(kind, set, token);
    if (cached !== undefined) {
      this.cache.hits++;
      await listRead;
      return cached;
    }
    this.cache.misses++;
    const records = await this.recordsCached(kind, (await listRead).sort());
    this.cache.set(set, token, records);
    return records;
  }

  /**
   * The lowest `n` IPv4 addresses in [first, last] (as numbers) missing from the allocation index,
   * as offsets from first, lowest first; fewer when fewer are free. Meaningful once the index is complete.
   */
  async lowestFreeOffsets(first: number, last: number, n: number): Promise<number[]> {
    return (this.redis as Redis & { racklbLowestFree(key: string, first: number, last: number, n: number): Promise<number[]> }).racklbLowestFree(this.keys.allocationIndex(), first, last, n);
  }

  /** A hash of JSON values; a malformed entry is skipped (and reported to `onMalformed`), never fatal. */
  async hashJson<T>(key: string, onMalformed?: (field: string, key: string) => void): Promise<Map<string, T>> {
    const raw = await this.redis.hgetall(key);
    const out = new Map<string, T>();
    for (const [field, value] of Object.entries(raw)) {
      try {
        const parsed = JSON.parse(value) as unknown;
        if (typeof parsed !== 'object' || parsed === null) throw new Error('not a JSON object');
        out.set(field, parsed as T);
      } catch {
        onMalformed?.(field, key);
      }
    }
    return out;
  }
}

export function storedVersion(stored: StoredObject | undefined): StoredVersion | undefined {
  if (stored === undefined) return undefined;
  return stored.deleted
    ? { uid: stored.uid, resourceVersion: stored.resourceVersion, deleted: true }
    : { uid: stored.record.uid, resourceVersion: stored.record.resourceVersion, deleted: false };
}

function parseStored(value: string | null, key: string): StoredObject | undefined {
  if (value === null) return undefined;
  try {
    const parsed = JSON.parse(value) as StoredObject;
    if (typeof parsed !== 'object' || parsed === null || typeof parsed.deleted !== 'boolean') throw new Error('not a stored object');
    return parsed;
  } catch (err) {
    throw new RacklbError('RACKLB_CORRUPT_RECORD', `${key}: stored value is not a racklb record (${(err as Error).message})`, { cause: err });
  }
}

function safeParseStored(value: string | null, key: string): StoredObject | undefined {
  try {
    return parseStored(value, key);
  } catch {
    return undefined;
  }
}

export interface TxPlan<T> {
  result: T;
  /** Omitted when the decision is to write nothing (a stale event, an unchanged object). */
  write?: (w: TxWriter) => void;
}

/**
 * The journal line of the event a transaction decides (src/serve/handler.ts). Handed to `transact`,
 * the line goes into the transaction's own MULTI when it writes, so the journal holds exactly what
 * was applied, in the order it was applied, and costs no round trip of its own; a decision to write
 * nothing (a stale event) sends it on the same connection right behind UNWATCH. `journaled` tells
 * the caller whether the line was written, so it never writes a second one.
 */
export interface TxJournal<T> {
  /** The lines, in order: one per event (a batch of events has several). */
  entriesFor(result: T): Record<string, string>[];
  journaled: boolean;
}

/** ioredis statuses of a connection that has closed (set at once; the 'close' event follows on the next tick). */
const LOST: ReadonlySet<string> = new Set(['close', 'reconnecting', 'end']);

/**
 * A transaction's connection from its WATCH to its EXEC. When the connection closes, its WATCH goes
 * with it, but ioredis would send a MULTI issued meanwhile on the next connection (its offline
 * queue), or send an unanswered one there again (autoResendUnfulfilledCommands): that EXEC would
 * apply, unwatched, what was decided on the old connection's reads, over a concurrent writer's
 * change or into a Redis that restarted (test/integration/store-reconnect.test.ts). So EXEC is refused
 * on a connection that closed since WATCH, and a connection that closes during EXEC is disconnected
 * before ioredis can send the transaction again (it reconnects 100 ms or more after the close).
 * A cluster client has a connection per node: the loss of any of them counts (the transaction's
 * node is one of them; another's is a rare 503 more).
 */
class HeldConnection {
  private closed = false;
  private duringExec: (() => void) | undefined;
  /** The connection itself, or a cluster client's connection to each node it knows. */
  private readonly sockets: Redis[];
  private readonly onClose = (): void => {
    this.closed = true;
    this.duringExec?.();
  };

  constructor(private readonly conn: Redis) {
    this.sockets = (conn as { isCluster?: boolean }).isCluster === true ? (conn as unknown as Cluster).nodes('all') : [conn];
    for (const s of this.sockets) s.on('close', this.onClose);
  }

  exec(multi: ChainableCommander): Promise<[Error | null, unknown][] | null> {
    // A new connection still connecting is fine: WATCH, the reads and MULTI wait in its queue, in
    // order, for its first socket. One that closed is not.
    if (this.closed || this.sockets.some((c) => LOST.has(c.status))) {
      return Promise.reject(new RacklbError('RACKLB_STORE_UNAVAILABLE', 'Redis connection lost between WATCH and EXEC: nothing was written; the event is decided again'));
    }
    return new Promise((resolve, reject) => {
      this.duringExec = () => {
        // Transact drops a connection that failed this way, too; this closes it before anything
        // else can run, whatever the caller does.
        this.conn.disconnect();
        reject(new RacklbError('RACKLB_STORE_UNAVAILABLE', 'Redis connection lost during EXEC: the transaction may or may not have been applied; the event is decided again (its version tells)'));
      };
      multi.exec().then(resolve, reject);
    });
  }

  end(): void {
    for (const s of this.sockets) s.off('close', this.onClose);
  }
}

export interface TransactOptions<T> {
  journal?: TxJournal<T>;
}

export interface StoreOptions extends ConnectOptions {
  prefix?: string;
  /** Connections for transactions (WATCH is per connection). */
  poolSize?: number;
}

export class Store {
  readonly keys: Keys;
  readonly redis: Redis;
  readonly reader: Reader;
  /** Small kinds' objects by epoch token (Reader.allRecordsCached), shared by every transaction. */
  readonly recordCache = new RecordCache();
  private readonly idle: Redis[] = [];
  private readonly waiting: ((r: Redis) => void)[] = [];
  private created = 0;
  private readonly poolSize: number;
  private closed = false;
  /** Watched keys whose transactions conflicted lately, and until when they count as contended. */
  private readonly contended = new Map<string, number>();
  /** The end of the queue of this process's transactions on contended keys. */
  private turn: Promise<void> = Promise.resolve();

  constructor(redis: Redis, opts: { prefix?: string; poolSize?: number } = {}) {
    this.keys = new Keys(opts.prefix);
    this.redis = redis;
    defineScripts(redis);
    this.reader = new Reader(redis, this.keys, this.recordCache);
    this.poolSize = opts.poolSize ?? 8;
  }

  static open(url: string, opts: StoreOptions = {}): Store {
    return new Store(connectRedis(url, opts), opts);
  }

  async connect(): Promise<void> {
    if (this.redis.status === 'wait') {
      await this.redis.connect().catch((err: unknown) => {
        const cause = lastConnectionError(this.redis);
        throw storeError(cause && cause.message !== (err as Error)?.message ? new Error(`${(err as Error).message} (${cause.message})`) : err, 'connect');
      });
    }
  }

  async ping(): Promise<void> {
    try {
      await this.redis.ping();
    } catch (err) {
      throw storeError(err, 'PING');
    }
  }

  /**
   * Read, decide, write atomically; retried from the start when a watched key changed meanwhile.
   * `body` must be free of side effects other than reads: it may run several times.
   */
  async transact<T>(watch: readonly string[], body: (r: Reader) => Promise<TxPlan<T>>, opts: TransactOptions<T> = {}): Promise<T> {
    // On a Redis Cluster, WATCH and MULTI/EXEC only work when every key sits in one slot: every
    // key built by Keys carries the `{prefix}` hash tag, and a key that does not is a bug here.
    const tag = `{${this.keys.prefix}}:`;
    const untagged = watch.find((k) => !k.startsWith(tag));
    if (untagged !== undefined) throw new Error(`Store.transact: key ${untagged} lacks the hash tag ${tag}; every transaction must stay in one Redis Cluster slot`);
    // Transactions on keys that conflicted a moment ago take turns within this process: side by side
    // they would mostly fail each other's EXEC and redo all their reads (measured: 5 to 7 attempts
    // per event under 64 concurrent events). WATCH still guards against every other writer.
    // The turn is only ever awaited without a pool connection in hand: a turn holder waiting for a
    // connection held by someone waiting for the turn would wait forever.
    let leave = this.isContended(watch) ? await this.takeTurn() : undefined;
    let conn = await this.acquire();
    let healthy = true;
    try {
      for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
        const outcome = await this.attempt(conn, watch, body, opts);
        if (outcome.done) return outcome.result;
        // A watched key changed: decide again on fresh data, and from now on take turns.
        this.markContended(watch);
        if (leave === undefined) {
          this.release(conn, true);
          leave = await this.takeTurn();
          conn = await this.acquire();
        }
      }
      throw new RacklbError('RACKLB_STORE_CONFLICT', `gave up after ${MAX_ATTEMPTS} attempts: the keys kept changing under concurrent writers (${watch.join(', ')})`);
    } catch (err) {
      if (!(err instanceof RacklbError) || err.code === 'RACKLB_STORE_UNAVAILABLE') healthy = false;
      throw err instanceof RacklbError ? err : storeError(err, 'transaction');
    } finally {
      leave?.();
      this.release(conn, healthy);
    }
  }

  /** One read-decide-write on `conn`: done with its result, or not done because a watched key changed. */
  private async attempt<T>(conn: Redis, watch: readonly string[], body: (r: Reader) => Promise<TxPlan<T>>, opts: TransactOptions<T>): Promise<{ done: true; result: T } | { done: false }> {
    const held = new HeldConnection(conn);
    try {
      // Not awaited before the body: Redis answers a connection's commands in order, so the body's
      // first reads follow WATCH without waiting a round trip for its OK.
      const watched = watch.length > 0 ? conn.watch(...watch) : undefined;
      watched?.catch(() => undefined);
      let plan: TxPlan<T>;
      try {
        plan = await body(new Reader(conn, this.keys, this.recordCache));
        await watched;
      } catch (err) {
        await this.unwatch(conn).catch(() => undefined);
        throw err;
      }
      if (!plan.write) {
        const unwatched = this.unwatch(conn);
        if (opts.journal) {
          // Sent now, behind UNWATCH on the same connection: one round trip for both.
          unwatched.catch(() => undefined);
          const appended = opts.journal.entriesFor(plan.result).map((fields) => this.appendJournalOn(conn, fields));
          for (const a of appended) a.catch(() => undefined);
          await unwatched;
          await Promise.all(appended);
          opts.journal.journaled = true;
        } else await unwatched;
        return { done: true, result: plan.result };
      }
      const multi = conn.multi();
      const writer = new TxWriter(multi, this.keys);
      plan.write(writer);
      writer.finish();
      if (opts.journal) for (const fields of opts.journal.entriesFor(plan.result)) multi.xadd(...this.journalLine(fields));
      const results = await held.exec(multi);
      if (results === null) return { done: false };
      for (const [err] of results) {
        if (err) throw storeError(err, 'EXEC');
      }
      for (const m of writer.memorable) this.recordCache.remember(m.key, m.text, m.stored);
      if (opts.journal) opts.journal.journaled = true;
      return { done: true, result: plan.result };
    } finally {
      held.end();
    }
  }

  private isContended(watch: readonly string[]): boolean {
    if (this.contended.size === 0) return false;
    const now = Date.now();
    return watch.some((k) => (this.contended.get(k) ?? 0) > now);
  }

  private markContended(watch: readonly string[]): void {
    const now = Date.now();
    if (this.contended.size > 1000) for (const [k, until] of this.contended) if (until <= now) this.contended.delete(k);
    for (const k of watch) this.contended.set(k, now + CONTENDED_MS);
  }

  /** Waits for this process's turn on contended keys; resolves with the function that ends it. */
  private takeTurn(): Promise<() => void> {
    let end!: () => void;
    const mine = new Promise<void>((resolve) => (end = resolve));
    const before = this.turn;
    this.turn = before.then(() => mine);
    return before.then(() => end);
  }

  async appendJournal(fields: Record<string, string>): Promise<void> {
    return this.appendJournalOn(this.redis, fields);
  }

  /** XADD's arguments for one journal line, inside a transaction or on its own: the stream, its cap, the fields. */
  private journalLine(fields: Record<string, string>): [string, 'MAXLEN', '~', string, '*', ...string[]] {
    const flat: string[] = [];
    for (const k in fields) flat.push(k, fields[k] as string);
    return [this.keys.journal(), 'MAXLEN', '~', String(JOURNAL_MAXLEN), '*', ...flat];
  }

  private async appendJournalOn(conn: Redis, fields: Record<string, string>): Promise<void> {
    try {
      await conn.xadd(...this.journalLine(fields));
    } catch (err) {
      throw storeError(err, 'XADD journal');
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const conn of this.idle.splice(0)) conn.disconnect();
    this.redis.disconnect();
  }

  /**
   * UNWATCH on the connection that holds the watches. A cluster client sends a keyless command to
   * any node, so there an empty transaction on racklb's slot clears them instead (EXEC drops every
   * watch of the connection).
   */
  private async unwatch(conn: Redis): Promise<void> {
    if ((conn as { isCluster?: boolean }).isCluster === true) await conn.multi().exists(this.keys.meta()).exec();
    else await conn.unwatch();
  }

  private async acquire(): Promise<Redis> {
    const conn = this.idle.pop();
    if (conn) return conn;
    if (this.created < this.poolSize) {
      this.created++;
      const dup = this.redis.duplicate();
      dup.on('error', () => undefined);
      defineScripts(dup);
      // A cluster client of a function runs without an offline queue (redis.ts): connect it
      // before its first command. A failure shows on that command, as it would anyway.
      if ((dup as { isCluster?: boolean }).isCluster === true && dup.status === 'wait') await dup.connect().catch(() => undefined);
      return dup;
    }
    return new Promise((resolve) => this.waiting.push(resolve));
  }

  private release(conn: Redis, healthy: boolean): void {
    if (this.closed) {
      conn.disconnect();
      return;
    }
    // A connection whose WATCH state is unknown after an error is dropped, not reused.
    if (!healthy) {
      conn.disconnect();
      this.created--;
      const next = this.waiting.shift();
      if (next) void this.acquire().then(next);
      return;
    }
    const next = this.waiting.shift();
    if (next) next(conn);
    else this.idle.push(conn);
  }
}

function defineScripts(redis: Redis): void {
  // Outside transactions only (a read): on NOSCRIPT ioredis sends the text and retries.
  if (!('racklbLowestFree' in redis)) redis.defineCommand('racklbLowestFree', { numberOfKeys: 1, lua: LOWEST_FREE_LUA });
}
