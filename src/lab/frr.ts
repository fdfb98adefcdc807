/**
 * FRR (Debian's `frr`: zebra + bgpd) as the lab's router daemon, chosen per router with
 * `daemon: frr` in the topology. The configurations do what bird.ts does for BIRD 2:
 *
 * Leaf: a peer group `speakers` for the rack, any ASN but the leaf's own (`remote-as external`),
 * reached both ways: `bgp listen range <rack subnet> peer-group speakers` accepts sessions from any
 * address of the rack subnet, and one configured neighbor per node of the topology lets the leaf
 * connect first (gobgpd 3.x waits 5-9 s before its own first connect). It imports everything the
 * speakers send (FRR negotiates ADD-PATH receive by default, so one path per next hop arrives),
 * exports nothing to them, and exports the rack's routes to the spine with next-hop-self. An
 * optional TCP-MD5 password applies to the peer group. Spine: one eBGP neighbor per leaf, imports
 * everything, exports nothing.
 *
 * Both: `maximum-paths 64` so equal routes become one ECMP route, `bgp bestpath as-path
 * multipath-relax` so routes via leaves of different ASes (or speakers of different ASes) are
 * equal (BIRD merges those by default), timers 3/9 s and connect retry 1 s as in BIRD's
 * TIMERS, graceful restart as on BIRD's leaves. zebra installs the routes into the namespace's
 * kernel table as plain multipath routes (no kernel nexthop objects), as BIRD's kernel protocol
 * does, so `ip route` and `ip monitor route` read the same way for both daemons.
 *
 * Several FRR instances run side by side: each router's zebra and bgpd run in the router's
 * network namespace with every path (config, pid files, the zebra API socket, vty sockets) under
 * the router's own run directory, /run/racklb-lab/<router>/.
 */
import { existsSync } from 'node:fs';
import { chmod, chown, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { RacklbError } from '../errors.js';
import { labDir, netnsName } from './paths.js';
import { isAlive, killPidFile, runCommand, spawnInNetns, waitFor, writeFileMkdir } from './process.js';
import { compareAddresses } from './routes.js';
import { rackFamilies, type RackFamily, type RackTopology, type Topology } from './topology.js';

export const FRR_DIR = '/usr/lib/frr';

export interface FrrOptions {
  /** `maximum-paths`: most next hops in one ECMP route. Default 64. */
  ecmpLimit?: number;
  /** Leaf only: graceful restart time announced to speakers. Default 120 s. */
  gracefulRestartTime?: number;
  /** Leaf only: a configured neighbor per node, so the leaf connects first. Default true. */
  connectToNodes?: boolean;
}

/** Files of a router's FRR under the lab's run directory. */
export function frrFiles(name: string): { dir: string; zebraConfig: string; bgpdConfig: string; zserv: string; zebraPid: string; bgpdPid: string; zebraLog: string; bgpdLog: string } {
  const dir = labDir(name);
  return {
    dir,
    zebraConfig: join(dir, 'zebra.conf'),
    bgpdConfig: join(dir, 'bgpd.conf'),
    zserv: join(dir, 'zserv.api'),
    zebraPid: join(dir, 'zebra.pid'),
    bgpdPid: join(dir, 'bgpd.pid'),
    zebraLog: join(dir, 'zebra.log'),
    bgpdLog: join(dir, 'bgpd.log'),
  };
}

/** What zebra needs: kernel routes as plain multipath routes, like BIRD's. */
export function zebraConfig(name: string): string {
  return `! racklb lab: zebra of ${name}. Generated; edits are overwritten by the next \`racklb lab up\`.
hostname ${name}
! Plain multipath routes, not kernel nexthop objects: the lab reads tables with ip route.
no zebra nexthop kernel enable
!
`;
}

function header(kind: string, name: string): string {
  return `! racklb lab: ${kind} ${name} (FRR bgpd). Generated; edits are overwritten by the next \`racklb lab up\`.
frr defaults datacenter
hostname ${name}
!
route-map RACKLB_NONE deny 10
!`;
}

function common(asn: number, routerId: string): string {
  return `router bgp ${asn}
 bgp router-id ${routerId}
 no bgp ebgp-requires-policy
 no bgp default ipv4-unicast
 bgp bestpath as-path multipath-relax
 timers bgp 3 9`;
}

export function leafFrrConfig(t: Topology, rack: RackTopology, opts: FrrOptions = {}): string {
  const limit = opts.ecmpLimit ?? 64;
  const grTime = opts.gracefulRestartTime ?? 120;
  const connect = opts.connectToNodes ?? true;
  const families = rackFamilies(rack);
  return `${header('leaf router of rack', rack.name)}
${common(rack.asn, rack.router)}
 bgp graceful-restart
 bgp graceful-restart restart-time ${grTime}${families.map((f) => leafNeighbors(t, rack, f, connect)).join('')}
 !${families.map((f) => leafAddressFamily(f, limit)).join('')}
exit
!
`;
}

/** The leaf's neighbors of one family: the rack's speakers (peer group `speakers`, `speakers6`) and the spine. */
function leafNeighbors(t: Topology, rack: RackTopology, f: RackFamily, connect: boolean): string {
  const group = `speakers${f.suffix}`;
  const v6 = f.family === 'ipv6' ? ' (IPv6)' : '';
  const nodes = connect ? f.nodes.map((n) => ` neighbor ${n.ip} peer-group ${group}\n neighbor ${n.ip} description node ${n.name}${v6}`) : [];
  return `
 ! Sessions over ${f.family === 'ipv4' ? 'IPv4' : 'IPv6'} with the speakers of rack ${rack.name}: any ASN but ${rack.asn}.
 neighbor ${group} peer-group
 neighbor ${group} remote-as external
 neighbor ${group} timers connect 1${rack.password === undefined ? '' : `
 neighbor ${group} password ${rack.password}`}
 bgp listen range ${f.subnet} peer-group ${group}
${nodes.length ? `${nodes.join('\n')}\n` : ''} neighbor ${f.uplink.spine} remote-as ${t.spine.asn}
 neighbor ${f.uplink.spine} description uplink to ${t.spine.name}${v6}
 neighbor ${f.uplink.spine} timers connect 1`;
}

function leafAddressFamily(f: RackFamily, limit: number): string {
  const group = `speakers${f.suffix}`;
  return `
 address-family ${f.family} unicast
  neighbor ${group} activate
  neighbor ${group} route-map RACKLB_NONE out
  neighbor ${f.uplink.spine} activate
  neighbor ${f.uplink.spine} next-hop-self
  maximum-paths ${limit}
 exit-address-family`;
}

export function spineFrrConfig(t: Topology, opts: FrrOptions = {}): string {
  const limit = opts.ecmpLimit ?? 64;
  const routerId = t.racks.map((r) => r.uplink.spine).sort(compareAddresses)[0];
  if (routerId === undefined) throw new RacklbError('RACKLB_LAB', 'spineFrrConfig: the topology has no racks');
  const leaves = t.racks.flatMap((rack) => rackFamilies(rack).map((f) => ({ rack, f })));
  const neighbors = leaves.map(({ rack, f }) => ` neighbor ${f.uplink.leaf} remote-as ${rack.asn}\n neighbor ${f.uplink.leaf} description leaf ${rack.name}${f.family === 'ipv6' ? ' (IPv6)' : ''}\n neighbor ${f.uplink.leaf} timers connect 1`);
  const ipv6 = leaves.some(({ f }) => f.family === 'ipv6');
  const addressFamily = (family: 'ipv4' | 'ipv6'): string => {
    // The leaf also sends its link-local address as an IPv6 next hop; the spine installs the global
    // one, so tables name the uplink addresses of the topology (as BIRD's `next hop prefer global`).
    const activate = leaves
      .filter(({ f }) => f.family === family)
      .map(({ f }) => `  neighbor ${f.uplink.leaf} activate\n  neighbor ${f.uplink.leaf} route-map RACKLB_NONE out${family === 'ipv6' ? `\n  neighbor ${f.uplink.leaf} route-map RACKLB_PREFER_GLOBAL in` : ''}`);
    return `
 address-family ${family} unicast
${activate.join('\n')}
  maximum-paths ${limit}
 exit-address-family`;
  };
  return `${header('spine router', t.spine.name)}${
    ipv6
      ? `
route-map RACKLB_PREFER_GLOBAL permit 10
 set ipv6 next-hop prefer-global
!`
      : ''
  }
${common(t.spine.asn, routerId)}
${neighbors.join('\n')}
 !${addressFamily('ipv4')}${ipv6 ? addressFamily('ipv6') : ''}
exit
!
`;
}

function daemonArgs(name: string, which: 'zebra' | 'bgpd'): string[] {
  const f = frrFiles(name);
  const args = [
    '-f', which === 'zebra' ? f.zebraConfig : f.bgpdConfig,
    // FRR's own pid lock, apart from the lab's pid file (written as root before FRR drops privileges).
    '-i', join(f.dir, `${which}.frr.pid`),
    '-z', f.zserv,
    '--vty_socket', f.dir,
    // No vty on TCP: vtysh reaches the daemons through their sockets in the run directory. The
    // daemons drop to the frr user, which owns that directory (startFrrRouter).
    '-P', '0',
    '--log', 'stdout',
  ];
  return which === 'bgpd' ? [...args, '-p', '179'] : args;
}

/** Checks a config with the daemon's own dry run (`-C`); FRR's message is reported verbatim. */
export async function checkFrrConfig(which: 'zebra' | 'bgpd', configFile: string, name = configFile): Promise<void> {
  let output: string;
  try {
    const r = await runCommand(join(FRR_DIR, which), ['-C', '-f', configFile, '--log', 'stdout', '-P', '0', '-z', '/nonexistent', '-i', '/dev/null', ...(which === 'bgpd' ? ['-p', '0', '-Z'] : [])], { timeoutMs: 15_000 });
    output = `${r.stdout}\n${r.stderr}`;
  } catch (err) {
    throw new RacklbError('RACKLB_LAB', `FRR ${which} rejects the configuration of ${name} (${configFile}):\n${(err as Error).message}`, { cause: err });
  }
  // A dry run exits 0 even when a line is refused; the refusal is only in its output.
  // It also exits 0 when it cannot read the file at all (the daemon reads it as the frr user).
  const refused = output.split('\n').filter((l) => /No such command|Unknown command|Command incomplete|Ambiguous command|Configuration file\[.*\] processing failure|can't open configuration file/.test(l));
  if (refused.length > 0) throw new RacklbError('RACKLB_LAB', `FRR ${which} rejects the configuration of ${name} (${configFile}):\n${refused.join('\n')}`);
}

/**
 * Writes zebra.conf and bgpd.conf for router `name`, checks them, and starts zebra, then bgpd, in
 * namespace rl-<name> (foreground processes, detached; logs zebra.log and bgpd.log). Any FRR
 * already running for this router is stopped first. Resolves once bgpd answers through vtysh.
 */
export async function startFrrRouter(name: string, bgpdConfig: string): Promise<void> {
  const f = frrFiles(name);
  await writeFileMkdir(f.zebraConfig, zebraConfig(name));
  await writeFileMkdir(f.bgpdConfig, bgpdConfig);
  // The daemons run as the frr user: it owns the directory (pid locks, sockets) and the configs,
  // which only it may read (bgpd.conf may hold a TCP-MD5 password).
  const [uid, gid] = await Promise.all([runCommand('id', ['-u', 'frr']), runCommand('id', ['-g', 'frr'])]);
  for (const path of [f.dir, f.zebraConfig, f.bgpdConfig]) await chown(path, Number(uid.stdout.trim()), Number(gid.stdout.trim()));
  for (const path of [f.zebraConfig, f.bgpdConfig]) await chmod(path, 0o600);
  await checkFrrConfig('zebra', f.zebraConfig, name);
  await checkFrrConfig('bgpd', f.bgpdConfig, name);
  await stopFrrRouter(name);
  for (const file of [f.zebraLog, f.bgpdLog]) await writeFileMkdir(file, '');
  const zebra = spawnInNetns(netnsName(name), join(FRR_DIR, 'zebra'), daemonArgs(name, 'zebra'), { logFile: f.zebraLog, pidFile: f.zebraPid });
  try {
    await waitFor(`zebra of ${name} to open ${f.zserv}`, async () => {
      if (!isAlive(zebra.pid!)) throw new Error('zebra exited');
      return existsSync(f.zserv);
    }, 10_000, 50);
    const bgpd = spawnInNetns(netnsName(name), join(FRR_DIR, 'bgpd'), daemonArgs(name, 'bgpd'), { logFile: f.bgpdLog, pidFile: f.bgpdPid });
    await waitFor(`bgpd of ${name} to answer through vtysh`, async () => {
      if (!isAlive(bgpd.pid!)) throw new Error('bgpd exited');
      await frrShow(name, 'show bgp summary');
      return true;
    }, 15_000, 100);
  } catch (err) {
    await stopFrrRouter(name).catch(() => undefined);
    throw new RacklbError('RACKLB_LAB', `FRR of ${name} did not start: ${(err as Error).message}\n${await logTail(f.zebraLog)}\n${await logTail(f.bgpdLog)}`, { cause: err });
  }
}

/** Stops the router's bgpd and zebra (SIGTERM, SIGKILL after 5 s). Resolves true when one ran. */
export async function stopFrrRouter(name: string): Promise<boolean> {
  const f = frrFiles(name);
  const bgpd = await killPidFile(f.bgpdPid, 'SIGTERM');
  const zebra = await killPidFile(f.zebraPid, 'SIGTERM');
  await rm(f.zserv, { force: true });
  return bgpd || zebra;
}

/** `vtysh -c <command>` against router `name`'s daemons. */
export async function frrShow(name: string, command: string): Promise<string> {
  const { stdout } = await runCommand('vtysh', ['--vty_socket', frrFiles(name).dir, '-c', command], { timeoutMs: 10_000 });
  return stdout;
}

async function logTail(path: string, lines = 15): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
