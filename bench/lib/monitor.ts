/**
 * Timestamps kernel route changes in one network namespace without polling: one long-running
 * `ip -ts -o -n NS monitor route` (DESIGN.md). `-ts` stamps each change with the wall clock when ip
 * received it from the kernel, `-o` keeps a multipath route on one line. The monitor keeps the
 * current next hops of every host route it saw, and resolves waiters with the kernel's timestamp,
 * not with the time this process got round to reading the line.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { netnsName } from '../../src/lab/paths.js';
import { readRoutes } from '../../src/lab/routes.js';

/** Netlink receive buffer of the monitor: a burst of 30,000 route changes must fit while ip waits for a CPU. */
const RCVBUF = 64 * 1024 * 1024;

/** How long a wall-clock anchor is trusted before `wallNow` takes a new one. */
const ANCHOR_MAX_AGE_MS = 1000;
let anchor = { wallMinusMono: performance.timeOrigin, at: -Infinity };
/** Times a new anchor moved the wall clock by more than 2 ms against the monotonic one. */
export const wallClock = { steps: 0 };

/**
 * Wall-clock milliseconds with microsecond resolution, on the same clock `ip -ts` reads.
 * `performance.timeOrigin + performance.now()` is fixed at process start and drifts from the wall
 * clock when the system clock is stepped or slewed afterwards: at the start of one session on this
 * VM every convergence figure, racklb's and the floor's alike, came out 396 ms too long. So the
 * offset is taken again at most every second, at the instant Date.now() ticks (exact to the
 * microsecond).
 */
export function wallNow(): number {
  const mono = performance.now();
  if (mono - anchor.at > ANCHOR_MAX_AGE_MS) {
    const before = Date.now();
    let tick = before;
    while (tick === before) tick = Date.now();
    const at = performance.now();
    const wallMinusMono = tick - at;
    if (Number.isFinite(anchor.at) && Math.abs(wallMinusMono - anchor.wallMinusMono) > 2) wallClock.steps++;
    anchor = { wallMinusMono, at };
    return wallMinusMono + performance.now();
  }
  return anchor.wallMinusMono + mono;
}

/** `[2026-11-25T12:49:16.390186]` (local time, as ip prints it) -> wall-clock ms. */
export function parseIpTimestamp(text: string): number | undefined {
  const m = /^\[(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)\.(\d{1,9})\]$/.exec(text);
  if (m === null) return undefined;
  const [, y, mo, d, h, mi, s, frac] = m as unknown as string[];
  const whole = new Date(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s)).getTime();
  return whole + Number(`0.${frac}`) * 1000;
}

export interface RouteChange {
  at: number;
  prefix: string;
  /** Next hops after the change; empty when the route was deleted. */
  hops: string[];
}

/** Parses one `ip -ts -o monitor route` line; undefined for lines about other kinds of routes. */
export function parseMonitorLine(line: string): RouteChange | undefined {
  const m = /^(\[[^\]]+\])\s+(.*)$/.exec(line.trim());
  if (m === null) return undefined;
  const at = parseIpTimestamp(m[1] as string);
  if (at === undefined) return undefined;
  const words = (m[2] as string).split(/\s+/);
  const deleted = words[0] === 'Deleted';
  const dst = deleted ? words[1] : words[0];
  // local, broadcast, unreachable ... routes start with their type; ours are plain unicast.
  if (dst === undefined || !/^[0-9a-f.:]+(\/\d+)?$/i.test(dst)) return undefined;
  if (/\btable (local|255)\b/.test(line)) return undefined;
  const prefix = dst.includes('/') ? dst : `${dst}/${dst.includes(':') ? 128 : 32}`;
  const hops = deleted ? [] : [...line.matchAll(/\bvia (?:inet6? )?([0-9a-f.:]+)/gi)].map((x) => x[1] as string).sort();
  return { at, prefix, hops };
}

type Condition = (hops: readonly string[]) => boolean;

/**
 * A wait may be abandoned when the benchmark fails elsewhere first; its rejection at stop() must not
 * crash the process (and skip the lab's teardown). Whoever awaits it still sees the rejection.
 */
function handled<T>(p: Promise<T>): Promise<T> {
  p.catch(() => undefined);
  return p;
}

interface Waiter {
  prefix: string;
  cond: Condition;
  resolve: (at: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

interface Counter {
  match: (prefix: string) => boolean;
  cond: Condition;
  want: number;
  /** Matching prefixes that satisfy cond now: kept up to date per change, so a bulk wait is O(changes). */
  satisfied: Set<string>;
  resolve: (at: number) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

export class RouteMonitor {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly routes = new Map<string, string[]>();
  private readonly waiters = new Set<Waiter>();
  private readonly counters = new Set<Counter>();
  private buffer = '';
  private closed = false;
  private resyncing: Promise<void> | undefined;
  /** Changes seen while the table is being read: newer than the read, replayed over it. */
  private during: RouteChange[] | undefined;
  lines = 0;
  /**
   * Times the kernel dropped changes on ip's netlink socket (a burst of thousands of routes on a
   * loaded machine): the table was then read whole, and a wait that ended on such a read got the
   * time of the read, not of the change. Reported with the figures.
   */
  overflows = 0;
  /** Waits that ended on a table read rather than on a timestamped change. */
  approximate = 0;

  private constructor(readonly router: string) {
    // A burst of 30,000 route changes overflows the default 1 MB netlink buffer when ip is not
    // scheduled in time (measured: 1,198 changes lost on the spine). A larger buffer (capped by the
    // host's net.core.rmem_max, 4 MB here, which is left alone) and the highest priority for ip
    // make it rare; RouteMonitor.overflows counts what is left.
    this.child = spawn('nice', ['-n', '-20', 'ip', '-rcvbuf', String(RCVBUF), '-ts', '-o', '-n', netnsName(router), 'monitor', 'route'], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk: string) => this.onData(chunk));
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (chunk: string) => {
      // iproute2 reports ENOBUFS ("No buffer space available") and goes on listening.
      if (/No buffer space|ENOBUFS/i.test(chunk)) {
        this.overflows++;
        this.resyncWhenQuiet();
      }
    });
    this.child.on('exit', () => {
      if (!this.closed) this.failAll(new Error(`ip monitor route in ${netnsName(router)} exited`));
    });
  }

  /** Starts monitoring; resolves once ip runs (changes from then on are seen). */
  static async start(router: string): Promise<RouteMonitor> {
    const m = new RouteMonitor(router);
    await new Promise<void>((resolve, reject) => {
      m.child.once('spawn', () => resolve());
      m.child.once('error', reject);
    });
    // ip subscribes to the netlink groups right after it starts; give it that moment.
    await new Promise((r) => setTimeout(r, 100));
    return m;
  }

  /** The next hops of a prefix as last reported (undefined: never seen or deleted). */
  hops(prefix: string): string[] | undefined {
    return this.routes.get(prefix);
  }

  count(match: (prefix: string) => boolean, cond: Condition): number {
    let n = 0;
    for (const [p, hops] of this.routes) if (match(p) && cond(hops)) n++;
    return n;
  }

  /**
   * Resolves with the kernel timestamp of the first change after which `prefix` satisfies `cond`.
   * Register before causing the change; when it already holds, resolves with `Number.NaN`.
   */
  waitFor(prefix: string, cond: Condition, timeoutMs: number): Promise<number> {
    if (cond(this.routes.get(prefix) ?? [])) return Promise.resolve(Number.NaN);
    return handled(new Promise((resolve, reject) => {
      const w: Waiter = {
        prefix,
        cond,
        resolve,
        reject,
        timer: setTimeout(() => {
          void this.resync().then(() => {
            if (!this.waiters.delete(w)) return;
            reject(new Error(`${this.router}: ${prefix} did not reach the expected state within ${timeoutMs} ms (now via ${(this.routes.get(prefix) ?? []).join(', ') || 'nothing'})`));
          });
        }, timeoutMs),
      };
      this.waiters.add(w);
    }));
  }

  /** Resolves with the timestamp of the change after which `want` prefixes matching `match` satisfy `cond`. */
  waitCount(match: (prefix: string) => boolean, cond: Condition, want: number, timeoutMs: number): Promise<number> {
    const satisfied = new Set<string>();
    for (const [p, hops] of this.routes) if (match(p) && cond(hops)) satisfied.add(p);
    if (satisfied.size === want) return Promise.resolve(Number.NaN);
    return handled(new Promise((resolve, reject) => {
      const c: Counter = {
        match,
        cond,
        want,
        satisfied,
        resolve,
        reject,
        timer: setTimeout(() => {
          void this.resync().then(() => {
            if (!this.counters.delete(c)) return;
            reject(new Error(`${this.router}: ${c.satisfied.size} of ${want} routes in the expected state after ${timeoutMs} ms`));
          });
        }, timeoutMs),
      };
      this.counters.add(c);
    }));
  }

  async stop(): Promise<void> {
    this.closed = true;
    clearTimeout(this.quietTimer);
    this.failAll(new Error('monitor stopped'));
    if (this.child.exitCode === null) {
      const gone = new Promise((r) => this.child.once('exit', r));
      this.child.kill('SIGKILL');
      await gone;
    }
  }

  private failAll(err: Error): void {
    for (const w of this.waiters) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    for (const c of this.counters) {
      clearTimeout(c.timer);
      c.reject(err);
    }
    this.waiters.clear();
    this.counters.clear();
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let nl: number;
    while ((nl = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 1);
      this.lines++;
      this.lastLineAt = performance.now();
      const change = parseMonitorLine(line);
      if (change) this.apply(change);
    }
  }

  private quietTimer: NodeJS.Timeout | undefined;
  private lastLineAt = 0;
  /** Kernel timestamp of the last change seen. */
  private lastChangeAt = 0;

  /** After lost changes: read the table once the burst is over (300 ms without a line). */
  private resyncWhenQuiet(): void {
    clearTimeout(this.quietTimer);
    const check = (): void => {
      if (this.closed) return;
      if (performance.now() - this.lastLineAt < 300) {
        this.quietTimer = setTimeout(check, 100);
        return;
      }
      // Changes are lost in the middle of a burst; ip drains its end. The last change seen is when
      // the burst ended, the best time there is for a wait the table read settles.
      void this.resync(this.lastChangeAt);
    };
    this.quietTimer = setTimeout(check, 300);
  }

  /** Replaces what the monitor believes with the table itself, and settles the waits it satisfies. */
  resync(settledAt?: number): Promise<void> {
    this.resyncing ??= (async () => {
      this.during = [];
      try {
        const table = await readRoutes(this.router);
        const at = settledAt ?? wallNow();
        this.routes.clear();
        for (const [prefix, hops] of Object.entries(table)) this.routes.set(prefix, [...hops].sort());
        // The read may predate changes that arrived meanwhile: those are newer, apply them again.
        for (const change of this.during) {
          if (change.hops.length === 0) this.routes.delete(change.prefix);
          else this.routes.set(change.prefix, change.hops);
        }
        for (const w of this.waiters) {
          if (w.cond(this.routes.get(w.prefix) ?? [])) {
            clearTimeout(w.timer);
            this.waiters.delete(w);
            this.approximate++;
            w.resolve(at);
          }
        }
        for (const c of this.counters) {
          c.satisfied.clear();
          for (const [p, hops] of this.routes) if (c.match(p) && c.cond(hops)) c.satisfied.add(p);
          if (c.satisfied.size === c.want) {
            clearTimeout(c.timer);
            this.counters.delete(c);
            this.approximate++;
            c.resolve(at);
          }
        }
      } catch {
        // The namespace is going away; the waits time out on their own.
      } finally {
        this.during = undefined;
        this.resyncing = undefined;
      }
    })();
    return this.resyncing;
  }

  private apply(change: RouteChange): void {
    this.during?.push(change);
    this.lastChangeAt = change.at;
    if (change.hops.length === 0) this.routes.delete(change.prefix);
    else this.routes.set(change.prefix, change.hops);
    for (const w of this.waiters) {
      if (w.prefix === change.prefix && w.cond(change.hops)) {
        clearTimeout(w.timer);
        this.waiters.delete(w);
        w.resolve(change.at);
      }
    }
    if (this.counters.size > 0) {
      for (const c of this.counters) {
        if (!c.match(change.prefix)) continue;
        if (change.hops.length > 0 && c.cond(change.hops)) c.satisfied.add(change.prefix);
        else c.satisfied.delete(change.prefix);
        if (c.satisfied.size === c.want) {
          clearTimeout(c.timer);
          this.counters.delete(c);
          c.resolve(change.at);
        }
      }
    }
  }
}
