/**
 * The project's only client of gobgpd's gRPC API (gobgpd 3.10, schema from Debian's .proto files).
 *
 * Shapes on this side are plain racklb records; every gobgpd quirk that shapes them is written down
 * next to the code that copes with it. Every failure leaves as RacklbError('RACKLB_GOBGP') naming
 * the call and gobgpd's own message.
 */
import { isIP } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { Family, GracefulRestart } from '../core/types.js';
import { invalidField, RacklbError } from '../errors.js';
import { loadGobgpProto, type AnyValue, type GobgpProto } from './proto.js';

export interface GobgpPath {
  /**
   * '192.0.2.10/32' or '2001:db8::a/128'. gobgpd lists prefixes in canonical form (IPv6 lowercase and
   * compressed): pass them that way, or a comparison with `listPaths` will see a difference.
   */
  prefix: string;
  family: Family;
  nextHop: string;
  /** ADD-PATH path id, > 0. gobgpd keys local paths by prefix + identifier. */
  identifier: number;
}

/** A path of the global RIB, local or learnt; see `GobgpClient.listRib`. */
export interface GobgpRibPath extends GobgpPath {
  /** Address of the peer the path was learnt from; undefined for a locally originated path. */
  neighborAddress: string | undefined;
  best: boolean;
}

export interface GobgpGlobalConfig {
  asn: number;
  routerId: string;
  /** -1: do not listen. 0 makes gobgpd listen on 179. */
  listenPort: number;
  /** Empty: gobgpd listens on 0.0.0.0 and ::, and reports those back. */
  listenAddresses: string[];
  gracefulRestart?: GracefulRestart;
}

export interface GobgpPeerConfig {
  neighborAddress: string;
  peerAs: number;
  localAs?: number;
  authPassword?: string;
  description?: string;
  ebgpMultihop: { enabled: boolean; multihopTtl: number };
  timers: { connectRetry?: number; holdTime?: number; keepaliveInterval?: number };
  transport: { passiveMode: boolean; remotePort?: number; localAddress?: string };
  gracefulRestart?: GracefulRestart;
  families: Family[];
  /** ADD-PATH send-max for every family; 0 disables ADD-PATH send. */
  addPathsSendMax: number;
  /**
   * ADD-PATH receive for every family. The speaker only sends, so it leaves this unset (false);
   * tests and the lab set it on a gobgpd that plays the router.
   */
  addPathsReceive?: boolean;
}

export type SessionState = 'unknown' | 'idle' | 'connect' | 'active' | 'opensent' | 'openconfirm' | 'established';

export interface GobgpPeerStatus {
  neighborAddress: string;
  sessionState: SessionState;
  /** 'up', 'down' or 'pfx_ct' (prefix limit hit). */
  adminState: string;
  /** 0 when not established. */
  uptimeSeconds: number;
  prefixesSent: number;
  prefixesReceived: number;
  prefixesAccepted: number;
  /** The session's local address while established, else undefined. */
  localAddress: string | undefined;
  /** gobgpd 3.10 reports no reason for a session going down, so this is always undefined. */
  lastError: string | undefined;
  /** BGP messages received and sent on this session, by type (GoBGP's counters; BgpPeer status). */
  messages?: { received: GobgpMessageCounters; sent: GobgpMessageCounters };
  /** As read back from gobgpd, best effort; see `peerConfigFromApi`. */
  config: GobgpPeerConfig;
}

export interface GobgpMessageCounters {
  notification: number;
  update: number;
  open: number;
  keepalive: number;
  refresh: number;
  discarded: number;
  total: number;
  withdrawUpdate: number;
  withdrawPrefix: number;
}

export interface GobgpPeerEvent {
  neighborAddress: string;
  sessionState: SessionState;
  adminState: string;
}

const DEFAULT_CALL_TIMEOUT_MS = 5000;
/** gobgpd accepts many paths per AddPathStream message; 100 measured as a good size. */
const PATHS_PER_MESSAGE = 100;
/** Extra deadline for ListPath, whose answer grows with the RIB. */
const LIST_EXTRA_MS = 30_000;
/** Bounds the next-hop Any cache; a rack has a few dozen next hops, so this is never reached in practice. */
const NEXT_HOP_CACHE_MAX = 4096;

const API_FAMILY: Record<Family, { afi: string; safi: string }> = {
  ipv4: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' },
  ipv6: { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' },
};

// ---- shapes of gobgpd's messages as proto-loader hands them over (keepCase, enums as strings, defaults on) ----

interface ApiFamily {
  afi: string;
  safi: string;
}
interface ApiPath {
  nlri: AnyValue | null;
  pattrs: AnyValue[];
  family: ApiFamily | null;
  best: boolean;
  is_withdraw: boolean;
  neighbor_ip: string;
  identifier: number;
}
interface ApiDestination {
  prefix: string;
  paths: ApiPath[];
}
interface ApiGracefulRestart {
  enabled: boolean;
  restart_time: number;
  helper_only: boolean;
  deferral_time: number;
  notification_enabled: boolean;
  longlived_enabled: boolean;
  stale_routes_time: number;
}
interface ApiAfiSafi {
  config: { family: ApiFamily | null; enabled: boolean } | null;
  state: { received: number; accepted: number; advertised: number } | null;
  add_paths: { config: { receive: boolean; send_max: number } | null } | null;
  mp_graceful_restart: { config: { enabled: boolean } | null } | null;
  long_lived_graceful_restart: { config: { enabled: boolean; restart_time: number } | null } | null;
}
interface ApiMessage {
  notification: number;
  update: number;
  open: number;
  keepalive: number;
  refresh: number;
  discarded: number;
  total: number;
  withdraw_update: number;
  withdraw_prefix: number;
}
interface ApiPeer {
  conf: { neighbor_address: string; peer_asn: number; local_asn: number; auth_password: string; description: string } | null;
  state: { neighbor_address: string; session_state: string; admin_state: string; messages?: { received: ApiMessage | null; sent: ApiMessage | null } | null } | null;
  ebgp_multihop: { enabled: boolean; multihop_ttl: number } | null;
  timers: {
    config: { connect_retry: number; hold_time: number; keepalive_interval: number } | null;
    state: { uptime: { seconds: number } | null } | null;
  } | null;
  transport: { local_address: string; passive_mode: boolean; remote_port: number } | null;
  graceful_restart: ApiGracefulRestart | null;
  afi_safis: ApiAfiSafi[];
}
interface ApiGlobal {
  asn: number;
  router_id: string;
  listen_port: number;
  listen_addresses: string[];
}
interface ApiWatchEvent {
  peer?: { type: string; peer: ApiPeer | null } | null;
}

type UnaryCall = (request: unknown, options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, response: unknown) => void) => grpc.ClientUnaryCall;
type ServerStreamCall = (request: unknown, options?: grpc.CallOptions) => grpc.ClientReadableStream<unknown>;
type ClientStreamCall = (options: grpc.CallOptions, callback: (err: grpc.ServiceError | null, response: unknown) => void) => grpc.ClientWritableStream<unknown>;

/** Raw stub; methods are looked up by their proto names. */
type Stub = grpc.Client & Record<string, unknown>;

export function gobgpError(call: string, err: unknown): RacklbError {
  if (err instanceof RacklbError) return err;
  const e = err as Partial<grpc.ServiceError> | undefined;
  const detail = e?.details || e?.message || String(err);
  const status = typeof e?.code === 'number' ? grpc.status[e.code] : undefined;
  return new RacklbError('RACKLB_GOBGP', `gobgpd ${call} failed: ${detail}${status === undefined ? '' : ` (${status})`}`, { cause: err });
}

function familyOf(api: ApiFamily | null | undefined): Family | undefined {
  if (api?.safi !== 'SAFI_UNICAST') return undefined;
  return api.afi === 'AFI_IP' ? 'ipv4' : api.afi === 'AFI_IP6' ? 'ipv6' : undefined;
}

function lower(value: string | undefined, fallback: string): string {
  return value === undefined || value === '' ? fallback : value.toLowerCase();
}

const SESSION_STATES: ReadonlySet<string> = new Set(['unknown', 'idle', 'connect', 'active', 'opensent', 'openconfirm', 'established']);
function sessionStateOf(value: string | undefined): SessionState {
  const s = lower(value, 'unknown');
  return SESSION_STATES.has(s) ? (s as SessionState) : 'unknown';
}

/** gobgpd fills an unset local address with the wildcard of the neighbor's family. */
function unsetIfWildcard(address: string | undefined): string | undefined {
  return address === undefined || address === '' || address === '0.0.0.0' || address === '::' ? undefined : address;
}

function checkUint32(field: string, value: number, min = 0): void {
  if (!Number.isInteger(value) || value < min || value > 0xffffffff) {
    throw invalidField(field, `must be an integer between ${min} and 4294967295`, value);
  }
}

function grToApi(gr: GracefulRestart, forPeer = false): Record<string, unknown> {
  return {
    enabled: gr.enabled,
    // A peer configured over the API is, from the leaf's view, always one that (re)starts: with
    // this flag gobgpd sets the Restart and Forwarding-state bits, so the leaf keeps the stale
    // routes until our End-of-RIB instead of dropping them when gobgpd restarts. Without it, GR
    // is negotiated but a gobgpd restart still flaps every route (seen in the lab).
    local_restarting: forPeer && gr.enabled && !gr.helperOnly,
    restart_time: gr.restartTime,
    helper_only: gr.helperOnly,
    deferral_time: gr.deferralTime,
    notification_enabled: gr.notificationEnabled,
    longlived_enabled: gr.longlivedEnabled,
    // gobgpd 3.10 drops this field for peers; the per-family long-lived restart time below carries it.
    stale_routes_time: gr.staleRoutesTime,
  };
}

export function peerToApi(peer: GobgpPeerConfig): Record<string, unknown> {
  checkUint32('peer.peerAs', peer.peerAs, 1);
  if (isIP(peer.neighborAddress) === 0) throw invalidField('peer.neighborAddress', 'must be an IP address', peer.neighborAddress);
  checkUint32('peer.addPathsSendMax', peer.addPathsSendMax);
  if (peer.ebgpMultihop.multihopTtl > 255 || peer.ebgpMultihop.multihopTtl < 0) {
    throw invalidField('peer.ebgpMultihop.multihopTtl', 'must be between 0 and 255', peer.ebgpMultihop.multihopTtl);
  }
  if (peer.addPathsSendMax > 255) throw invalidField('peer.addPathsSendMax', 'must be at most 255 (gobgpd keeps it in a byte)', peer.addPathsSendMax);
  const gr = peer.gracefulRestart;
  const longLived = gr !== undefined && gr.enabled && gr.longlivedEnabled;
  return {
    conf: {
      neighbor_address: peer.neighborAddress,
      peer_asn: peer.peerAs,
      local_asn: peer.localAs ?? 0,
      auth_password: peer.authPassword ?? '',
      description: peer.description ?? '',
    },
    ebgp_multihop: { enabled: peer.ebgpMultihop.enabled, multihop_ttl: peer.ebgpMultihop.multihopTtl },
    timers: {
      config: {
        connect_retry: peer.timers.connectRetry ?? 0,
        hold_time: peer.timers.holdTime ?? 0,
        keepalive_interval: peer.timers.keepaliveInterval ?? 0,
      },
    },
    transport: {
      passive_mode: peer.transport.passiveMode,
      remote_port: peer.transport.remotePort ?? 0,
      local_address: peer.transport.localAddress ?? '',
    },
    graceful_restart: gr === undefined ? null : grToApi(gr, true),
    afi_safis: peer.families.map((family) => ({
      config: { family: API_FAMILY[family], enabled: true },
      mp_graceful_restart: { config: { enabled: gr?.enabled ?? false } },
      long_lived_graceful_restart: longLived ? { config: { enabled: true, restart_time: gr.staleRoutesTime } } : null,
      add_paths: { config: { receive: peer.addPathsReceive ?? false, send_max: peer.addPathsSendMax } },
    })),
  };
}

/**
 * Reads a peer's configuration back from ListPeer, best effort. What gobgpd 3.10 does to it:
 * - authPassword is never returned here, whatever gobgpd says, so the secret stays in one place;
 * - unset timers come back as gobgpd's defaults (connect-retry 120, hold 90, keepalive hold/3);
 * - localAs comes back as the global ASN when unset;
 * - transport.localAddress is the session's actual local address while established;
 * - gracefulRestart.staleRoutesTime is only kept when long-lived GR is on (per-family LLGR time).
 */
export function peerConfigFromApi(p: ApiPeer): GobgpPeerConfig {
  const families: Family[] = [];
  let sendMax = 0;
  let receive = false;
  let llgrTime: number | undefined;
  for (const afiSafi of p.afi_safis) {
    const family = familyOf(afiSafi.config?.family);
    if (family === undefined || afiSafi.config?.enabled !== true) continue;
    families.push(family);
    sendMax = Math.max(sendMax, afiSafi.add_paths?.config?.send_max ?? 0);
    receive ||= afiSafi.add_paths?.config?.receive ?? false;
    const llgr = afiSafi.long_lived_graceful_restart?.config;
    if (llgr?.enabled === true) llgrTime = llgr.restart_time;
  }
  const gr = p.graceful_restart;
  const config: GobgpPeerConfig = {
    neighborAddress: p.conf?.neighbor_address || p.state?.neighbor_address || '',
    peerAs: p.conf?.peer_asn ?? 0,
    localAs: p.conf?.local_asn || undefined,
    authPassword: undefined,
    description: p.conf?.description || undefined,
    ebgpMultihop: { enabled: p.ebgp_multihop?.enabled ?? false, multihopTtl: p.ebgp_multihop?.multihop_ttl ?? 0 },
    timers: {
      connectRetry: p.timers?.config?.connect_retry || undefined,
      holdTime: p.timers?.config?.hold_time || undefined,
      keepaliveInterval: p.timers?.config?.keepalive_interval || undefined,
    },
    transport: {
      passiveMode: p.transport?.passive_mode ?? false,
      remotePort: p.transport?.remote_port || undefined,
      localAddress: unsetIfWildcard(p.transport?.local_address),
    },
    gracefulRestart:
      gr?.enabled === true
        ? {
            enabled: true,
            restartTime: gr.restart_time,
            helperOnly: gr.helper_only,
            deferralTime: gr.deferral_time,
            notificationEnabled: gr.notification_enabled,
            longlivedEnabled: gr.longlived_enabled,
            staleRoutesTime: llgrTime ?? gr.stale_routes_time,
          }
        : undefined,
    families,
    addPathsSendMax: sendMax,
  };
  if (receive) config.addPathsReceive = true;
  return config;
}

function peerStatusFromApi(p: ApiPeer): GobgpPeerStatus {
  const config = peerConfigFromApi(p);
  const sessionState = sessionStateOf(p.state?.session_state);
  const established = sessionState === 'established';
  let sent = 0;
  let received = 0;
  let accepted = 0;
  for (const afiSafi of p.afi_safis) {
    sent += afiSafi.state?.advertised ?? 0;
    received += afiSafi.state?.received ?? 0;
    accepted += afiSafi.state?.accepted ?? 0;
  }
  const uptime = p.timers?.state?.uptime?.seconds ?? 0;
  return {
    neighborAddress: config.neighborAddress,
    sessionState,
    adminState: lower(p.state?.admin_state, 'up'),
    uptimeSeconds: established && uptime > 0 ? Math.max(0, Math.floor(Date.now() / 1000) - uptime) : 0,
    prefixesSent: sent,
    prefixesReceived: received,
    prefixesAccepted: accepted,
    localAddress: established ? unsetIfWildcard(p.transport?.local_address) : undefined,
    lastError: undefined,
    messages: { received: countersOf(p.state?.messages?.received), sent: countersOf(p.state?.messages?.sent) },
    config,
  };
}

function countersOf(m: ApiMessage | null | undefined): GobgpMessageCounters {
  return {
    notification: m?.notification ?? 0,
    update: m?.update ?? 0,
    open: m?.open ?? 0,
    keepalive: m?.keepalive ?? 0,
    refresh: m?.refresh ?? 0,
    discarded: m?.discarded ?? 0,
    total: m?.total ?? 0,
    withdrawUpdate: m?.withdraw_update ?? 0,
    withdrawPrefix: m?.withdraw_prefix ?? 0,
  };
}

interface ParsedPrefix {
  address: string;
  length: number;
}

function parsePrefix(path: GobgpPath, field: string): ParsedPrefix {
  const slash = path.prefix.indexOf('/');
  const address = slash < 0 ? '' : path.prefix.slice(0, slash);
  const lengthText = slash < 0 ? '' : path.prefix.slice(slash + 1);
  const length = /^\d{1,3}$/.test(lengthText) ? Number(lengthText) : NaN;
  const version = isIP(address);
  const want = path.family === 'ipv4' ? 4 : 6;
  if (version !== want || !(length <= (want === 4 ? 32 : 128))) {
    throw invalidField(`${field}.prefix`, `must be an ${path.family} prefix address/length`, path.prefix);
  }
  return { address, length };
}

export interface GobgpClientOptions {
  logger?: Logger;
  /** Deadline of every call; default 5000. AddPathStream gets 1 ms more per path. */
  callTimeoutMs?: number;
}

export class GobgpClient {
  private readonly proto: GobgpProto;
  private readonly stub: Stub;
  private readonly logger: Logger | undefined;
  private readonly callTimeoutMs: number;
  private readonly originIgp: AnyValue;
  private readonly nextHopAnys = new Map<string, AnyValue>();
  /**
   * The NLRI packed last, by prefix: a Service IP's paths (one per next hop) come one after the
   * other, so each prefix is packed once, not once per next hop.
   */
  private lastNlri: { prefix: string; any: AnyValue } | undefined;
  private readonly watches = new Set<grpc.ClientReadableStream<unknown>>();
  private closed = false;

  constructor(
    readonly address: string,
    opts: GobgpClientOptions = {},
  ) {
    this.proto = loadGobgpProto();
    this.logger = opts.logger;
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
    this.stub = new this.proto.GobgpApi(address, grpc.credentials.createInsecure(), {
      // gobgpd runs next to us: a lost connection should be noticed and retried quickly.
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 2000,
      // ListPath of a large RIB arrives as one message per destination, but be generous anyway.
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    }) as Stub;
    this.originIgp = this.proto.pack(this.proto.types.OriginAttribute, { origin: 0 });
  }

  async waitReady(timeoutMs: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.stub.waitForReady(Date.now() + timeoutMs, (err) => {
        if (err) reject(new RacklbError('RACKLB_GOBGP', `gobgpd at ${this.address} not reachable within ${timeoutMs} ms: ${err.message}`, { cause: err }));
        else resolve();
      });
    });
  }

  async getGlobal(): Promise<GobgpGlobalConfig | undefined> {
    const rsp = (await this.unary('GetBgp', {})) as { global: ApiGlobal | null };
    const g = rsp.global;
    // gobgpd answers GetBgp before StartBgp too, with AS 0; it does not report graceful restart back.
    if (g === null || g.asn === 0) return undefined;
    return { asn: g.asn, routerId: g.router_id, listenPort: g.listen_port, listenAddresses: [...g.listen_addresses] };
  }

  /**
   * gobgpd 3.10 accepts StartBgp on a running server too, and then silently replaces its RIB with an
   * empty one (peers stay): check `getGlobal()` first and call this only when it is undefined.
   */
  async startBgp(global: GobgpGlobalConfig): Promise<void> {
    checkUint32('global.asn', global.asn, 1);
    if (isIP(global.routerId) !== 4) throw invalidField('global.routerId', 'must be an IPv4 address', global.routerId);
    await this.unary('StartBgp', {
      global: {
        asn: global.asn,
        router_id: global.routerId,
        listen_port: global.listenPort,
        listen_addresses: global.listenAddresses,
        graceful_restart: global.gracefulRestart === undefined ? null : grToApi(global.gracefulRestart),
      },
    });
  }

  async stopBgp(): Promise<void> {
    await this.unary('StopBgp', {});
  }

  async listPeers(): Promise<GobgpPeerStatus[]> {
    // enableAdvertised makes gobgpd count what it sends each peer (prefixesSent); without it that is 0.
    const rsps = (await this.serverStream('ListPeer', { address: '', enableAdvertised: true })) as { peer: ApiPeer | null }[];
    const peers: GobgpPeerStatus[] = [];
    for (const rsp of rsps) if (rsp.peer !== null) peers.push(peerStatusFromApi(rsp.peer));
    return peers.sort((a, b) => (a.neighborAddress < b.neighborAddress ? -1 : a.neighborAddress > b.neighborAddress ? 1 : 0));
  }

  async addPeer(peer: GobgpPeerConfig): Promise<void> {
    await this.unary('AddPeer', { peer: peerToApi(peer) });
  }

  /**
   * Every UpdatePeer resets the session, even with unchanged values: gobgpd 3.10 compares the request
   * with the stored peer before filling in its defaults, always sees a change and applies it as
   * delete + add. Call it only on a real change (new timers only take effect on a new session anyway).
   */
  async updatePeer(peer: GobgpPeerConfig): Promise<void> {
    await this.unary('UpdatePeer', { peer: peerToApi(peer), do_soft_reset_in: false });
  }

  async deletePeer(neighborAddress: string): Promise<void> {
    await this.unary('DeletePeer', { address: neighborAddress });
  }

  /** Locally originated paths only, one entry per prefix + identifier. */
  async listPaths(family: Family): Promise<GobgpPath[]> {
    const paths: GobgpPath[] = [];
    await this.eachRibPath(family, (p) => {
      if (p.neighborAddress === undefined) paths.push({ prefix: p.prefix, family: p.family, nextHop: p.nextHop, identifier: p.identifier });
    });
    return paths;
  }

  /** Every path of the global RIB of one family, learnt ones with the peer they came from. */
  async listRib(family: Family): Promise<GobgpRibPath[]> {
    const out: GobgpRibPath[] = [];
    await this.eachRibPath(family, (p) => out.push(p));
    return out;
  }

  /**
   * Decodes ListPath's answer destination by destination as it arrives: collecting the raw messages
   * first held every one of them (proto-loader objects with every default filled in) at once, and a
   * speaker reading 30,000 paths every 30 s grew from 150 to 290 MB resident.
   */
  private async eachRibPath(family: Family, onPath: (p: GobgpRibPath) => void): Promise<void> {
    await this.serverStreamEach('ListPath', { table_type: 'GLOBAL', name: '', family: API_FAMILY[family] }, (item) => {
      const dest = (item as { destination: ApiDestination | null }).destination;
      if (dest === null) return;
      for (const p of dest.paths) {
        if (p.is_withdraw) continue;
        onPath(this.decodePath(family, dest.prefix, p));
      }
    });
  }

  /** Adds or replaces (same prefix + identifier) paths; one AddPathStream call, 100 paths per message. */
  async addPaths(paths: readonly GobgpPath[]): Promise<void> {
    if (paths.length === 0) return;
    // Every path is checked before anything is sent; messages are packed as the stream takes them,
    // so 30,000 paths after a gobgpd restart are never all packed at once.
    paths.forEach((p, i) => this.checkPath(p, `paths[${i}]`));
    await this.pathStream('addPaths', paths, (p) => this.packPath(p, false));
  }

  /**
   * Withdraws exactly these prefix + identifier paths, as withdrawals on AddPathStream. DeletePath is
   * never used: without a path it withdraws every local path, one bug away from a blackout.
   */
  async deletePaths(paths: readonly GobgpPath[]): Promise<void> {
    if (paths.length === 0) return;
    // Checked first and packed as the stream takes them, like addPaths: a withdrawal of every
    // Service of an Eip is 30,000 paths per speaker.
    paths.forEach((p, i) => this.checkPath(p, `paths[${i}]`));
    await this.pathStream('deletePaths', paths, (p) => {
      const message = this.packPath(p, true);
      assertPathSet(message);
      return message;
    });
  }

  /**
   * Streams peer state changes, starting with the current state of every peer. `onEnd` is called
   * once when the stream ends or fails (gobgpd restarted, say), never after `close()`.
   */
  watchPeers(onChange: (status: GobgpPeerEvent) => void, onEnd: (err?: Error) => void): { close(): void } {
    const method = this.method<ServerStreamCall>('WatchEvent');
    const call = method({ peer: {} });
    this.watches.add(call);
    let done = false;
    const finish = (err?: Error): void => {
      if (done) return;
      done = true;
      this.watches.delete(call);
      onEnd(err);
    };
    call.on('data', (rsp: ApiWatchEvent) => {
      const event = rsp.peer;
      // END_OF_INIT only marks the end of the initial dump and carries no peer.
      if (event == null || event.peer === null || event.type === 'END_OF_INIT') return;
      const p = event.peer;
      const neighborAddress = p.state?.neighbor_address || p.conf?.neighbor_address || '';
      if (neighborAddress === '' || isIP(neighborAddress) === 0) return;
      try {
        onChange({ neighborAddress, sessionState: sessionStateOf(p.state?.session_state), adminState: lower(p.state?.admin_state, 'up') });
      } catch (err) {
        this.logger?.error({ err }, 'gobgp watchPeers: onChange threw');
      }
    });
    call.on('error', (err: grpc.ServiceError) => finish(gobgpError('WatchEvent', err)));
    call.on('end', () => finish(new RacklbError('RACKLB_GOBGP', 'gobgpd WatchEvent stream ended')));
    return {
      close: () => {
        if (done) return;
        done = true;
        this.watches.delete(call);
        call.cancel();
      },
    };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const call of this.watches) call.cancel();
    this.watches.clear();
    this.stub.close();
  }

  // ---- internals ----

  private method<T>(name: string): T {
    if (this.closed) throw new RacklbError('RACKLB_GOBGP', `gobgpd ${name}: client for ${this.address} is closed`);
    const fn = this.stub[name];
    if (typeof fn !== 'function') throw new RacklbError('RACKLB_GOBGP', `gobgpd API has no method ${name} (schema in ${this.proto.dir})`);
    return (fn as (...args: unknown[]) => unknown).bind(this.stub) as T;
  }

  private deadline(extraMs = 0): grpc.CallOptions {
    return { deadline: Date.now() + this.callTimeoutMs + extraMs };
  }

  private unary(name: string, request: Record<string, unknown>): Promise<unknown> {
    // Nothing calls DeletePath today (withdrawals go on AddPathStream, measured as fast); whoever
    // adds a call goes through this guard.
    if (name === 'DeletePath') assertPathSet(request);
    const method = this.method<UnaryCall>(name);
    return new Promise((resolve, reject) => {
      method(request, this.deadline(), (err, rsp) => (err ? reject(gobgpError(name, err)) : resolve(rsp)));
    });
  }

  private async serverStream(name: string, request: unknown): Promise<unknown[]> {
    const items: unknown[] = [];
    await this.serverStreamEach(name, request, (item) => items.push(item));
    return items;
  }

  private serverStreamEach(name: string, request: unknown, onItem: (item: unknown) => void): Promise<void> {
    const method = this.method<ServerStreamCall>(name);
    return new Promise((resolve, reject) => {
      // The deadline covers the whole stream; a RIB of 10,000 paths takes ~0.3-0.8 s to list.
      const call = method(request, this.deadline(name === 'ListPath' ? LIST_EXTRA_MS : 0));
      let failed = false;
      call.on('data', (item: unknown) => {
        if (failed) return;
        try {
          onItem(item);
        } catch (err) {
          // A message that cannot be read fails the listing, as a failed stream does.
          failed = true;
          call.cancel();
          reject(gobgpError(name, err));
        }
      });
      call.on('error', (err) => {
        if (!failed) reject(gobgpError(name, err));
      });
      call.on('end', () => resolve());
    });
  }

  /**
   * gobgpd answers an AddPathStream only when it closes. It applies each message as it arrives and
   * stops at the first bad path, keeping the messages before it: hence every path is checked before
   * the first is sent. Paths are packed a message at a time as the stream takes them. Packing runs
   * from the stream's 'drain' handler, where a throw would take the process down, so a path that
   * cannot be packed cancels the call and rejects. What was sent before stays, as after any failed
   * call; the speaker then reads gobgpd's table again and retries (speaker/speaker.ts, reconcile).
   */
  private pathStream(what: string, paths: readonly GobgpPath[], pack: (path: GobgpPath) => Record<string, unknown>): Promise<void> {
    const count = paths.length;
    const method = this.method<ClientStreamCall>('AddPathStream');
    const started = Date.now();
    return new Promise<void>((resolve, reject) => {
      const call = method(this.deadline(count), (err) => {
        if (err) {
          reject(gobgpError(`AddPathStream (${what}, ${count} paths)`, err));
          return;
        }
        this.logger?.debug({ paths: count, ms: Date.now() - started }, `gobgp ${what}`);
        resolve();
      });
      let next = 0;
      const pump = (): void => {
        while (next < count) {
          let chunk: Record<string, unknown>[];
          try {
            chunk = paths.slice(next, Math.min(next + PATHS_PER_MESSAGE, count)).map(pack);
          } catch (err) {
            reject(gobgpError(`AddPathStream (${what}, ${count} paths)`, err));
            call.cancel();
            return;
          }
          next += chunk.length;
          if (!call.write({ table_type: 'GLOBAL', vrf_id: '', paths: chunk })) {
            call.once('drain', pump);
            return;
          }
        }
        call.end();
      };
      pump();
    });
  }

  private nextHopAny(nextHop: string): AnyValue {
    let any = this.nextHopAnys.get(nextHop);
    if (any === undefined) {
      if (this.nextHopAnys.size >= NEXT_HOP_CACHE_MAX) this.nextHopAnys.clear();
      any = this.proto.pack(this.proto.types.NextHopAttribute, { next_hop: nextHop });
      this.nextHopAnys.set(nextHop, any);
    }
    return any;
  }

  private checkPath(path: GobgpPath, field: string): void {
    parsePrefix(path, field);
    checkUint32(`${field}.identifier`, path.identifier, 1);
    const want = path.family === 'ipv4' ? 4 : 6;
    if (isIP(path.nextHop) !== want) throw invalidField(`${field}.nextHop`, `must be an ${path.family} address`, path.nextHop);
  }

  /** The API message of a path that `checkPath` accepted. */
  private packPath(path: GobgpPath, withdraw: boolean): Record<string, unknown> {
    const { types, pack } = this.proto;
    let nlri = this.lastNlri?.prefix === path.prefix ? this.lastNlri.any : undefined;
    if (nlri === undefined) {
      const slash = path.prefix.indexOf('/');
      nlri = pack(types.IPAddressPrefix, { prefix_len: Number(path.prefix.slice(slash + 1)), prefix: path.prefix.slice(0, slash) });
      this.lastNlri = { prefix: path.prefix, any: nlri };
    }
    // gobgpd 3.10 takes an IPv4 next hop as NEXT_HOP but any other as MP_REACH_NLRI, whose NLRI list
    // must not be empty (it rebuilds the attribute from `nlri`, so the copy in it is only a token).
    const nextHop =
      path.family === 'ipv4'
        ? this.nextHopAny(path.nextHop)
        : pack(types.MpReachNLRIAttribute, { family: { afi: 2, safi: 1 }, next_hops: [path.nextHop], nlris: [nlri] });
    return {
      nlri,
      // Withdrawals carry the attributes too: gobgpd matches on prefix + identifier, and a complete
      // path cannot trip its attribute checks.
      pattrs: [this.originIgp, nextHop],
      family: API_FAMILY[path.family],
      identifier: path.identifier,
      is_withdraw: withdraw,
    };
  }

  private decodePath(family: Family, destPrefix: string, p: ApiPath): GobgpRibPath {
    const { types, typeUrl } = this.proto;
    let prefix = destPrefix;
    if (p.nlri !== null && p.nlri.type_url === typeUrl(types.IPAddressPrefix)) {
      const n = types.IPAddressPrefix.decode(p.nlri.value) as unknown as { prefix: string; prefix_len: number };
      prefix = `${n.prefix}/${n.prefix_len}`;
    }
    let nextHop = '';
    for (const attr of p.pattrs) {
      if (attr.type_url === typeUrl(types.NextHopAttribute)) {
        nextHop = (types.NextHopAttribute.decode(attr.value) as unknown as { next_hop: string }).next_hop;
      } else if (attr.type_url === typeUrl(types.MpReachNLRIAttribute)) {
        nextHop = (types.MpReachNLRIAttribute.decode(attr.value) as unknown as { next_hops: string[] }).next_hops[0] ?? '';
      }
    }
    // Local paths have no peer: gobgpd prints the missing address as "<nil>" (or leaves it empty).
    const neighborAddress = isIP(p.neighbor_ip) === 0 ? undefined : p.neighbor_ip;
    return { prefix, family, nextHop, identifier: p.identifier, neighborAddress, best: p.best };
  }
}

/**
 * gobgpd's DeletePath without a path and without a uuid withdraws every local path: this guard stands
 * before every withdrawal (an encoded path) and every DeletePath request, so such a request cannot leave.
 */
export function assertPathSet(request: Record<string, unknown>): void {
  const isDeleteRequest = 'path' in request || 'uuid' in request;
  const path = (isDeleteRequest ? request.path : request) as Record<string, unknown> | null | undefined;
  const uuid = request.uuid;
  const hasUuid = uuid instanceof Uint8Array && uuid.length > 0;
  if (!hasUuid && (path == null || path.nlri == null)) {
    throw new RacklbError('RACKLB_GOBGP', 'refusing to send a path withdrawal without a path: gobgpd would withdraw every local path');
  }
}
