/**
 * End-to-end helpers: the lab driven through its CLI, as a user drives it, and router views read
 * from the kernel tables.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { readRoutes } from '../../src/lab/routes.js';
import { waitFor } from '../../src/lab/process.js';
import { netnsName } from '../../src/lab/paths.js';

const run = promisify(execFile);

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

/** `racklb <args>`; rejects with the command's stderr on failure. */
export async function racklb(...args: string[]): Promise<string> {
  try {
    const { stdout } = await run(process.execPath, ['bin/racklb.js', ...args], { timeout: 120_000, maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; stdout?: string; message: string };
    throw new Error(`racklb ${args.join(' ')} failed: ${e.message}\n${e.stdout ?? ''}\n${e.stderr ?? ''}`);
  }
}

/** `racklb lab routes ROUTER --json`. */
export async function labRoutes(router: string): Promise<Record<string, string[]>> {
  return JSON.parse(await racklb('lab', 'routes', router, '--json')) as Record<string, string[]>;
}

/** Waits until `router` routes `prefix` exactly via `hops` ([] means: no route at all). */
export async function waitForRoute(router: string, prefix: string, hops: string[], timeoutMs = 30_000): Promise<void> {
  const want = JSON.stringify([...hops].sort());
  let last = '';
  try {
    await waitFor(
      `${router}: ${prefix} via ${hops.join(', ') || 'nothing'}`,
      async () => {
        last = JSON.stringify(((await readRoutes(router, prefix.includes(':') ? 'ipv6' : 'ipv4'))[prefix] ?? []).sort());
        return last === want;
      },
      timeoutMs,
      50,
    );
  } catch (err) {
    throw new Error(`${(err as Error).message}; last seen ${last}`);
  }
}

export interface Sampler {
  /** Stops sampling; resolves with the number of reads and every moment the route differed. */
  stop(): Promise<{ samples: number; bad: string[] }>;
}

/**
 * Watches a route two ways: `ip monitor route` reports every change the kernel makes to it (so
 * nothing between two reads is missed), and a read of the whole table every `intervalMs` checks
 * the state itself. Any moment the prefix is not routed via exactly `hops` is recorded.
 */
export function sampleRoute(router: string, prefix: string, hops: string[], intervalMs = 50): Sampler {
  const want = JSON.stringify([...hops].sort());
  const host = prefix.replace(/\/(32|128)$/, '');
  let running = true;
  let samples = 0;
  const bad: string[] = [];
  const monitor = spawn('ip', ['-o', '-n', netnsName(router), 'monitor', 'route'], { stdio: ['ignore', 'pipe', 'ignore'] });
  let buffer = '';
  monitor.stdout.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    const lines = buffer.split('\n');
    buffer = lines.pop() ?? '';
    for (const line of lines) {
      const words = line.trim().split(/\s+/);
      const deleted = words[0] === 'Deleted';
      const dst = deleted ? words[1] : words[0];
      if (dst !== host && dst !== prefix) continue;
      const vias = [...line.matchAll(/via (\S+)/g)].map((m) => m[1] ?? '').sort();
      if (deleted || JSON.stringify(vias) !== want) bad.push(`${new Date().toISOString()} monitor: ${line.trim()}`);
    }
  });
  const loop = (async () => {
    while (running) {
      const started = Date.now();
      const got = JSON.stringify(((await readRoutes(router, prefix.includes(':') ? 'ipv6' : 'ipv4'))[prefix] ?? []).sort());
      samples++;
      if (got !== want) bad.push(`${new Date().toISOString()} read: ${got}`);
      await new Promise((r) => setTimeout(r, Math.max(0, intervalMs - (Date.now() - started))));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      monitor.kill('SIGKILL');
      return { samples, bad };
    },
  };
}
