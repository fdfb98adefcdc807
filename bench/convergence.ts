/**
 * 1. Convergence, event to forwarding table, in the lab.
 *
 *  - add:      Service add event posted to on-service -> the spine's kernel route through every leaf.
 *  - notready: Node update (Ready=False) posted to on-node-label -> that node's next hop gone from
 *              its leaf's kernel route (of a Service that stays).
 *  - delete:   Service delete event -> the route gone from the spine.
 *
 * The floor makes the same change to the same gobgpds straight over gRPC (the speaker's own
 * client, AddPathStream), with the speakers frozen, and waits for the same table. t0 is taken just
 * before the event (or the agents' command) is written; t1 is the kernel's timestamp of the change
 * (`ip -ts monitor route`). Trials interleave racklb and floor, each after the same idle gap.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { connectRedis } from '../src/store/redis.js';
import { pathIdentifier } from '../speaker/plan.js';
import { repoRoot } from '../src/lab/lab.js';
import type { GobgpPath } from '../src/gobgp/client.js';
import type { BenchContext, BenchOutput } from './lib/context.js';
import { RouteMonitor, wallClock, wallNow } from './lib/monitor.js';
import { convergencePlot } from './lib/plot.js';
import { fmt, fmtRatio, met, type Row } from './lib/results.js';
import { ratio, summarize } from './lib/stats.js';

const KINDS = ['add', 'notready', 'delete'] as const;
type Kind = (typeof KINDS)[number];

const TITLES: Record<Kind, string> = {
  add: 'Service add -> spine',
  notready: 'Node NotReady -> leaf',
  delete: 'Service delete -> spine',
};

/** Idle time before every measured change, the same for racklb and floor (see DESIGN.md). */
const GAP_MS = 300;
const WAIT_MS = 15_000;

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

export async function convergence(ctx: BenchContext): Promise<BenchOutput> {
  const lab = await ctx.lab();
  const trials = ctx.quick ? 10 : 60;
  const rack1 = lab.racks[0]!;
  const victim = rack1.nodes[1]!;
  const rackIps = (r: (typeof lab.racks)[number]): string[] => r.nodes.map((n) => n.ip).sort();
  const allLeaves = (h: readonly string[]): boolean => same(h, lab.uplinks);
  const gone = (h: readonly string[]): boolean => h.length === 0;
  const pathsFor = (prefix: string, ips: string[]): GobgpPath[] => ips.map((ip) => ({ prefix, family: 'ipv4', nextHop: ip, identifier: pathIdentifier(ip) }));

  const spine = await RouteMonitor.start(lab.spine);
  const leaf = await RouteMonitor.start(rack1.name);
  const samples: Record<Kind, { racklb: number[]; floor: number[]; ack: number[] }> = {
    add: { racklb: [], floor: [], ack: [] },
    notready: { racklb: [], floor: [], ack: [] },
    delete: { racklb: [], floor: [], ack: [] },
  };
  const s = lab.sender;
  const redeliveredBefore = s.redeliveries;
  await lab.redisStalls();
  const hops = { redis_ping: [] as number[], http_get: [] as number[] };
  const agents = lab.racks.map((r) => ({ rack: r, agent: lab.agents.get(r.speaker)! }));
  const rack1Agent = lab.agents.get(rack1.speaker)!;

  /** Measures one racklb change: post, then the kernel's timestamp of the expected state. */
  const racklbTrial = async (event: ReturnType<typeof s.prepare>, wait: () => Promise<number>, kind: Kind): Promise<void> => {
    await sleep(GAP_MS);
    const until = wait();
    const t0 = wallNow();
    await s.apply(event);
    const ack = wallNow() - t0;
    const t1 = await until;
    if (!Number.isFinite(t1)) throw new Error(`${kind}: the table was already in the expected state`);
    samples[kind].racklb.push(t1 - t0);
    samples[kind].ack.push(ack);
  };
  const floorTrial = async (send: () => Promise<unknown>, wait: () => Promise<number>, kind: Kind): Promise<void> => {
    await sleep(GAP_MS);
    const until = wait();
    const t0 = wallNow();
    await send();
    const t1 = await until;
    if (!Number.isFinite(t1)) throw new Error(`${kind} (floor): the table was already in the expected state`);
    samples[kind].floor.push(t1 - t0);
  };

  try {
    // A Service that stays, for the NotReady trials.
    const steadyIp = '198.18.253.1';
    const steady = `${steadyIp}/32`;
    const floorSteady = '198.19.253.1/32';
    let ready = leaf.waitFor(steady, (h) => same(h, rackIps(rack1)), WAIT_MS);
    await s.apply(s.prepare('add', lab.serviceObject('steady', steadyIp)));
    await ready;
    await rack1Agent.call({ op: 'prepare', name: 'steady', paths: pathsFor(floorSteady, rackIps(rack1)) });
    await rack1Agent.call({ op: 'prepare', name: 'victim', paths: pathsFor(floorSteady, [victim.ip]) });

    for (let i = 0; i < trials; i++) {
      const ip = `198.18.${250 + Math.floor(i / 250)}.${(i % 250) + 1}`;
      const prefix = `${ip}/32`;
      const name = `conv-${i}`;
      await racklbTrial(s.prepare('add', lab.serviceObject(name, ip)), () => spine.waitFor(prefix, allLeaves, WAIT_MS), 'add');
      await racklbTrial(s.prepare('delete', lab.serviceObject(name, ip)), () => spine.waitFor(prefix, gone, WAIT_MS), 'delete');
      await racklbTrial(lab.nodeEvent(victim.name, false), () => leaf.waitFor(steady, (h) => h.length > 0 && !h.includes(victim.ip), WAIT_MS), 'notready');
      ready = leaf.waitFor(steady, (h) => same(h, rackIps(rack1)), WAIT_MS);
      await s.apply(lab.nodeEvent(victim.name, true));
      await ready;

      await lab.freezeSpeakers();
      try {
        const floorPrefix = `198.19.${250 + Math.floor(i / 250)}.${(i % 250) + 1}/32`;
        for (const { rack, agent } of agents) await agent.call({ op: 'prepare', name: 'trial', paths: pathsFor(floorPrefix, rackIps(rack)) });
        ready = leaf.waitFor(floorSteady, (h) => same(h, rackIps(rack1)), WAIT_MS);
        await rack1Agent.call({ op: 'add', name: 'steady' });
        await ready;
        await floorTrial(() => Promise.all(agents.map(({ agent }) => agent.call({ op: 'add', name: 'trial' }))), () => spine.waitFor(floorPrefix, allLeaves, WAIT_MS), 'add');
        await floorTrial(() => Promise.all(agents.map(({ agent }) => agent.call({ op: 'del', name: 'trial' }))), () => spine.waitFor(floorPrefix, gone, WAIT_MS), 'delete');
        await floorTrial(() => rack1Agent.call({ op: 'del', name: 'victim' }), () => leaf.waitFor(floorSteady, (h) => h.length > 0 && !h.includes(victim.ip), WAIT_MS), 'notready');
        // Leave gobgpd as the speakers left it: they would withdraw what they did not put there.
        const cleared = leaf.waitFor(floorSteady, gone, WAIT_MS);
        await rack1Agent.call({ op: 'del', name: 'steady' });
        await cleared;
      } finally {
        await lab.thawSpeakers();
      }
      if ((i + 1) % 10 === 0) ctx.say(`convergence: ${i + 1}/${trials} trials`);
    }
    const cleared = leaf.waitFor(steady, gone, WAIT_MS);
    await s.apply(s.prepare('delete', lab.serviceObject('steady', steadyIp)));
    await cleared;

    // What one hop between processes costs after the same idle gap, on this machine: racklb's path
    // has several more of them than the floor's (function, Redis round trips, speaker).
    const redis = connectRedis(lab.state.redis);
    try {
      await redis.connect();
      for (let i = 0; i < Math.min(trials, 30); i++) {
        await sleep(GAP_MS);
        let t0 = performance.now();
        await redis.ping();
        hops.redis_ping.push(performance.now() - t0);
        await sleep(GAP_MS);
        t0 = performance.now();
        const res = await request(`${lab.state.functions['on-service']}health/liveness`);
        await res.body.dump();
        hops.http_get.push(performance.now() - t0);
      }
    } finally {
      redis.disconnect();
    }
  } finally {
    await spine.stop();
    await leaf.stop();
  }

  const section: Record<string, unknown> = {
    trials,
    gap_ms: GAP_MS,
    racks: lab.racks.length,
    nodes_per_rack: rack1.nodes.length,
    // Waits that ended on a table read after ip monitor lost changes (see RouteMonitor.overflows): 0 means every figure is a kernel timestamp.
    approximate_waits: spine.approximate + leaf.approximate,
    monitor_overflows: spine.overflows + leaf.overflows,
    // Times the system clock moved against the monotonic one during the run (see wallNow); each figure is measured against the clock as it was at most a second before.
    wall_clock_steps: wallClock.steps,
    // Events the sender delivered again after a 503 or 429, as the broker would (Sender.apply); a trial that needed one includes its backoff.
    redeliveries: s.redeliveries - redeliveredBefore,
    // The worst stall of each kind the lab's Redis saw during the trials (BenchLab.redisStalls), in ms: a trial far above the rest that matches one waited on Redis.
    redis_stalls_ms: await lab.redisStalls(),
    hop_after_gap: { redis_ping: summarize(hops.redis_ping), http_get_function: summarize(hops.http_get) },
  };
  const rows: Row[] = [];
  for (const kind of KINDS) {
    const a = summarize(samples[kind].racklb);
    const f = summarize(samples[kind].floor);
    const ack = summarize(samples[kind].ack);
    const r50 = ratio(a.p50_ms, f.p50_ms);
    section[kind] = {
      p50_ms: a.p50_ms,
      p90_ms: a.p90_ms,
      p99_ms: a.p99_ms,
      max_ms: a.max_ms,
      floor_p50_ms: f.p50_ms,
      floor_p90_ms: f.p90_ms,
      floor_p99_ms: f.p99_ms,
      ratio_p50: r50,
      ratio_p90: ratio(a.p90_ms, f.p90_ms),
      ratio_p99: ratio(a.p99_ms, f.p99_ms),
      function_answer_p50_ms: ack.p50_ms,
      function_answer_p99_ms: ack.p99_ms,
      n: a.n,
      samples_ms: samples[kind].racklb.map((x) => Math.round(x * 1000) / 1000),
      floor_samples_ms: samples[kind].floor.map((x) => Math.round(x * 1000) / 1000),
    };
    rows.push(
      { figure: `${kind} p50`, value: fmt(a.p50_ms, ' ms'), floor: fmt(f.p50_ms, ' ms'), ratio: fmtRatio(r50), target: '<= 1.25x floor', met: met(r50 <= 1.25) },
      { figure: `${kind} p90`, value: fmt(a.p90_ms, ' ms'), floor: fmt(f.p90_ms, ' ms'), ratio: fmtRatio(ratio(a.p90_ms, f.p90_ms)), target: '', met: '' },
      { figure: `${kind} p99`, value: fmt(a.p99_ms, ' ms'), floor: fmt(f.p99_ms, ' ms'), ratio: fmtRatio(ratio(a.p99_ms, f.p99_ms)), target: '< 250 ms', met: met(a.p99_ms < 250) },
    );
  }
  const png = join(repoRoot(), 'bench', 'results', ctx.quick ? 'quick' : '', 'convergence.png');
  convergencePlot(
    png,
    KINDS.map((k) => ({ title: TITLES[k], racklb: samples[k].racklb, floor: samples[k].floor })),
    `cumulative distribution of ${trials} trials each; blue: racklb (event to kernel table), grey: floor (gobgpd grpc to kernel table)`,
  );
  section.plot = png.slice(repoRoot().length + 1);
  const ping = summarize(hops.redis_ping);
  const get = summarize(hops.http_get);
  rows.push(
    { figure: `one Redis PING after ${GAP_MS} ms idle`, value: `${fmt(ping.p50_ms, ' ms')} (p90 ${fmt(ping.p90_ms, ' ms')})`, floor: '', ratio: '', target: '', met: '' },
    { figure: `one HTTP GET to a function after ${GAP_MS} ms idle`, value: `${fmt(get.p50_ms, ' ms')} (p90 ${fmt(get.p90_ms, ' ms')})`, floor: '', ratio: '', target: '', met: '' },
  );
  return {
    sections: { convergence: section },
    rows,
    notes: [
      `${trials} trials of each change, interleaved racklb / floor, ${GAP_MS} ms idle before each; ${lab.racks.length} racks of ${rack1.nodes.length} nodes, one speaker per rack.`,
      'racklb: from posting the CloudEvent to the function to the kernel timestamp of the route change (ip -ts monitor route). Floor: the same paths added or withdrawn in the same gobgpds over gRPC (AddPathStream), to the same table.',
    ],
  };
}
