/**
 * Traffic through the lab, to show what the routing tables promise (`racklb lab traffic`): every
 * node holds the Service IP on its loopback, as kube-proxy's IPVS mode does, and a small responder
 * answers TCP connections on port 8080 with the node's name; a client inside a router's namespace
 * opens connections one after another and counts which node answered. The routers hash ECMP on
 * the 5-tuple (netns.ts), so connections spread over every next hop the way flows would.
 * Responders live inside the nodes' namespaces, so `racklb lab down` ends them with the rest.
 */
import { join } from 'node:path';
import { RacklbError } from '../errors.js';
import { parseIp } from '../core/ip.js';
import { labDir, netnsName } from './paths.js';
import { isAlive, readPidFile, runCommand, spawnInNetns, waitFor } from './process.js';
import type { Topology } from './topology.js';

export const RESPONDER_PORT = 8080;
export const MAX_CONNECTIONS = 1_000;

// One dual-stack socket per node answers on every address the node holds, either family.
const RESPONDER = `
const net = require('node:net');
const [port, name] = process.argv.slice(1);
net.createServer((s) => s.end(name)).listen({ port: Number(port), host: '::' });
`;

const CLIENT = `
const net = require('node:net');
const [ip, port, count] = process.argv.slice(1);
const counts = {};
const one = () => new Promise((resolve) => {
  const s = net.connect({ host: ip, port: Number(port) });
  let body = '';
  const done = (key) => { counts[key] = (counts[key] ?? 0) + 1; s.destroy(); resolve(); };
  s.setTimeout(2000, () => done('(timeout)'));
  s.on('data', (d) => (body += d));
  s.on('end', () => done(body));
  s.on('error', (e) => done('(' + e.code + ')'));
});
(async () => {
  for (let i = 0; i < Number(count); i++) await one();
  process.stdout.write(JSON.stringify(counts));
})();
`;

/** Node name -> connections it answered; failures as `(timeout)`, `(ECONNREFUSED)`, ... */
export type TrafficCounts = Record<string, number>;

/**
 * Puts `ip` on the loopback of every node of the topology and makes sure each node's responder
 * runs. Safe to repeat: an address already there and a live responder are left as they are.
 */
export async function serveOnNodes(t: Topology, ip: string): Promise<void> {
  const parsed = parseIp(ip);
  if (parsed === undefined) throw new RacklbError('RACKLB_USAGE', `lab traffic: ${JSON.stringify(ip)} is not an IP address`);
  const prefix = `${parsed.text}/${parsed.family === 'ipv4' ? 32 : 128}`;
  const nodes = t.racks.flatMap((r) => r.nodes.map((n) => n.name));
  for (const node of nodes) {
    await runCommand('ip', ['-n', netnsName(node), 'addr', 'replace', prefix, 'dev', 'lo']);
    const pidFile = join(labDir(node), 'responder.pid');
    const pid = await readPidFile(pidFile);
    if (pid !== undefined && isAlive(pid)) continue;
    spawnInNetns(netnsName(node), process.execPath, ['-e', RESPONDER, String(RESPONDER_PORT), node], { logFile: join(labDir(node), 'responder.log'), pidFile });
  }
  // Ready once each node answers a connection made inside it.
  for (const node of nodes) {
    await waitFor(`the responder on ${node} to answer on ${parsed.text}`, async () => (await connectionsFrom(node, parsed.text, 1))[node] === 1, 10_000, 100);
  }
}

/** Opens `count` TCP connections to `ip` port 8080, one after another, from inside `from`'s namespace. */
export async function connectionsFrom(from: string, ip: string, count: number): Promise<TrafficCounts> {
  if (!Number.isInteger(count) || count < 1 || count > MAX_CONNECTIONS) {
    throw new RacklbError('RACKLB_USAGE', `lab traffic: --connections must be an integer from 1 to ${MAX_CONNECTIONS}, not ${count}`);
  }
  const { stdout } = await runCommand('ip', ['netns', 'exec', netnsName(from), process.execPath, '-e', CLIENT, ip, String(RESPONDER_PORT), String(count)], {
    timeoutMs: 5_000 + count * 2_500,
  });
  return JSON.parse(stdout) as TrafficCounts;
}

/** `master1 23, worker-p001 17, worker-p002 20`, in name order. */
export function formatCounts(counts: TrafficCounts): string {
  const names = Object.keys(counts).sort();
  return names.length === 0 ? '(no answer)' : names.map((n) => `${n} ${counts[n]}`).join(', ');
}
