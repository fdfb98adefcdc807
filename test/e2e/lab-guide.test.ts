/**
 * PorterLB's multi-router guide, before and after, on the default topology: real BIRD routers,
 * gobgpd, speakers and functions, driven through `racklb lab` as a user would.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listLabNamespaces } from '../../src/lab/netns.js';
import { isAlive } from '../../src/lab/process.js';
import { isRoot, labRoutes, racklb, waitForRoute } from '../helpers/lab.js';
import { LAB_RUN_DIR } from '../../src/lab/paths.js';
import { LAB_REDIS_URL, processPid } from '../../src/lab/lab.js';

const SVC = '198.51.100.10/32';
const LEAF1_UPLINK = '203.0.113.1';
const LEAF2_UPLINK = '203.0.113.3';

function pidsOfLab(): number[] {
  // Every process the lab started, read from /proc: its command line mentions the lab's run dir
  // or its namespaces (ip netns exec rl-...).
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmd.includes(LAB_RUN_DIR)) out.push(Number(entry));
    } catch {
      /* exited */
    }
  }
  return out;
}



/** `racklb lab traffic FROM 198.51.100.10 --json`: which node answered 60 TCP connections. */
async function traffic(from: string): Promise<Record<string, number>> {
  return JSON.parse(await racklb('lab', 'traffic', from, SVC.replace('/32', ''), '--json')) as Record<string, number>;
}

describe.skipIf(!isRoot())('PorterLB multi-router guide in the lab', () => {
  let started: number[] = [];

  beforeAll(async () => {
    await racklb('lab', 'down');
    await racklb('lab', 'up');
  }, 120_000);

  afterAll(async () => {
    await racklb('lab', 'down');
  }, 120_000);

  it('before: one speaker under leaf1, so the spine reaches the Service only through leaf1', async () => {
    await racklb('lab', 'label', 'node', 'master1', 'lb.kubesphere.io/v1alpha1=porter');
    await racklb('lab', 'apply', '-f', 'examples/lab/before.yaml');
    await waitForRoute('spine', SVC, [LEAF1_UPLINK]);
    await waitForRoute('leaf1', SVC, ['192.0.2.3', '192.0.2.4']);
    expect(await labRoutes('spine')).toEqual({ [SVC]: [LEAF1_UPLINK] });
    expect(await labRoutes('leaf1')).toEqual({ [SVC]: ['192.0.2.3', '192.0.2.4'] });
    expect(await labRoutes('leaf2')).toEqual({});
    // Traffic follows: connections from the spine reach leaf1's nodes only, though all three hold the IP.
    expect(Object.keys(await traffic('spine')).sort()).toEqual(['master1', 'worker-p001']);
  }, 90_000);

  it('after: speakers in both racks and BgpPeers per rack spread the Service over every node', async () => {
    await racklb('lab', 'label', 'node', 'worker-p002', 'lb.kubesphere.io/v1alpha1=porter');
    await racklb('lab', 'label', 'node', 'master1', 'porter.kubesphere.io/rack=leaf1');
    await racklb('lab', 'label', 'node', 'worker-p002', 'porter.kubesphere.io/rack=leaf2');
    await racklb('lab', 'apply', '-f', 'examples/lab/after.yaml');
    await waitForRoute('spine', SVC, [LEAF1_UPLINK, LEAF2_UPLINK]);
    await waitForRoute('leaf2', SVC, ['192.0.2.66']);
    expect(await labRoutes('spine')).toEqual({ [SVC]: [LEAF1_UPLINK, LEAF2_UPLINK] });
    expect(await labRoutes('leaf1')).toEqual({ [SVC]: ['192.0.2.3', '192.0.2.4'] });
    expect(await labRoutes('leaf2')).toEqual({ [SVC]: ['192.0.2.66'] });
    // 60 connections hashed on the 5-tuple: a node left out by chance alone is below 1e-7.
    const spread = await traffic('spine');
    expect(Object.keys(spread).sort(), JSON.stringify(spread)).toEqual(['master1', 'worker-p001', 'worker-p002']);
    const state = JSON.parse(await racklb('state', '--json', '--redis', LAB_REDIS_URL)) as { sessions: Record<string, Record<string, { sessionState: string }>> };
    expect(state.sessions.master1?.['192.0.2.1']?.sessionState).toBe('established');
    expect(state.sessions['worker-p002']?.['192.0.2.65']?.sessionState).toBe('established');
    // gobgpd's command line names nothing of the lab: take its pids from the pid files.
    const gobgpds = [await processPid('master1', 'gobgpd'), await processPid('worker-p002', 'gobgpd')];
    expect(gobgpds.every((p) => p !== undefined)).toBe(true);
    started = [...pidsOfLab(), ...(gobgpds as number[])];
    expect(started.length).toBe(11); // 3 functions, Redis, BIRD x3, 2 speakers, 2 gobgpd
  }, 90_000);

  it('removing the placement label stops that speaker and its routes leave the leaf', async () => {
    await racklb('lab', 'label', 'node', 'worker-p002', 'lb.kubesphere.io/v1alpha1-');
    await waitForRoute('leaf2', SVC, []);
    await waitForRoute('spine', SVC, [LEAF1_UPLINK]);
    await racklb('lab', 'label', 'node', 'worker-p002', 'lb.kubesphere.io/v1alpha1=porter');
    await waitForRoute('spine', SVC, [LEAF1_UPLINK, LEAF2_UPLINK]);
  }, 90_000);

  it('says it needs root and stops when run as another user', async () => {
    const run = promisify(execFile);
    const err = await run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, 'bin/racklb.js', 'lab', 'up'], { timeout: 20_000 }).then(
      () => undefined,
      (e: { code?: number; stderr?: string }) => e,
    );
    expect(err?.code).toBe(1);
    expect(err?.stderr).toContain('needs root');
    expect(await labRoutes('spine')).toEqual({ [SVC]: [LEAF1_UPLINK, LEAF2_UPLINK] });
  }, 30_000);

  it('lab down removes every namespace and process, and is safe to run twice', async () => {
    await racklb('lab', 'down');
    expect(await listLabNamespaces()).toEqual([]);
    expect(started.filter(isAlive)).toEqual([]);
    expect(pidsOfLab()).toEqual([]);
    expect(existsSync(LAB_RUN_DIR)).toBe(false);
    await racklb('lab', 'down');
  }, 60_000);
});
