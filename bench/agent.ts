/**
 * The floor's hands: a small process started inside a speaker node's network namespace (where
 * gobgpd's API listens on that namespace's own 127.0.0.1), that drives gobgpd over gRPC with the
 * same client the speaker uses and nothing else: no Redis, no functions, no reconcile. The
 * benchmark sends it one JSON command per line on stdin and reads one answer per line on stdout.
 *
 *   node dist/bench/agent.js 127.0.0.1:50051
 */
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { GobgpClient, type GobgpGlobalConfig, type GobgpPath, type GobgpPeerConfig } from '../src/gobgp/client.js';
import { pathIdentifier } from '../speaker/plan.js';

export type AgentCommand =
  | { id: number; op: 'prepare'; name: string; paths: GobgpPath[] }
  | { id: number; op: 'prepareRange'; name: string; first: string; count: number; nextHops: string[] }
  | { id: number; op: 'add' | 'del'; name: string }
  /** Global settings, peers and local paths of the running gobgpd; the paths become `prepared.snapshot`. */
  | { id: number; op: 'snapshot' }
  | { id: number; op: 'provision'; name: string }
  | { id: number; op: 'exit' };

export interface AgentAnswer {
  id: number;
  ok: boolean;
  error?: string;
  /** Time spent inside the agent, for the record. */
  ms: number;
  detail?: unknown;
}

const address = process.argv[2] ?? '127.0.0.1:50051';
let client = new GobgpClient(address, { callTimeoutMs: 60_000 });
const prepared = new Map<string, GobgpPath[]>();
let snapshot: { global: GobgpGlobalConfig; peers: GobgpPeerConfig[] } | undefined;

function ipv4ToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

function intToIpv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Resolves once something accepts TCP connections on the API address (gobgpd restarted). */
async function waitPort(deadline: number): Promise<void> {
  const [host, port] = [address.slice(0, address.lastIndexOf(':')), Number(address.slice(address.lastIndexOf(':') + 1))];
  while (Date.now() < deadline) {
    const open = await new Promise<boolean>((resolve) => {
      const s = connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (open) return;
    // Short and fixed: the floor must not pay a reconnect backoff the speaker pays on its own.
    await new Promise((r) => setTimeout(r, 2));
  }
  throw new Error(`gobgpd API at ${address} not up in time`);
}

async function run(cmd: AgentCommand): Promise<unknown> {
  switch (cmd.op) {
    case 'prepare':
      prepared.set(cmd.name, cmd.paths);
      return cmd.paths.length;
    case 'prepareRange': {
      const base = ipv4ToInt(cmd.first);
      const paths: GobgpPath[] = [];
      for (let i = 0; i < cmd.count; i++) {
        const prefix = `${intToIpv4(base + i)}/32`;
        for (const nextHop of cmd.nextHops) paths.push({ prefix, family: 'ipv4', nextHop, identifier: pathIdentifier(nextHop) });
      }
      prepared.set(cmd.name, paths);
      return paths.length;
    }
    case 'add':
      await client.addPaths(prepared.get(cmd.name) ?? []);
      return undefined;
    case 'del':
      await client.deletePaths(prepared.get(cmd.name) ?? []);
      return undefined;
    case 'snapshot': {
      const global = await client.getGlobal();
      if (!global) throw new Error('gobgpd has not started BGP: nothing to snapshot');
      // Read back as configured, minus what only describes the live session.
      const peers = (await client.listPeers()).map((p) => ({ ...p.config, transport: { ...p.config.transport, localAddress: undefined } }));
      snapshot = { global, peers };
      // What gobgpd announces now, kept under the name "snapshot" for `provision`.
      const paths = [...(await client.listPaths('ipv4')), ...(await client.listPaths('ipv6'))];
      prepared.set('snapshot', paths);
      return { peers: peers.length, paths: paths.length };
    }
    case 'provision': {
      if (!snapshot) throw new Error('provision before snapshot');
      await waitPort(Date.now() + 30_000);
      client.close();
      client = new GobgpClient(address, { callTimeoutMs: 60_000 });
      await client.startBgp(snapshot.global);
      // As the speaker does: paths first, so a new session starts with the full table.
      await client.addPaths(prepared.get(cmd.name) ?? []);
      for (const p of snapshot.peers) await client.addPeer(p);
      return undefined;
    }
    case 'exit':
      client.close();
      setImmediate(() => process.exit(0));
      return undefined;
  }
}

const rl = createInterface({ input: process.stdin });
rl.on('line', (line) => {
  let cmd: AgentCommand;
  try {
    cmd = JSON.parse(line) as AgentCommand;
  } catch {
    return;
  }
  const started = performance.now();
  run(cmd).then(
    (detail) => process.stdout.write(`${JSON.stringify({ id: cmd.id, ok: true, ms: performance.now() - started, detail } satisfies AgentAnswer)}\n`),
    (err: unknown) => process.stdout.write(`${JSON.stringify({ id: cmd.id, ok: false, ms: performance.now() - started, error: String(err) } satisfies AgentAnswer)}\n`),
  );
});
// The benchmark going away takes the agent with it.
rl.on('close', () => {
  client.close();
  process.exit(0);
});
