/**
 * Traffic through the lab, to show what the routing tables promise: every node holds the Service
 * IP on its loopback (as kube-proxy's IPVS mode does) and answers TCP connections on it with its
 * own name; a client inside a router's namespace opens connections one after another and counts
 * which node answered. Processes live inside the lab's namespaces, so `racklb lab down` ends them.
 */
import { join } from 'node:path';
import { LAB_RUN_DIR, netnsName } from '../../src/lab/paths.js';
import { runCommand, spawnInNetns, waitFor } from '../../src/lab/process.js';

export const RESPONDER_PORT = 8080;

const RESPONDER = `
const net = require('node:net');
const [ip, port, name] = process.argv.slice(1);
net.createServer((s) => s.end(name)).listen(Number(port), ip);
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

/** Puts `ip` on the loopback of each node and starts a responder for it there. */
export async function serveOnNodes(nodes: readonly string[], ip: string): Promise<void> {
  const prefix = `${ip}/${ip.includes(':') ? 128 : 32}`;
  for (const node of nodes) {
    await runCommand('ip', ['-n', netnsName(node), 'addr', 'add', prefix, 'dev', 'lo']);
    spawnInNetns(netnsName(node), process.execPath, ['-e', RESPONDER, ip, String(RESPONDER_PORT), node], {
      logFile: join(LAB_RUN_DIR, 'traffic', `${node}-${ip.replace(/:/g, '_')}.log`),
    });
  }
  // Ready once each node answers its own connection.
  for (const node of nodes) {
    await waitFor(`responder on ${node} for ${ip}`, async () => (await connectionsFrom(node, ip, 1))[node] === 1, 10_000, 100);
  }
}

/** Opens `count` TCP connections to `ip` from inside `router`'s namespace: node name -> answers. */
export async function connectionsFrom(router: string, ip: string, count: number): Promise<Record<string, number>> {
  const { stdout } = await runCommand('ip', ['netns', 'exec', netnsName(router), process.execPath, '-e', CLIENT, ip, String(RESPONDER_PORT), String(count)], {
    timeoutMs: 5_000 + count * 2_500,
  });
  return JSON.parse(stdout) as Record<string, number>;
}
