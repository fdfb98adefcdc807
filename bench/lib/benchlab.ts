/**
 * The lab the routing benchmarks run in: three racks of three nodes under BIRD leaves and a BIRD
 * spine, a speaker with its gobgpd on the first node of each rack, Redis and the three functions.
 * It lives under the benchmark's own namespace prefix and run directory (set by bench/run.ts before
 * any lab module is loaded), so a lab a user left up is never touched.
 *
 * The floor is driven through agents (bench/agent.ts): one per speaker node, inside its namespace,
 * talking to the same gobgpd with the same gRPC client. While the floor runs, the speakers are
 * frozen with SIGSTOP: a running speaker would, at its periodic resync, withdraw paths it did not
 * put there. SIGCONT resumes them exactly where they were.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { parseTopology, type Topology } from '../../src/lab/topology.js';
import { GOBGP_API, labDown, labUp, processPid, repoRoot, startProcess, type LabState } from '../../src/lab/lab.js';
import { LAB_RUN_DIR, NETNS_PREFIX, netnsName } from '../../src/lab/paths.js';
import { killPid } from '../../src/lab/process.js';
import { connectRedis } from '../../src/store/redis.js';
import { bgpConf, bgpPeer, eip, node, service } from '../../test/helpers/fixtures.js';
import type { AgentAnswer, AgentCommand } from '../agent.js';
import { Sender } from './events.js';
import { RouteMonitor } from './monitor.js';

export const TOPOLOGY_YAML = `# The benchmarks' lab: three racks of three nodes; the first node of each rack runs a speaker.
spine: { name: spine, asn: 65000 }
racks:
  - name: leaf1
    asn: 65001
    subnet: 192.0.2.0/26
    router: 192.0.2.1
    nodes:
      - { name: n1a, ip: 192.0.2.10 }
      - { name: n1b, ip: 192.0.2.11 }
      - { name: n1c, ip: 192.0.2.12 }
  - name: leaf2
    asn: 65002
    subnet: 192.0.2.64/26
    router: 192.0.2.65
    nodes:
      - { name: n2a, ip: 192.0.2.74 }
      - { name: n2b, ip: 192.0.2.75 }
      - { name: n2c, ip: 192.0.2.76 }
  - name: leaf3
    asn: 65003
    subnet: 192.0.2.128/26
    router: 192.0.2.129
    nodes:
      - { name: n3a, ip: 192.0.2.138 }
      - { name: n3b, ip: 192.0.2.139 }
      - { name: n3c, ip: 192.0.2.140 }
`;

/** racklb's Service IPs: the default Eip. Bulk Services take addresses from its bottom. */
export const RACKLB_POOL = '198.18.0.0/16';
/** The floor's prefixes: same shape, another /16, so the two never meet in a table. */
export const FLOOR_FIRST = '198.19.0.0';

export class Agent {
  private readonly child: ChildProcessWithoutNullStreams;
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (a: AgentAnswer) => void; reject: (e: Error) => void }>();

  constructor(readonly node: string) {
    const script = join(repoRoot(), 'dist', 'bench', 'agent.js');
    this.child = spawn('ip', ['netns', 'exec', netnsName(node), process.execPath, script, GOBGP_API], { stdio: ['pipe', 'pipe', 'pipe'] });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      let a: AgentAnswer;
      try {
        a = JSON.parse(line) as AgentAnswer;
      } catch {
        return;
      }
      const p = this.pending.get(a.id);
      if (!p) return;
      this.pending.delete(a.id);
      if (a.ok) p.resolve(a);
      else p.reject(new Error(`agent on ${node}: ${a.error}`));
    });
    let stderr = '';
    this.child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2000)));
    this.child.on('exit', () => {
      for (const p of this.pending.values()) p.reject(new Error(`agent on ${node} exited: ${stderr}`));
      this.pending.clear();
    });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** Sends one command; the time of the write is the floor's t0. */
  call(cmd: Omit<AgentCommand, 'id'> & Record<string, unknown>): Promise<AgentAnswer> {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.child.stdin.write(`${JSON.stringify({ ...cmd, id })}\n`);
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    this.child.stdin.end();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 3000);
    await gone;
    clearTimeout(t);
  }
}

export interface Rack {
  name: string;
  /** The leaf's address on the uplink: what the spine routes through. */
  uplink: string;
  speaker: string;
  nodes: { name: string; ip: string }[];
}

export class BenchLab {
  readonly topology: Topology;
  readonly racks: Rack[];
  readonly sender: Sender;
  readonly agents = new Map<string, Agent>();
  private frozen = false;

  private constructor(
    readonly state: LabState,
    topology: Topology,
  ) {
    this.topology = topology;
    this.racks = topology.racks.map((r) => ({ name: r.name, uplink: r.uplink.leaf, speaker: r.nodes[0]!.name, nodes: r.nodes.map((n) => ({ ...n })) }));
    this.sender = new Sender(state.functions, 64);
  }

  get spine(): string {
    return this.topology.spine.name;
  }

  get uplinks(): string[] {
    return this.racks.map((r) => r.uplink).sort();
  }

  static async up(say: (line: string) => void): Promise<BenchLab> {
    if (NETNS_PREFIX === 'rl-' || !LAB_RUN_DIR.includes('bench')) throw new Error('the bench lab must run under its own RACKLB_LAB_* settings (bench/run.ts sets them)');
    // Whatever a crashed benchmark left behind, under the benchmark's own prefix only.
    await labDown();
    const topology = parseTopology(TOPOLOGY_YAML);
    say(`lab: namespaces ${NETNS_PREFIX}*, run directory ${LAB_RUN_DIR}`);
    const state = await labUp(topology, (l) => say(`lab: ${l}`));
    const lab = new BenchLab(state, topology);
    try {
      await lab.configure();
    } catch (err) {
      await lab.down().catch(() => undefined);
      throw err;
    }
    return lab;
  }

  private nodeObject(rack: Rack, n: { name: string; ip: string }, ready: boolean): Record<string, unknown> {
    return node({ name: n.name, ip: n.ip, rack: rack.name, speaker: n.name === rack.speaker, ready });
  }

  /** A Node update as the kubelet's status change sends it. */
  nodeEvent(nodeName: string, ready: boolean): ReturnType<Sender['prepare']> {
    const rack = this.racks.find((r) => r.nodes.some((n) => n.name === nodeName));
    if (!rack) throw new Error(`no node ${nodeName}`);
    return this.sender.prepare('update', this.nodeObject(rack, rack.nodes.find((n) => n.name === nodeName)!, ready));
  }

  serviceObject(name: string, ip?: string): Record<string, unknown> {
    return service({ name, namespace: 'bench', ...(ip === undefined ? {} : { requestedIp: ip }) });
  }

  private async configure(): Promise<void> {
    const s = this.sender;
    const events = [
      s.prepare('add', bgpConf({ as: 65100, listenPort: 179 })),
      s.prepare('add', eip({ name: 'bench', address: RACKLB_POOL, isDefault: true })),
      ...this.topology.racks.map((r) =>
        s.prepare('add', bgpPeer({ name: `peer-${r.name}`, peerAs: r.asn, neighborAddress: r.router, rack: r.name, spec: { timers: { config: { connectRetry: 1, holdTime: 9, keepaliveInterval: 3 } } } })),
      ),
      ...this.racks.flatMap((r) => r.nodes.map((n) => s.prepare('update', this.nodeObject(r, n, true)))),
    ];
    for (const e of events) await s.apply(e);
    for (const r of this.racks) {
      await startProcess(r.speaker, 'gobgpd');
      await startProcess(r.speaker, 'speaker');
    }
    // Sessions up and the whole path working: a Service through every leaf at the spine.
    const spine = await RouteMonitor.start(this.spine);
    try {
      const ip = '198.18.254.1';
      const until = spine.waitFor(`${ip}/32`, (h) => h.length === this.racks.length, 90_000);
      await s.apply(s.prepare('add', this.serviceObject('warmup', ip)));
      await until;
      const gone = spine.waitFor(`${ip}/32`, (h) => h.length === 0, 30_000);
      await s.apply(s.prepare('delete', this.serviceObject('warmup', ip)));
      await gone;
    } finally {
      await spine.stop();
    }
    for (const r of this.racks) this.agents.set(r.speaker, new Agent(r.speaker));
    // Loaded before any figure: three agents starting (Node, gRPC, the GoBGP schema) took about a
    // second of CPU each from the first racklb run on two cores.
    await Promise.all([...this.agents.values()].map((a) => a.call({ op: 'prepare', name: 'ready', paths: [] })));
  }

  /**
   * The worst stall of each kind the lab's Redis saw since the last call, in ms, from its latency
   * monitor (LATENCY LATEST; events of 20 ms or more): `aof-fsync-always` is an fsync of the
   * append-only file that kept Redis from answering. Lets an outlier be told from racklb's own
   * time. Resets the monitor.
   */
  async redisStalls(): Promise<Record<string, number>> {
    const redis = connectRedis(this.state.redis);
    try {
      await redis.connect();
      await redis.config('SET', 'latency-monitor-threshold', '20');
      const latest = (await redis.call('LATENCY', 'LATEST')) as [string, number, number, number][];
      await redis.call('LATENCY', 'RESET');
      return Object.fromEntries(latest.map(([event, , , max]) => [event, max]));
    } finally {
      redis.disconnect();
    }
  }

  async speakerPids(): Promise<number[]> {
    const pids: number[] = [];
    for (const r of this.racks) {
      const pid = await processPid(r.speaker, 'speaker');
      if (pid === undefined) throw new Error(`no speaker runs on ${r.speaker}`);
      pids.push(pid);
    }
    return pids;
  }

  /** Freezes the speakers (SIGSTOP) for a floor measurement. */
  async freezeSpeakers(): Promise<void> {
    for (const pid of await this.speakerPids()) process.kill(pid, 'SIGSTOP');
    this.frozen = true;
  }

  async thawSpeakers(): Promise<void> {
    for (const pid of await this.speakerPids()) process.kill(pid, 'SIGCONT');
    this.frozen = false;
  }

  async down(): Promise<void> {
    if (this.frozen) await this.thawSpeakers().catch(() => undefined);
    await this.sender.close().catch(() => undefined);
    for (const a of this.agents.values()) await a.close().catch(() => undefined);
    await labDown();
  }

  /** Kills gobgpd on a speaker node with SIGKILL, as a crash would. */
  async killGobgpd(node: string): Promise<void> {
    const pid = await processPid(node, 'gobgpd');
    if (pid === undefined) throw new Error(`no gobgpd runs on ${node}`);
    await killPid(pid, 'SIGKILL');
  }

  async startGobgpd(node: string): Promise<void> {
    await startProcess(node, 'gobgpd');
  }
}
