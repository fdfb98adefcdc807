/**
 * 3. Function throughput and latency: one function process pinned to one core (taskset), a real
 * redis-server, a stored state of 2,000 nodes in 50 racks and 10,000 Services, 64 requests in
 * flight, for each function. Redis and the load generator share the other core.
 *
 *  - on-node-label: Node updates that flip Ready (a next hop leaves or joins its rack), over every node.
 *  - on-service:    Service updates that flip externalTrafficPolicy (the route intent changes), over every Service.
 *  - on-bgppeer:    BgpPeer updates that change the hold time (every speaker of the rack gets a new peer list).
 *
 * Floors in the same run: a Node.js HTTP server on the same core that reads the body and answers
 * 200 without work, under the same load; and redis-benchmark (GET and SET, 64 clients) against the
 * same Redis, turned into events per second with the number of Redis commands one event costs.
 * CPU time per event (the function's, and the bare server's per request) is read from /proc: on a
 * shared machine it moves much less than a rate does.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FUNCTION_NAMES } from '../src/functions.js';
import type { FunctionName } from '../src/store/keys.js';
import { Store } from '../src/store/store.js';
import { bgpPeerObject, nodeObject, seed, serviceObject, type ClusterShape } from './lib/cluster.js';
import type { BenchContext, BenchOutput } from './lib/context.js';
import { Sender } from './lib/events.js';
import { runLoad, type LoadResult, type Request } from './lib/load.js';
import { commandStats, cpuSecondsOf, diffStats, freePort, memoryOf, pinSelf, startFunction, startProcess, startRedis, waitReady } from './lib/procs.js';
import { fmt, fmtRatio, met, type Row } from './lib/results.js';
import { ratio, round } from './lib/stats.js';

const run = promisify(execFile);
const FUNCTION_CPU = '1';
const OTHER_CPU = '0';
const CONCURRENCY = 64;

/** The events of one function, in order; every one is a real change (applied, never stale). */
function eventsFor(fn: FunctionName, shape: ClusterShape, count: number, sender: Sender): Request[] {
  const out: Request[] = [];
  const nodes = shape.racks * shape.nodesPerRack;
  for (let k = 0; k < count; k++) {
    let e;
    if (fn === 'on-node-label') {
      const i = k % nodes;
      const pass = Math.floor(k / nodes);
      e = sender.prepare('update', nodeObject(Math.floor(i / shape.nodesPerRack), i % shape.nodesPerRack, { ready: pass % 2 === 1 }));
    } else if (fn === 'on-service') {
      const i = k % shape.services;
      const pass = Math.floor(k / shape.services);
      e = sender.prepare('update', serviceObject(i, { local: pass % 2 === 0 }));
    } else {
      const r = k % shape.racks;
      const pass = Math.floor(k / shape.racks);
      e = sender.prepare('update', bgpPeerObject(r, { holdTime: pass % 2 === 0 ? 30 : 90 }));
    }
    out.push({ headers: e.headers, body: e.body });
  }
  return out;
}

export const FLOOR_SERVER = `
const http = require('node:http');
http.createServer((req, res) => {
  req.resume();
  req.on('end', () => { res.writeHead(200, { 'content-length': 0 }); res.end(); });
}).listen(Number(process.argv[1]), '127.0.0.1');
`;

/** On the function's core (idle by then), like the function: on Redis's own core it would halve Redis. */
async function redisBenchmark(socket: string, requests: number): Promise<number> {
  const { stdout } = await run('taskset', ['-c', FUNCTION_CPU, 'redis-benchmark', '-s', socket, '-c', String(CONCURRENCY), '-n', String(requests), '-t', 'get,set', '--csv'], { timeout: 120_000 });
  const rates = [...stdout.matchAll(/^"(GET|SET)","([\d.]+)"/gm)].map((m) => Number(m[2]));
  if (rates.length === 0) throw new Error(`cannot read redis-benchmark output: ${stdout.slice(0, 300)}`);
  return rates.reduce((a, b) => a + b, 0) / rates.length;
}

interface FunctionFigures {
  load: LoadResult;
  /** The function process's own CPU time per event (user and system), in microseconds. */
  cpu_usec_per_event: number;
  redis_commands_per_event: number;
  redis_usec_per_event: number;
  transactions_per_event: number;
  commands: Record<string, number>;
  idle_rss_mb: number;
  peak_rss_mb: number;
  ready_ms: number;
}

export async function throughput(ctx: BenchContext): Promise<BenchOutput> {
  const shape: ClusterShape = ctx.quick ? { racks: 10, nodesPerRack: 20, services: 2000 } : { racks: 50, nodesPerRack: 40, services: 10_000 };
  const maxEvents = ctx.quick ? 10_000 : 60_000;
  const maxSeconds = ctx.quick ? 3 : 12;
  const warmup = ctx.quick ? 500 : 4000;
  const dir = join(ctx.workDir, 'throughput');
  await pinSelf(OTHER_CPU);
  const redis = await startRedis(join(dir, 'redis'), OTHER_CPU);
  const store = Store.open(redis.url);
  await store.connect();
  const figures = {} as Record<FunctionName, FunctionFigures>;
  let httpFloor: LoadResult | undefined;
  let httpFloorCpu = NaN;
  let redisGetSet = NaN;
  try {
    for (const fn of FUNCTION_NAMES) {
      await store.redis.flushall();
      await seed(store, shape);
      const f = await startFunction(fn, redis.url, { cpus: FUNCTION_CPU, logFile: join(dir, `${fn}.log`) });
      try {
        const sender = new Sender({ [fn]: f.url } as Record<FunctionName, string>, CONCURRENCY, 2);
        const requests = eventsFor(fn, shape, warmup + maxEvents, sender);
        await new Promise((r) => setTimeout(r, 500));
        const idle = memoryOf(f.pid);
        // Stats from the measured part only: warm-up first (opens every connection, settles the JIT), then reset.
        await runLoad(f.url, requests.slice(0, warmup), { concurrency: CONCURRENCY, maxEvents: warmup, maxSeconds: 60 });
        await store.redis.config('RESETSTAT');
        const before = await commandStats(store.redis);
        const cpuBefore = cpuSecondsOf(f.pid);
        const measured = await runLoadFrom(f.url, requests, warmup, maxEvents, maxSeconds);
        const cpu = cpuSecondsOf(f.pid) - cpuBefore;
        const after = await commandStats(store.redis);
        const d = diffStats(before, after);
        const events = measured.events;
        figures[fn] = {
          load: measured,
          cpu_usec_per_event: round((cpu * 1e6) / events),
          redis_commands_per_event: round(d.calls / events),
          redis_usec_per_event: round(d.usec / events),
          transactions_per_event: round((d.byCommand.exec ?? 0) / events),
          commands: Object.fromEntries(Object.entries(d.byCommand).map(([k, v]) => [k, round(v / events)])),
          idle_rss_mb: round(idle.rss_mb),
          peak_rss_mb: round(memoryOf(f.pid).peak_mb),
          ready_ms: round(f.readyMs),
        };
        ctx.say(`throughput: ${fn}: ${Math.round(measured.events_per_s)} events/s, p50 ${measured.latency.p50_ms} ms, p99 ${measured.latency.p99_ms} ms, ${figures[fn].cpu_usec_per_event} us CPU/event, ${figures[fn].redis_commands_per_event} Redis commands/event`);
        await sender.close();
      } finally {
        await f.stop();
      }
    }

    // Floor 1: Node's HTTP server on the same core, same requests, no work.
    const port = await freePort();
    const floor = startProcess([process.execPath, '-e', FLOOR_SERVER, String(port)], { cpus: FUNCTION_CPU, logFile: join(dir, 'floor-http.log') });
    try {
      const url = `http://127.0.0.1:${port}/`;
      await waitReady(url, performance.now(), 10_000);
      const sender = new Sender({ 'on-service': url } as Record<FunctionName, string>, CONCURRENCY, 2);
      const requests = eventsFor('on-service', shape, warmup + maxEvents, sender);
      await runLoad(url, requests.slice(0, warmup), { concurrency: CONCURRENCY, maxEvents: warmup, maxSeconds: 60 });
      const cpuBefore = cpuSecondsOf(floor.pid);
      httpFloor = await runLoadFrom(url, requests, warmup, maxEvents, maxSeconds);
      httpFloorCpu = ((cpuSecondsOf(floor.pid) - cpuBefore) * 1e6) / httpFloor.events;
      await sender.close();
    } finally {
      await floor.stop();
    }
    // Floor 2: what this Redis does with simple commands from 64 clients.
    redisGetSet = await redisBenchmark(redis.socket, ctx.quick ? 100_000 : 400_000);
  } finally {
    await store.close();
    await redis.stop();
    await pinSelf(`0-${Math.max(0, (await import('node:os')).cpus().length - 1)}`);
  }

  const section: Record<string, unknown> = {
    state: { nodes: shape.racks * shape.nodesPerRack, racks: shape.racks, services: shape.services },
    concurrency: CONCURRENCY,
    http_floor: { events_per_s: round(httpFloor!.events_per_s), p50_ms: httpFloor!.latency.p50_ms, p99_ms: httpFloor!.latency.p99_ms, cpu_usec_per_event: round(httpFloorCpu) },
    redis_benchmark_get_set_per_s: round(redisGetSet),
  };
  const rows: Row[] = [];
  for (const fn of FUNCTION_NAMES) {
    const x = figures[fn];
    const redisFloor = redisGetSet / x.redis_commands_per_event;
    const fl = httpFloor!;
    section[fn] = {
      events_per_s: round(x.load.events_per_s),
      p50_ms: x.load.latency.p50_ms,
      p90_ms: x.load.latency.p90_ms,
      p99_ms: x.load.latency.p99_ms,
      cpu_usec_per_event: x.cpu_usec_per_event,
      events: x.load.events,
      seconds: round(x.load.seconds),
      statuses: x.load.statuses,
      errors: x.load.errors,
      redis_commands_per_event: x.redis_commands_per_event,
      redis_usec_per_event: x.redis_usec_per_event,
      transactions_per_event: x.transactions_per_event,
      commands_per_event: x.commands,
      floor_http_events_per_s: round(fl.events_per_s),
      floor_redis_events_per_s: round(redisFloor),
      // Redis's own CPU per event: the rate at which Redis alone would saturate its core.
      floor_redis_cpu_events_per_s: round(1e6 / x.redis_usec_per_event),
      ratio_http: ratio(fl.events_per_s, x.load.events_per_s),
      idle_rss_mb: x.idle_rss_mb,
      peak_rss_mb: x.peak_rss_mb,
    };
    rows.push(
      { figure: `${fn} events/s`, value: fmt(x.load.events_per_s), floor: `${fmt(fl.events_per_s)} http / ${fmt(redisFloor)} redis`, ratio: fmtRatio(ratio(fl.events_per_s, x.load.events_per_s)), target: '>= 5,000/s', met: met(x.load.events_per_s >= 5000) },
      { figure: `${fn} p50`, value: fmt(x.load.latency.p50_ms, ' ms'), floor: fmt(fl.latency.p50_ms, ' ms'), ratio: fmtRatio(ratio(x.load.latency.p50_ms, fl.latency.p50_ms)), target: '', met: '' },
      { figure: `${fn} p99`, value: fmt(x.load.latency.p99_ms, ' ms'), floor: fmt(fl.latency.p99_ms, ' ms'), ratio: fmtRatio(ratio(x.load.latency.p99_ms, fl.latency.p99_ms)), target: '< 20 ms', met: met(x.load.latency.p99_ms < 20) },
      // 5,000 events/s on one core leaves 200 us of CPU per event.
      { figure: `${fn} CPU/event`, value: fmt(x.cpu_usec_per_event, ' us'), floor: fmt(httpFloorCpu, ' us'), ratio: fmtRatio(ratio(x.cpu_usec_per_event, httpFloorCpu)), target: '<= 200 us', met: met(x.cpu_usec_per_event <= 200) },
      {
        figure: `${fn} Redis commands/event`,
        value: fmt(x.redis_commands_per_event),
        floor: `Redis CPU ${fmt(x.redis_usec_per_event, ' us')}/event (${fmt(1e6 / x.redis_usec_per_event)}/s)`,
        ratio: '',
        target: '',
        met: '',
      },
    );
  }
  return {
    sections: { throughput: section },
    rows,
    notes: [
      `State: ${shape.racks * shape.nodesPerRack} nodes in ${shape.racks} racks (2 speakers and 1 BgpPeer per rack), ${shape.services} Services. Function pinned to CPU ${FUNCTION_CPU}; Redis and the load generator on CPU ${OTHER_CPU}. ${CONCURRENCY} requests in flight, at most ${maxEvents} events or ${maxSeconds} s after ${warmup} warm-up events.`,
      'The events/s ratio is floor / racklb (how many times faster the empty HTTP server is). Redis floor: redis-benchmark GET/SET rate divided by the Redis commands one event costs (MULTI, EXEC and queued commands included).',
    ],
  };
}

/** runLoad over requests[from, from + max): the warm-up took the ones before. */
async function runLoadFrom(url: string, requests: readonly Request[], from: number, maxEvents: number, maxSeconds: number): Promise<LoadResult> {
  return runLoad(url, requests.slice(from), { concurrency: CONCURRENCY, maxEvents, maxSeconds });
}
