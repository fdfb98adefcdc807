/**
 * BIRD 2 configurations for the lab's routers, and starting/stopping BIRD inside their namespaces.
 *
 * Leaf (one per rack), sessions with the rack's speakers from `template bgp rack_speaker`: any ASN
 * but the leaf's own (`external`), ADD-PATH received (`add paths rx`), import everything, export
 * nothing to the rack, keep a restarting speaker's routes (`graceful restart on`).
 *  - `protocol bgp node_<name>` per node of the topology, `neighbor <node ip> external`: the leaf
 *    connects to the node (fast session start; see BirdOptions.connectToNodes).
 *  - `protocol bgp speakers`: dynamic BGP, `neighbor range <subnet> external` accepts a session from
 *    any other address of the rack subnet; instances are spawned as speaker1, speaker2, ...
 *  - `protocol bgp to_spine`: eBGP over the uplink /31, exports the routes learned from the rack
 *    with `next hop self`.
 *  - `protocol kernel`: exports BGP routes into the namespace's kernel table with
 *    `merge paths on limit 64`, so one prefix announced with several next hops becomes one ECMP
 *    route.
 * Spine: one eBGP session per leaf (`to_<rack>`), imports everything, exports nothing, and installs
 * ECMP across the leaves the same way. BIRD merges eBGP routes from different neighbor ASes as long
 * as they tie on local preference, AS-path length and origin (bgp_rte_mergable compares MED only
 * between routes from the same neighbor AS), so no extra knob is needed for the spine.
 *
 * Every BGP protocol uses short timers (see TIMERS) so lab sessions come up in about a second.
 *
 * A rack with `subnet6` gets the same again in IPv6, as separate sessions over IPv6 transport:
 * `rack_speaker6`, `node6_<name>`, `speakers6` (dynamic, spawned as speaker_v6_1, ...),
 * `to_spine6` on the leaf and `to_<rack>_v6` on the spine, and a second kernel protocol for the
 * IPv6 table. The spine prefers the leaves' global next hops over the link-local ones BIRD also
 * sends on a direct IPv6 session, so tables name the uplink addresses of the topology.
 */
import { existsSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { RacklbError } from '../errors.js';
import { labDir, netnsName } from './paths.js';
import { isAlive, killPidFile, readPidFile, runCommand, spawnInNetns, waitFor, writeFileMkdir } from './process.js';
import { compareAddresses } from './routes.js';
import { rackFamilies, type RackFamily, type RackTopology, type Topology } from './topology.js';

export interface BirdOptions {
  /** `merge paths on limit N` in the kernel protocol: most next hops in one ECMP route. Default 64. */
  ecmpLimit?: number;
  /** Leaf only: the graceful restart time the leaf announces to speakers. Default 120 s. */
  gracefulRestartTime?: number;
  /**
   * Leaf only: also configure one session per node of the topology (`node_<name>`,
   * `neighbor <ip> external`) that the leaf actively connects. Default true. gobgpd 3.x delays its
   * own first connect by 5-9 s (a hard-coded minimum connect-retry); with this, a speaker whose
   * gobgpd listens on port 179 is Established in about a second.
   */
  connectToNodes?: boolean;
}

/** Files of a router's BIRD under the lab's run directory. */
export function birdFiles(name: string): { dir: string; config: string; socket: string; pidFile: string; log: string } {
  const dir = labDir(name);
  return { dir, config: join(dir, 'bird.conf'), socket: join(dir, 'bird.ctl'), pidFile: join(dir, 'bird.pid'), log: join(dir, 'bird.log') };
}

const TIMERS = `template bgp racklb_bgp {
  connect delay time 1;   # first connect 1 s after start (default 5)
  connect retry time 1;   # retry a refused connect after 1 s (default 120)
  error wait time 1, 5;   # back up 1..5 s after a session error (default 60, 300)
  hold time 9;            # a silent peer is dropped after 9 s (default 240)
  keepalive time 3;
  debug { states, events };
}`;

function header(kind: string, name: string, routerId: string): string {
  return `# racklb lab: ${kind} ${name}. Generated; edits are overwritten by the next \`racklb lab up\`.
log stderr all;
router id ${routerId};

protocol device {
  scan time 1;
}`;
}

function kernel(limit: number, ipv6: boolean): string {
  const one = (family: 'ipv4' | 'ipv6'): string => `protocol kernel kernel_${family} {
  scan time 2;
  learn off;
  merge paths on limit ${limit};   # equal routes become one ECMP route
  ${family} {
    import none;
    export where source = RTS_BGP;
  };
}`;
  return ipv6 ? `${one('ipv4')}\n\n${one('ipv6')}` : one('ipv4');
}

export function leafBirdConfig(t: Topology, rack: RackTopology, opts: BirdOptions = {}): string {
  const limit = opts.ecmpLimit ?? 64;
  const grTime = opts.gracefulRestartTime ?? 120;
  const connect = opts.connectToNodes ?? true;
  const families = rackFamilies(rack);
  return `${header('leaf router of rack', rack.name, rack.router)}

${kernel(limit, families.length > 1)}

${TIMERS}
${families.map((f) => leafSessions(t, rack, f, grTime, connect)).join('')}`;
}

/** The leaf's sessions of one family: with the rack's speakers (over that family) and to the spine. */
function leafSessions(t: Topology, rack: RackTopology, f: RackFamily, grTime: number, connect: boolean): string {
  const v6 = f.family === 'ipv6' ? ' (IPv6)' : '';
  const template = `rack_speaker${f.suffix}`;
  const nodeSessions = connect
    ? f.nodes.map(
        (node) => `protocol bgp ${nodeProtocolName(node.name, node.index, f.suffix)} from ${template} {
  description "node ${node.name}${v6}";
  neighbor ${node.ip} external;
  debug { states };                 # no log line per refused connect to a node without a speaker
}`,
      )
    : [];
  return `
# Sessions over ${f.family === 'ipv4' ? 'IPv4' : 'IPv6'} with the speakers of rack ${rack.name}: any ASN but ${rack.asn}.
template bgp ${template} from racklb_bgp {
  local ${f.router} as ${rack.asn};${rack.password === undefined ? '' : `
  password "${rack.password}";         # TCP-MD5: the BgpPeer's authPassword must match`}
  graceful restart on;              # keep a restarting speaker's routes
  graceful restart time ${grTime};
  ${f.family} {
    import all;
    export none;
    add paths rx;                   # one path per next hop (RFC 7911)
  };
}
${
  nodeSessions.length > 0
    ? `
# The leaf connects to every node of the topology, so a speaker whose gobgpd listens on port 179
# is up in about a second (gobgpd 3.x waits 5-9 s before its own first connect).
${nodeSessions.join('\n\n')}
`
    : ''
}
# Any address of ${f.subnet}: sessions the speakers open (dynamic BGP, spawned as ${f.dynamicName}1, ...).
protocol bgp speakers${f.suffix} from ${template} {
  description "speakers of rack ${rack.name}${v6}";
  neighbor range ${f.subnet} external;
  dynamic name "${f.dynamicName}";
}

protocol bgp to_spine${f.suffix} from racklb_bgp {
  description "uplink to ${t.spine.name}${v6}";
  local ${f.uplink.leaf} as ${rack.asn};
  neighbor ${f.uplink.spine} as ${t.spine.asn};
  ${f.family} {
    import all;
    export where source = RTS_BGP && proto != "to_spine${f.suffix}";   # the rack's routes only
    next hop self;
  };
}
`;
}

export function spineBirdConfig(t: Topology, opts: BirdOptions = {}): string {
  const limit = opts.ecmpLimit ?? 64;
  const routerId = t.racks.map((r) => r.uplink.spine).sort(compareAddresses)[0];
  if (routerId === undefined) throw new RacklbError('RACKLB_LAB', 'spineBirdConfig: the topology has no racks');
  const sessions = t.racks.flatMap((rack, i) =>
    rackFamilies(rack).map((f) => {
      const v6 = f.family === 'ipv6';
      return `protocol bgp ${spineProtocolName(rack.name, i, v6 ? '_v6' : '')} from racklb_bgp {
  description "leaf ${rack.name}${v6 ? ' (IPv6)' : ''}";
  local ${f.uplink.spine} as ${t.spine.asn};
  neighbor ${f.uplink.leaf} as ${rack.asn};
  ${f.family} {
    import all;
    export none;${v6 ? '\n    next hop prefer global;   # the uplink address, not the link-local one also sent' : ''}
  };
}`;
    }),
  );
  return `${header('spine router', t.spine.name, routerId)}

${kernel(limit, t.racks.some((r) => r.ipv6 !== undefined))}

${TIMERS}

${sessions.join('\n\n')}
`;
}

/** `to_<rack>` with "-" as "_" (BIRD symbols cannot hold "-"); an index-based name if that is too long. */
export function spineProtocolName(rack: string, index: number, suffix = ''): string {
  const name = `to_${rack.replace(/-/g, '_')}${suffix}`;
  // BIRD symbols are at most 64 characters. A DNS label never ends in "-", so "..._" cannot clash.
  return name.length <= 64 ? name : `to_rack${index}_${suffix}`;
}

/** `node_<name>` (`node6_<name>` for IPv6) with "-" as "_"; an index-based name if that is too long for a BIRD symbol. */
export function nodeProtocolName(node: string, index: number, family: '' | '6' = ''): string {
  const name = `node${family}_${node.replace(/-/g, '_')}`;
  return name.length <= 64 ? name : `node${family}${index}_`;
}

/**
 * Writes the router's config to /run/racklb-lab/<name>/bird.conf, checks it with `bird -p -c`
 * (BIRD's error is reported verbatim), and starts BIRD in namespace rl-<name> in the foreground of a
 * detached process (log: bird.log, socket: bird.ctl, pid file: bird.pid). A BIRD already running
 * for this router is stopped first. Resolves once BIRD answers on its control socket.
 */
export async function startRouter(name: string, config: string): Promise<void> {
  const f = birdFiles(name);
  await writeFileMkdir(f.config, config);
  await checkBirdConfig(f.config, name);
  await stopRouter(name);
  await rm(f.socket, { force: true });
  await writeFileMkdir(f.log, ''); // fresh log per start
  const child = spawnInNetns(netnsName(name), 'bird', ['-f', '-c', f.config, '-s', f.socket, '-P', f.pidFile], { logFile: f.log, pidFile: f.pidFile });
  const pid = child.pid!;
  let died = false;
  try {
    await waitFor(
      `BIRD of ${name} to answer on ${f.socket}`,
      async () => {
        if (!isAlive(pid)) {
          died = true;
          return true;
        }
        if (!existsSync(f.socket)) return false;
        await runCommand('birdc', ['-s', f.socket, 'show', 'status'], { timeoutMs: 2_000 });
        return true;
      },
      10_000,
      50,
    );
  } catch (err) {
    await stopRouter(name).catch(() => undefined);
    throw new RacklbError('RACKLB_LAB', `${(err as Error).message}\n${await logTail(f.log)}`, { cause: err });
  }
  if (died) {
    throw new RacklbError('RACKLB_LAB', `BIRD of ${name} exited right after starting (log ${f.log}):\n${await logTail(f.log)}`);
  }
}

/** `bird -p -c FILE`: parse only. Rejects with BIRD's own message. Needs no root. */
export async function checkBirdConfig(configFile: string, name = configFile): Promise<void> {
  try {
    await runCommand('bird', ['-p', '-c', configFile], { timeoutMs: 10_000 });
  } catch (err) {
    const stderr = String((err as Error).message).split('\n').slice(1).join('\n');
    throw new RacklbError('RACKLB_LAB', `BIRD rejects the configuration of ${name} (${configFile}):\n${stderr}`, { cause: err });
  }
}

/** Stops the router's BIRD (SIGTERM, SIGKILL after 5 s). Resolves true when one was running. */
export async function stopRouter(name: string): Promise<boolean> {
  const f = birdFiles(name);
  const pid = await readPidFile(f.pidFile);
  const stopped = pid === undefined ? false : await killPidFile(f.pidFile, 'SIGTERM');
  await rm(f.socket, { force: true });
  return stopped;
}

/** Runs `birdc -s <socket> <args...>` for router `name` and returns its answer (without the banner). */
export async function birdShow(name: string, args: string[]): Promise<string> {
  const { stdout } = await runCommand('birdc', ['-s', birdFiles(name).socket, ...args], { timeoutMs: 10_000 });
  return stdout.replace(/^BIRD [^\n]* ready\.\n/, '');
}

async function logTail(path: string, lines = 20): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
