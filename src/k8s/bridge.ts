/**
 * `racklb bridge`: feeds the functions without Knative. One client-node informer (list, then watch
 * from the list's resourceVersion) per watched kind; every add, update and delete becomes the
 * CloudEvent ApiServerSource would send, delivered by a Deliverer (deliver.ts).
 *
 * The informer relists on its own when a watch expires (410 Gone): objects that changed meanwhile
 * come as updates, new ones as adds, vanished ones as deletes. Any other watch or list failure
 * stops a client-node informer, so the bridge restarts it with backoff.
 *
 * With a store, the first sync is a full resync: stored objects the cluster no longer holds get a
 * delete, and once the store reflects the whole list the bridge marks it complete, vouching for it
 * exactly as docs/operations.md describes.
 *
 * It then keeps checking that the store still carries that mark under the generation it vouched
 * for. A Redis restarted empty (or replaced by another server) has neither, and nothing would ever
 * fill it again: no object changed, so no event comes, and the speakers hold every route forever.
 * The bridge then sends what the store lacks from its informers' caches and vouches again.
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { makeInformer, type Informer, type KubernetesListObject, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import { ensureGeneration, markCompleteIf, readCompleteness } from '../state/complete.js';
import type { Kind } from '../core/types.js';
import type { Store } from '../store/store.js';
import { deletedObject, type Deliverer } from './deliver.js';
import { listPath, metaOf, storeKey, WATCHED, type KubeObject, type WatchedKind } from './kinds.js';
import { reasonOf, type KubeApi } from './kube.js';
import type { ResultSink } from './resync.js';
import { compareResourceVersions, sameContent } from '../core/versions.js';
import { expectLive, findVanished, invalidReason, parseForStore, storedIdentities, waitForConvergence, type Expectation } from './sync.js';

export interface BridgeOptions {
  api: KubeApi;
  deliverer: Deliverer;
  logger: Logger;
  registry: Registry;
  /** For the first sync's deletes and the complete mark; without it the bridge only forwards. */
  store?: Store;
  markComplete?: boolean;
  convergenceTimeoutMs?: number;
  kinds?: readonly WatchedKind[];
  /** First restart delay after an informer failure; doubles up to 30 s. */
  restartBackoffMs?: number;
  /** Refusals seen by the deliverer: refused objects will never be stored, so the first sync does not wait for them. */
  sink?: ResultSink;
  /** How often to check that the store still carries the complete mark this bridge set (default 1 s). */
  storeCheckMs?: number;
}

type SyncResult = { deleted: number; markedComplete: boolean };

type KubeInformer = Informer<KubernetesObject> & ObjectCache<KubernetesObject>;

/**
 * Kinds whose status racklb writes (status-writer.ts) and never reads. An update of one of them
 * that changes nothing but status is the status writer's own write coming back: forwarding it
 * would make on-service re-evaluate a whole Eip pool after every Service it allocates.
 */
const STATUS_ONLY_KINDS: ReadonlySet<Kind> = new Set<Kind>(['Eip', 'BgpPeer', 'BgpConf']);

/** Everything of such an object that the functions read. */
function contentOf(o: KubeObject): string {
  const m = (o.metadata ?? {}) as Record<string, unknown>;
  return JSON.stringify([o.apiVersion, m.uid, m.labels ?? {}, m.annotations ?? {}, m.deletionTimestamp ?? null, o.spec ?? null]);
}

export class Bridge {
  private readonly informers = new Map<Kind, KubeInformer>();
  private readonly listVersions = new Map<Kind, string>();
  private readonly listedOnce = new Set<Kind>();
  private readonly restarts = new Map<Kind, number>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private stopped = false;
  private ready = false;
  /** For STATUS_ONLY_KINDS: what was last forwarded of each object, and at which version. */
  private readonly delivered = new Map<string, { content: string; resourceVersion: string }>();
  private readonly skipped: Counter<'kind'>;
  private readonly lists: Counter<'kind'>;
  private readonly errors: Counter<'kind' | 'reason'>;
  private readonly resyncs: Counter<'reason'>;
  private readonly kinds: readonly WatchedKind[];
  /** Generation of the store this bridge last marked complete. */
  private vouched: string | undefined;

  constructor(private readonly o: BridgeOptions) {
    this.kinds = o.kinds ?? WATCHED;
    this.lists = new Counter({ name: 'racklb_bridge_lists_total', help: 'Full lists per kind: one at start, one after every expired watch', labelNames: ['kind'], registers: [o.registry] });
    this.skipped = new Counter({ name: 'racklb_bridge_status_only_updates_total', help: 'Eip, BgpPeer and BgpConf updates not forwarded: only their status changed (racklb writes it, the functions never read it)', labelNames: ['kind'], registers: [o.registry] });
    this.errors = new Counter({ name: 'racklb_bridge_watch_errors_total', help: 'List or watch failures, each followed by a restart with backoff', labelNames: ['kind', 'reason'], registers: [o.registry] });
    this.resyncs = new Counter({
      name: 'racklb_bridge_store_resyncs_total',
      help: 'Full resyncs after the first sync: store_lost when the store no longer carries the complete mark the bridge set (Redis restarted empty or replaced), not_complete when the previous sync could not mark it',
      labelNames: ['reason'],
      registers: [o.registry],
    });
    const isReady = (): boolean => this.ready;
    new Gauge({
      name: 'racklb_bridge_synced',
      help: '1 once the first full list of every kind is delivered (and, with a store, reflected in it)',
      registers: [o.registry],
      collect() {
        this.set(isReady() ? 1 : 0);
      },
    });
  }

  isReady(): boolean {
    return this.ready;
  }

  /** Starts every informer and returns after the first sync (see the module comment). */
  async start(): Promise<SyncResult> {
    for (const w of this.kinds) {
      const informer = makeInformer<KubernetesObject>(this.o.api.kc, listPath(w), () => this.list(w)) as KubeInformer;
      const forward = (action: 'add' | 'update' | 'delete') => (obj: KubernetesObject) => {
        const object = obj as unknown as KubeObject;
        if (STATUS_ONLY_KINDS.has(w.kind)) {
          const id = `${w.kind}/${storeKey(w, object)}`;
          if (action === 'delete') this.delivered.delete(id);
          else {
            const content = contentOf(object);
            if (action === 'update' && this.delivered.get(id)?.content === content) {
              this.skipped.inc({ kind: w.kind });
              return;
            }
            this.delivered.set(id, { content, resourceVersion: metaOf(object).resourceVersion });
          }
        }
        this.o.deliverer.enqueue({ w, action, object });
      };
      informer.on('add', forward('add'));
      informer.on('update', forward('update'));
      informer.on('delete', forward('delete'));
      informer.on('error', (err: unknown) => this.restart(w, informer, err));
      this.informers.set(w.kind, informer);
      await informer.start();
    }
    // A first list that failed is retried by restart(); the first sync waits for every kind.
    while (!this.stopped && this.listedOnce.size < this.kinds.length) await this.sleep(100);
    const result = await this.firstSync();
    this.ready = !this.stopped;
    const store = this.o.store;
    if (store && (this.o.markComplete ?? true) && !this.stopped) void this.guardStore(store);
    return result;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    for (const i of this.informers.values()) await i.stop();
    this.o.deliverer.stop();
  }

  /** The list an informer starts from: raw objects, with the snapshot's resourceVersion kept. */
  private async list(w: WatchedKind): Promise<KubernetesListObject<KubernetesObject>> {
    const relist = this.listedOnce.has(w.kind);
    const { items, resourceVersion } = await this.o.api.list(w);
    this.lists.inc({ kind: w.kind });
    this.listVersions.set(w.kind, resourceVersion);
    this.listedOnce.add(w.kind);
    this.restarts.set(w.kind, 0);
    if (relist) this.o.logger.info({ kind: w.kind, objects: items.length, resourceVersion }, 'relisted (watch expired or failed): changes made meanwhile follow as events');
    return { apiVersion: w.apiVersion, kind: `${w.kind}List`, metadata: { resourceVersion }, items: items as unknown as KubernetesObject[] };
  }

  private restart(w: WatchedKind, informer: KubeInformer, err: unknown): void {
    if (this.stopped) return;
    const n = (this.restarts.get(w.kind) ?? 0) + 1;
    this.restarts.set(w.kind, n);
    const delay = Math.min(30_000, (this.o.restartBackoffMs ?? 500) * 2 ** Math.min(n - 1, 10));
    const reason = reasonOf(err);
    this.errors.inc({ kind: w.kind, reason });
    this.o.logger.warn({ kind: w.kind, reason, err: err instanceof Error ? err.message : String(err), retryInMs: delay }, 'list/watch failed; restarting');
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) void informer.start().catch((e: unknown) => this.restart(w, informer, e));
    }, delay);
    this.timers.add(t);
  }

  private async firstSync(): Promise<SyncResult> {
    const started = Date.now();
    const store = this.o.store;
    if (!store) {
      await this.o.deliverer.idle();
      return { deleted: 0, markedComplete: false };
    }
    const generation = await ensureGeneration(store);
    const expectations: Expectation[] = [];
    let deleted = 0;
    for (const w of this.kinds) {
      const informer = this.informers.get(w.kind);
      if (!informer) continue;
      // The informer's own first list sends every object as an add.
      const objects = informer.list() as unknown as KubeObject[];
      for (const o of objects) {
        if (invalidReason(o) !== undefined) continue;
        const e = expectLive(w, o);
        // A status-only update was not forwarded: the store can only reach the version that was.
        const forwarded = this.delivered.get(`${w.kind}/${e.key}`);
        expectations.push(forwarded ? { ...e, resourceVersion: forwarded.resourceVersion } : e);
      }
      deleted += await this.deleteVanished(store, w, objects, expectations);
    }
    await this.o.deliverer.idle();
    if (this.stopped) return { deleted, markedComplete: false };
    // Redis failing now is no reason to stop forwarding: the store guard tries again once it is back.
    const markedComplete = await this.vouch(store, generation, expectations, 'first sync', started).catch((err: unknown) => {
      this.o.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'first sync: cannot check the store (Redis unreachable?); not marking it complete yet');
      return false;
    });
    return { deleted, markedComplete };
  }

  /** Sends a delete for each stored object the list lacks (see findVanished) and expects it gone. */
  private async deleteVanished(store: Store, w: WatchedKind, objects: readonly KubeObject[], expectations: Expectation[]): Promise<number> {
    const listed = new Set(objects.map((o) => storeKey(w, o)));
    const { vanished } = await findVanished(store, w, listed, this.listVersions.get(w.kind) ?? '');
    for (const v of vanished) {
      this.o.logger.info({ kind: w.kind, key: v.key }, 'stored object no longer in the cluster: sending its delete');
      this.o.deliverer.enqueue({ w, action: 'delete', object: deletedObject(w, v.key, v.uid, v.resourceVersion) });
      expectations.push({ w, key: v.key, uid: v.uid, resourceVersion: v.resourceVersion, deleted: true });
    }
    return vanished.length;
  }

  /**
   * Waits until the store reflects every expectation, then marks it complete: only if Redis still
   * has the generation it had before the sync read or sent anything, since what was checked on one
   * server says nothing about the next. Returns whether it marked.
   */
  private async vouch(store: Store, generation: string, expectations: readonly Expectation[], what: string, started: number): Promise<boolean> {
    const refused = this.o.sink?.rejected ?? new Map<string, string>();
    const { open, lost } = await this.settle(
      store,
      expectations.filter((e) => !refused.has(`${e.w.kind}/${e.key}`)),
      generation,
    );
    if (this.stopped) return false;
    if (lost) {
      this.o.logger.warn({ generation }, `${what}: Redis was replaced while the bridge waited for it (restarted empty?); not marking it complete, starting over`);
      return false;
    }
    if (open.length > 0) {
      this.o.logger.warn({ notInStore: open.slice(0, 20).map((e) => `${e.w.kind}/${e.key}`), count: open.length }, `${what}: the store does not reflect every object; not marking it complete (see racklb events, or run racklb resync)`);
      return false;
    }
    if (!(this.o.markComplete ?? true)) return false;
    if (!(await markCompleteIf(store, generation))) {
      this.o.logger.warn({ generation }, `${what}: Redis was replaced just before the complete mark; not marking it, starting over`);
      return false;
    }
    this.vouched = generation;
    this.o.logger.info({ objects: expectations.length, generation, durationMs: Date.now() - started }, `${what} done: store marked complete`);
    return true;
  }

  /**
   * waitForConvergence in short slices, checking between them that Redis still has `generation`:
   * an expectation that held is never looked at again, so a server that restarted empty meanwhile
   * must end the wait. A moment without Redis counts as "not yet".
   */
  private async settle(store: Store, expectations: readonly Expectation[], generation: string): Promise<{ open: Expectation[]; lost: boolean }> {
    const deadline = Date.now() + (this.o.convergenceTimeoutMs ?? 120_000);
    let open = [...expectations];
    for (;;) {
      try {
        if ((await readCompleteness(store)).generation !== generation) return { open, lost: true };
        open = await waitForConvergence(store, open, Math.max(0, Math.min(2000, deadline - Date.now())), 100, () => this.stopped);
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
      if (open.length === 0 || this.stopped || Date.now() >= deadline) return { open, lost: false };
    }
  }

  /**
   * Checks every storeCheckMs that the store still carries this bridge's complete mark (or gets one
   * at last), and runs a full resync when it does not. Redis unreachable is not a reason: the store
   * may come back whole; what comes back is judged then.
   */
  private async guardStore(store: Store): Promise<void> {
    const every = this.o.storeCheckMs ?? 1000;
    let failed = 0;
    while (!this.stopped) {
      await this.sleep(Math.min(Math.max(every, 30_000), every * 2 ** Math.min(failed, 10)));
      if (this.stopped) return;
      let seen: { generation: string | undefined; complete: boolean };
      try {
        seen = await readCompleteness(store);
      } catch {
        continue;
      }
      if (this.vouched !== undefined && seen.complete && seen.generation === this.vouched) {
        failed = 0;
        continue;
      }
      // A kind whose informer is restarting has a cache that may be stale: wait for its relist.
      const down = this.kinds.filter((w) => (this.restarts.get(w.kind) ?? 0) > 0).map((w) => w.kind);
      if (down.length > 0) continue;
      const reason = this.vouched === undefined ? 'not_complete' : 'store_lost';
      this.resyncs.inc({ reason });
      if (reason === 'store_lost') {
        this.o.logger.warn(
          { vouchedGeneration: this.vouched, generation: seen.generation ?? null, complete: seen.complete },
          'store lost the state the bridge marked complete (Redis restarted empty, or another server): full resync; speakers hold every route until it is marked complete again',
        );
      } else {
        this.o.logger.info({ generation: seen.generation ?? null, complete: seen.complete }, 'store not marked complete by this bridge yet: full resync');
      }
      this.vouched = undefined;
      const marked = await this.fullResync(store).catch((err: unknown) => {
        this.o.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'full resync failed (Redis unreachable?); trying again');
        return false;
      });
      failed = marked ? 0 : failed + 1;
    }
  }

  /**
   * The first sync again, from the informers' caches (which the watches keep current): an add or
   * update for each listed object the store lacks or holds differently, a delete for each vanished
   * one, then vouch. What the store already holds is not sent again, but still checked.
   */
  private async fullResync(store: Store): Promise<boolean> {
    const started = Date.now();
    const generation = await ensureGeneration(store);
    const expectations: Expectation[] = [];
    let sent = 0;
    let deleted = 0;
    for (const w of this.kinds) {
      const informer = this.informers.get(w.kind);
      if (!informer) continue;
      const objects = informer.list() as unknown as KubeObject[];
      const byKey = new Map(objects.map((o) => [storeKey(w, o), o]));
      const stored = await storedIdentities(store, w, [...byKey.keys()]);
      for (const [key, o] of byKey) {
        const parsed = parseForStore(o);
        if ('invalid' in parsed) continue;
        const e = expectLive(w, o);
        const s = stored.get(key);
        const order = s === undefined ? undefined : compareResourceVersions(s.resourceVersion, e.resourceVersion);
        // At the version stored but read into another record, it is sent: racklb reads it differently
        // since it was stored (an upgrade), and the function applies it again.
        if (s?.record !== undefined && s.uid === e.uid && ((order !== undefined && order > 0) || sameContent(s.record, parsed.record))) {
          expectations.push({ ...e, resourceVersion: s.resourceVersion });
          continue;
        }
        if (STATUS_ONLY_KINDS.has(w.kind)) this.delivered.set(`${w.kind}/${key}`, { content: contentOf(o), resourceVersion: e.resourceVersion });
        this.o.deliverer.enqueue({ w, action: s === undefined || s.deleted ? 'add' : 'update', object: o });
        expectations.push(e);
        sent++;
      }
      deleted += await this.deleteVanished(store, w, objects, expectations);
    }
    this.o.logger.info({ sent, deletesSent: deleted, alreadyStored: expectations.length - sent - deleted }, 'full resync: objects sent; waiting for the store to reflect them');
    await this.o.deliverer.idle();
    if (this.stopped) return false;
    return this.vouch(store, generation, expectations, 'full resync', started);
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }
}
