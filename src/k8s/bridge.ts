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
 */
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { makeInformer, type Informer, type KubernetesListObject, type KubernetesObject, type ObjectCache } from '@kubernetes/client-node';
import { markComplete } from '../state/complete.js';
import type { Kind } from '../core/types.js';
import type { Store } from '../store/store.js';
import { deletedObject, type Deliverer } from './deliver.js';
import { listPath, metaOf, storeKey, WATCHED, type KubeObject, type WatchedKind } from './kinds.js';
import { reasonOf, type KubeApi } from './kube.js';
import type { ResultSink } from './resync.js';
import { expectLive, findVanished, invalidReason, waitForConvergence, type Expectation } from './sync.js';

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
}

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
  private readonly kinds: readonly WatchedKind[];

  constructor(private readonly o: BridgeOptions) {
    this.kinds = o.kinds ?? WATCHED;
    this.lists = new Counter({ name: 'racklb_bridge_lists_total', help: 'Full lists per kind: one at start, one after every expired watch', labelNames: ['kind'], registers: [o.registry] });
    this.skipped = new Counter({ name: 'racklb_bridge_status_only_updates_total', help: 'Eip, BgpPeer and BgpConf updates not forwarded: only their status changed (racklb writes it, the functions never read it)', labelNames: ['kind'], registers: [o.registry] });
    this.errors = new Counter({ name: 'racklb_bridge_watch_errors_total', help: 'List or watch failures, each followed by a restart with backoff', labelNames: ['kind', 'reason'], registers: [o.registry] });
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
  async start(): Promise<{ deleted: number; markedComplete: boolean }> {
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

  private async firstSync(): Promise<{ deleted: number; markedComplete: boolean }> {
    const store = this.o.store;
    if (!store) {
      await this.o.deliverer.idle();
      return { deleted: 0, markedComplete: false };
    }
    const expectations: Expectation[] = [];
    let deleted = 0;
    for (const w of this.kinds) {
      const informer = this.informers.get(w.kind);
      if (!informer) continue;
      const objects = informer.list() as unknown as KubeObject[];
      const listed = new Set(objects.map((o) => storeKey(w, o)));
      for (const o of objects) {
        if (invalidReason(o) !== undefined) continue;
        const e = expectLive(w, o);
        // A status-only update was not forwarded: the store can only reach the version that was.
        const forwarded = this.delivered.get(`${w.kind}/${e.key}`);
        expectations.push(forwarded ? { ...e, resourceVersion: forwarded.resourceVersion } : e);
      }
      const { vanished } = await findVanished(store, w, listed, this.listVersions.get(w.kind) ?? '');
      for (const v of vanished) {
        this.o.logger.info({ kind: w.kind, key: v.key }, 'stored object no longer in the cluster: sending its delete');
        this.o.deliverer.enqueue({ w, action: 'delete', object: deletedObject(w, v.key, v.uid, v.resourceVersion) });
        expectations.push({ w, key: v.key, uid: v.uid, resourceVersion: v.resourceVersion, deleted: true });
        deleted++;
      }
    }
    await this.o.deliverer.idle();
    if (this.stopped) return { deleted, markedComplete: false };
    const refused = this.o.sink?.rejected ?? new Map<string, string>();
    const open = await waitForConvergence(
      store,
      expectations.filter((e) => !refused.has(`${e.w.kind}/${e.key}`)),
      this.o.convergenceTimeoutMs ?? 120_000,
      100,
      () => this.stopped,
    );
    if (this.stopped) return { deleted, markedComplete: false };
    if (open.length > 0) {
      this.o.logger.warn({ notInStore: open.slice(0, 20).map((e) => `${e.w.kind}/${e.key}`), count: open.length }, 'first sync: the store does not reflect every object; not marking it complete (see racklb events, or run racklb resync)');
      return { deleted, markedComplete: false };
    }
    if (this.o.markComplete ?? true) {
      await markComplete(store);
      this.o.logger.info({ objects: expectations.length }, 'first sync done: store marked complete');
      return { deleted, markedComplete: true };
    }
    return { deleted, markedComplete: false };
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
