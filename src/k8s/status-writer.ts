/**
 * The status writer: the one racklb component that writes to the Kubernetes API. It follows the
 * store (the change stream wakes it within milliseconds; a short poll of the kinds' epoch tokens
 * catches what the stream does not announce, such as a new Eip; the speakers' session hashes are
 * read every few seconds) and brings each object's status to what the store says.
 *
 * Why a process of its own: the functions answer from Redis alone and never wait for the API
 * server, so an API server that is slow, down or refusing writes can never hold up an event or
 * make a broker retry it. This writer absorbs that instead: each object's write goes through a
 * keyed queue (queue.ts) with exponential backoff; a 409 is answered by reading the object again and
 * reapplying; a 404 means the object is gone and the write is done; every failure is logged and
 * counted (racklb_status_write_failures_total).
 */
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import { Counter, Gauge, type Registry } from 'prom-client';
import { PatchStrategy, setHeaderOptions, type V1Service } from '@kubernetes/client-node';
import { LABELS, type Allocation, type BgpPeerRecord, type Kind } from '../core/types.js';
import { EFFECTIVE_BGPCONF } from '../../functions/on-bgppeer/handler.js';
import { parseServiceIps } from '../store/keys.js';
import type { Store } from '../store/store.js';
import { watchedKind } from './kinds.js';
import { reasonOf, statusOf, type KubeApi } from './kube.js';
import { KeyedQueue, type RunResult } from './queue.js';
import {
  bgpConfStatus,
  bgpPeerStatus,
  eipStatus,
  sameStatus,
  serviceChange,
  serviceTargets,
  type LiveService,
  type ServiceTarget,
  type SessionView,
  type StoreView,
} from './status.js';

export interface StatusWriterOptions {
  api: KubeApi;
  store: Store;
  logger: Logger;
  registry: Registry;
  /** Longest wait between two looks at the store when nothing announces a change. */
  pollMs?: number;
  /** How often the speakers' session reports are read for BgpPeer status. */
  sessionsEveryMs?: number;
  /** How often every object is compared with the API again, whatever racklb remembers writing. */
  fullEveryMs?: number;
  concurrency?: number;
  backoffMs?: number;
  maxBackoffMs?: number;
  /** Read-and-reapply rounds on 409 before the write counts as failed (and backs off). */
  conflictRetries?: number;
}

type Job =
  | { kind: 'Service'; target: ServiceTarget | { key: string; namespace: string; name: string; release: true }; pools: StoreView['eips']; mayRemove: boolean }
  | { kind: 'Eip' | 'BgpPeer' | 'BgpConf'; name: string; status: unknown };

type Outcome = 'written' | 'unchanged' | 'gone';

class Conflict extends Error {}

export class StatusWriter {
  private readonly queue: KeyedQueue<Job>;
  /** Per object, the job last brought to completion: an unchanged desired state is not rewritten. */
  private readonly done = new Map<string, string>();
  /** Per object, the job last handed to the queue and not finished yet. */
  private readonly queued = new Map<string, string>();
  /** Managed Services of the previous pass, to notice one that left racklb's hands. */
  private lastServices = new Set<string>();
  /**
   * Services racklb no longer manages whose ingress and label it has not taken back yet: kept until
   * a release ran while the store was complete (before that, nothing may be removed).
   */
  private readonly releasing = new Set<string>();
  private stopped = false;
  private follower: Redis | undefined;
  private loop: Promise<void> | undefined;
  private lastFull = 0;
  private lastSessions = 0;
  private lastEpochs = '';
  readonly writes: Counter<'kind' | 'outcome'>;
  readonly conflicts: Counter<'kind'>;
  readonly failures: Counter<'kind' | 'reason'>;
  private readonly mergePatch;

  constructor(private readonly o: StatusWriterOptions) {
    const { registry } = o;
    this.writes = new Counter({ name: 'racklb_status_writes_total', help: 'Status writes by kind and outcome (written, unchanged, gone)', labelNames: ['kind', 'outcome'], registers: [registry] });
    this.conflicts = new Counter({ name: 'racklb_status_write_conflicts_total', help: '409 answers, each followed by a fresh read and a new attempt', labelNames: ['kind'], registers: [registry] });
    this.failures = new Counter({ name: 'racklb_status_write_failures_total', help: 'Failed status writes (retried with backoff), by kind and reason', labelNames: ['kind', 'reason'], registers: [registry] });
    this.queue = new KeyedQueue<Job>({
      run: (key, job) => this.run(key, job),
      concurrency: o.concurrency ?? 4,
      backoffMs: o.backoffMs ?? 500,
      maxBackoffMs: o.maxBackoffMs ?? 60_000,
      onRetry: (key, job, reason, attempt, waitMs) => {
        this.failures.inc({ kind: job.kind, reason });
        o.logger.warn({ object: key, reason, attempt, retryInMs: waitMs }, 'status write failed; retrying');
      },
    });
    const queue = this.queue;
    new Gauge({
      name: 'racklb_status_backlog',
      help: 'Objects whose status write is waiting, in flight, or backing off after a failure',
      registers: [registry],
      collect() {
        this.set(queue.size());
      },
    });
    this.mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch, { middleware: [o.api.timeoutMiddleware()], middlewareMergeStrategy: 'append' });
  }

  private get callOptions() {
    return { middleware: [this.o.api.timeoutMiddleware()], middlewareMergeStrategy: 'append' as const };
  }

  /** Follows the store until stop(). */
  start(): void {
    this.loop = this.follow();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.follower?.disconnect();
    this.queue.stop();
    // Writes in flight may wait on a hung API server until their deadline; nothing needs them now.
    await Promise.race([this.loop?.catch(() => undefined), new Promise((r) => setTimeout(r, 1000).unref())]);
  }

  /** Resolves when no write is pending (tests and one-shot runs). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  backlog(): number {
    return this.queue.size();
  }

  private async follow(): Promise<void> {
    const k = this.o.store.keys;
    const pollMs = this.o.pollMs ?? 1000;
    this.follower = this.o.store.redis.duplicate();
    this.follower.on('error', () => undefined);
    let lastId = '$';
    while (!this.stopped) {
      try {
        // Blocks until a change is announced, or pollMs passes.
        const read = (await this.follower.xread('COUNT', 1000, 'BLOCK', pollMs, 'STREAMS', k.changes(), lastId)) as [string, [string, string[]][]][] | null;
        const entries = read?.[0]?.[1] ?? [];
        if (entries.length > 0) lastId = entries[entries.length - 1]?.[0] ?? lastId;
        else if (lastId === '$') {
          const last = await this.follower.xrevrange(k.changes(), '+', '-', 'COUNT', 1);
          if (last[0]) lastId = last[0][0];
        }
        const now = Date.now();
        const full = now - this.lastFull >= (this.o.fullEveryMs ?? 600_000);
        const sessions = now - this.lastSessions >= (this.o.sessionsEveryMs ?? 5000);
        const epochs = (await this.o.store.redis.mget((['Service', 'Eip', 'BgpPeer', 'BgpConf', 'Node'] as Kind[]).map((kind) => k.epoch(kind)))).join('|');
        const complete = await this.o.store.redis.hget(k.meta(), 'complete');
        const changed = entries.length > 0 || `${epochs}|${complete}` !== this.lastEpochs;
        this.lastEpochs = `${epochs}|${complete}`;
        if (changed || full) {
          await this.pass(full);
          this.lastSessions = now;
          if (full) this.lastFull = now;
        } else if (sessions) {
          // Only the speakers' session reports may have moved: BgpPeer status alone.
          await this.passPeers();
          this.lastSessions = now;
        }
      } catch (err) {
        if (this.stopped) break;
        this.o.logger.warn({ err: String(err) }, 'status writer: cannot read the store; retrying');
        await new Promise((r) => setTimeout(r, 1000));
      }
    }
  }

  /** Reads the store once and queues a write for every object whose desired status changed. */
  async pass(full = false): Promise<void> {
    const view = await readStoreView(this.o.store);
    if (full) {
      this.done.clear();
      this.queued.clear();
    }
    const mayRemove = view.complete;

    const targets = serviceTargets(view);
    const current = new Set<string>();
    for (const t of targets) {
      current.add(t.key);
      this.offer(`Service/${t.key}`, { kind: 'Service', target: t, pools: view.eips, mayRemove });
    }
    // A Service that left racklb's hands (opted out, deleted, no longer a LoadBalancer) loses what
    // racklb gave it; after a restart, the pool label tells which Services those are. The label
    // query runs on its own, so a slow API server never holds up this pass.
    const release = (key: string): void => {
      const [namespace = '', name = ''] = key.split('/');
      this.offer(`Service/${key}`, { kind: 'Service', target: { key, namespace, name, release: true }, pools: view.eips, mayRemove });
    };
    for (const key of this.lastServices) if (!current.has(key)) this.releasing.add(key);
    for (const key of this.releasing) {
      if (current.has(key)) this.releasing.delete(key);
      else release(key);
    }
    if (full) {
      void this.labelledServices().then((keys) => {
        for (const key of keys) {
          if (this.lastServices.has(key) || this.stopped) continue;
          this.releasing.add(key);
          release(key);
        }
      });
    }
    this.lastServices = current;

    for (const eip of view.eips) this.offer(`Eip/${eip.name}`, { kind: 'Eip', name: eip.name, status: eipStatus(eip, view.allocations) });
    for (const peer of view.bgpPeers) this.offer(`BgpPeer/${peer.name}`, { kind: 'BgpPeer', name: peer.name, status: bgpPeerStatus(peer, view) });
    // Only the BgpConf named "default" drives the speakers (as in PorterLB); it alone gets a status.
    const conf = view.bgpConfs.find((c) => c.name === EFFECTIVE_BGPCONF);
    if (conf) this.offer(`BgpConf/${conf.name}`, { kind: 'BgpConf', name: conf.name, status: bgpConfStatus(conf, view) });
  }

  private async passPeers(): Promise<void> {
    const view = await readStoreView(this.o.store, { peersOnly: true });
    for (const peer of view.bgpPeers) this.offer(`BgpPeer/${peer.name}`, { kind: 'BgpPeer', name: peer.name, status: bgpPeerStatus(peer, view) });
  }

  private offer(key: string, job: Job): void {
    const json = JSON.stringify(job);
    // Already written, or already queued (possibly backing off): nothing new to do.
    if (this.done.get(key) === json || this.queued.get(key) === json) return;
    this.queued.set(key, json);
    this.queue.push(key, job);
  }

  /** Keys of the Services carrying a pool label, PorterLB's or OpenELB's (one list each: a selector's terms are ANDed). */
  private async labelledServices(): Promise<string[]> {
    try {
      const keys = new Set<string>();
      for (const label of LABELS.pool) {
        const list = await this.o.api.getJson(`/api/v1/services?labelSelector=${encodeURIComponent(label)}`);
        const items = Array.isArray(list.items) ? (list.items as { metadata?: { name?: string; namespace?: string } }[]) : [];
        for (const i of items) keys.add(`${i.metadata?.namespace ?? ''}/${i.metadata?.name ?? ''}`);
      }
      return [...keys];
    } catch (err) {
      this.o.logger.warn({ reason: reasonOf(err) }, 'cannot list labelled Services; released Services are checked on the next full pass');
      return [];
    }
  }

  private async run(key: string, job: Job): Promise<RunResult> {
    const rounds = (this.o.conflictRetries ?? 5) + 1;
    for (let round = 0; round < rounds; round++) {
      try {
        const outcome = job.kind === 'Service' ? await this.writeService(job) : await this.writeCustom(job);
        this.writes.inc({ kind: job.kind, outcome });
        if (outcome === 'written') this.o.logger.info({ object: key }, 'status written');
        if (outcome === 'gone') this.o.logger.info({ object: key }, 'object no longer exists; nothing to write');
        const json = JSON.stringify(job);
        this.done.set(key, json);
        if (job.kind === 'Service' && 'release' in job.target && job.mayRemove) this.releasing.delete(job.target.key);
        if (this.queued.get(key) === json) this.queued.delete(key);
        return { done: true };
      } catch (err) {
        if (err instanceof Conflict || statusOf(err) === 409) {
          this.conflicts.inc({ kind: job.kind });
          continue;
        }
        return { done: false, reason: reasonOf(err) };
      }
    }
    return { done: false, reason: 'conflicts' };
  }

  private async writeService(job: Extract<Job, { kind: 'Service' }>): Promise<Outcome> {
    const { namespace, name } = job.target;
    let live: V1Service;
    try {
      live = await this.o.api.core.readNamespacedServiceStatus({ name, namespace }, this.callOptions);
    } catch (err) {
      if (statusOf(err) === 404) return 'gone';
      throw err;
    }
    const view: LiveService = {
      labels: { ...(live.metadata?.labels ?? {}) },
      ingress: (live.status?.loadBalancer?.ingress ?? []).map((i) => ({ ...(i.ip ? { ip: i.ip } : {}), ...(i.hostname ? { hostname: i.hostname } : {}) })),
    };
    const target = 'release' in job.target ? undefined : job.target;
    const change = serviceChange(target, view, job.pools, job.mayRemove);
    if (change.labels === undefined && change.ingress === undefined) return 'unchanged';
    let resourceVersion = live.metadata?.resourceVersion;
    try {
      if (change.labels !== undefined) {
        // The resourceVersion makes the write conditional: another writer in between means 409.
        const updated = await this.o.api.core.patchNamespacedService(
          { name, namespace, body: { metadata: { resourceVersion, labels: change.labels } } },
          this.mergePatch,
        );
        resourceVersion = updated.metadata?.resourceVersion;
      }
      if (change.ingress !== undefined) {
        await this.o.api.core.patchNamespacedServiceStatus(
          { name, namespace, body: { metadata: { resourceVersion }, status: { loadBalancer: { ingress: change.ingress } } } },
          this.mergePatch,
        );
      }
    } catch (err) {
      if (statusOf(err) === 404) return 'gone';
      throw err;
    }
    return 'written';
  }

  private async writeCustom(job: Extract<Job, { kind: 'Eip' | 'BgpPeer' | 'BgpConf' }>): Promise<Outcome> {
    const w = watchedKind(job.kind);
    const ref = { group: w.group, version: w.version, plural: w.plural, name: job.name };
    let live: Record<string, unknown>;
    try {
      live = (await this.o.api.custom.getClusterCustomObjectStatus(ref, this.callOptions)) as Record<string, unknown>;
    } catch (err) {
      if (statusOf(err) === 404) return 'gone';
      throw err;
    }
    if (sameStatus(job.kind, job.status, live.status)) return 'unchanged';
    try {
      // A whole-status replace carrying the resourceVersion just read: exactly PorterLB's
      // Status().Update, conditional on nobody having written in between.
      await this.o.api.custom.replaceClusterCustomObjectStatus({ ...ref, body: { ...live, status: job.status } }, this.callOptions);
    } catch (err) {
      if (statusOf(err) === 404) return 'gone';
      throw err;
    }
    return 'written';
  }
}

/** Everything the status computations need, read from the store in one go (`peersOnly`: what BgpPeer status needs). */
export async function readStoreView(store: Store, opts: { peersOnly?: boolean } = {}): Promise<StoreView> {
  const r = store.reader;
  const k = store.keys;
  const complete = (await r.redis.hget(k.meta(), 'complete')) === '1';
  const speakerNames = (await r.redis.smembers(k.speakers())).sort();
  const speakerNodes = await r.records('Node', speakerNames);
  const speakers: StoreView['speakers'] = [];
  for (const node of speakerNodes) {
    const raw = await r.redis.get(k.peers(node.name));
    let peers: BgpPeerRecord[] = [];
    try {
      const parsed = raw ? (JSON.parse(raw) as unknown) : [];
      peers = Array.isArray(parsed) ? (parsed as BgpPeerRecord[]) : [];
    } catch {
      peers = [];
    }
    speakers.push({ node, peers, sessions: await r.hashJson<SessionView>(k.sessions(node.name)) });
  }
  if (opts.peersOnly) {
    return { complete, services: [], serviceIps: {}, allocations: new Map(), eips: [], bgpPeers: await r.allRecords('BgpPeer'), bgpConfs: [], speakers };
  }
  return {
    complete,
    services: await r.allRecords('Service'),
    serviceIps: Object.fromEntries(Object.entries(await r.redis.hgetall(k.serviceIps())).map(([key, value]) => [key, parseServiceIps(value)])),
    allocations: await r.hashJson<Allocation>(k.allocations()),
    eips: await r.allRecords('Eip'),
    bgpPeers: await r.allRecords('BgpPeer'),
    bgpConfs: await r.allRecords('BgpConf'),
    speakers,
  };
}
