/**
 * 4. Cost of one change as the cluster grows: time (the function's answer, one event at a time) and
 * Redis commands (INFO commandstats around the event) for a node relabel, a Service update and a
 * BgpPeer update, at 1,000 / 10,000 / 100,000 Services with 100 / 1,000 / 5,000 nodes (racks of 20
 * nodes, so the relabelled node's racks stay the same size while the cluster grows). A Service add
 * from the default Eip is measured too: choosing the lowest free address looks at every allocation.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { FUNCTION_NAMES } from '../src/functions.js';
import type { FunctionName } from '../src/store/keys.js';
import { Store } from '../src/store/store.js';
import { SPEAKERS_PER_RACK, bgpPeerObject, clusterObjects, diffStates, dumpState, nodeObject, seed, serviceObject, type ClusterShape } from './lib/cluster.js';
import type { BenchContext, BenchOutput } from './lib/context.js';
import { Sender, type PreparedEvent } from './lib/events.js';
import { commandStats, diffStats, startFunction, startRedis, type FunctionProcess } from './lib/procs.js';
import { fmt, met, type Row } from './lib/results.js';
import { summarize } from './lib/stats.js';

const NODES_PER_RACK = 20;
const OPS = ['relabel', 'service_update', 'bgppeer_update', 'service_add'] as const;
type Op = (typeof OPS)[number];

const LABELS: Record<Op, string> = {
  relabel: 'node relabel',
  service_update: 'Service update',
  bgppeer_update: 'BgpPeer update',
  service_add: 'Service add (default Eip)',
};

async function startAll(redisUrl: string, dir: string): Promise<{ procs: FunctionProcess[]; urls: Record<FunctionName, string> }> {
  const procs: FunctionProcess[] = [];
  const urls = {} as Record<FunctionName, string>;
  for (const fn of FUNCTION_NAMES) {
    const p = await startFunction(fn, redisUrl, { logFile: join(dir, `${fn}.log`) });
    procs.push(p);
    urls[fn] = p.url;
  }
  return { procs, urls };
}

/**
 * The seed must be the state the handlers build: checked on a small cluster against the real
 * functions before any figure is taken from a seeded store.
 */
export async function verifySeed(store: Store, redisUrl: string, dir: string): Promise<void> {
  const shape: ClusterShape = { racks: 3, nodesPerRack: 4, services: 30 };
  await store.redis.flushall();
  const { procs, urls } = await startAll(redisUrl, join(dir, 'verify'));
  try {
    const sender = new Sender(urls, 1);
    for (const o of clusterObjects(shape)) await sender.apply(sender.prepare('add', o, { keepResourceVersion: true }));
    await sender.close();
  } finally {
    for (const p of procs) await p.stop();
  }
  const viaHandlers = await dumpState(store);
  await store.redis.flushall();
  await seed(store, shape);
  const seeded = await dumpState(store);
  const diff = diffStates(seeded, viaHandlers);
  if (diff.length > 0) throw new Error(`the benchmark's seed no longer matches what the handlers write:\n${diff.join('\n')}`);
}

interface Measured {
  ms: number[];
  commands: number[];
  usec: number[];
}

export async function change(ctx: BenchContext): Promise<BenchOutput> {
  const sizes = ctx.quick
    ? [
        { services: 1000, nodes: 100 },
        { services: 10_000, nodes: 1000 },
      ]
    : [
        { services: 1000, nodes: 100 },
        { services: 10_000, nodes: 1000 },
        { services: 100_000, nodes: 5000 },
      ];
  const trials = ctx.quick ? 10 : 30;
  const dir = join(ctx.workDir, 'change');
  const redis = await startRedis(join(dir, 'redis'));
  const store = Store.open(redis.url);
  await store.connect();
  const results: { services: number; nodes: number; racks: number; ops: Record<Op, Measured> }[] = [];
  try {
    await verifySeed(store, redis.url, dir);
    for (const size of sizes) {
      const shape: ClusterShape = { racks: size.nodes / NODES_PER_RACK, nodesPerRack: NODES_PER_RACK, services: size.services };
      await store.redis.flushall();
      const seeded = performance.now();
      await seed(store, shape);
      ctx.say(`change: seeded ${size.services} Services, ${size.nodes} nodes in ${((performance.now() - seeded) / 1000).toFixed(1)} s`);
      const { procs, urls } = await startAll(redis.url, join(dir, String(size.services)));
      const sender = new Sender(urls, 1, 2);
      const ops = Object.fromEntries(OPS.map((op) => [op, { ms: [], commands: [], usec: [] }])) as unknown as Record<Op, Measured>;
      try {
        const measure = async (op: Op, e: PreparedEvent): Promise<void> => {
          await sleep(20);
          const before = await commandStats(store.redis);
          const t0 = performance.now();
          await sender.apply(e);
          const ms = performance.now() - t0;
          const d = diffStats(before, await commandStats(store.redis));
          ops[op].ms.push(ms);
          ops[op].commands.push(d.calls);
          ops[op].usec.push(d.usec);
        };
        // One untimed event of each kind first: connections open, code compiled.
        await sender.apply(sender.prepare('update', serviceObject(0, { local: false })));
        for (let t = 0; t < trials; t++) {
          const r = t % shape.racks;
          const j = SPEAKERS_PER_RACK + (Math.floor(t / shape.racks) % (NODES_PER_RACK - SPEAKERS_PER_RACK));
          await measure('relabel', sender.prepare('update', nodeObject(r, j, { rack: (r + 1) % shape.racks })));
          const i = (t * 7919) % shape.services;
          await measure('service_update', sender.prepare('update', serviceObject(i, { local: true })));
          await measure('bgppeer_update', sender.prepare('update', bgpPeerObject(r, { holdTime: 30 })));
          await measure('service_add', sender.prepare('add', serviceObject(shape.services + t)));
        }
      } finally {
        await sender.close();
        for (const p of procs) await p.stop();
      }
      results.push({ services: size.services, nodes: size.nodes, racks: shape.racks, ops });
      ctx.say(`change: ${size.services} Services: relabel p50 ${summarize(ops.relabel.ms).p50_ms} ms, Service update p50 ${summarize(ops.service_update.ms).p50_ms} ms`);
    }
  } finally {
    await store.close();
    await redis.stop();
  }

  const rows: Row[] = [];
  const table = results.map((res) => {
    const entry: Record<string, unknown> = { services: res.services, nodes: res.nodes, racks: res.racks };
    for (const op of OPS) {
      const t = summarize(res.ops[op].ms);
      const c = summarize(res.ops[op].commands);
      const u = summarize(res.ops[op].usec);
      entry[op] = { p50_ms: t.p50_ms, p90_ms: t.p90_ms, max_ms: t.max_ms, redis_commands_p50: c.p50_ms, redis_commands_max: c.max_ms, redis_usec_p50: u.p50_ms };
      const target = op === 'relabel' && res === results[results.length - 1] ? '< 50 ms (p90)' : '';
      rows.push({
        figure: `${LABELS[op]} @ ${res.services.toLocaleString('en-US')} svc / ${res.nodes.toLocaleString('en-US')} nodes`,
        value: `${fmt(t.p50_ms, ' ms')} (p90 ${fmt(t.p90_ms, ' ms')})`,
        floor: `${fmt(c.p50_ms)} Redis cmds`,
        ratio: '',
        target,
        met: target ? met(t.p90_ms < 50) : '',
      });
    }
    return entry;
  });
  const largest = results[results.length - 1]!;
  const relabel = summarize(largest.ops.relabel.ms);
  const cmds = results.map((r) => summarize(r.ops.relabel.commands).p50_ms);
  return {
    sections: {
      relabel: { services: largest.services, nodes: largest.nodes, ms: relabel.p50_ms, p90_ms: relabel.p90_ms, redis_commands: summarize(largest.ops.relabel.commands).p50_ms, redis_commands_by_size: cmds },
      change: { trials, nodes_per_rack: NODES_PER_RACK, sizes: table },
    },
    rows,
    notes: [
      `${trials} events of each kind per size, one at a time (20 ms apart) to one function process each (not pinned); time is the function's HTTP answer, Redis commands the INFO commandstats difference around the event (MULTI/EXEC and the journal included).`,
      `Racks of ${NODES_PER_RACK} nodes (2 speakers and one BgpPeer each): a relabel moves a non-speaker node to the next rack. The relabel target is checked on p90. Redis commands per relabel by size: ${cmds.join(', ')}.`,
    ],
  };
}
