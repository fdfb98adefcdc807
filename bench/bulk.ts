/**
 * 2. Bulk announcement: N Services (10,000; 1,000 with --quick) created as events, each taking its
 * IP from the default Eip, until all N are in the spine's kernel table through every leaf. The
 * events go to the lab's on-service function 64 at a time, as a broker with that much parallelism
 * would deliver them. Floor: the same N prefixes with the same next hops, prepared beforehand and
 * streamed straight into the three gobgpds (AddPathStream, 100 paths per message), speakers frozen.
 * Afterwards both are withdrawn again (racklb: N delete events), which is reported as well.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchContext, BenchOutput } from './lib/context.js';
import { FLOOR_FIRST, type BenchLab } from './lib/benchlab.js';
import { RouteMonitor, wallNow } from './lib/monitor.js';
import { fmt, fmtRatio, met } from './lib/results.js';
import { cpuByRole, cpuDiff } from './lib/procs.js';
import { ratio, round } from './lib/stats.js';

const isRacklbBulk = (p: string): boolean => p.startsWith('198.18.') && !/^198\.18\.(25[0-5])\./.test(p);
const isFloorBulk = (p: string): boolean => p.startsWith('198.19.') && !/^198\.19\.(25[0-5])\./.test(p);

export interface BulkRun {
  seconds: number;
  withdraw_seconds: number;
  /** CPU seconds by process role during the announce (cpuByRole). */
  cpu_seconds?: Record<string, number>;
}

export interface Announced {
  seconds: number;
  cpu_seconds: Record<string, number>;
  /** Service name and requested IP (if any), for the deletes. */
  services: { name: string; ip: string | undefined }[];
}

let batch = 0;

/** The i-th address of the bulk range, the one the default Eip's lowest-free rule would also give. */
function bulkIp(i: number): string {
  return `198.18.${i >> 8}.${i & 255}`;
}

/**
 * Creates `n` Services as events and waits for all of them at the spine through every leaf; leaves
 * them in place. Names carry a batch number: a deleted Service's tombstone refuses its uid again.
 * `requested`: each Service asks for its address (annotation), else the default Eip picks the lowest free one.
 */
export async function announceServices(lab: BenchLab, spine: RouteMonitor, n: number, timeoutMs: number, requested = false): Promise<Announced> {
  const s = lab.sender;
  const b = batch++;
  const services = Array.from({ length: n }, (_, i) => ({ name: `bulk${b}-${i}`, ip: requested ? bulkIp(i) : undefined }));
  const events = services.map((x) => s.prepare('add', lab.serviceObject(x.name, x.ip)));
  const all = (h: readonly string[]): boolean => h.length === lab.uplinks.length;
  const until = spine.waitCount(isRacklbBulk, all, n, timeoutMs);
  const cpu = cpuByRole();
  const t0 = wallNow();
  await s.applyAll(events, 64);
  const seconds = ((await until) - t0) / 1000;
  return { seconds, cpu_seconds: cpuDiff(cpu, cpuByRole()), services };
}

export async function withdrawServices(lab: BenchLab, spine: RouteMonitor, announced: Announced, timeoutMs: number): Promise<number> {
  const s = lab.sender;
  const events = announced.services.map((x) => s.prepare('delete', lab.serviceObject(x.name, x.ip)));
  const until = spine.waitCount(isRacklbBulk, () => true, 0, timeoutMs);
  const t0 = wallNow();
  await s.applyAll(events, 64);
  return ((await until) - t0) / 1000;
}

async function floorRun(lab: BenchLab, spine: RouteMonitor, n: number, timeoutMs: number): Promise<BulkRun> {
  const agents = lab.racks.map((r) => ({ rack: r, agent: lab.agents.get(r.speaker)! }));
  await lab.freezeSpeakers();
  try {
    for (const { rack, agent } of agents) await agent.call({ op: 'prepareRange', name: 'bulk', first: FLOOR_FIRST, count: n, nextHops: rack.nodes.map((x) => x.ip) });
    await sleep(300);
    const all = (h: readonly string[]): boolean => h.length === lab.uplinks.length;
    let until = spine.waitCount(isFloorBulk, all, n, timeoutMs);
    const cpu = cpuByRole();
    let t0 = wallNow();
    await Promise.all(agents.map(({ agent }) => agent.call({ op: 'add', name: 'bulk' })));
    const seconds = ((await until) - t0) / 1000;
    const cpuSeconds = cpuDiff(cpu, cpuByRole());
    await sleep(300);
    until = spine.waitCount(isFloorBulk, () => true, 0, timeoutMs);
    t0 = wallNow();
    await Promise.all(agents.map(({ agent }) => agent.call({ op: 'del', name: 'bulk' })));
    const withdraw = ((await until) - t0) / 1000;
    return { seconds, withdraw_seconds: withdraw, cpu_seconds: cpuSeconds };
  } finally {
    await lab.thawSpeakers();
  }
}

export async function bulk(ctx: BenchContext): Promise<BenchOutput> {
  const lab = await ctx.lab();
  const n = ctx.quick ? 500 : 10_000;
  const rounds = ctx.quick ? 1 : 2;
  const timeoutMs = 900_000;
  const spine = await RouteMonitor.start(lab.spine);
  const racklbRuns: BulkRun[] = [];
  const requestedRuns: BulkRun[] = [];
  const floorRuns: BulkRun[] = [];
  const redeliveredBefore = lab.sender.redeliveries;
  await lab.redisStalls();
  try {
    for (let i = 0; i < rounds; i++) {
      for (const requested of [false, true]) {
        await sleep(300);
        const announced = await announceServices(lab, spine, n, timeoutMs, requested);
        ctx.say(`bulk: racklb announced ${n} routes (${requested ? 'requested IPs' : 'default Eip'}) in ${announced.seconds.toFixed(2)} s`);
        await sleep(300);
        const withdraw = await withdrawServices(lab, spine, announced, timeoutMs);
        (requested ? requestedRuns : racklbRuns).push({ seconds: announced.seconds, withdraw_seconds: withdraw, cpu_seconds: announced.cpu_seconds });
      }
      const f = await floorRun(lab, spine, n, timeoutMs);
      ctx.say(`bulk: floor announced ${n} routes in ${f.seconds.toFixed(2)} s`);
      floorRuns.push(f);
    }
  } finally {
    await spine.stop();
  }
  const stalls = await lab.redisStalls();
  const approximate = spine.approximate;
  const overflows = spine.overflows;
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.ceil(xs.length / 2) - 1] ?? NaN;
  const seconds = round(med(racklbRuns.map((r) => r.seconds)));
  const floor = round(med(floorRuns.map((r) => r.seconds)));
  const wSeconds = round(med(racklbRuns.map((r) => r.withdraw_seconds)));
  const wFloor = round(med(floorRuns.map((r) => r.withdraw_seconds)));
  const r = ratio(seconds, floor);
  const rqSeconds = round(med(requestedRuns.map((x) => x.seconds)));
  const rqWithdraw = round(med(requestedRuns.map((x) => x.withdraw_seconds)));
  const racklbCpu = meanCpu(racklbRuns);
  const floorCpu = meanCpu(floorRuns);
  return {
    sections: {
      bulk: {
        routes: n,
        seconds,
        floor_seconds: floor,
        ratio: r,
        withdraw_seconds: wSeconds,
        floor_withdraw_seconds: wFloor,
        withdraw_ratio: ratio(wSeconds, wFloor),
        rounds,
        // Waits that ended on a table read because ip monitor lost changes in a burst (0: all kernel timestamps).
        approximate_waits: approximate,
        monitor_overflows: overflows,
        // Events delivered again after a 503 or 429 (Sender.apply), as the broker would; each one's backoff is in its run's seconds.
        redeliveries: lab.sender.redeliveries - redeliveredBefore,
        // The worst stall of each kind the lab's Redis saw during the runs (BenchLab.redisStalls), in ms.
        redis_stalls_ms: stalls,
        runs: racklbRuns,
        floor_runs: floorRuns,
        // Where the announce's CPU went, by process (mean over the rounds): what racklb adds, and what the floor itself costs.
        cpu_seconds: { racklb: racklbCpu, floor: floorCpu, racklb_total: total(racklbCpu), floor_total: total(floorCpu) },
        requested_ip: { seconds: rqSeconds, ratio: ratio(rqSeconds, floor), withdraw_seconds: rqWithdraw, runs: requestedRuns },
      },
    },
    rows: [
      { figure: `announce ${n.toLocaleString('en-US')} routes`, value: fmt(seconds, ' s'), floor: fmt(floor, ' s'), ratio: fmtRatio(r), target: '<= 1.5x floor', met: met(r <= 1.5) },
      { figure: `CPU in the announce (core-seconds)`, value: describeCpu(racklbCpu), floor: describeCpu(floorCpu), ratio: fmtRatio(ratio(total(racklbCpu), total(floorCpu))), target: '', met: '' },
      { figure: `withdraw ${n.toLocaleString('en-US')} routes`, value: fmt(wSeconds, ' s'), floor: fmt(wFloor, ' s'), ratio: fmtRatio(ratio(wSeconds, wFloor)), target: '', met: '' },
      { figure: `announce ${n.toLocaleString('en-US')}, IPs requested`, value: fmt(rqSeconds, ' s'), floor: fmt(floor, ' s'), ratio: fmtRatio(ratio(rqSeconds, floor)), target: '<= 1.5x floor', met: met(ratio(rqSeconds, floor) <= 1.5) },
      { figure: `withdraw ${n.toLocaleString('en-US')}, IPs requested`, value: fmt(rqWithdraw, ' s'), floor: fmt(wFloor, ' s'), ratio: fmtRatio(ratio(rqWithdraw, wFloor)), target: '', met: '' },
    ],
    notes: [
      `Median of ${rounds} round(s). racklb: ${n} Service add events (64 in flight) to all ${n} routes at the spine through all ${lab.racks.length} leaves, with the addresses chosen by the default Eip (lowest free) and, second, requested by each Service (annotation); floor: the same paths streamed into the three gobgpds. Withdraw: ${n} delete events / the same paths withdrawn.`,
    ],
  };
}

function meanCpu(runs: readonly BulkRun[]): Record<string, number> {
  const sum: Record<string, number> = {};
  for (const r of runs) for (const [role, sec] of Object.entries(r.cpu_seconds ?? {})) sum[role] = (sum[role] ?? 0) + sec;
  return Object.fromEntries(Object.entries(sum).map(([role, sec]) => [role, round(sec / runs.length)]).sort((a, b) => (b[1] as number) - (a[1] as number)));
}

function total(cpu: Record<string, number>): number {
  return round(Object.values(cpu).reduce((a, b) => a + b, 0));
}

/** "9.1: gobgpd 3.0, on-service 2.1, ..." for the table: the total, then the three largest. */
function describeCpu(cpu: Record<string, number>): string {
  const top = Object.entries(cpu).slice(0, 3).map(([role, sec]) => `${role} ${sec.toFixed(1)}`);
  return `${total(cpu).toFixed(1)} (${top.join(', ')})`;
}
