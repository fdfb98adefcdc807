/**
 * The speaker: keeps one gobgpd equal to the desired state of its node and rack.
 *
 * Level-triggered: change notifications say *what* to re-read (an intent's or a next hop's entry
 * carries the value its transaction wrote, so those are not read back); the speaker always diffs
 * the whole desired state against what gobgpd holds. It reads gobgpd's own view (ListPath/ListPeer)
 * on start, after gobgpd reconnects and periodically, so a restarted speaker adopts its sidecar
 * and a restarted gobgpd is provisioned again. It never withdraws because the store is
 * unreachable or not proven complete (docs/operations.md, "the empty-store guard").
 */
import { networkInterfaces } from 'node:os';
import type { Logger } from 'pino';
import type { Redis } from 'ioredis';
import { effectiveConf } from '../src/core/peers.js';
import type { BgpConfRecord, BgpPeerRecord, Family, NextHopCandidate, NodeRecord, ServiceIpIntent } from '../src/core/types.js';
import { EFFECTIVE_BGPCONF } from '../functions/on-bgppeer/handler.js';
import type { GobgpClient, GobgpGlobalConfig, GobgpPath, GobgpPeerConfig, GobgpPeerStatus } from '../src/gobgp/client.js';
import type { Reader, Store } from '../src/store/store.js';
import { decodeScope } from '../src/store/store.js';
import { isCandidate, isIntent, readCandidatesByRack, readIntents } from '../src/state/read.js';
import { UNRACKED } from '../src/store/keys.js';
import { isRacklbError } from '../src/errors.js';
import type { SpeakerMetrics } from './metrics.js';
import { hostPrefix } from '../src/core/intents.js';
import { addPathSendMax, globalConfig, nextHopFilter, PathTable, pathKey, pathsForIntent, peerConfig, planPaths, planPeers, sameGlobal, type LocalAddress } from './plan.js';

export interface SpeakerOptions {
  node: string;
  store: Store;
  gobgp: GobgpClient;
  logger: Logger;
  metrics: SpeakerMetrics;
  /** The speaker's own addresses; the OS's by default. */
  localAddresses?: () => LocalAddress[];
  /** Full comparison with gobgpd's own view, as a safety net, this often. */
  resyncIntervalMs?: number;
  statusIntervalMs?: number;
}

interface Desired {
  node: NodeRecord | undefined;
  conf: BgpConfRecord | undefined;
  peers: BgpPeerRecord[];
  candidates: NextHopCandidate[];
  /** `candidates` by where they are stored: rack (UNRACKED for nodes without one) -> node -> candidate. */
  candidatesByRack: Map<string, Map<string, NextHopCandidate>>;
  intents: Map<string, ServiceIpIntent>;
  generation: string | undefined;
  complete: boolean;
}

export function osLocalAddresses(): LocalAddress[] {
  const out: LocalAddress[] = [];
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) {
      if (a.internal || !a.cidr) continue;
      out.push({ address: a.address, prefixLength: Number(a.cidr.split('/')[1]), family: a.family === 'IPv6' ? 'ipv6' : 'ipv4' });
    }
  }
  return out;
}

const FAMILIES: Family[] = ['ipv4', 'ipv6'];

/**
 * A change after a quiet spell is reconciled at once; changes arriving faster than this are taken
 * together, one reconcile (one gRPC stream, one burst of BGP UPDATEs) per interval. In a bulk of
 * Service adds the speakers otherwise spent a reconcile, a log line and an UPDATE per Service.
 */
const MIN_RECONCILE_INTERVAL_MS = 20;
/**
 * While changes keep coming, each reconcile that had to wait doubles the interval, up to this; the
 * first one after a quiet spell (no change for the current interval) goes out at once and brings it
 * back to the minimum. Measured in the bulk benchmark: at 20 ms the three speakers still reconciled
 * one or two Services at a time and their CPU (about 3 ms a reconcile) was taken from the function
 * on the same two cores; a change in a stream waits at most this long.
 */
const MAX_RECONCILE_INTERVAL_MS = 160;

export class Speaker {
  private readonly o: Required<Omit<SpeakerOptions, 'localAddresses'>> & { localAddresses: () => LocalAddress[] };
  private desired: Desired | undefined;
  /** Generation of the store whose state we last trusted as complete. */
  private trustedGeneration: string | undefined;
  private pathsByIp = new Map<string, GobgpPath[]>();
  /** Every path of `pathsByIp` by key, kept up to date IP by IP. */
  private desiredPaths = new PathTable();
  private advertised = new PathTable();
  /**
   * The next reconcile compares every path, not only those of the IPs that changed: at start, after
   * gobgpd's view was read again (it may hold anything) and after a failed reconcile.
   */
  private planAll = true;
  /** performance.now() when the last reconcile started (see MIN_RECONCILE_INTERVAL_MS). */
  private lastReconcileAt = -Infinity;
  /** The current interval between reconciles, MIN_ to MAX_RECONCILE_INTERVAL_MS. */
  private reconcileInterval = MIN_RECONCILE_INTERVAL_MS;
  private appliedPeers = new Map<string, GobgpPeerConfig>();
  private gobgpGlobal: GobgpGlobalConfig | undefined;
  private gobgpReady = false;
  private lastRev = 0;
  private lastStreamId = '0-0';
  private dirtyAll = true;
  private dirtyIps = new Set<string>();
  private needGobgpView = true;
  private skippedLogged = new Set<string>();
  private malformedLogged = new Set<string>();
  private running: Promise<void> = Promise.resolve();
  private scheduled = false;
  /** Set while the follower reads the changes a waiting reconcile should take (see `drainBeforeReconcile`). */
  private draining: Promise<void> | undefined;
  /** The next-hop filter of the current peers and local addresses (see computeDesiredPaths). */
  private hopFilter: ReturnType<typeof nextHopFilter> | undefined;
  private stopped = false;
  private follower: Redis | undefined;
  private watch: { close(): void } | undefined;
  private timers: NodeJS.Timeout[] = [];
  private sessions = new Map<string, GobgpPeerStatus>();
  private peerNames = new Map<string, string>();

  constructor(opts: SpeakerOptions) {
    this.o = { resyncIntervalMs: 30_000, statusIntervalMs: 2_000, localAddresses: osLocalAddresses, ...opts };
  }

  get log(): Logger {
    return this.o.logger;
  }

  async start(): Promise<void> {
    void this.followChanges();
    void this.keepGobgp();
    this.timers.push(
      setInterval(() => {
        this.needGobgpView = true;
        this.schedule();
      }, this.o.resyncIntervalMs),
      setInterval(() => void this.reportStatus(), this.o.statusIntervalMs),
    );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.watch?.close();
    this.follower?.disconnect();
    await this.running.catch(() => undefined);
  }

  /** Resolves when the speaker has nothing left to do (tests, lab readiness). */
  async idle(): Promise<void> {
    while (this.scheduled) await this.running.catch(() => undefined);
    await this.running.catch(() => undefined);
  }

  isInSync(): boolean {
    return this.gobgpReady && this.desired !== undefined && !this.scheduled && !this.needGobgpView;
  }

  // ---- Redis side -------------------------------------------------------------------------

  private async followChanges(): Promise<void> {
    let backoff = 100;
    while (!this.stopped) {
      try {
        await this.loadAll();
        backoff = 100;
        this.follower ??= this.createFollower();
        while (!this.stopped) {
          const res = (await this.follower.xread('COUNT', 1000, 'BLOCK', 5000, 'STREAMS', this.o.store.keys.changes(), this.lastStreamId)) as [string, [string, string[]][]][] | null;
          if (!res) continue;
          const gap = (await this.applyChanges(res[0]?.[1] ?? [])) || (await this.drainBeforeReconcile(this.follower));
          if (gap) {
            this.log.info({ lastRev: this.lastRev }, 'gap in change notifications: reloading the whole desired state');
            break;
          }
        }
      } catch (err) {
        if (this.stopped) return;
        this.o.metrics.storeErrors.inc();
        this.log.warn({ err: String(err) }, 'Redis unreachable or failing: keeping every announced route, retrying');
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  private createFollower(): Redis {
    const conn = this.o.store.redis.duplicate();
    conn.on('error', () => undefined);
    return conn;
  }

  /** Reads everything this speaker needs; a handful of commands. */
  private async loadAll(): Promise<void> {
    const r = this.o.store.reader;
    const k = this.o.store.keys;
    const meta = await r.redis.hgetall(k.meta());
    const last = (await r.redis.xrevrange(k.changes(), '+', '-', 'COUNT', 1))[0];
    const small = await this.loadSmall(r);
    const intents = await readIntents(r, this.malformed);
    this.desired = { ...small, intents, generation: meta.generation, complete: meta.complete === '1' };
    this.lastRev = Number(meta.rev ?? 0);
    this.lastStreamId = last?.[0] ?? '0-0';
    this.updateTrust();
    this.dirtyAll = true;
    this.schedule();
  }

  /** Logs a malformed record once per key and field; the speaker goes on without it. */
  private readonly malformed = (field: string, key: string): void => {
    const id = `${key}|${field}`;
    if (this.malformedLogged.has(id)) return;
    this.malformedLogged.add(id);
    this.log.error({ key, field }, 'malformed record in Redis: skipped; every other route is unaffected');
  };

  /** A record that does not parse keeps the value we had: never a reason to withdraw. */
  private async recordOrKeep<K extends 'Node' | 'BgpConf'>(r: Reader, kind: K, key: string, previous: Extract<Desired['node'] | Desired['conf'], { kind: K }> | undefined) {
    try {
      return await r.record(kind, key);
    } catch (err) {
      if (!isRacklbError(err, 'RACKLB_CORRUPT_RECORD')) throw err;
      this.malformed(key, r.keys.object(kind, key));
      return previous;
    }
  }

  private async loadSmall(r: Reader): Promise<Pick<Desired, 'node' | 'conf' | 'peers' | 'candidates' | 'candidatesByRack'>> {
    const k = this.o.store.keys;
    // One round trip instead of four: the records together, and the candidates of the rack the node
    // was in (read again below only if it moved). A NotReady node leaves gobgpd that much sooner.
    const known = this.desired?.node;
    const guess = known === undefined ? undefined : readCandidatesByRack(r, known.rack, this.malformed);
    guess?.catch(() => undefined);
    const [node, conf, rawPeers] = await Promise.all([
      this.recordOrKeep(r, 'Node', this.o.node, this.desired?.node),
      this.recordOrKeep(r, 'BgpConf', EFFECTIVE_BGPCONF, this.desired?.conf),
      r.redis.get(k.peers(this.o.node)),
    ]);
    let peers: BgpPeerRecord[] = [];
    if (rawPeers) {
      try {
        const parsed = JSON.parse(rawPeers) as unknown;
        if (!Array.isArray(parsed)) throw new Error('not a list');
        peers = parsed as BgpPeerRecord[];
      } catch {
        this.malformed('', k.peers(this.o.node));
        peers = this.desired?.peers ?? [];
      }
    }
    const candidatesByRack = guess !== undefined && known !== undefined && node?.rack === known.rack ? await guess : await readCandidatesByRack(r, node?.rack, this.malformed);
    return { node, conf, peers, candidatesByRack, candidates: flatten(candidatesByRack) };
  }

  /** Applies notifications; returns true when a gap means the whole state must be reloaded. */
  private async applyChanges(entries: [string, string[]][]): Promise<boolean> {
    const desired = this.desired;
    if (!desired) return true;
    let reloadSmall = false;
    let reloadMeta = false;
    // Per IP, the intent its last entry carried ('' when removed); undefined when the entry carries
    // none (written by an older racklb) and the intent must be read.
    const ips = new Map<string, string | undefined>();
    // A node's candidate as its entry carried it ('' when removed): [rack, node, candidate].
    const hops: [string, string, string][] = [];
    for (const [id, fields] of entries) {
      const f = fieldsOf(fields);
      const rev = Number(f.rev);
      if (rev !== this.lastRev + 1) return true;
      this.lastRev = rev;
      this.lastStreamId = id;
      const scope = decodeScope(f.scope ?? '');
      const rack = desired.node?.rack;
      const mine = scope === 'all' || (scope !== undefined && ('node' in scope ? scope.node === this.o.node : rack === undefined || scope.rack === rack));
      if (!mine) continue;
      if (f.topic === 'intent' && f.subject) ips.set(f.subject, f.intent);
      else if (f.topic === 'nexthops' && f.subject && f.nexthop !== undefined && scope !== undefined && (scope === 'all' || 'rack' in scope)) hops.push([scope === 'all' ? UNRACKED : scope.rack, f.subject, f.nexthop]);
      else reloadSmall = true;
      if (f.topic === 'conf') reloadMeta = true;
    }
    const r = this.o.store.reader;
    const k = this.o.store.keys;
    const unread = [...ips].filter(([, v]) => v === undefined).map(([ip]) => ip);
    if (unread.length > 0) {
      const values = await r.redis.hmget(k.intents(), ...unread);
      unread.forEach((ip, i) => ips.set(ip, values[i] ?? ''));
    }
    for (const [ip, v] of ips) {
      if (!v) desired.intents.delete(ip);
      else {
        try {
          const intent = JSON.parse(v) as unknown;
          if (!isIntent(intent)) throw new Error('not a route intent');
          desired.intents.set(ip, intent);
        } catch {
          this.malformed(ip, k.intents());
          continue;
        }
      }
      this.dirtyIps.add(ip);
    }
    if (reloadSmall) {
      Object.assign(desired, await this.loadSmall(r));
      this.dirtyAll = true;
    } else if (hops.length > 0) {
      // A node's next hop changed (NotReady, say): taken from the entries, no read on the way to gobgpd.
      for (const [rack, node, value] of hops) {
        let inRack = desired.candidatesByRack.get(rack);
        if (inRack === undefined) desired.candidatesByRack.set(rack, (inRack = new Map()));
        if (!value) inRack.delete(node);
        else {
          try {
            const candidate = JSON.parse(value) as unknown;
            if (!isCandidate(candidate)) throw new Error('not a next-hop candidate');
            inRack.set(node, candidate);
          } catch {
            this.malformed(node, k.rackNextHops(rack));
          }
        }
      }
      desired.candidates = flatten(desired.candidatesByRack);
      this.dirtyAll = true;
    }
    if (reloadMeta) {
      const meta = await r.redis.hgetall(k.meta());
      desired.complete = meta.complete === '1';
      desired.generation = meta.generation;
      this.updateTrust();
    }
    // Entries for other racks or nodes wake every speaker; only those with something to do reconcile
    // (a NotReady node's own speaker then has the two cores to itself sooner).
    if (ips.size > 0 || hops.length > 0 || reloadSmall || reloadMeta) this.schedule();
    return false;
  }

  /**
   * Under a stream of changes the next reconcile waits out its interval: the follower
   * reads what arrived meanwhile just before it starts, so that it takes all of it and each speaker
   * reads once per reconcile, not once per change (bulk: every Service event woke all three
   * speakers for an XREAD and an HMGET, and their CPU was taken from the functions on the same cores).
   * Returns true on a gap, as applyChanges does.
   */
  private async drainBeforeReconcile(follower: Redis): Promise<boolean> {
    const wait = this.lastReconcileAt + this.reconcileInterval - performance.now();
    if (!this.scheduled || wait <= 0 || this.stopped) return false;
    let done!: () => void;
    this.draining = new Promise((resolve) => (done = resolve));
    try {
      await sleep(wait);
      const res = (await follower.xread('COUNT', 1000, 'STREAMS', this.o.store.keys.changes(), this.lastStreamId)) as [string, [string, string[]][]][] | null;
      return res ? await this.applyChanges(res[0]?.[1] ?? []) : false;
    } finally {
      this.draining = undefined;
      done();
    }
  }

  /** The empty-store guard: trust a store generation only once it is marked complete. */
  private updateTrust(): void {
    const d = this.desired;
    if (!d) return;
    if (d.complete && d.generation) {
      if (this.trustedGeneration !== d.generation) this.log.info({ generation: d.generation }, 'store is complete: withdrawals allowed');
      this.trustedGeneration = d.generation;
    } else if (this.trustedGeneration !== undefined || !d.complete) {
      if (this.trustedGeneration !== undefined) this.log.warn({ generation: d.generation ?? null }, 'store is not marked complete (restarted empty?): holding every announced route until it is');
      this.trustedGeneration = undefined;
    }
    this.o.metrics.holding.set(this.trustedGeneration ? 0 : 1);
  }

  private mayWithdraw(): boolean {
    return this.trustedGeneration !== undefined && this.desired?.generation === this.trustedGeneration;
  }

  // ---- gobgpd side ------------------------------------------------------------------------

  private async keepGobgp(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.o.gobgp.waitReady(5000);
        this.gobgpGlobal = await this.o.gobgp.getGlobal();
        this.needGobgpView = true;
        const ended = new Promise<void>((resolve) => {
          this.watch = this.o.gobgp.watchPeers(
            (ev) => {
              const cur = this.sessions.get(ev.neighborAddress);
              if (cur) this.sessions.set(ev.neighborAddress, { ...cur, sessionState: ev.sessionState, adminState: ev.adminState });
              void this.reportStatus();
            },
            (err) => {
              if (!this.stopped) this.log.warn({ err: err ? String(err) : undefined }, 'gobgpd event stream ended: gobgpd restarted or unreachable');
              resolve();
            },
          );
        });
        this.gobgpReady = true;
        this.log.info({ bgpStarted: this.gobgpGlobal !== undefined }, 'connected to gobgpd');
        this.schedule();
        await ended;
        this.gobgpReady = false;
      } catch (err) {
        this.gobgpReady = false;
        if (!this.stopped) this.log.warn({ err: String(err) }, 'gobgpd not reachable, retrying');
      }
      if (!this.stopped) await sleep(300);
    }
  }

  // ---- reconcile --------------------------------------------------------------------------

  private schedule(): void {
    if (this.scheduled || this.stopped) return;
    this.scheduled = true;
    this.running = this.running
      .catch(() => undefined)
      .then(async () => {
        // Started at once: a burst of notifications is taken together by the interval below (and
        // drainBeforeReconcile), and a lone change should not wait for the event loop's other work.
        const wait = this.lastReconcileAt + this.reconcileInterval - performance.now();
        if (wait > 0) {
          await sleep(wait);
          this.reconcileInterval = Math.min(this.reconcileInterval * 2, MAX_RECONCILE_INTERVAL_MS);
        } else {
          this.reconcileInterval = MIN_RECONCILE_INTERVAL_MS;
        }
        // Bounded: a reconcile never waits on Redis for long (gobgpd is re-provisioned from memory
        // while Redis is away).
        if (this.draining) await Promise.race([this.draining, sleep(MIN_RECONCILE_INTERVAL_MS)]);
        this.scheduled = false;
        this.lastReconcileAt = performance.now();
        await this.reconcile();
      });
  }

  private async reconcile(): Promise<void> {
    const desired = this.desired;
    if (!desired || !this.gobgpReady) return;
    const stopTimer = this.o.metrics.reconcileSeconds.startTimer();
    try {
      if (this.needGobgpView) {
        this.needGobgpView = false;
        await this.readGobgpView();
      }
      const node = desired.node;
      const conf = effectiveConf(desired.conf, node?.rack);
      if (!node || !conf) {
        this.log.warn({ hasNode: !!node, hasBgpConf: !!desired.conf }, 'no Node record or no BgpConf "default" yet: leaving gobgpd as it is');
        return;
      }
      const global = globalConfig(node, conf);
      if ('error' in global) {
        this.log.error({ reason: global.error }, 'cannot configure BGP');
        return;
      }
      if (!this.gobgpGlobal || !sameGlobal(this.gobgpGlobal, global)) {
        if (this.gobgpGlobal) {
          this.log.warn({ from: this.gobgpGlobal, to: global }, 'BGP global settings changed: restarting BGP in gobgpd (sessions reset)');
          await this.o.gobgp.stopBgp();
          this.advertised.clear();
          this.sessions.clear();
        }
        await this.o.gobgp.startBgp(global);
        this.gobgpGlobal = global;
        this.dirtyAll = true;
      }

      // After a change of a few Service IPs only their prefixes can differ: plan those alone, so a
      // notification costs the same whatever the number of routes (bulk: 12 ms of CPU per route
      // went to comparing all 30,000 paths on every notification).
      const prefixes = this.computeDesiredPaths(desired);
      const plan = prefixes === undefined ? planPaths(this.desiredPaths, this.advertised) : planPaths(this.desiredPaths.ofPrefixes(prefixes), this.advertised.ofPrefixes(prefixes));
      const hold = !this.mayWithdraw();
      if (hold && plan.withdraw.length > 0) this.log.warn({ held: plan.withdraw.length }, 'store not proven complete: not withdrawing paths that are no longer desired');
      // Adds first: a next hop replaced under one key is never absent in between.
      if (plan.add.length > 0) {
        await this.o.gobgp.addPaths(plan.add);
        for (const p of plan.add) this.advertised.set(pathKey(p), p);
      }
      if (!hold && plan.withdraw.length > 0) {
        await this.o.gobgp.deletePaths(plan.withdraw);
        for (const p of plan.withdraw) this.advertised.delete(pathKey(p));
      }
      if (plan.add.length || (!hold && plan.withdraw.length)) this.log.info({ added: plan.add.length, withdrawn: hold ? 0 : plan.withdraw.length }, 'paths reconciled');

      // Peers after paths, so a new session starts with the full table.
      let largest = 1;
      for (const paths of this.pathsByIp.values()) largest = Math.max(largest, paths.length);
      const sendMax = addPathSendMax(largest);
      const wanted = desired.peers.map((p) => peerConfig(p, sendMax));
      this.peerNames = new Map(desired.peers.map((p) => [p.neighborAddress, p.name]));
      const current = [...this.sessions.values()];
      const peerPlan = planPeers(wanted, current, this.appliedPeers);
      for (const p of peerPlan.add) {
        await this.o.gobgp.addPeer(p);
        this.appliedPeers.set(p.neighborAddress, p);
        this.log.info({ peer: this.peerNames.get(p.neighborAddress), neighbor: p.neighborAddress, peerAs: p.peerAs }, 'peer added');
      }
      for (const p of peerPlan.update) {
        await this.o.gobgp.updatePeer(p);
        this.appliedPeers.set(p.neighborAddress, p);
        this.log.info({ peer: this.peerNames.get(p.neighborAddress), neighbor: p.neighborAddress }, 'peer updated');
      }
      for (const addr of peerPlan.remove) {
        if (hold) {
          this.log.warn({ neighbor: addr }, 'store not proven complete: keeping a peer that is no longer assigned');
          continue;
        }
        await this.o.gobgp.deletePeer(addr);
        this.appliedPeers.delete(addr);
        this.log.info({ neighbor: addr }, 'peer removed');
      }
      if (peerPlan.add.length || peerPlan.update.length || peerPlan.remove.length) await this.refreshSessions();
      this.o.metrics.pathsAnnounced.set(this.advertised.size);
    } catch (err) {
      this.o.metrics.reconcileErrors.inc();
      this.needGobgpView = true;
      this.log.error({ err: String(err) }, 'reconcile failed; will read gobgpd again and retry');
      setTimeout(() => this.schedule(), 1000).unref();
    } finally {
      stopTimer();
    }
  }

  /** What gobgpd holds right now: the truth we diff against. */
  private async readGobgpView(): Promise<void> {
    this.planAll = true;
    this.gobgpGlobal = await this.o.gobgp.getGlobal();
    this.advertised.clear();
    if (this.gobgpGlobal) {
      for (const family of FAMILIES) for (const p of await this.o.gobgp.listPaths(family)) this.advertised.set(pathKey(p), p);
    }
    await this.refreshSessions();
  }

  private async refreshSessions(): Promise<void> {
    if (!this.gobgpGlobal) {
      this.sessions = new Map();
      return;
    }
    // Built aside, then swapped in: emptied before the await, a reconcile running meanwhile saw no
    // peers, added one gobgpd already had, failed ("can't overwrite the existing peer") and retried a
    // second later (seen under load in the bulk benchmark).
    const sessions = new Map<string, GobgpPeerStatus>();
    for (const s of await this.o.gobgp.listPeers()) sessions.set(s.neighborAddress, s);
    this.sessions = sessions;
  }

  /**
   * Brings `pathsByIp` and `desiredPaths` up to date; returns the prefixes whose paths may differ
   * from gobgpd's, or undefined when every path must be compared.
   */
  private computeDesiredPaths(desired: Desired): Set<string> | undefined {
    // Reading the OS's addresses and parsing every peer's subnet cost more than planning one Service
    // IP: done when every path is computed again (the node, its peers or its rack changed) and at
    // every full comparison with gobgpd (start, every 30 s), not for each change of a few IPs.
    if (this.hopFilter === undefined || this.dirtyAll || this.planAll) this.hopFilter = nextHopFilter(desired.peers, this.o.localAddresses());
    const filter = this.hopFilter;
    const onSkip = (nextHop: string, node: string): void => {
      if (this.skippedLogged.has(nextHop)) return;
      this.skippedLogged.add(nextHop);
      this.log.info({ nextHop, nextHopNode: node, reason: filter.explain(nextHop) }, 'next hop not announced');
    };
    let prefixes: Set<string> | undefined = new Set<string>();
    const recompute = (ip: string): void => {
      for (const p of this.pathsByIp.get(ip) ?? []) {
        this.desiredPaths.delete(pathKey(p));
        prefixes?.add(p.prefix);
      }
      const intent = desired.intents.get(ip);
      if (!intent) {
        this.pathsByIp.delete(ip);
      } else {
        const paths = pathsForIntent(intent, desired.candidates, (h) => filter.accepts(h), onSkip);
        this.pathsByIp.set(ip, paths);
        for (const p of paths) {
          this.desiredPaths.set(pathKey(p), p);
          prefixes?.add(p.prefix);
        }
      }
      // gobgpd may hold a path of this IP that no longer appears on either side here.
      try {
        prefixes?.add(hostPrefix(ip));
      } catch {
        // Not an address: no path of ours can carry it.
      }
    };
    if (this.dirtyAll) {
      prefixes = undefined;
      this.pathsByIp.clear();
      this.desiredPaths.clear();
      this.skippedLogged.clear();
      for (const ip of desired.intents.keys()) recompute(ip);
    } else {
      for (const ip of this.dirtyIps) recompute(ip);
    }
    if (this.planAll) prefixes = undefined;
    this.planAll = false;
    this.dirtyAll = false;
    this.dirtyIps.clear();
    return prefixes;
  }

  // ---- status -----------------------------------------------------------------------------

  private async reportStatus(): Promise<void> {
    if (this.stopped) return;
    try {
      if (this.gobgpReady && this.gobgpGlobal) await this.refreshSessions();
    } catch {
      // gobgpd going away is noticed by the event stream.
    }
    const k = this.o.store.keys;
    const now = new Date().toISOString();
    let up = 0;
    const fields: string[] = [];
    for (const s of this.sessions.values()) {
      if (s.sessionState === 'established') up++;
      fields.push(
        s.neighborAddress,
        JSON.stringify({
          peer: this.peerNames.get(s.neighborAddress) ?? null,
          neighborAddress: s.neighborAddress,
          sessionState: s.sessionState,
          adminState: s.adminState,
          uptimeSeconds: s.uptimeSeconds,
          prefixesSent: s.prefixesSent,
          prefixesReceived: s.prefixesReceived,
          // GoBGP's message counters: the BgpPeer status (racklb status-writer) shows them as PorterLB did.
          messages: s.messages ?? null,
          lastError: s.lastError ?? null,
          updatedAt: now,
        }),
      );
    }
    this.o.metrics.sessionsUp.set(up);
    try {
      const multi = this.o.store.redis.multi().del(k.sessions(this.o.node));
      if (fields.length) multi.hset(k.sessions(this.o.node), ...fields);
      // `addresses` lets `racklb explain` apply the same subnet rule (plan.ts nextHopFilter) as this speaker.
      multi.hset(k.speakerStatus(this.o.node), 'lastSeen', now, 'gobgpd', this.gobgpReady ? 'connected' : 'unreachable', 'paths', String(this.advertised.size), 'holding', this.mayWithdraw() ? '0' : '1', 'rev', String(this.lastRev), 'addresses', JSON.stringify(this.o.localAddresses()));
      await multi.exec();
    } catch {
      // Status is best effort; Redis being down is already logged by the follower.
    }
  }
}

function flatten(byRack: ReadonlyMap<string, ReadonlyMap<string, NextHopCandidate>>): NextHopCandidate[] {
  return [...byRack.values()].flatMap((m) => [...m.values()]);
}

function fieldsOf(fields: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i] as string] = fields[i + 1] as string;
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
