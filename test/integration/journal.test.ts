/**
 * `racklb events` and `racklb replay` against a real redis-server and real functions: a journal
 * is recorded by driving the functions through a history (relabels, a NotReady node, duplicates,
 * a rejected object, dynamic IP allocation, deletes), then read, sent again and rebuilt.
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromJournal, type JournaledEvent } from '../../src/events/codec.js';
import { decodeHttpEvent } from '../../src/events/codec.js';
import { comparable, diffStates, replayInto, replayTo, type SendResult } from '../../src/journal/replay.js';
import { lastEntries, parseKind, parseTime } from '../../src/journal/journal.js';
import { readState, type StateDocument } from '../../src/state/read.js';
import { Store } from '../../src/store/store.js';
import { bgpPeer, eip, endpointSlice, node, porterLbExample, service } from '../helpers/fixtures.js';
import { send, serveAll, withVersion, type ServedFunctions } from '../helpers/functions.js';
import { cli, spawnCli } from '../helpers/cli.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

let redis: TestRedis;
let fns: ServedFunctions;
/** The state after the first half of the history, and the moment between the halves. */
let midState: StateDocument;
let midTime: string;
let journalLength = 0;

beforeAll(async () => {
  redis = await startRedis();
  fns = await serveAll(redis.url);
  const ex = porterLbExample();
  const ok = async (action: 'add' | 'update' | 'delete', o: Record<string, unknown>, outcome = 'applied'): Promise<void> => {
    const a = await send(fns, action, o);
    expect(a.outcome, `${String(o.kind)} ${action}: ${a.body}`).toBe(outcome);
  };
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice]) await ok('add', o);
  await ok('add', eip({ name: 'pool-b', address: '198.51.100.0/28' }));
  for (const name of ['web-a', 'web-b', 'web-c']) await ok('add', service({ name, pool: 'pool-b' }));
  await ok('update', asRealClusterSendsIt(node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true, resourceVersion: '2' })));
  await ok('update', node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf1', speaker: true, resourceVersion: '2' }), 'stale');
  // Let the halves fall into different milliseconds, so --at separates them exactly.
  await new Promise((r) => setTimeout(r, 20));
  midState = await readState(fns.store);
  midTime = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 20));
  await ok('delete', withVersion(service({ name: 'web-a', pool: 'pool-b' }), '2'));
  await ok('add', service({ name: 'web-d', pool: 'pool-b' })); // takes web-a's freed address
  await ok('update', node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '3' }));
  await ok('update', node({ name: 'worker-p001', ip: '192.168.0.4', ready: true, resourceVersion: '2' }), 'stale');
  await ok('add', service({ name: 'local', requestedIp: '198.51.100.9', externalTrafficPolicy: 'Local' }));
  await ok('add', endpointSlice({ service: 'local', endpoints: [{ nodeName: 'master1' }, { nodeName: 'worker-p002' }] }));
  await ok('update', withVersion(ex.peers[1] as Record<string, unknown>, '2', (p) => ((p.spec as { conf: { peerAs: number } }).conf.peerAs = 65002)));
  const bad = await send(fns, 'add', bgpPeer({ name: 'bad', peerAs: 0, neighborAddress: '192.168.0.2' }));
  expect(bad.status).toBe(400);
  journalLength = await fns.store.redis.xlen(fns.store.keys.journal());
}, 60_000);

afterAll(async () => {
  await fns?.close();
  if (redis) await removeRedis(redis);
});

const R = (): string[] => ['--redis', redis.url];

/** With the large parts a real API server sends and no handler reads (journalForm drops them). */
function asRealClusterSendsIt(n: Record<string, unknown>): Record<string, unknown> {
  (n.metadata as Record<string, unknown>).managedFields = [{ manager: 'kubelet', operation: 'Update', fieldsV1: { 'f:status': {} } }];
  (n.status as Record<string, unknown>).images = [{ names: ['registry.example/app:1'], sizeBytes: 1e8 }];
  return n;
}

describe('racklb events', () => {
  it('prints the journal as a table, oldest first', async () => {
    const r = await cli(['events', ...R(), '--limit', '0']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^TIME \(UTC\)\s+FUNCTION\s+VIA\s+OUTCOME\s+OBJECT\s+RV\s+DETAIL$/);
    expect(lines.length).toBe(journalLength + 1);
    expect(lines[1]).toContain('Node/master1');
    expect(lines.at(-1)).toContain('rejected');
    expect(lines.at(-1)).toContain('spec.conf.peerAs');
  });

  it('filters by function, kind, name, outcome and time', async () => {
    // One run of the command for the JSON form; the filters themselves in-process (each run of
    // the CLI costs a Node start).
    const nodes = (await cli(['events', ...R(), '--kind', 'node', '--name', 'worker-p002', '--json'])).stdout.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; key: string; outcome: string; event: JournaledEvent });
    expect(nodes.map((n) => n.outcome)).toEqual(['applied', 'applied', 'stale']);
    expect(nodes.every((n) => n.kind === 'Node' && n.key === 'worker-p002')).toBe(true);
    expect(fromJournal(nodes[1]!.event).action).toBe('update');
    // The update came with managedFields and images: the journal keeps what the handlers read.
    const relabeled = nodes[1]!.event!.data as { metadata: Record<string, unknown>; status: Record<string, unknown> };
    expect(relabeled.metadata.managedFields).toBeUndefined();
    expect(relabeled.status.images).toBeUndefined();
    expect(relabeled.metadata.labels).toMatchObject({ 'porter.kubesphere.io/rack': 'leaf1' });

    const all = Number.MAX_SAFE_INTEGER;
    expect((await lastEntries(fns.store, { outcomes: ['stale'] }, all)).length).toBe(2);
    expect((await lastEntries(fns.store, { name: 'default/web-a' }, all)).length).toBe(2);
    expect((await lastEntries(fns.store, { name: 'web-a' }, all)).length).toBe(2);
    expect((await lastEntries(fns.store, { fn: 'on-bgppeer' }, all)).map((e) => e.kind)).toEqual(['BgpConf', 'BgpPeer', 'BgpPeer', 'BgpPeer', 'BgpPeer']);
    const mid = Date.parse(midTime);
    const later = await lastEntries(fns.store, { since: mid }, all);
    expect(later.length).toBe(8);
    expect((await lastEntries(fns.store, { until: mid }, all)).length + later.length).toBe(journalLength);
    expect(await lastEntries(fns.store, { since: Date.parse('2099-01-01T00:00:00Z') }, all)).toEqual([]);
    const last3 = await lastEntries(fns.store, {}, 3);
    expect(last3.map((e) => e.kind)).toEqual(['EndpointSlice', 'BgpPeer', 'BgpPeer']);
  });

  it('reads times and kinds as an operator writes them', () => {
    const now = Date.parse('2024-05-01T10:00:00Z');
    expect(parseTime('15m', '--since', now)).toBe(now - 15 * 60_000);
    expect(parseTime('1.5h', '--since', now)).toBe(now - 90 * 60_000);
    expect(parseTime('2024-05-01', '--since', now)).toBe(Date.parse('2024-05-01T00:00:00Z'));
    expect(parseTime('2024-05-01T12:00:00+02:00', '--since', now)).toBe(now);
    for (const bad of ['yesterday', '15', '-5m', '2024-13-45T00:00:00Z', '']) expect(() => parseTime(bad, '--since', now)).toThrow(/--since .*: must be an ISO 8601 time/);
    expect(parseKind('endpointslice')).toBe('EndpointSlice');
    expect(() => parseKind('Pod')).toThrow('--kind "Pod": must be one of Node, Service, EndpointSlice, Eip, BgpPeer, BgpConf');
  });

  it('names the flag and the rule for bad input', async () => {
    const r = await cli(['events', ...R(), '--kind', 'Pod']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--kind "Pod": must be one of Node, Service, EndpointSlice, Eip, BgpPeer, BgpConf');
  });

  it('--follow prints new entries as they arrive', async () => {
    const follower = spawnCli(['events', ...R(), '--follow', '--json', '--kind', 'Eip', '--limit', '0']);
    try {
      await follower.waitForLine((l) => l.includes('"key":"pool-b"'));
      const before = follower.lines.length;
      await send(fns, 'add', eip({ name: 'pool-followed', address: '203.0.113.128/29' }));
      const line = await follower.waitForLine((l) => l.includes('pool-followed'));
      expect(JSON.parse(line)).toMatchObject({ kind: 'Eip', key: 'pool-followed', outcome: 'applied', via: 'http' });
      expect(follower.lines.length).toBe(before + 1);
    } finally {
      expect(await follower.stop()).toBe(0);
    }
    // Undo it, so the live state matches the history the other tests replay.
    await send(fns, 'delete', withVersion(eip({ name: 'pool-followed', address: '203.0.113.128/29' }), '2'));
  });
});

describe('racklb replay --into', () => {
  it('rebuilds the live state from the recorded journal', async () => {
    const r = await cli(['replay', ...R(), '--into', 'rebuilt']);
    expect(r.stdout).toContain('rebuilt state equals the live state');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rebuilt = Store.open(redis.url, { prefix: 'rebuilt' });
    try {
      const live = comparable(await readState(fns.store));
      expect(comparable(await readState(rebuilt))).toEqual(live);
      // Not trivially equal: the history allocated, freed and reused addresses, moved nodes and peers.
      expect((live.services as StateDocument['services'])['default/web-d']?.ip).toBe('198.51.100.0');
      expect((live.racks as StateDocument['racks']).leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.1.2']);
    } finally {
      await rebuilt.close();
    }
  });

  it('--at rebuilds the state as it was then, and shows how the live state differs', async () => {
    const r = await cli(['replay', ...R(), '--into', 'then', '--at', midTime, '--json']);
    expect(r.code).toBe(1);
    const out = JSON.parse(r.stdout) as { differences: { path: string }[] };
    const then = Store.open(redis.url, { prefix: 'then' });
    try {
      expect(comparable(await readState(then))).toEqual(comparable(midState));
    } finally {
      await then.close();
    }
    const paths = out.differences.map((d) => d.path);
    expect(paths).toContain('services.default/web-d');
    expect(paths).toContain('services.default/web-a');
  });

  it('refuses the live prefix and a prefix that holds keys without --reset', async () => {
    const same = await cli(['replay', ...R(), '--into', 'racklb']);
    expect(same.code).not.toBe(0);
    expect(same.stderr).toContain('--into racklb: must differ from the live prefix');
    const used = await cli(['replay', ...R(), '--into', 'rebuilt']);
    expect(used.stderr).toContain('--into rebuilt: the prefix already holds keys');
    const target = Store.open(redis.url, { prefix: 'rebuilt' });
    try {
      await target.redis.set(target.keys.object('Node', 'left-over'), '{}');
      const report = await replayInto(fns.store, target, { reset: true });
      expect(report.events).toBeGreaterThan(0);
      expect(await target.redis.exists(target.keys.object('Node', 'left-over'))).toBe(0);
      expect(await diffStates(fns.store, target)).toEqual([]);
    } finally {
      await target.close();
    }
  });
});

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
  at: number;
}

async function receiver(answer: (r: Received, n: number) => { status: number; headers?: Record<string, string> }): Promise<{ server: Server; url: string; received: Received[] }> {
  const received: Received[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r = { headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), at: Date.now() };
      received.push(r);
      const a = answer(r, received.length);
      res.writeHead(a.status, { 'content-length': 0, ...(a.headers ?? {}) }).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/broker/default`, received };
}

describe('racklb replay --to', () => {
  it('sends the events to a broker in journal order as CloudEvents, retrying a 503, and accepts 202', async () => {
    const broker = await receiver((_r, n) => (n === 2 ? { status: 503, headers: { 'retry-after': '0' } } : { status: 202 }));
    try {
      const r = await cli(['replay', ...R(), '--to', broker.url]);
      expect(r.code, r.stdout + r.stderr).toBe(0);
      const wanted = (await lastEntries(fns.store, { outcomes: ['applied', 'stale'] }, Number.MAX_SAFE_INTEGER)).map((e) => e.eventId);
      // The second delivery was answered 503 and sent again: one more request than events.
      expect(broker.received.length).toBe(wanted.length + 1);
      expect(broker.received[1]?.headers['ce-id']).toBe(broker.received[2]?.headers['ce-id']);
      const ids = broker.received.filter((_, i) => i !== 1).map((x) => x.headers['ce-id']);
      expect(ids).toEqual(wanted);
      for (const x of broker.received) {
        const ev = decodeHttpEvent(x.headers, x.body);
        expect(ev.type).toMatch(/^dev\.knative\.apiserver\.resource\.(add|update|delete)$/);
      }
      expect(r.stdout).toContain(`replayed ${wanted.length} events`);
      expect(r.stdout).toContain(`${wanted.length} accepted, 0 failed (${wanted.length} x 202)`);
    } finally {
      broker.server.close();
    }
  });

  it('reports an answer that is not retried, goes on, and exits 1; --rate paces the sends', async () => {
    const sink = await receiver((r) => ({ status: r.body.includes('"web-b"') ? 400 : 200 }));
    try {
      const started = Date.now();
      const r = await cli(['replay', ...R(), '--to', sink.url, '--kind', 'Service', '--rate', '20']);
      const took = Date.now() - started;
      expect(r.code).toBe(1);
      expect(r.stdout).toMatch(/FAILED .* Service\/default\/web-b rv 1 {2}-> 400/);
      // Seven Service events (five adds, a delete, the Local Service), web-b's answered 400 once, not retried.
      expect(sink.received.length).toBe(7);
      expect(r.stdout).toContain('replayed 7 events');
      expect(r.stdout).toContain('6 accepted, 1 failed');
      // Seven sends at 20/s start 300 ms apart end to end; the first arrival can lag by its
      // connection setup, so allow for that. Without pacing they arrive within a few ms.
      expect((sink.received.at(-1)?.at ?? 0) - (sink.received[0]?.at ?? 0)).toBeGreaterThanOrEqual(230);
      expect(took).toBeLessThan(15_000);
    } finally {
      sink.server.close();
    }
  });

  it('replayed to the three functions of another installation, reproduces the live state there', async () => {
    const copy = await serveAll(redis.url, 'copy');
    try {
      for (const fn of ['on-node-label', 'on-bgppeer', 'on-service'] as const) {
        const report = await replayTo(fns.store, { url: copy.urls[fn], filter: { fn, outcomes: ['applied', 'stale'] } });
        expect(report.failed).toBe(0);
        expect(report.statuses).toEqual({ '200': report.sent });
      }
      expect(comparable(await readState(copy.store))).toEqual(comparable(await readState(fns.store)));
    } finally {
      await copy.close();
    }
  });

  it('reports an unreachable URL after its retries', async () => {
    const failures: SendResult[] = [];
    const started = Date.now();
    const report = await replayTo(fns.store, { url: 'http://127.0.0.1:9/', filter: { kind: 'BgpConf' }, retries: 2, minBackoffMs: 100, onResult: (r) => failures.push(r) });
    expect(report).toMatchObject({ sent: 1, ok: 0, failed: 1, statuses: { error: 1 } });
    expect(failures[0]?.error).toContain('ECONNREFUSED');
    // Two retries after 100 and 200 ms of backoff.
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    await expect(replayTo(fns.store, { url: 'ftp://example/', filter: {} })).rejects.toThrow('--to "ftp://example/": must be an http:// or https:// URL');
  });
});
