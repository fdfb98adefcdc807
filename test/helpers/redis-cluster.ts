/**
 * A Redis Cluster of three masters on loopback ports, started and torn down by a test: three
 * redis-server processes with --cluster-enabled in a fresh temporary directory, joined with
 * `redis-cli --cluster create`. No replicas: the tests are about slots and transactions, not
 * failover.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './gobgpd.js';

const run = promisify(execFile);

export interface TestRedisCluster {
  /** redis+cluster://127.0.0.1:PORT (any master is a seed). */
  url: string;
  ports: number[];
  dir: string;
  /** SIGKILLs every node; the cluster's configuration (nodes-N.conf) stays for start(). */
  kill(): Promise<void>;
  /** Starts the nodes again on their ports; they find each other from nodes-N.conf (data is gone). */
  start(): Promise<void>;
  stop(): Promise<void>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const p of running) p.kill('SIGKILL');
});

async function clusterOk(port: number): Promise<boolean> {
  try {
    const { stdout } = await run('redis-cli', ['-p', String(port), 'cluster', 'info'], { timeout: 5000 });
    return /cluster_state:ok/.test(stdout) && /cluster_known_nodes:3/.test(stdout);
  } catch {
    return false;
  }
}

export async function startRedisCluster(): Promise<TestRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'racklb-redis-cluster-'));
  const ports = [await freePort(), await freePort(), await freePort()];
  let procs: ChildProcess[] = [];
  const kill = async (): Promise<void> => {
    await Promise.all(
      procs.map((p) => {
        if (p.exitCode !== null || p.signalCode !== null) return undefined;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGKILL');
        return exited;
      }),
    );
    procs = [];
  };
  const stop = async (): Promise<void> => {
    await kill();
    rmSync(dir, { recursive: true, force: true });
  };
  const launch = async (): Promise<void> => {
    for (const [i, port] of ports.entries()) {
      const args = ['--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-config-file', join(dir, `nodes-${i}.conf`), '--cluster-node-timeout', '2000', '--dir', dir, '--dbfilename', `dump-${i}.rdb`, '--save', '', '--appendonly', 'no', '--daemonize', 'no', '--loglevel', 'warning'];
      const p = spawn('redis-server', args, { stdio: ['ignore', 'ignore', 'inherit'] });
      running.add(p);
      p.once('exit', () => running.delete(p));
      procs.push(p);
    }
    for (const port of ports) {
      const deadline = Date.now() + 10_000;
      while ((await run('redis-cli', ['-p', String(port), 'ping']).then((r) => r.stdout.trim(), () => '')) !== 'PONG') {
        if (Date.now() > deadline) throw new Error(`cluster node on ${port} did not start`);
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  };
  const healthy = async (): Promise<void> => {
    const deadline = Date.now() + 20_000;
    for (const port of ports) {
      while (!(await clusterOk(port))) {
        if (Date.now() > deadline) throw new Error(`cluster did not reach cluster_state:ok (node ${port})`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  };
  try {
    await launch();
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    await healthy();
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    url: `redis+cluster://127.0.0.1:${ports[0]}`,
    ports,
    dir,
    kill,
    start: async () => {
      await launch();
      await healthy();
    },
    stop,
  };
}
