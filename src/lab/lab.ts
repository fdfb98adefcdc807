/**
 * `racklb lab`: PorterLB's multi-router scenario on one machine. Network and routers come from
 * netns.ts and bird.ts; this module runs racklb itself inside them: Redis, the three functions,
 * and gobgpd plus a speaker on every node labelled for speaker placement, the way a Deployment with
 * PorterLB's nodeSelector would place them.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { LABELS } from '../core/types.js';
import { placesSpeaker } from '../core/objects.js';
import { RacklbError } from '../errors.js';
import { FUNCTION_NAMES } from '../functions.js';
import type { FunctionName } from '../store/keys.js';
import { Store } from '../store/store.js';
import { markComplete } from '../cli/state.js';
import { LabApiServer, type Delivery } from './apiserver.js';
import { leafBirdConfig, spineBirdConfig, startRouter } from './bird.js';
import { leafFrrConfig, spineFrrConfig, startFrrRouter } from './frr.js';
import { buildNetwork, destroyNetwork, listLabNamespaces, requireRoot } from './netns.js';
import { LAB_RUN_DIR, labDir, netnsName } from './paths.js';
import { isAlive, killPid, killPidFile, readPidFile, spawnInNetns, waitFor, writeFileMkdir } from './process.js';
import type { Topology } from './topology.js';

export interface LabState {
  topology: Topology;
  functions: Record<FunctionName, string>;
  redis: string;
  createdAt: string;
}

const STATE_FILE = join(LAB_RUN_DIR, 'lab.json');
const REDIS_DIR = join(LAB_RUN_DIR, 'redis');
export const LAB_REDIS_URL = `unix://${join(REDIS_DIR, 'redis.sock')}`;
/** gobgpd's API inside each node namespace (every namespace has its own loopback). */
export const GOBGP_API = '127.0.0.1:50051';
export const SPEAKER_METRICS_PORT = 9473;

/** The repository root, found from this file whether it runs from src/ or dist/src/. */
export function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const up = dirname(dir);
    if (up === dir) throw new RacklbError('RACKLB_LAB', 'cannot find racklb\'s package.json above the lab module');
    dir = up;
  }
  return dir;
}

/**
 * V8 flags the speaker runs with, here and in its DaemonSet (infra/speaker/speaker.yaml, the
 * speaker container's command: NODE_OPTIONS refuses the second flag). A 4 MB young generation:
 * Node's default lets it grow to 16 MB per semi-space and keeps it once grown, which after one
 * bulk of 10,000 routes was a fifth of the speaker's resident memory; 2 MB cost the speaker about
 * a tenth more CPU in a bulk than 4 MB (docs/performance.md, the fifth pass). An old generation
 * that grows 30% past what the last full collection kept, where V8's own factor lets it reach
 * several times that in a burst of route changes: the speaker's peak in the bulk and memory
 * benchmarks fell from 186 and 233 MB to 119 and 120 MB, for the same CPU (the ninth pass).
 */
export const SPEAKER_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4', '--heap-growing-percent=30'];

function racklbArgs(...args: string[]): string[] {
  return [join(repoRoot(), 'bin', 'racklb.js'), ...args];
}

export function readLabState(): LabState {
  if (!existsSync(STATE_FILE)) throw new RacklbError('RACKLB_LAB', 'the lab is not up: run `racklb lab up` first');
  return JSON.parse(readFileSync(STATE_FILE, 'utf8')) as LabState;
}

export function labIsUp(): boolean {
  return existsSync(STATE_FILE);
}

/**
 * A free port for a function, below Linux's ephemeral range (32768 and up): a function restarted
 * on its port must not find it taken as the source port of some outgoing connection meanwhile.
 */
async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    const free = await new Promise<boolean>((resolve) => {
      const s = createServer();
      s.once('error', () => resolve(false));
      s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new RacklbError('RACKLB_LAB', 'no free port between 20000 and 32000 for the functions');
}

export type Say = (line: string) => void;

export async function labUp(topology: Topology, say: Say = () => undefined): Promise<LabState> {
  requireRoot();
  if (labIsUp() || (await listLabNamespaces()).length > 0) {
    throw new RacklbError('RACKLB_LAB', 'a lab is already up (or left over from a crash): run `racklb lab down` first');
  }
  try {
    say(`building the network: ${topology.racks.length} racks, ${topology.racks.reduce((n, r) => n + r.nodes.length, 0)} nodes`);
    await buildNetwork(topology);
    say(`starting the routers: ${[topology.spine, ...topology.racks].map((r) => `${r.name} (${r.daemon === 'frr' ? 'FRR' : 'BIRD'})`).join(', ')}`);
    await (topology.spine.daemon === 'frr' ? startFrrRouter(topology.spine.name, spineFrrConfig(topology)) : startRouter(topology.spine.name, spineBirdConfig(topology)));
    await Promise.all(topology.racks.map((rack) => (rack.daemon === 'frr' ? startFrrRouter(rack.name, leafFrrConfig(topology, rack)) : startRouter(rack.name, leafBirdConfig(topology, rack)))));

    say('starting Redis and the three functions');
    await startRedis();
    const functions = {} as Record<FunctionName, string>;
    for (const fn of FUNCTION_NAMES) {
      const port = await freePort();
      startFunction(fn, port);
      functions[fn] = `http://127.0.0.1:${port}/`;
    }
    for (const fn of FUNCTION_NAMES) {
      const url = `${functions[fn]}health/readiness`;
      await waitFor(`function ${fn} to be ready`, async () => (await request(url)).statusCode === 200, 15_000, 50);
    }
    const state: LabState = { topology, functions, redis: LAB_REDIS_URL, createdAt: new Date().toISOString() };
    writeFileSync(STATE_FILE, JSON.stringify(state, null, 2));

    say('registering a Ready Node for every node of the topology');
    const api = new LabApiServer(functions);
    const nodes = topology.racks.flatMap((rack) => rack.nodes.map((n) => readyNode(n.name, n.ip, n.ip6)));
    failOnRejections(await api.apply(nodes));
    await markLabComplete();
    return state;
  } catch (err) {
    say('lab up failed; tearing down what was built');
    await labDown().catch(() => undefined);
    throw err;
  }
}

/**
 * The lab is the API server: once the store holds every object it keeps, it vouches that the store
 * is complete, so speakers may withdraw (docs/operations.md, the empty-store guard).
 */
export async function markLabComplete(): Promise<void> {
  const store = Store.open(LAB_REDIS_URL, { failFast: true });
  try {
    await store.connect();
    await markComplete(store);
  } finally {
    await store.close();
  }
}

function startFunction(fn: FunctionName, port: number): void {
  spawnInNetns(undefined, process.execPath, racklbArgs('serve', fn, '--port', String(port), '--host', '127.0.0.1', '--redis', LAB_REDIS_URL), {
    logFile: join(labDir('functions'), `${fn}.log`),
    pidFile: join(labDir('functions'), `${fn}.pid`),
  });
}

/** SIGKILLs a function and starts it again on the same port; resolves once it is ready. */
export async function restartFunction(state: LabState, fn: FunctionName): Promise<void> {
  await killPidFile(join(labDir('functions'), `${fn}.pid`), 'SIGKILL');
  startFunction(fn, Number(new URL(state.functions[fn]).port));
  const url = `${state.functions[fn]}health/readiness`;
  try {
    await waitFor(`function ${fn} to be ready again`, async () => (await request(url)).statusCode === 200, 15_000, 50);
  } catch (err) {
    const log = readFileSync(join(labDir('functions'), `${fn}.log`), 'utf8').trimEnd().split('\n').slice(-10).join('\n');
    throw new RacklbError('RACKLB_LAB', `${(err as Error).message}\n${log}`, { cause: err });
  }
}

/** A dual-stack node reports one InternalIP per family, IPv4 first, as the kubelet does. */
function readyNode(name: string, ip: string, ip6: string | undefined): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/hostname': name, 'kubernetes.io/os': 'linux' } },
    spec: {},
    status: {
      addresses: [
        { type: 'InternalIP', address: ip },
        ...(ip6 === undefined ? [] : [{ type: 'InternalIP', address: ip6 }]),
        { type: 'Hostname', address: name },
      ],
      conditions: [{ type: 'Ready', status: 'True', reason: 'KubeletReady' }],
    },
  };
}

export function failOnRejections(list: Delivery[]): void {
  const bad = list.filter((d) => d.status !== 200);
  if (bad.length > 0) throw new RacklbError('RACKLB_LAB', bad.map((d) => `${d.key}: ${d.outcome} (${d.status}) ${d.detail}`).join('\n'));
}

/** Stops the lab's Redis (SIGKILL: nothing is flushed, like a crash). */
export async function stopLabRedis(): Promise<void> {
  await killPidFile(join(REDIS_DIR, 'redis.pid'), 'SIGKILL');
}

/** Starts the lab's Redis again; `empty` first drops its append-only file, as a restart without persistence would. */
export async function startLabRedis(opts: { empty?: boolean } = {}): Promise<void> {
  if (opts.empty) rmSync(join(REDIS_DIR, 'appendonlydir'), { recursive: true, force: true });
  await startRedis();
}

async function startRedis(): Promise<void> {
  const sock = LAB_REDIS_URL.slice('unix://'.length);
  rmSync(sock, { force: true });
  spawnInNetns(undefined, 'redis-server', ['--port', '0', '--unixsocket', sock, '--unixsocketperm', '700', '--dir', REDIS_DIR, '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--daemonize', 'no'], {
    logFile: join(REDIS_DIR, 'redis.log'),
    pidFile: join(REDIS_DIR, 'redis.pid'),
  });
  await waitFor('Redis to listen on its socket', async () => existsSync(sock), 10_000, 20);
}

/** Stops everything the lab started and removes its namespaces; safe twice and after a crash. */
export async function labDown(say: Say = () => undefined): Promise<string[]> {
  requireRoot('racklb lab down');
  const removed: string[] = [];
  // Processes in the root namespace (functions, Redis) by their pid files; the ones inside the
  // namespaces (BIRD, gobgpd, speakers) go with their namespace.
  for (const pidFile of [...FUNCTION_NAMES.map((fn) => join(labDir('functions'), `${fn}.pid`)), join(REDIS_DIR, 'redis.pid')]) {
    if (await killPidFile(pidFile, 'SIGTERM')) removed.push(`process ${pidFile}`);
  }
  const net = await destroyNetwork();
  removed.push(...net.removed);
  rmSync(LAB_RUN_DIR, { recursive: true, force: true });
  say(removed.length ? `removed: ${removed.join(', ')}` : 'nothing to remove');
  return removed;
}

function nodeFiles(node: string): { gobgpdPid: string; gobgpdLog: string; speakerPid: string; speakerLog: string } {
  const dir = labDir(node);
  return { gobgpdPid: join(dir, 'gobgpd.pid'), gobgpdLog: join(dir, 'gobgpd.log'), speakerPid: join(dir, 'speaker.pid'), speakerLog: join(dir, 'speaker.log') };
}

export function labNodes(state: LabState): { name: string; ip: string; rack: string }[] {
  return state.topology.racks.flatMap((rack) => rack.nodes.map((n) => ({ ...n, rack: rack.name })));
}

export async function startProcess(node: string, which: 'speaker' | 'gobgpd'): Promise<void> {
  const f = nodeFiles(node);
  if (which === 'gobgpd') {
    spawnInNetns(netnsName(node), 'gobgpd', ['--api-hosts', GOBGP_API, '--pprof-disable', '-l', 'info'], { logFile: f.gobgpdLog, pidFile: f.gobgpdPid });
  } else {
    spawnInNetns(
      netnsName(node),
      process.execPath,
      [...SPEAKER_NODE_FLAGS, ...racklbArgs('speaker', '--node', node, '--redis', LAB_REDIS_URL, '--gobgp', GOBGP_API, '--metrics-port', String(SPEAKER_METRICS_PORT))],
      { logFile: f.speakerLog, pidFile: f.speakerPid },
    );
  }
}

export async function processPid(node: string, which: 'speaker' | 'gobgpd'): Promise<number | undefined> {
  const f = nodeFiles(node);
  const pid = await readPidFile(which === 'speaker' ? f.speakerPid : f.gobgpdPid);
  return pid !== undefined && isAlive(pid) ? pid : undefined;
}

/**
 * Changes to the nodes' processes, one at a time within this process. A restart leaves a node with
 * no live speaker between the kill and the start; a syncSpeakers in between (the fault test runs
 * both at once) would start a second one, which dies on the metrics port the first one then takes.
 */
let processChanges: Promise<unknown> = Promise.resolve();
function oneProcessChangeAtATime<T>(change: () => Promise<T>): Promise<T> {
  const next = processChanges.then(change, change);
  processChanges = next.catch(() => undefined);
  return next;
}

/**
 * Starts gobgpd and a speaker on every node carrying the placement label, and stops them where
 * it is gone: what the scheduler does for a Deployment with node affinity lb.kubesphere.io/v1alpha1 in (porter, openelb).
 */
export function syncSpeakers(state: LabState, say: Say = () => undefined): Promise<void> {
  return oneProcessChangeAtATime(() => scheduleSpeakers(state, say));
}

async function scheduleSpeakers(state: LabState, say: Say): Promise<void> {
  const api = new LabApiServer(state.functions);
  for (const n of labNodes(state)) {
    const obj = api.get('Node', n.name);
    const labels = ((obj?.metadata as Record<string, unknown> | undefined)?.labels ?? {}) as Record<string, string>;
    const wanted = placesSpeaker(labels);
    const running = (await processPid(n.name, 'speaker')) !== undefined;
    if (wanted && !running) {
      if ((await processPid(n.name, 'gobgpd')) === undefined) await startProcess(n.name, 'gobgpd');
      await startProcess(n.name, 'speaker');
      say(`speaker scheduled on ${n.name}`);
    } else if (!wanted && (running || (await processPid(n.name, 'gobgpd')) !== undefined)) {
      const f = nodeFiles(n.name);
      await killPidFile(f.speakerPid, 'SIGTERM');
      await killPidFile(f.gobgpdPid, 'SIGTERM');
      say(`speaker removed from ${n.name}`);
    }
  }
}

/** `racklb lab restart NODE speaker|gobgpd`: SIGKILL, then start again. */
export function restartProcess(node: string, which: 'speaker' | 'gobgpd'): Promise<{ killed: number | undefined; started: number | undefined }> {
  return oneProcessChangeAtATime(() => killAndStart(node, which));
}

async function killAndStart(node: string, which: 'speaker' | 'gobgpd'): Promise<{ killed: number | undefined; started: number | undefined }> {
  const state = readLabState();
  if (!labNodes(state).some((n) => n.name === node)) throw new RacklbError('RACKLB_USAGE', `node ${JSON.stringify(node)} is not in the lab's topology`);
  const killed = await processPid(node, which);
  if (killed === undefined) throw new RacklbError('RACKLB_USAGE', `no ${which} runs on ${node} (is the node labelled ${LABELS.speaker}=porter or =openelb?)`);
  await killPid(killed, 'SIGKILL');
  await startProcess(node, which);
  return { killed, started: await processPid(node, which) };
}

export async function writeLabFile(name: string, text: string): Promise<string> {
  const path = join(LAB_RUN_DIR, name);
  await writeFileMkdir(path, text);
  return path;
}
