/**
 * 5. Memory and start.
 *
 *  - Function start (Knative scale from zero): from spawning `racklb serve on-service` to the first
 *    200 on /health/readiness (which pings Redis). Floor: a bare Node.js HTTP server, same polling.
 *  - Function resident memory idle (after start) and its peak under 64 concurrent events.
 *  - Speaker resident memory with 10,000 Service IPs of 3 next hops each (30,000 paths), in the lab.
 *    Floor: a Node.js process holding and pushing the same paths with the same gRPC client (an agent).
 *  - gobgpd killed (SIGKILL) and started again: time from its start to the leaf's kernel table holding
 *    all 10,000 routes through the rack's 3 nodes again. Floor: the agent provisions the fresh gobgpd
 *    (StartBgp, the same paths, the same peer) as soon as its API port accepts connections.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { join } from 'node:path';
import type { FunctionName } from '../src/store/keys.js';
import { Store } from '../src/store/store.js';
import { GOBGP_API, LAB_REDIS_URL, SPEAKER_METRICS_PORT, SPEAKER_NODE_FLAGS, processPid } from '../src/lab/lab.js';
import { labDir, netnsName } from '../src/lab/paths.js';
import { killPid, spawnInNetns } from '../src/lab/process.js';
import { announceServices, withdrawServices } from './bulk.js';
import { Agent, type BenchLab } from './lib/benchlab.js';
import { seed, serviceObject, type ClusterShape } from './lib/cluster.js';
import type { BenchContext, BenchOutput } from './lib/context.js';
import { Sender } from './lib/events.js';
import { runLoad, type Request } from './lib/load.js';
import { RouteMonitor, wallNow } from './lib/monitor.js';
import { freePort, memoryOf, startFunction, startProcess, startRedis, waitReady } from './lib/procs.js';
import { fmt, fmtRatio, met, type Row } from './lib/results.js';
import { median, ratio, round, summarize } from './lib/stats.js';
import { FLOOR_SERVER } from './throughput.js';
import { repoRoot } from '../src/lab/lab.js';

/** FLOOR_SERVER after importing what `racklb serve` imports from npm (resolved from the repository). */
const FLOOR_WITH_LIBRARIES = `
import { createRequire } from 'node:module';
import { createServer } from 'node:http';
const require = createRequire(process.env.NODE_PATH + '/');
for (const m of ['commander', 'ioredis', 'cloudevents', 'pino', 'prom-client', 'ipaddr.js']) await import(require.resolve(m));
createServer((req, res) => { req.resume(); req.on('end', () => { res.writeHead(200, { 'content-length': 0 }); res.end(); }); }).listen(Number(process.argv[1]), '127.0.0.1');
`;

async function functionStart(ctx: BenchContext): Promise<Record<string, number>> {
  const dir = join(ctx.workDir, 'start');
  const redis = await startRedis(join(dir, 'redis'));
  const store = Store.open(redis.url);
  await store.connect();
  const trials = ctx.quick ? 3 : 10;
  const ready: number[] = [];
  const floor: number[] = [];
  const floorLibs: number[] = [];
  const idle: number[] = [];
  let peak = NaN;
  try {
    const shape: ClusterShape = ctx.quick ? { racks: 10, nodesPerRack: 20, services: 2000 } : { racks: 50, nodesPerRack: 40, services: 10_000 };
    await seed(store, shape);
    for (let t = 0; t < trials; t++) {
      await sleep(200);
      const f = await startFunction('on-service', redis.url, { logFile: join(dir, 'on-service.log') });
      ready.push(f.readyMs);
      await sleep(1000);
      idle.push(memoryOf(f.pid).rss_mb);
      if (t === trials - 1) {
        // Under load: Service updates, 64 in flight, for a few seconds.
        const sender = new Sender({ 'on-service': f.url } as Record<FunctionName, string>, 64, 2);
        const requests: Request[] = [];
        const count = ctx.quick ? 8000 : 30_000;
        for (let k = 0; k < count; k++) {
          const e = sender.prepare('update', serviceObject(k % shape.services, { local: Math.floor(k / shape.services) % 2 === 0 }));
          requests.push({ headers: e.headers, body: e.body });
        }
        await runLoad(f.url, requests, { concurrency: 64, maxEvents: count, maxSeconds: ctx.quick ? 3 : 8 });
        peak = memoryOf(f.pid).peak_mb;
        await sender.close();
      }
      await f.stop();

      await sleep(200);
      const port = await freePort();
      const started = performance.now();
      const p = startProcess([process.execPath, '-e', FLOOR_SERVER, String(port)], { logFile: join(dir, 'floor.log') });
      floor.push(await waitReady(`http://127.0.0.1:${port}/health/readiness`, started, 10_000, p.child));
      await p.stop();

      // The same server after loading the libraries a function loads: what Node pays before racklb runs a line.
      await sleep(200);
      const port2 = await freePort();
      const started2 = performance.now();
      const q = startProcess([process.execPath, '--input-type=module', '-e', FLOOR_WITH_LIBRARIES, String(port2)], { logFile: join(dir, 'floor-libs.log'), env: { NODE_PATH: join(repoRoot(), 'node_modules') } });
      floorLibs.push(await waitReady(`http://127.0.0.1:${port2}/health/readiness`, started2, 10_000, q.child));
      await q.stop();
    }
  } finally {
    await store.close();
    await redis.stop();
  }
  return { ready_ms: median(ready), ready_max_ms: Math.max(...ready), floor_ready_ms: median(floor), floor_libraries_ready_ms: median(floorLibs), idle_rss_mb: median(idle), load_peak_rss_mb: peak, trials };
}

interface LabFigures {
  /** Two speakers restarted with the routes in place, one with SPEAKER_NODE_FLAGS. */
  restarted_rss_mb: number;
  /** The same speaker restarted with Node's default V8 flags (without SPEAKER_NODE_FLAGS; the key predates the second flag). */
  restarted_default_young_rss_mb: number;
  approximate_waits: number;
  monitor_overflows: number;
  speaker_rss_mb: number;
  speaker_peak_mb: number;
  gobgpd_rss_mb: number;
  floor_agent_rss_mb: number;
  reannounce_s: number[];
  floor_reannounce_s: number[];
}

async function labMemory(ctx: BenchContext, lab: BenchLab, n: number): Promise<LabFigures> {
  const rack = lab.racks[0]!;
  const spine = await RouteMonitor.start(lab.spine);
  const leaf = await RouteMonitor.start(rack.name);
  const isBulk = (p: string): boolean => p.startsWith('198.18.') && !/^198\.18\.(25[0-5])\./.test(p);
  const full = (h: readonly string[]): boolean => h.length === rack.nodes.length;
  const out: LabFigures = { restarted_rss_mb: NaN, restarted_default_young_rss_mb: NaN, approximate_waits: 0, monitor_overflows: 0, speaker_rss_mb: NaN, speaker_peak_mb: NaN, gobgpd_rss_mb: NaN, floor_agent_rss_mb: NaN, reannounce_s: [], floor_reannounce_s: [] };
  try {
    const announced = await announceServices(lab, spine, n, 900_000, true);
    ctx.say(`memory: ${n} Services announced (${announced.seconds.toFixed(1)} s)`);
    await sleep(3000);
    const speakers = await lab.speakerPids();
    const mem = speakers.map(memoryOf);
    out.speaker_rss_mb = Math.max(...mem.map((m) => m.rss_mb));
    out.speaker_peak_mb = Math.max(...mem.map((m) => m.peak_mb));
    const gobgpdPid = await processPid(rack.speaker, 'gobgpd');
    out.gobgpd_rss_mb = gobgpdPid === undefined ? NaN : memoryOf(gobgpdPid).rss_mb;

    // Floor memory: a fresh Node.js process with the same client, holding and pushing the same paths.
    await lab.freezeSpeakers();
    const probe = new Agent(rack.speaker);
    try {
      await probe.call({ op: 'prepareRange', name: 'mem', first: '198.19.0.0', count: n, nextHops: rack.nodes.map((x) => x.ip) });
      await probe.call({ op: 'add', name: 'mem' });
      await sleep(1000);
      out.floor_agent_rss_mb = memoryOf(probe.pid!).rss_mb;
      await probe.call({ op: 'del', name: 'mem' });
    } finally {
      await probe.close();
      await lab.thawSpeakers();
    }

    // The same speaker code, restarted with the routes in place, as the lab and the DaemonSet run
    // it (SPEAKER_NODE_FLAGS: a 4 MB V8 young generation, an old generation that grows 30% at a
    // time) and with Node's defaults: read after a 30 s resync of gobgpd's view, the largest thing it does.
    const [deployed, nodeDefault] = [lab.racks[1]!.speaker, lab.racks[2]!.speaker];
    for (const [node, flags] of [[deployed, SPEAKER_NODE_FLAGS], [nodeDefault, []]] as const) {
      const old = await processPid(node, 'speaker');
      if (old !== undefined) await killPid(old, 'SIGTERM');
      spawnInNetns(
        netnsName(node),
        process.execPath,
        [...flags, join(repoRoot(), 'bin', 'racklb.js'), 'speaker', '--node', node, '--redis', LAB_REDIS_URL, '--gobgp', GOBGP_API, '--metrics-port', String(SPEAKER_METRICS_PORT)],
        { logFile: join(labDir(node), 'speaker.log'), pidFile: join(labDir(node), 'speaker.pid') },
      );
    }
    await sleep(ctx.quick ? 5_000 : 35_000);
    out.restarted_rss_mb = memoryOf((await processPid(deployed, 'speaker'))!).rss_mb;
    out.restarted_default_young_rss_mb = memoryOf((await processPid(nodeDefault, 'speaker'))!).rss_mb;

    const trials = ctx.quick ? 1 : 3;
    const agent = lab.agents.get(rack.speaker)!;
    for (let t = 0; t < trials; t++) {
      // racklb: the speaker notices, reconnects and provisions gobgpd again on its own.
      await leaf.waitCount(isBulk, full, n, 120_000);
      await sleep(1000);
      let flushed = leaf.waitCount(isBulk, () => true, 0, 60_000);
      await lab.killGobgpd(rack.speaker);
      await flushed;
      await sleep(300);
      let until = leaf.waitCount(isBulk, full, n, 300_000);
      let t0 = wallNow();
      await lab.startGobgpd(rack.speaker);
      out.reannounce_s.push(((await until) - t0) / 1000);
      ctx.say(`memory: speaker re-announced ${n} routes ${out.reannounce_s.at(-1)!.toFixed(2)} s after gobgpd started`);

      // Floor: speakers frozen, the agent provisions the new gobgpd with what the old one held.
      await leaf.waitCount(isBulk, full, n, 120_000);
      await sleep(1000);
      await lab.freezeSpeakers();
      try {
        await agent.call({ op: 'snapshot' });
        flushed = leaf.waitCount(isBulk, () => true, 0, 60_000);
        await lab.killGobgpd(rack.speaker);
        await flushed;
        await sleep(300);
        until = leaf.waitCount(isBulk, full, n, 300_000);
        t0 = wallNow();
        await lab.startGobgpd(rack.speaker);
        await agent.call({ op: 'provision', name: 'snapshot' });
        out.floor_reannounce_s.push(((await until) - t0) / 1000);
      } finally {
        await lab.thawSpeakers();
      }
      ctx.say(`memory: floor re-announced ${n} routes ${out.floor_reannounce_s.at(-1)!.toFixed(2)} s after gobgpd started`);
    }
    await leaf.waitCount(isBulk, full, n, 120_000);
    await withdrawServices(lab, spine, announced, 900_000);
  } finally {
    await spine.stop();
    await leaf.stop();
    out.approximate_waits = spine.approximate + leaf.approximate;
    out.monitor_overflows = spine.overflows + leaf.overflows;
  }
  return out;
}

export async function memory(ctx: BenchContext): Promise<BenchOutput> {
  const n = ctx.quick ? 500 : 10_000;
  const start = await functionStart(ctx);
  ctx.say(`memory: function ready in ${start.ready_ms?.toFixed(0)} ms (floor ${start.floor_ready_ms?.toFixed(0)} ms)`);
  const lab = await ctx.lab();
  const m = await labMemory(ctx, lab, n);
  const re = summarize(m.reannounce_s.map((x) => x * 1000));
  const fre = summarize(m.floor_reannounce_s.map((x) => x * 1000));
  const reS = round(re.p50_ms / 1000);
  const freS = round(fre.p50_ms / 1000);
  const rows: Row[] = [
    { figure: `speaker RSS, ${n.toLocaleString('en-US')} IPs x 3 next hops`, value: fmt(m.speaker_rss_mb, ' MB'), floor: fmt(m.floor_agent_rss_mb, ' MB'), ratio: fmtRatio(ratio(m.speaker_rss_mb, m.floor_agent_rss_mb)), target: '< 150 MB', met: met(m.speaker_rss_mb < 150) },
    { figure: 'speaker RSS, restarted, after a resync', value: fmt(m.restarted_rss_mb, ' MB'), floor: '', ratio: '', target: '', met: '' },
    { figure: "  same, Node's default V8 flags", value: fmt(m.restarted_default_young_rss_mb, ' MB'), floor: '', ratio: '', target: '', met: '' },
    { figure: 'gobgpd RSS, same routes (for scale)', value: fmt(m.gobgpd_rss_mb, ' MB'), floor: '', ratio: '', target: '', met: '' },
    { figure: 'function ready from start', value: fmt(start.ready_ms, ' ms'), floor: fmt(start.floor_ready_ms, ' ms'), ratio: fmtRatio(ratio(start.ready_ms!, start.floor_ready_ms!)), target: '< 500 ms', met: met(start.ready_max_ms! < 500) },
    { figure: 'Node + the same npm libraries, ready', value: '', floor: fmt(start.floor_libraries_ready_ms, ' ms'), ratio: '', target: '', met: '' },
    { figure: 'function RSS idle', value: fmt(start.idle_rss_mb, ' MB'), floor: '', ratio: '', target: '', met: '' },
    { figure: 'function RSS peak under load', value: fmt(start.load_peak_rss_mb, ' MB'), floor: '', ratio: '', target: '', met: '' },
    { figure: `re-announce ${n.toLocaleString('en-US')} routes after gobgpd restart`, value: fmt(reS, ' s'), floor: fmt(freS, ' s'), ratio: fmtRatio(ratio(reS, freS)), target: '', met: '' },
  ];
  return {
    sections: {
      memory: {
        routes: n,
        next_hops: lab.racks[0]!.nodes.length,
        speaker_rss_mb: round(m.speaker_rss_mb),
        speaker_peak_rss_mb: round(m.speaker_peak_mb),
        speaker_restarted_rss_mb: round(m.restarted_rss_mb),
        speaker_restarted_default_young_generation_rss_mb: round(m.restarted_default_young_rss_mb),
        floor_node_client_rss_mb: round(m.floor_agent_rss_mb),
        gobgpd_rss_mb: round(m.gobgpd_rss_mb),
        function_idle_rss_mb: round(start.idle_rss_mb!),
        function_load_peak_rss_mb: round(start.load_peak_rss_mb!),
      },
      start: {
        function_ready_ms: round(start.ready_ms!),
        function_ready_max_ms: round(start.ready_max_ms!),
        floor_node_http_ready_ms: round(start.floor_ready_ms!),
        floor_node_http_with_libraries_ready_ms: round(start.floor_libraries_ready_ms!),
        trials: start.trials,
        speaker_reannounce_s: reS,
        floor_reannounce_s: freS,
        reannounce_runs_s: m.reannounce_s.map((x) => round(x)),
        approximate_waits: m.approximate_waits,
        monitor_overflows: m.monitor_overflows,
        floor_reannounce_runs_s: m.floor_reannounce_s.map((x) => round(x)),
      },
    },
    rows,
    notes: [
      'Function ready: median of the trials (target checked on the slowest), polled every 2 ms; floor: `node -e` HTTP server, same polling. RSS from /proc/<pid>/status (VmRSS; peak: VmHWM).',
      `Re-announce: gobgpd of ${lab.racks[0]!.speaker} SIGKILLed, the leaf's routes flushed, gobgpd started; time to all ${n} routes through the rack's ${lab.racks[0]!.nodes.length} nodes in the leaf's kernel table.`,
    ],
  };
}
