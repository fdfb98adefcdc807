/**
 * Security of the functions, the speaker and `racklb state` (issue 8), run as an operator runs
 * them: the built CLI as child processes, Redis reachable only over TLS (`rediss://`, a throwaway
 * CA) as an ACL user whose password comes from a file, a BgpPeer carrying an MD5 password.
 *
 *  - every component connects that way, and none connects with a wrong password or without TLS;
 *  - neither secret appears in any log file, the journal, `racklb state` (text and JSON),
 *    `racklb events`, the inspection page (`racklb inspect`, every URL it serves; read-only), or
 *    any command line;
 *  - a function listens on the address it is told, and limits its request rate with 429 and
 *    Retry-After while health and metrics keep answering.
 *
 * Needs `npm run build` (the CLI runs from dist/).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { apiServerEvent, toHttpMessage } from '../../src/events/codec.js';
import { GobgpClient } from '../../src/gobgp/client.js';
import { waitFor } from '../../src/lab/process.js';
import { Store } from '../../src/store/store.js';
import { REDACTED } from '../../src/secrets.js';
import { bgpConf, bgpPeer, eip, node, service, type Json } from '../helpers/fixtures.js';
import { freePort } from '../helpers/gobgpd.js';
import { startSecureRedis, type SecureRedis } from '../helpers/secure-redis.js';

const MD5_PASSWORD = `md5-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}`;

let redis: SecureRedis;
let logDir: string;
const children: ChildProcess[] = [];
const functionUrls: Record<string, string> = {};
let gobgpApi: string;

/** Starts a racklb (or other) process with its output in a log file under logDir. */
function start(name: string, cmd: string, args: string[], env: Record<string, string> = {}): ChildProcess {
  const fd = openSync(join(logDir, `${name}.log`), 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: { ...process.env, RACKLB_REDIS_URL: '', ...env } });
  closeSync(fd);
  children.push(child);
  return child;
}

function racklb(name: string, args: string[], env: Record<string, string> = redis.env): ChildProcess {
  return start(name, process.execPath, ['bin/racklb.js', ...args], env);
}

/** Runs a racklb command to its end: exit code and output. */
async function racklbOnce(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['bin/racklb.js', ...args], { env: { ...process.env, RACKLB_REDIS_URL: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  const code = await new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
  clearTimeout(timer);
  return { code, stdout, stderr };
}

async function post(url: string, action: 'add' | 'update', object: Json): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  const { headers, body } = toHttpMessage(apiServerEvent(action, object, 'https://kubernetes.default.svc'));
  const res = await request(url, { method: 'POST', headers, body });
  return { status: res.statusCode, body: await res.body.text(), headers: res.headers };
}

async function ready(url: string, timeoutMs = 15_000): Promise<void> {
  await waitFor(`${url}health/readiness`, async () => (await request(`${url}health/readiness`).then((r) => (r.body.dump(), r.statusCode), () => 0)) === 200, timeoutMs, 50);
}

async function openStore(): Promise<Store> {
  const store = Store.open(redis.url, { failFast: true, env: { ...process.env, ...redis.env } });
  await store.connect();
  return store;
}

beforeAll(async () => {
  logDir = mkdtempSync(join(tmpdir(), 'racklb-security-'));
  redis = await startSecureRedis();
  for (const fn of ['on-node-label', 'on-service', 'on-bgppeer']) {
    const port = await freePort();
    racklb(fn, ['serve', fn, '--port', String(port), '--host', '127.0.0.1', '--redis', redis.url]);
    functionUrls[fn] = `http://127.0.0.1:${port}/`;
  }
  for (const url of Object.values(functionUrls)) await ready(url);
  gobgpApi = `127.0.0.1:${await freePort()}`;
  // gobgpd as the lab runs it (info level), its log in logDir with the others.
  start('gobgpd', 'gobgpd', ['--api-hosts', gobgpApi, '--pprof-disable', '-l', 'info']);
}, 60_000);

afterAll(async () => {
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
  await redis?.stop();
  if (logDir) rmSync(logDir, { recursive: true, force: true });
});

describe('Redis with an ACL user, a password from a file, and TLS', () => {
  it('the functions store events over rediss://', async () => {
    const objects: [string, Json][] = [
      ['on-node-label', node({ name: 'n1', ip: '192.0.2.10', rack: 'leaf1', speaker: true })],
      ['on-bgppeer', bgpConf({ as: 65100, listenPort: -1, routerId: '192.0.2.10' })],
      ['on-bgppeer', bgpPeer({ name: 'peer-leaf1', peerAs: 65001, neighborAddress: '127.0.0.2', rack: 'leaf1', spec: { conf: { peerAs: 65001, neighborAddress: '127.0.0.2', authPassword: MD5_PASSWORD }, ebgpMultihop: { enabled: true, multihopTtl: 2 } } })],
      ['on-service', eip({ name: 'pool', address: '198.51.100.0/28' })],
      ['on-service', service({ name: 'web', requestedIp: '198.51.100.1' })],
    ];
    for (const [fn, o] of objects) {
      const a = await post(functionUrls[fn]!, 'add', o);
      expect(a.status, a.body).toBe(200);
      expect(a.headers['racklb-outcome']).toBe('applied');
    }
  });

  it('the speaker follows the store over rediss:// and configures gobgpd', async () => {
    racklb('speaker', ['speaker', '--node', 'n1', '--redis', redis.url, '--gobgp', gobgpApi]);
    const client = new GobgpClient(gobgpApi);
    try {
      await waitFor('the speaker to configure gobgpd', async () => {
        const peers = await client.listPeers();
        const paths = await client.listPaths('ipv4');
        return peers.some((p) => p.neighborAddress === '127.0.0.2') && paths.some((p) => p.prefix === '198.51.100.1/32' && p.nextHop === '192.0.2.10');
      }, 30_000, 200);
    } finally {
      client.close();
    }
  }, 45_000);

  it('racklb state reads the store over rediss://', async () => {
    const text = await racklbOnce(['state', '--redis', redis.url], redis.env);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toContain('198.51.100.1/32');
    const json = await racklbOnce(['state', '--json', '--redis', redis.url], redis.env);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout).peers.n1).toEqual([{ name: 'peer-leaf1', address: '127.0.0.2', asn: 65001 }]);
  });

  it('nothing connects with a wrong password, without TLS, or without the CA; a password in the URL is refused', async () => {
    const wrong = await racklbOnce(['state', '--redis', redis.url], { ...redis.env, RACKLB_REDIS_PASSWORD_FILE: '', RACKLB_REDIS_PASSWORD: 'not-the-password' });
    expect(wrong.code).not.toBe(0);
    expect(wrong.stderr).toMatch(/WRONGPASS|invalid username-password/);
    expect(wrong.stderr).not.toContain('not-the-password');
    const plain = await racklbOnce(['state', '--redis', redis.url.replace('rediss:', 'redis:')], redis.env);
    expect(plain.code).not.toBe(0);
    const noCa = await racklbOnce(['state', '--redis', redis.url], { ...redis.env, RACKLB_REDIS_CA_FILE: '' });
    expect(noCa.code).not.toBe(0);
    expect(noCa.stderr).toMatch(/certificate/i);
    const inUrl = await racklbOnce(['state', '--redis', redis.url.replace('rediss://', `rediss://racklb:${redis.password}@`)], {});
    expect(inUrl.code).toBe(2);
    expect(inUrl.stderr).toContain('put no password in the URL');
    expect(inUrl.stderr).not.toContain(redis.password);
    // A function with the wrong password is not ready, and answers events with 503 (retried).
    const port = await freePort();
    const fn = racklb('wrong-password-fn', ['serve', 'on-node-label', '--port', String(port), '--redis', redis.url], { ...redis.env, RACKLB_REDIS_PASSWORD_FILE: '', RACKLB_REDIS_PASSWORD: 'not-the-password' });
    const url = `http://127.0.0.1:${port}/`;
    await waitFor('the function to listen', async () => (await request(`${url}health/liveness`).then((r) => (r.body.dump(), r.statusCode), () => 0)) === 200, 15_000, 50);
    expect((await request(`${url}health/readiness`)).statusCode).toBe(503);
    const a = await post(url, 'add', node({ name: 'n2', ip: '192.0.2.11' }));
    expect(a.status).toBe(503);
    fn.kill('SIGTERM');
  }, 60_000);

  it('keeps both secrets out of every log, the journal, racklb state and events, the inspection page and every command line', async () => {
    // Let the speaker report its session status once more, then look everywhere.
    await new Promise((r) => setTimeout(r, 2500));
    const store = await openStore();
    let journal: string;
    try {
      journal = JSON.stringify(await store.redis.xrange(store.keys.journal(), '-', '+'));
    } finally {
      await store.close();
    }
    // The search is not vacuous: the BgpPeer event is in the journal, its password redacted.
    expect(journal).toContain('peer-leaf1');
    expect(journal).toContain(REDACTED);
    const places: Record<string, string> = { journal };
    for (const f of readdirSync(logDir)) places[`log ${f}`] = readFileSync(join(logDir, f), 'utf8');
    places['redis.log'] = readFileSync(redis.logFile, 'utf8');
    places['racklb state'] = (await racklbOnce(['state', '--redis', redis.url], redis.env)).stdout;
    places['racklb state --json'] = (await racklbOnce(['state', '--json', '--redis', redis.url], redis.env)).stdout;
    const events = await racklbOnce(['events', '--json', '--redis', redis.url], redis.env);
    places['racklb events'] = events.stdout + events.stderr;
    // The inspection page, over the same rediss:// with the same credentials: every URL it serves.
    const inspectPort = await freePort();
    racklb('inspect', ['inspect', '--port', String(inspectPort), '--redis', redis.url]);
    const page = `http://127.0.0.1:${inspectPort}`;
    await waitFor('racklb inspect', async () => (await request(`${page}/health`).then((r) => (r.body.dump(), r.statusCode), () => 0)) === 200, 20_000, 100);
    // It listens where it is told (127.0.0.1 by default), nowhere else.
    await expect(request(`http://127.0.0.2:${inspectPort}/health`)).rejects.toThrow(/ECONNREFUSED/);
    for (const path of ['/', '/app.js', '/api/topology', '/api/services', '/api/paths?ip=198.51.100.1']) {
      const res = await request(`${page}${path}`);
      expect(res.statusCode, path).toBe(200);
      places[`inspect ${path}`] = await res.body.text();
    }
    expect(places['inspect /api/topology']).toContain('n1');
    // Read-only: it refuses anything but GET and HEAD.
    const write = await request(`${page}/api/topology`, { method: 'POST', body: '{}' });
    expect(write.statusCode).toBe(405);
    await write.body.dump();
    for (const pid of [...children.map((c) => c.pid), redis.pid]) {
      try {
        places[`cmdline of ${pid}`] = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      } catch {
        // exited (the wrong-password function): its command line was ours, built above
      }
    }
    expect(places['log speaker.log']).toContain('speaker started');
    expect(Object.keys(places).length).toBeGreaterThan(8);
    const leaks = Object.entries(places).flatMap(([where, text]) => [MD5_PASSWORD, redis.password].filter((s) => text.includes(s)).map((s) => `${where} contains ${s === MD5_PASSWORD ? 'the MD5 password' : 'the Redis password'}`));
    expect(leaks).toEqual([]);
  }, 60_000);
});

describe('the functions\' HTTP front', () => {
  it('listens only on the address it is told', async () => {
    const port = await freePort();
    racklb('bound-fn', ['serve', 'on-service', '--port', String(port), '--host', '127.0.0.2', '--redis', redis.url]);
    await ready(`http://127.0.0.2:${port}/`);
    await expect(request(`http://127.0.0.1:${port}/health/liveness`)).rejects.toThrow(/ECONNREFUSED/);
  }, 30_000);

  it('exports on /metrics what it handled and the process\'s own figures', async () => {
    const port = await freePort();
    racklb('metrics-fn', ['serve', 'on-node-label', '--port', String(port), '--redis', redis.url]);
    const url = `http://127.0.0.1:${port}/`;
    await ready(url);
    // Rejected, so that it stores no node: the next test counts them.
    expect((await post(url, 'add', { ...node({ name: 'metered', ip: '192.0.2.90' }), kind: 'Service' })).status).toBe(400);
    const metrics = await (await request(`${url}metrics`)).body.text();
    expect(metrics).toMatch(/racklb_function_events_total\{function="on-node-label",outcome="rejected"\} 1\n/);
    // A function pod's memory and event loop, where Knative and KEDA users look for them.
    const rss = Number(/^process_resident_memory_bytes (\d+)/m.exec(metrics)?.[1]);
    expect(rss).toBeGreaterThan(20 * 2 ** 20);
    expect(Number(/^nodejs_heap_size_used_bytes (\d+)/m.exec(metrics)?.[1])).toBeGreaterThan(0);
    expect(metrics).toMatch(/^nodejs_eventloop_lag_p99_seconds /m);
  }, 30_000);

  it('limits the request rate: 429 with Retry-After over the limit, health and metrics unaffected', async () => {
    const port = await freePort();
    racklb('limited-fn', ['serve', 'on-node-label', '--port', String(port), '--redis', redis.url, '--rate-limit', '2', '--rate-burst', '5']);
    const url = `http://127.0.0.1:${port}/`;
    await ready(url);
    const answers = await Promise.all(Array.from({ length: 20 }, (_, i) => post(url, 'add', node({ name: `flood-${i}`, ip: `192.0.2.${100 + i}` }))));
    const limited = answers.filter((a) => a.status === 429);
    expect(answers.filter((a) => a.status === 200).length).toBe(5);
    expect(limited.length).toBe(15);
    for (const a of limited) {
      expect(Number(a.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      expect(JSON.parse(a.body).error).toContain('rate limit of 2 requests per second');
    }
    expect((await request(`${url}health/readiness`)).statusCode).toBe(200);
    const metrics = await (await request(`${url}metrics`)).body.text();
    expect(metrics).toMatch(/racklb_function_events_total\{function="on-node-label",outcome="throttled"\} 15/);
    // Throttled requests were neither handled nor journaled: 5 nodes stored, not 20.
    const store = await openStore();
    try {
      expect(await store.redis.scard(store.keys.index('Node'))).toBe(5 + 1);
    } finally {
      await store.close();
    }
    // After Retry-After, the sender gets through again.
    await new Promise((r) => setTimeout(r, Number(limited[0]!.headers['retry-after']) * 1000));
    expect((await post(url, 'add', node({ name: 'flood-late', ip: '192.0.2.99' }))).status).toBe(200);
  }, 30_000);
});
