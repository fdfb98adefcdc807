/**
 * End-to-end helpers: the lab driven through its CLI, as a user drives it, and router views read
 * from the kernel tables.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readRoutes } from '../../src/lab/routes.js';
import { waitFor } from '../../src/lab/process.js';

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
  /** Stops sampling; resolves with the samples where the prefix did not have exactly `hops`. */
  stop(): Promise<{ samples: number; bad: string[] }>;
}

/** Reads the router's table every `intervalMs` and records every moment the route differed. */
export function sampleRoute(router: string, prefix: string, hops: string[], intervalMs = 50): Sampler {
  const want = JSON.stringify([...hops].sort());
  let running = true;
  let samples = 0;
  const bad: string[] = [];
  const loop = (async () => {
    while (running) {
      const got = JSON.stringify(((await readRoutes(router, 'ipv4'))[prefix] ?? []).sort());
      samples++;
      if (got !== want) bad.push(`${new Date().toISOString()} ${got}`);
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return { samples, bad };
    },
  };
}
