/**
 * The Redis key schema: the only module that builds key names (docs/state.md describes each key).
 *
 * Every key carries the same hash tag `{<prefix>}`, so all of racklb's keys live in one Redis
 * Cluster slot and every MULTI/EXEC or Lua update stays atomic on a cluster too. The prefix lets
 * several racklb installations, or a replay rebuilt beside the live state, share one Redis.
 */
import type { Kind } from '../core/types.js';

export const DEFAULT_PREFIX = 'racklb';

/** Name used in keys for nodes without a rack label: they are next-hop candidates in every rack. */
export const UNRACKED = '-';

export type FunctionName = 'on-node-label' | 'on-service' | 'on-bgppeer';

export class Keys {
  readonly prefix: string;
  private readonly base: string;

  constructor(prefix: string = DEFAULT_PREFIX) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(prefix)) {
      throw new Error(`key prefix ${JSON.stringify(prefix)}: must be 1-64 characters of letters, digits, '_', '.', '-'`);
    }
    this.prefix = prefix;
    this.base = `{${prefix}}`;
  }

  /** STRING: JSON StoredObject (a live record or a tombstone) for one Kubernetes object. */
  object(kind: Kind, key: string): string {
    return `${this.base}:obj:${kind}:${key}`;
  }

  /** The common start of every object key of a kind, for scans in inspection tools. */
  objectPattern(kind: Kind): string {
    return `${this.base}:obj:${kind}:*`;
  }

  /** SCAN pattern matching every key of this prefix (for `racklb replay --into`, which empties its target). */
  allPattern(): string {
    return `${this.base}:*`;
  }

  /** SET: keys of the live (not deleted) objects of a kind. */
  index(kind: Kind): string {
    return `${this.base}:idx:${kind}`;
  }

  /** STRING token set anew by every transaction that writes objects of a kind (nextEpochToken); handlers that read all objects of it WATCH it. */
  epoch(kind: Kind): string {
    return `${this.base}:epoch:${kind}`;
  }

  /** SET: racks that have at least one node. */
  racks(): string {
    return `${this.base}:racks`;
  }

  /** SET: names of all nodes in a rack (UNRACKED for nodes without a rack label), eligible or not. */
  rackNodes(rack: string): string {
    return `${this.base}:rack:${rack}:nodes`;
  }

  /** HASH node -> JSON NextHopCandidate: the rack's nodes that may carry traffic now. */
  rackNextHops(rack: string): string {
    return `${this.base}:rack:${rack}:nexthops`;
  }

  /** SET: names of nodes labelled for speaker placement. */
  speakers(): string {
    return `${this.base}:speakers`;
  }

  /** STRING: JSON BgpPeerRecord[] assigned to one speaker node. */
  peers(node: string): string {
    return `${this.base}:peers:${node}`;
  }

  /** HASH ip -> JSON ServiceIpIntent: every Service IP racklb announces. */
  intents(): string {
    return `${this.base}:intents`;
  }

  /** HASH ip -> JSON Allocation. */
  allocations(): string {
    return `${this.base}:alloc`;
  }

  /**
   * ZSET: every allocated IPv4 address (member: the address, score: it as a number), plus the member
   * `~complete` (score -1) once it holds all of them: the lowest free address of a pool is then found
   * without reading every allocation.
   */
  allocationIndex(): string {
    return `${this.base}:alloc:v4`;
  }

  /** HASH service key -> its addresses (see parseServiceIps). */
  serviceIps(): string {
    return `${this.base}:svcip`;
  }

  /** HASH service key -> reason: managed Services still waiting for an IP (a dual-stack one: for a family's, see formatPending). */
  pending(): string {
    return `${this.base}:pending`;
  }

  /** HASH slice key -> JSON string[] of nodes with ready endpoints, per Service. */
  serviceEndpoints(service: string): string {
    return `${this.base}:eps:${service}`;
  }

  /** HASH: generation, rev, complete. See docs/state.md for the speaker's empty-store guard. */
  meta(): string {
    return `${this.base}:meta`;
  }

  /** STREAM of change notifications that speakers follow. */
  changes(): string {
    return `${this.base}:changes`;
  }

  /** STREAM: every received event and its outcome. */
  journal(): string {
    return `${this.base}:journal`;
  }

  /** HASH neighbor address -> JSON session status, written by the speaker on that node. */
  sessions(node: string): string {
    return `${this.base}:sessions:${node}`;
  }

  /** HASH: the speaker's own heartbeat and counters. */
  speakerStatus(node: string): string {
    return `${this.base}:speaker:${node}`;
  }

  /** STREAM of CloudEvents for one function, consumed with a consumer group (KEDA deployment). */
  eventStream(fn: FunctionName): string {
    return `${this.base}:events:${fn}`;
  }
}

/**
 * The value of `Keys.serviceIps()`: the Service's addresses in spec.ipFamilies order, comma-separated.
 * One address is the address alone, so stores written before dual-stack read unchanged. Every
 * reader and writer of the hash goes through these two.
 */
export function parseServiceIps(value: string | null | undefined): string[] {
  return value ? value.split(',').filter((ip) => ip !== '') : [];
}

/** undefined for no address: the Service's field is then deleted, never written empty. */
export function formatServiceIps(ips: readonly string[]): string | undefined {
  return ips.length > 0 ? ips.join(',') : undefined;
}
