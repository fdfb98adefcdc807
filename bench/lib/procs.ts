/**
 * Processes the non-lab benchmarks start: a private redis-server on a unix socket, function
 * processes (`racklb serve`), optionally pinned to one core with taskset, and what /proc and
 * Redis say about them. Every process started here is killed when the benchmark process exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, openSync, closeSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import type { Redis } from 'ioredis';
import { request } from 'undici';
import { repoRoot } from '../../src/lab/lab.js';
import type { FunctionName } from '../../src/store/keys.js';

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of live) p.kill('SIGKILL');
});

export interface Started {
  child: ChildProcess;
  pid: number;
  stop(): Promise<void>;
}

/** Spawns `argv`, pinned to `cpus` (taskset -c) when given; output goes to `logFile`. */
export function startProcess(argv: string[], opts: { cpus?: string; logFile: string; env?: Record<string, string> }): Started {
  mkdirSync(join(opts.logFile, '..'), { recursive: true });
  const fd = openSync(opts.logFile, 'a');
  const full = opts.cpus === undefined ? argv : ['taskset', '-c', opts.cpus, ...argv];
  let child: ChildProcess;
  try {
    child = spawn(full[0] as string, full.slice(1), { stdio: ['ignore', fd, fd], env: { ...process.env, ...(opts.env ?? {}) } });
  } finally {
    closeSync(fd);
  }
  child.on('error', () => undefined);
  if (child.pid === undefined) throw new Error(`cannot start ${full.join(' ')}`);
  live.add(child);
  const pid = child.pid;
  return {
    child,
    pid,
    stop: async () => {
      live.delete(child);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

export interface BenchRedis extends Started {
  url: string;
  socket: string;
}

/**
 * A private redis-server persisting as infra/redis/redis.conf does (append-only, synced before it
 * answers): the fsync of each round of Redis's event loop is part of what an event costs.
 */
export async function startRedis(dir: string, cpus?: string): Promise<BenchRedis> {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const socket = join(dir, 'redis.sock');
  const p = startProcess(
    ['redis-server', '--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', dir, '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--daemonize', 'no', '--loglevel', 'warning'],
    { logFile: join(dir, 'redis.log'), ...(cpus === undefined ? {} : { cpus }) },
  );
  const deadline = Date.now() + 10_000;
  while (!existsSync(socket)) {
    if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`redis-server did not start (log ${join(dir, 'redis.log')})`);
    await new Promise((r) => setTimeout(r, 10));
  }
  return { ...p, url: `unix://${socket}`, socket };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface FunctionProcess extends Started {
  url: string;
  /** Milliseconds from spawn to the first 200 on /health/readiness. */
  readyMs: number;
}

/** Polls `url` until it answers 200; resolves with the time it took from `since` (performance.now()). */
export async function waitReady(url: string, since: number, timeoutMs: number, child?: ChildProcess): Promise<number> {
  const deadline = since + timeoutMs;
  while (performance.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null)) throw new Error(`process exited before ${url} answered`);
    try {
      const res = await request(url, { headersTimeout: 1000, bodyTimeout: 1000 });
      await res.body.dump();
      if (res.statusCode === 200) return performance.now() - since;
    } catch {
      // Not listening yet.
    }
    // Knative's queue-proxy probes aggressively on cold start; 2 ms keeps the error of the figure small.
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`${url} not ready within ${timeoutMs} ms`);
}

/** `nodeArgs` go before the script (e.g. `--cpu-prof`, which NODE_OPTIONS refuses). */
export async function startFunction(fn: FunctionName, redisUrl: string, opts: { cpus?: string; logFile: string; env?: Record<string, string>; nodeArgs?: string[] }): Promise<FunctionProcess> {
  const port = await freePort();
  const started = performance.now();
  const p = startProcess([process.execPath, ...(opts.nodeArgs ?? []), join(repoRoot(), 'bin', 'racklb.js'), 'serve', fn, '--port', String(port), '--host', '127.0.0.1', '--redis', redisUrl], opts);
  const url = `http://127.0.0.1:${port}/`;
  const readyMs = await waitReady(`${url}health/readiness`, started, 20_000, p.child);
  return { ...p, url, readyMs };
}

/** Resident set size now and its peak (VmHWM), in MB, from /proc/<pid>/status. */
export function memoryOf(pid: number): { rss_mb: number; peak_mb: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN);
  return { rss_mb: kb('VmRSS') / 1024, peak_mb: kb('VmHWM') / 1024 };
}

/**
 * CPU seconds a process has used so far (user and system, all its threads), from /proc/<pid>/stat.
 * Less noisy than a rate on a shared machine: other work slows the process, it barely adds to it.
 */
export function cpuSecondsOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? [];
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks of 1/100 s (USER_HZ on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * CPU seconds used so far by every process on the machine, summed by what it is in the lab:
 * gobgpd, bird, redis, speaker, each function, the benchmark's floor agents, this process (the
 * sender) and `other` (anything else: on a shared machine, what else ran). Diff two readings to see
 * where a run's CPU went, racklb's processes against the floor's.
 */
export function cpuByRole(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    let seconds: number;
    let role: string;
    try {
      seconds = cpuSecondsOf(pid);
      role = roleOf(pid);
    } catch {
      continue; // gone meanwhile
    }
    out[role] = (out[role] ?? 0) + seconds;
  }
  return out;
}

const ROLE_BY_COMMAND = new Map([
  ['gobgpd', 'gobgpd'],
  ['bird', 'bird'],
  ['redis-server', 'redis'],
]);

function roleOf(pid: number): string {
  if (pid === process.pid) return 'sender';
  const byCommand = ROLE_BY_COMMAND.get(readFileSync(`/proc/${pid}/comm`, 'utf8').trim());
  if (byCommand !== undefined) return byCommand;
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  const serve = argv.indexOf('serve');
  if (serve >= 0 && argv[serve + 1]?.startsWith('on-')) return argv[serve + 1] as string;
  if (argv.includes('speaker')) return 'speaker';
  if (argv.some((a) => a.endsWith('bench/agent.js'))) return 'agent';
  return 'other';
}

/**
 * `after - before` per role, rounded to 10 ms; every role either reading saw, 0 when it used none
 * (or its processes ended), so that a run's JSON always has the same keys.
 */
export function cpuDiff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const role of new Set([...Object.keys(before), ...Object.keys(after)])) {
    out[role] = Math.max(0, Math.round(((after[role] ?? 0) - (before[role] ?? 0)) * 100) / 100);
  }
  return out;
}

export type CommandStats = Map<string, { calls: number; usec: number }>;

/** INFO commandstats: calls and CPU microseconds per command since the last CONFIG RESETSTAT. */
export async function commandStats(redis: Redis): Promise<CommandStats> {
  const text = await redis.info('commandstats');
  const out: CommandStats = new Map();
  for (const m of text.matchAll(/^cmdstat_([^:]+):calls=(\d+),usec=(\d+)/gm)) out.set(m[1] as string, { calls: Number(m[2]), usec: Number(m[3]) });
  return out;
}

/** Calls and Redis CPU time between two snapshots, without the INFO calls that took them. */
export function diffStats(before: CommandStats, after: CommandStats): { calls: number; usec: number; byCommand: Record<string, number> } {
  let calls = 0;
  let usec = 0;
  const byCommand: Record<string, number> = {};
  for (const [cmd, a] of after) {
    if (cmd === 'info') continue;
    const b = before.get(cmd) ?? { calls: 0, usec: 0 };
    const dc = a.calls - b.calls;
    if (dc <= 0) continue;
    calls += dc;
    usec += a.usec - b.usec;
    byCommand[cmd] = dc;
  }
  return { calls, usec, byCommand };
}

/** Pins this process to `cpus` (or undoes it with the full list): the load generator must not sit on the function's core. */
export async function pinSelf(cpus: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const p = spawn('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`taskset -a -p -c ${cpus} failed`))));
    p.once('error', reject);
  });
}
