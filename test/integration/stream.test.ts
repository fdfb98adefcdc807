/**
 * The KEDA path: the same handlers consuming a function's Redis stream with a consumer group.
 */
import { pino } from 'pino';
import { request } from 'undici';
import { beforeEach, describe, expect, it } from 'vitest';
import { apiServerEvent } from '../../src/events/codec.js';
import { FUNCTIONS, functionFor } from '../../src/functions.js';
import { consumeStream, publishToStream, STUCK_AFTER_MS, StreamConsumerHealth, trimConsumed } from '../../src/serve/stream.js';
import type { Kind } from '../../src/core/types.js';
import { readState } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { waitFor } from '../../src/lab/process.js';
import { cli, spawnCli } from '../helpers/cli.js';
import { node, porterLbExample } from '../helpers/fixtures.js';
import { freePort } from '../helpers/gobgpd.js';
import { useRedisStore, type TestRedis } from '../helpers/redis.js';

let store: Store;
let redis: TestRedis;
const logger = pino({ level: 'silent' });
useRedisStore((s, r) => {
  store = s;
  redis = r;
});

beforeEach(async () => {
  await store.redis.flushall();
});

/** XINFO GROUPS of a stream, for one group, as an object (`{}` when the group is missing). */
async function groupInfo(key: string, group: string): Promise<Record<string, unknown>> {
  const groups = (await store.redis.xinfo('GROUPS', key)) as unknown[][];
  const fields = groups.find((g) => g[g.indexOf('name') + 1] === group) ?? [];
  return Object.fromEntries(Array.from({ length: fields.length / 2 }, (_, i) => [String(fields[2 * i]), fields[2 * i + 1]]));
}

/** Runs one consumer per function until `until` holds, then stops them all. */
async function consumeUntil(until: () => Promise<boolean>, opts: { claimIdleMs?: number } = {}): Promise<void> {
  const stop = new AbortController();
  const running = Object.values(FUNCTIONS).map((def) => consumeStream(def, { store, logger }, { consumer: `test-${def.name}`, signal: stop.signal, blockMs: 100, claimIdleMs: opts.claimIdleMs ?? 30_000 }));
  try {
    await waitFor('the consumers to apply the events', async () => (await until()) || undefined, 15_000, 50);
  } finally {
    stop.abort();
    await Promise.all(running);
  }
}

async function publishExample(): Promise<void> {
  const ex = porterLbExample();
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice]) {
    await publishToStream(store, functionFor(o.kind as Kind).name, apiServerEvent('add', o as Record<string, unknown>, 'test'));
  }
}

describe('Redis stream consumers (KEDA)', () => {
  it('apply every event and acknowledge each only once stored', async () => {
    await publishExample();
    await consumeUntil(async () => (await readState(store)).racks.leaf1?.routes['172.22.0.2/32']?.length === 2);
    const state = await readState(store);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4']);
    expect(state.peers.master1?.map((p) => p.name)).toEqual(['bgppeer-leaf1']);
    for (const def of Object.values(FUNCTIONS)) {
      const pending = (await store.redis.xpending(store.keys.eventStream(def.name), def.name)) as [number, ...unknown[]];
      expect(pending[0]).toBe(0);
    }
  });

  it('journals and acknowledges an undecodable entry instead of retrying it forever', async () => {
    await store.redis.xadd(store.keys.eventStream('on-node-label'), '*', 'event', '{"specversion":"1.0"');
    await consumeUntil(async () => (await store.redis.xlen(store.keys.journal())) === 1);
    const [entry] = await store.redis.xrange(store.keys.journal(), '-', '+');
    expect(entry?.[1]).toContain('rejected');
    const pending = (await store.redis.xpending(store.keys.eventStream('on-node-label'), 'on-node-label')) as [number];
    expect(pending[0]).toBe(0);
  });

  it('takes over entries a killed consumer left pending', async () => {
    await publishExample();
    // A consumer reads the node events and dies before acknowledging them.
    const key = store.keys.eventStream('on-node-label');
    // publishToStream made the group.
    const taken = (await store.redis.xreadgroup('GROUP', 'on-node-label', 'killed-pod', 'COUNT', 100, 'STREAMS', key, '>')) as [string, unknown[]][];
    expect(taken[0]?.[1].length).toBe(3);
    await new Promise((r) => setTimeout(r, 150));
    await consumeUntil(async () => Object.keys((await readState(store)).peers).length === 2, { claimIdleMs: 100 });
    const pending = (await store.redis.xpending(key, 'on-node-label')) as [number];
    expect(pending[0]).toBe(0);
  });

  it('publishing makes the consumer group KEDA measures lag on, before any consumer runs and again after Redis lost it', async () => {
    const key = store.keys.eventStream('on-node-label');
    const lag = (): Promise<Record<string, unknown>> => groupInfo(key, 'on-node-label');
    const [n1, n2] = porterLbExample().nodes;
    await publishToStream(store, 'on-node-label', apiServerEvent('add', n1 as Record<string, unknown>, 'test'));
    await publishToStream(store, 'on-node-label', apiServerEvent('add', n2 as Record<string, unknown>, 'test'));
    expect(await lag()).toMatchObject({ name: 'on-node-label', lag: 2, pending: 0 });
    // As a Redis that restarted empty: the group went with the stream, and the next event brings both back.
    await store.redis.flushall();
    await publishToStream(store, 'on-node-label', apiServerEvent('add', n1 as Record<string, unknown>, 'test'));
    expect(await lag()).toMatchObject({ name: 'on-node-label', lag: 1, pending: 0 });
  });

  describe('trimming what was consumed', () => {
    // More than one macro node of the stream (100 entries): XTRIM MINID ~ frees whole nodes only.
    const COUNT = 250;
    const key = (): string => store.keys.eventStream('on-node-label');
    const publishNodes = async (from: number, count: number): Promise<void> => {
      for (let i = from; i < from + count; i++) {
        await publishToStream(store, 'on-node-label', apiServerEvent('add', node({ name: `w${i}`, ip: `198.51.100.${i % 250}`, rack: 'leaf1' }), 'test'));
      }
    };
    const lagOf = async (group: string): Promise<unknown> => (await groupInfo(key(), group)).lag;
    const nodesStored = async (): Promise<number> => (await store.redis.scard(store.keys.index('Node')));

    it('drops acknowledged entries and leaves the lag KEDA scales on computable', async () => {
      await store.redis.xgroup('CREATE', key(), 'on-node-label', '0', 'MKSTREAM');
      await publishNodes(0, COUNT);
      await consumeUntil(async () => (await nodesStored()) === COUNT);
      expect(await store.redis.xlen(key())).toBeLessThanOrEqual(100);
      // Events that arrive while no consumer runs are counted as lag, not as nil (KEDA reads nil as 0).
      await publishNodes(COUNT, 5);
      expect(await lagOf('on-node-label')).toBe(5);
    });

    it('keeps an entry a killed consumer left pending, so it can still be taken over', async () => {
      await store.redis.xgroup('CREATE', key(), 'on-node-label', '0', 'MKSTREAM');
      await publishNodes(0, COUNT);
      const taken = (await store.redis.xreadgroup('GROUP', 'on-node-label', 'killed-pod', 'COUNT', 1, 'STREAMS', key(), '>')) as [string, [string, string[]][]][];
      const orphan = taken[0]?.[1][0]?.[0] ?? '';
      await consumeUntil(async () => (await nodesStored()) === COUNT - 1);
      expect(await store.redis.xrange(key(), orphan, orphan)).toHaveLength(1);
      expect(await store.redis.xlen(key())).toBeGreaterThanOrEqual(COUNT - 100);
      await consumeUntil(async () => (await nodesStored()) === COUNT, { claimIdleMs: 1 });
      // Taken over and acknowledged, the orphan no longer holds the stream back.
      expect(await trimConsumed(store.redis, key())).toBeGreaterThan(0);
      expect(await store.redis.xlen(key())).toBeLessThanOrEqual(100);
    });

    it('keeps every entry another consumer group has not read yet', async () => {
      await store.redis.xgroup('CREATE', key(), 'on-node-label', '0', 'MKSTREAM');
      await store.redis.xgroup('CREATE', key(), 'audit', '0');
      await publishNodes(0, COUNT);
      await consumeUntil(async () => (await nodesStored()) === COUNT);
      expect(await store.redis.xlen(key())).toBe(COUNT);
      expect(await lagOf('audit')).toBe(COUNT);
    });
  });

  describe('racklb serve --from-stream, as a Deployment runs it', () => {
    const status = (url: string): Promise<number> => request(url).then((r) => (r.body.dump(), r.statusCode), () => 0);

    it('serves its metrics and probes on --metrics-port: outcomes, the process\'s figures, readiness that follows Redis', async () => {
      const port = await freePort();
      const ops = `http://127.0.0.1:${port}`;
      const consumer = spawnCli(['serve', 'on-node-label', '--from-stream', '--consumer', 'cli-pod', '--metrics-port', String(port), '--redis', redis.url]);
      try {
        await waitFor('the consumer to be ready', async () => (await status(`${ops}/health/readiness`)) === 200, 15_000, 50);
        for (const n of porterLbExample().nodes) await publishToStream(store, 'on-node-label', apiServerEvent('add', n as Record<string, unknown>, 'test'));
        await store.redis.xadd(store.keys.eventStream('on-node-label'), '*', 'event', '{"specversion":"1.0"');
        const metrics = await waitFor(
          'four entries counted',
          async () => {
            const text = await (await request(`${ops}/metrics`)).body.text();
            return /outcome="rejected"\} 1\n/.test(text) && /outcome="applied"\} 3\n/.test(text) ? text : undefined;
          },
          15_000,
          50,
        );
        expect(metrics).toMatch(/^racklb_function_event_seconds_count\{function="on-node-label"\} 4$/m);
        expect(Number(/^process_resident_memory_bytes (\d+)/m.exec(metrics)?.[1])).toBeGreaterThan(20 * 2 ** 20);
        expect(await store.redis.scard(store.keys.index('Node'))).toBe(porterLbExample().nodes.length);

        // Redis gone: not ready, still live (the loop keeps coming round, retrying). Back, but empty:
        // the consumer group went with it, and the consumer makes it again and takes what the
        // bridge's relist publishes.
        const groupLost = (l: string): boolean => l.includes('the consumer group was gone (Redis restarted empty?)');
        await redis.stop();
        try {
          await waitFor('readiness to fail without Redis', async () => (await status(`${ops}/health/readiness`)) === 503, 15_000, 50);
          expect(await status(`${ops}/health/liveness`)).toBe(200);
        } finally {
          await redis.start({ empty: true });
        }
        await waitFor('readiness to come back with Redis', async () => (await status(`${ops}/health/readiness`)) === 200, 20_000, 100);
        const [first] = porterLbExample().nodes;
        await publishToStream(store, 'on-node-label', apiServerEvent('add', first as Record<string, unknown>, 'test'));
        await waitFor('the relisted node stored again', async () => (await store.redis.scard(store.keys.index('Node'))) === 1, 15_000, 50);
        // The operator is told why the consumer made its group again: once Redis came back, not
        // when it first made it.
        await consumer.waitForLine(groupLost);
        const firstFailure = consumer.lines.findIndex((l) => l.includes('stream consumer: Redis error, retrying'));
        expect(firstFailure).toBeGreaterThanOrEqual(0);
        expect(consumer.lines.findIndex(groupLost)).toBeGreaterThan(firstFailure);
      } finally {
        expect(await consumer.stop()).toBe(0);
      }
    }, 60_000);

    it('a loop that has not come round for a minute is not live', () => {
      const health = new StreamConsumerHealth();
      expect(health.live(health.lastRoundAt + STUCK_AFTER_MS)).toBe(true);
      expect(health.live(health.lastRoundAt + STUCK_AFTER_MS + 1)).toBe(false);
    });

    it('refuses --metrics-port over HTTP, where /metrics is on --port', async () => {
      const r = await cli(['serve', 'on-node-label', '--metrics-port', '9', '--redis', redis.url]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('--metrics-port: only with --from-stream');
    });
  });
});
