/**
 * Plain JSON webhooks and POST /resync, served over real HTTP against a real redis-server: signed
 * ones are applied; unsigned, wrongly signed and too-late ones are refused with 401 and journaled;
 * a resync puts back derived state that was damaged, and marks the store complete only when the
 * caller vouches for it.
 */
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { FUNCTIONS } from '../../src/functions.js';
import { serveFunction, type FunctionServer } from '../../src/serve/http.js';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, signWebhook, webhookHeaders, type WebhookOptions } from '../../src/serve/webhook.js';
import { readState } from '../../src/state/read.js';
import type { FunctionName } from '../../src/store/keys.js';
import { Store } from '../../src/store/store.js';
import { functionFor } from '../../src/functions.js';
import type { Kind } from '../../src/core/types.js';
import { node, porterLbExample } from '../helpers/fixtures.js';
import { postTo, snapshot, type Answer } from '../helpers/functions.js';
import { removeRedis, startRedis, type TestRedis } from '../helpers/redis.js';

const SECRET = randomBytes(32);
let redis: TestRedis;
let store: Store;
const servers: FunctionServer[] = [];

async function serve(webhooks: WebhookOptions | undefined): Promise<Record<FunctionName, string>> {
  const urls = {} as Record<FunctionName, string>;
  for (const def of Object.values(FUNCTIONS)) {
    const s = await serveFunction(def, { store, logger: pino({ level: 'silent' }) }, { host: '127.0.0.1', port: 0, ...(webhooks ? { webhooks } : {}) });
    servers.push(s);
    urls[def.name] = s.url;
  }
  return urls;
}

let signed: Record<FunctionName, string>;
let off: Record<FunctionName, string>;
let open: Record<FunctionName, string>;

beforeAll(async () => {
  redis = await startRedis();
  store = Store.open(redis.url, { failFast: true });
  await store.connect();
  signed = await serve({ secret: SECRET });
  off = await serve(undefined);
  open = await serve({ allowUnsigned: true });
});

afterAll(async () => {
  for (const s of servers) await s.close();
  await store?.close();
  if (redis) await removeRedis(redis);
});

beforeEach(async () => {
  await store.redis.flushall();
});

type Watch = 'ADDED' | 'MODIFIED' | 'DELETED';

function urlFor(urls: Record<FunctionName, string>, object: Record<string, unknown>): string {
  return urls[functionFor(object.kind as Kind).name];
}

/** A webhook as a sender with the secret would post it. */
async function hook(urls: Record<FunctionName, string>, type: Watch, object: Record<string, unknown>, opts: { secret?: Buffer; at?: number; tamper?: (body: string) => string } = {}): Promise<Answer> {
  const body = JSON.stringify({ type, object });
  const headers = { 'content-type': 'application/json', ...(opts.secret ? webhookHeaders(opts.secret, body, opts.at) : {}) };
  return postTo(urlFor(urls, object), headers, opts.tamper ? opts.tamper(body) : body);
}

async function lastJournal(): Promise<Record<string, string>> {
  const [entry] = await store.redis.xrevrange(store.keys.journal(), '+', '-', 'COUNT', 1);
  const fields = entry?.[1] ?? [];
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) out[fields[i] as string] = fields[i + 1] as string;
  return out;
}

async function applyExample(urls: Record<FunctionName, string>): Promise<void> {
  const ex = porterLbExample();
  for (const o of [...ex.nodes, ex.conf, ...ex.peers, ex.eip, ex.service, ex.slice]) {
    const a = await hook(urls, 'ADDED', o, { secret: SECRET });
    expect(a.status, `${String(o.kind)}: ${a.body}`).toBe(200);
    expect(a.outcome).toBe('applied');
  }
}

describe('signed webhooks', () => {
  it('applies ADDED, MODIFIED and DELETED watch events and journals them as webhooks', async () => {
    await applyExample(signed);
    let state = await readState(store);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3', '192.168.0.4']);
    const journaled = await lastJournal();
    expect(journaled.via).toBe('webhook');
    expect(journaled.outcome).toBe('applied');
    expect(JSON.parse(journaled.event ?? '{}')).toMatchObject({ type: 'dev.knative.apiserver.resource.add', source: 'racklb/webhook' });

    const notReady = node({ name: 'worker-p001', ip: '192.168.0.4', ready: false, resourceVersion: '2' });
    expect((await hook(signed, 'MODIFIED', notReady, { secret: SECRET })).outcome).toBe('applied');
    state = await readState(store);
    expect(state.racks.leaf1?.routes['172.22.0.2/32']).toEqual(['192.168.0.3']);
    const ex = porterLbExample();
    const del = structuredClone(ex.service);
    (del.metadata as Record<string, unknown>).resourceVersion = '2';
    expect((await hook(signed, 'DELETED', del, { secret: SECRET })).outcome).toBe('applied');
    expect((await readState(store)).services['default/porter-bgp-svc']).toBeUndefined();
  });

  it('reports a resent webhook as stale: inside the window a replay changes nothing', async () => {
    const n = node({ name: 'n1', ip: '192.0.2.10' });
    const body = JSON.stringify({ type: 'ADDED', object: n });
    const headers = { 'content-type': 'application/json', ...webhookHeaders(SECRET, body) };
    expect((await postTo(signed['on-node-label'], headers, body)).outcome).toBe('applied');
    const again = await postTo(signed['on-node-label'], headers, body);
    expect(again.status).toBe(200);
    expect(again.outcome).toBe('stale');
  });

  it('rejects a watch event of another type or without an object with 400 naming the field', async () => {
    const bookmark = await postTo(signed['on-node-label'], { 'content-type': 'application/json', ...webhookHeaders(SECRET, '{"type":"BOOKMARK","object":{}}') }, '{"type":"BOOKMARK","object":{}}');
    expect(bookmark.status).toBe(400);
    expect(JSON.parse(bookmark.body)).toMatchObject({ field: 'type' });
    expect(bookmark.body).toContain('ADDED, MODIFIED or DELETED');
    const noObject = await postTo(signed['on-node-label'], { 'content-type': 'application/json', ...webhookHeaders(SECRET, '{"type":"ADDED"}') }, '{"type":"ADDED"}');
    expect(noObject.status).toBe(400);
    expect(JSON.parse(noObject.body)).toMatchObject({ field: 'object' });
  });
});

describe('webhooks that must be refused', () => {
  const n = (): Record<string, unknown> => node({ name: 'intruder', ip: '192.0.2.66', rack: 'leaf1' });
  const now = Date.now();
  const cases: { name: string; send: () => Promise<Answer>; says: string }[] = [
    { name: 'unsigned', send: () => hook(signed, 'ADDED', n()), says: TIMESTAMP_HEADER },
    { name: 'signed with another secret', send: () => hook(signed, 'ADDED', n(), { secret: randomBytes(32) }), says: 'does not match' },
    { name: 'body changed after signing', send: () => hook(signed, 'ADDED', n(), { secret: SECRET, tamper: (b) => b.replace('192.0.2.66', '192.0.2.67') }), says: 'does not match' },
    { name: 'replayed too late (timestamp 10 minutes old)', send: () => hook(signed, 'ADDED', n(), { secret: SECRET, at: now - 600_000 }), says: 's old' },
    { name: 'timestamped 10 minutes in the future', send: () => hook(signed, 'ADDED', n(), { secret: SECRET, at: now + 600_000 }), says: 'in the future' },
    {
      name: 'signature without the sha256= scheme',
      send: () => {
        const body = JSON.stringify({ type: 'ADDED', object: n() });
        const ts = Math.floor(Date.now() / 1000);
        return postTo(signed['on-node-label'], { 'content-type': 'application/json', [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: signWebhook(SECRET, ts, body).slice(7) }, body);
      },
      says: 'sha256=',
    },
    {
      name: 'a fresh timestamp on an old signature',
      send: () => {
        const body = JSON.stringify({ type: 'ADDED', object: n() });
        const old = Math.floor(now / 1000) - 600;
        return postTo(signed['on-node-label'], { 'content-type': 'application/json', [TIMESTAMP_HEADER]: String(Math.floor(Date.now() / 1000)), [SIGNATURE_HEADER]: signWebhook(SECRET, old, body) }, body);
      },
      says: 'does not match',
    },
  ];
  for (const c of cases) {
    it(`refuses a webhook ${c.name} with 401, journals it, and writes nothing`, async () => {
      await applyExample(signed);
      const before = await snapshot(store);
      const a = await c.send();
      expect(a.status).toBe(401);
      expect(a.body).toContain(c.says);
      expect(await snapshot(store)).toBe(before);
      const journaled = await lastJournal();
      expect(journaled).toMatchObject({ via: 'webhook', outcome: 'rejected', event: '' });
      expect(journaled.detail).toContain(c.says);
    });
  }

  it('without a secret refuses plain webhooks (400) and /resync (403) unless unsigned ones are allowed', async () => {
    const a = await hook(off, 'ADDED', node({ name: 'n1', ip: '192.0.2.10' }));
    expect(a.status).toBe(400);
    expect(a.body).toContain('webhooks are off');
    const r = await postTo(`${off['on-node-label']}resync`, {}, '');
    expect(r.status).toBe(403);
    expect(await store.redis.exists(store.keys.object('Node', 'n1'))).toBe(0);
    const allowed = await hook(open, 'ADDED', node({ name: 'n1', ip: '192.0.2.10' }));
    expect(allowed.status).toBe(200);
    expect(allowed.outcome).toBe('applied');
  });
});

describe('POST /resync', () => {
  async function resync(fn: FunctionName, body = '', secret: Buffer | null = SECRET): Promise<Answer> {
    return postTo(`${signed[fn]}resync`, { 'content-type': 'application/json', ...(secret ? webhookHeaders(secret, body) : {}) }, body);
  }

  it('recomputes damaged derived state from the stored objects, through the handlers', async () => {
    await applyExample(signed);
    const good = await readState(store);
    const k = store.keys;
    // Damage what the functions derive, leaving the stored objects alone.
    await store.redis.hdel(k.rackNextHops('leaf1'), 'master1');
    await store.redis.srem(k.rackNodes('leaf1'), 'master1');
    await store.redis.del(k.peers('worker-p002'));
    await store.redis.hdel(k.intents(), '172.22.0.2');
    await store.redis.hdel(k.serviceIps(), 'default/porter-bgp-svc');
    const damaged = await readState(store);
    expect(damaged.racks.leaf1?.routes['172.22.0.2/32']).toBeUndefined();
    expect(damaged.peers['worker-p002']).toEqual([]);

    for (const fn of ['on-bgppeer', 'on-node-label', 'on-service'] as const) {
      const a = await resync(fn);
      expect(a.status, a.body).toBe(200);
      const report = JSON.parse(a.body) as { applied: number; rejected: unknown[]; complete: boolean };
      expect(report.rejected).toEqual([]);
      expect(report.complete).toBe(false);
      expect(report.applied).toBeGreaterThan(0);
    }
    const repaired = await readState(store);
    expect({ ...repaired, revision: 0 }).toEqual({ ...good, revision: 0 });
    expect(repaired.complete).toBe(false);
    const journaled = await lastJournal();
    expect(journaled).toMatchObject({ via: 'resync', type: 'racklb.resync', outcome: 'applied' });
  });

  it('changes nothing a speaker acts on when nothing was damaged', async () => {
    await applyExample(signed);
    const rev = Number(await store.redis.hget(store.keys.meta(), 'rev'));
    const intents = await store.redis.hgetall(store.keys.intents());
    expect((await resync('on-service')).status).toBe(200);
    expect((await resync('on-node-label')).status).toBe(200);
    expect(Number(await store.redis.hget(store.keys.meta(), 'rev'))).toBe(rev);
    expect(await store.redis.hgetall(store.keys.intents())).toEqual(intents);
  });

  it('marks the store complete only when the caller vouches for it', async () => {
    await applyExample(signed);
    expect((await readState(store)).complete).toBe(false);
    const a = await resync('on-node-label', JSON.stringify({ complete: true }));
    expect(a.status).toBe(200);
    expect(JSON.parse(a.body)).toMatchObject({ complete: true });
    expect((await readState(store)).complete).toBe(true);
  });

  it('refuses an unsigned or too-late resync with 401 and a malformed body with 400', async () => {
    await applyExample(signed);
    const before = await snapshot(store);
    const unsigned = await resync('on-node-label', '', null);
    expect(unsigned.status).toBe(401);
    const late = await postTo(`${signed['on-node-label']}resync`, webhookHeaders(SECRET, '', Date.now() - 3_600_000), '');
    expect(late.status).toBe(401);
    expect(await snapshot(store)).toBe(before);
    const bad = await resync('on-node-label', JSON.stringify({ complete: 'yes' }));
    expect(bad.status).toBe(400);
    expect(JSON.parse(bad.body)).toMatchObject({ field: 'complete' });
    const unknown = await resync('on-node-label', JSON.stringify({ everything: true }));
    expect(unknown.status).toBe(400);
    expect(JSON.parse(unknown.body)).toMatchObject({ field: 'everything' });
  });
});
