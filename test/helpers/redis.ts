/**
 * A private redis-server per test file, on a unix socket in a fresh temporary directory: never a
 * shared instance, never a TCP port another process could be using.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import { Store } from '../../src/store/store.js';
import { startRedisCluster } from './redis-cluster.js';

export interface TestRedis {
  /** unix:///.../redis.sock */
  url: string;
  socket: string;
  dir: string;
  stop(): Promise<void>;
  /** Starts it again (after stop); `empty` drops whatever was persisted. */
  start(opts?: { empty?: boolean }): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

async function waitForSocket(socket: string, proc: ChildProcess, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (existsSync(socket)) return;
    if (proc.exitCode !== null) throw new Error(`redis-server exited with code ${proc.exitCode}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`redis-server did not create ${socket} within ${timeoutMs} ms`);
}

export async function startRedis(opts: { appendonly?: boolean } = {}): Promise<TestRedis> {
  // test/integration/cluster.test.ts runs the core suites against a three-master Redis Cluster.
  if (process.env.RACKLB_TEST_REDIS === 'cluster') {
    const cluster = await startRedisCluster();
    return {
      url: cluster.url,
      socket: '',
      dir: cluster.dir,
      // stop() is a crash of every node, start() brings them back (empty, as without persistence).
      stop: cluster.kill,
      start: cluster.start,
    };
  }
  const dir = mkdtempSync(join(tmpdir(), 'racklb-redis-'));
  const socket = join(dir, 'redis.sock');
  let proc: ChildProcess | undefined;

  const start = async (startOpts: { empty?: boolean } = {}): Promise<void> => {
    if (startOpts.empty) {
      rmSync(join(dir, 'appendonlydir'), { recursive: true, force: true });
      rmSync(join(dir, 'dump.rdb'), { force: true });
    }
    const args = ['--port', '0', '--unixsocket', socket, '--unixsocketperm', '700', '--dir', dir, '--save', '', '--appendonly', opts.appendonly ? 'yes' : 'no', '--appendfsync', 'always', '--daemonize', 'no', '--loglevel', 'warning'];
    const p = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
    running.add(p);
    p.once('exit', () => running.delete(p));
    proc = p;
    await waitForSocket(socket, p, 10_000);
  };

  const stop = async (): Promise<void> => {
    const p = proc;
    proc = undefined;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => p.once('exit', () => resolve()));
    p.kill('SIGKILL');
    await exited;
    rmSync(socket, { force: true });
  };

  await start();
  return {
    url: `unix://${socket}`,
    socket,
    dir,
    stop,
    start,
  };
}

export async function removeRedis(r: TestRedis): Promise<void> {
  await r.stop();
  rmSync(r.dir, { recursive: true, force: true });
}

/**
 * A private Redis and one Store on it for the whole test file: started before its first test,
 * closed and removed after its last, even when a test failed. `onReady` receives them.
 */
export function useRedisStore(onReady: (store: Store, redis: TestRedis) => void): void {
  let redis: TestRedis | undefined;
  let store: Store | undefined;
  beforeAll(async () => {
    redis = await startRedis();
    store = Store.open(redis.url, { failFast: true });
    await store.connect();
    onReady(store, redis);
  });
  afterAll(async () => {
    await store?.close();
    if (redis) await removeRedis(redis);
  });
}
