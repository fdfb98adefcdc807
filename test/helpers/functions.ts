/**
 * The three functions served in-process over real HTTP against a real Redis, and a client that
 * posts Kubernetes objects to them as ApiServerSource's CloudEvents.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { pino } from 'pino';
import type { Redis } from 'ioredis';
import { request } from 'undici';
import { apiServerEvent, toHttpMessage, type KubeAction } from '../../src/events/codec.js';
import { FUNCTIONS, functionFor } from '../../src/functions.js';
import { serveFunction, type FunctionServer } from '../../src/serve/http.js';
import type { Kind } from '../../src/core/types.js';
import type { FunctionName } from '../../src/store/keys.js';
import { Store } from '../../src/store/store.js';
import type { StateDocument } from '../../src/state/read.js';

const run = promisify(execFile);

export interface ServedFunctions {
  store: Store;
  urls: Record<FunctionName, string>;
  close(): Promise<void>;
}

export async function serveAll(redisUrl: string, prefix = 'racklb'): Promise<ServedFunctions> {
  const store = Store.open(redisUrl, { prefix, failFast: true });
  await store.connect();
  const logger = pino({ level: 'silent' });
  const servers: FunctionServer[] = [];
  const urls = {} as Record<FunctionName, string>;
  for (const def of Object.values(FUNCTIONS)) {
    const s = await serveFunction(def, { store, logger }, { host: '127.0.0.1', port: 0 });
    servers.push(s);
    urls[def.name] = s.url;
  }
  return {
    store,
    urls,
    close: async () => {
      for (const s of servers) await s.close();
      await store.close();
    },
  };
}

export interface Answer {
  status: number;
  outcome: string | undefined;
  detail: string | undefined;
  body: string;
}

export async function postTo(url: string, headers: Record<string, string>, body: string): Promise<Answer> {
  const res = await request(url, { method: 'POST', headers, body, headersTimeout: 10_000, bodyTimeout: 10_000 });
  const text = await res.body.text();
  const h = (name: string): string | undefined => {
    const v = res.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  return { status: res.statusCode, outcome: h('racklb-outcome'), detail: h('racklb-detail'), body: text };
}

/** Posts an object to the function that owns its kind, as a binary-mode CloudEvent. */
export async function send(fns: ServedFunctions, action: KubeAction, object: Record<string, unknown>): Promise<Answer> {
  const def = functionFor(object.kind as Kind);
  const { headers, body } = toHttpMessage(apiServerEvent(action, object, 'https://kubernetes.default.svc'));
  return postTo(fns.urls[def.name], headers, body);
}

/**
 * One sample of a function's /metrics, as prom-client prints it (labels in their declared order);
 * NaN when the sample is absent, so a missing metric never reads as 0.
 */
export async function metricValue(url: string, name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await request(`${url}metrics`)).body.text();
  const escape = (x: string): string => x.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const labelText = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).join(',');
  return Number(new RegExp(`^${escape(name)}\\{${escape(labelText)}\\} (\\d+)`, 'm').exec(text)?.[1] ?? NaN);
}

/** `racklb state --json`, run as a user would. */
export async function stateJson(redisUrl: string, prefix = 'racklb'): Promise<StateDocument> {
  const { stdout } = await run(process.execPath, ['bin/racklb.js', 'state', '--json', '--redis', redisUrl, '--prefix', prefix], { timeout: 20_000 });
  return JSON.parse(stdout) as StateDocument;
}

/** The masters of a Redis Cluster, or the one server: keyless commands must reach every one. */
function servers(store: Store): Redis[] {
  const r = store.redis as Redis & { isCluster?: boolean; nodes?: (role: string) => Redis[] };
  return r.isCluster === true && r.nodes ? r.nodes('master') : [store.redis];
}

/** FLUSHALL on every server (a cluster client would send it to one random master). */
export async function flushStore(store: Store): Promise<void> {
  for (const s of servers(store)) await s.flushall();
}

/** KEYS on every server. */
export async function allKeys(store: Store, pattern: string): Promise<string[]> {
  return (await Promise.all(servers(store).map((s) => s.keys(pattern)))).flat();
}

/** Every key of a prefix with its full value, for byte-for-byte comparisons (journal excluded). */
export async function snapshot(store: Store): Promise<string> {
  const keys = (await allKeys(store, `{${store.keys.prefix}}:*`)).filter((k) => k !== store.keys.journal()).sort();
  const out: string[] = [];
  for (const key of keys) {
    const dump = await store.redis.dumpBuffer(key);
    out.push(`${key}=${dump ? dump.toString('base64') : 'nil'}`);
  }
  return out.join('\n');
}

/** Bumps resourceVersion as the API server would on an update. */
export function withVersion<T extends Record<string, unknown>>(object: T, resourceVersion: string, mutate?: (o: T) => void): T {
  const copy = structuredClone(object);
  (copy.metadata as Record<string, unknown>).resourceVersion = resourceVersion;
  mutate?.(copy);
  return copy;
}

/**
 * Every key the functions own under the store's prefix, values parsed and sorted, without what
 * counts deliveries rather than describes the cluster: meta (revision, generation), the change and
 * journal streams, the per-kind epoch tokens, and a tombstone's deletedAt. Two stores that went
 * through the same events in any delivery order hold the same canonical state.
 */
export async function canonicalState(store: Store): Promise<Record<string, unknown>> {
  const k = store.keys;
  const skip = new Set([k.meta(), k.changes(), k.journal()]);
  const keys = (await allKeys(store, `{${k.prefix}}:*`)).filter((key) => !skip.has(key) && !key.startsWith(`{${k.prefix}}:epoch:`)).sort();
  const parse = (v: string): unknown => {
    try {
      const o = JSON.parse(v) as unknown;
      if (typeof o === 'object' && o !== null && 'deletedAt' in o) delete (o as Record<string, unknown>).deletedAt;
      return o;
    } catch {
      return v;
    }
  };
  const out: Record<string, unknown> = {};
  for (const key of keys) {
    const type = await store.redis.type(key);
    if (type === 'string') out[key] = parse((await store.redis.get(key)) ?? '');
    else if (type === 'hash') out[key] = Object.fromEntries(Object.entries(await store.redis.hgetall(key)).sort().map(([f, v]) => [f, parse(v)]));
    else if (type === 'set') out[key] = (await store.redis.smembers(key)).sort();
    else if (type === 'zset') out[key] = await store.redis.zrange(key, 0, -1, 'WITHSCORES');
    else out[key] = `(${type})`;
  }
  return out;
}
