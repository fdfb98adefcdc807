/**
 * The plain records racklb keeps about Kubernetes objects, after parsing and validation
 * (src/core/objects.ts). Everything downstream (store, speaker, state, explain) speaks these, never raw
 * Kubernetes JSON. Field names follow PorterLB/OpenELB and GoBGP where a concept comes from them.
 */

export type Family = 'ipv4' | 'ipv6';

/**
 * A setting PorterLB and OpenELB each name by a key of their own: PorterLB's first, then OpenELB's
 * (PorterLB's name since v0.4, which moved most keys under openelb.kubesphere.io). racklb reads
 * both, so the objects of either come unchanged; see `readEither` (src/core/meta.ts).
 */
export type KeyPair = readonly [porter: string, openelb: string];

/** Whose keys a Service opted in with: racklb writes back under the same ones. */
export type Naming = 'PorterLB' | 'OpenELB';

/** The key of `pair` a Service of `naming` uses (absent: PorterLB's). */
export function keyFor(pair: KeyPair, naming: Naming | undefined): string {
  return naming === 'OpenELB' ? pair[1] : pair[0];
}

/** The pool (Eip name): an annotation a Service requests it by, and the label racklb writes back, under one key. */
const POOL: KeyPair = ['eip.porter.kubesphere.io/v1alpha2', 'eip.openelb.kubesphere.io/v1alpha2'];

/** Label keys that PorterLB and OpenELB users already have on their objects. */
export const LABELS = {
  /** Node label naming the node's rack (its leaf router). */
  rack: ['porter.kubesphere.io/rack', 'openelb.kubesphere.io/rack'] as KeyPair,
  /** Node label placing a speaker on the node: one key, PorterLB's value or OpenELB's. */
  speaker: 'lb.kubesphere.io/v1alpha1',
  speakerValues: ['porter', 'openelb'] as readonly string[],
  /** EndpointSlice label naming its Service. */
  serviceName: 'kubernetes.io/service-name',
  /** Service label written back with the pool name. */
  pool: POOL,
} as const;

export const ANNOTATIONS = {
  /** Service opt-in: `lb.kubesphere.io/v1alpha1: porter` (PorterLB) or `openelb` (OpenELB). */
  optIn: 'lb.kubesphere.io/v1alpha1',
  optInValues: { porter: 'PorterLB', openelb: 'OpenELB' } as Readonly<Record<string, Naming>>,
  /** Requested IP on a Service. */
  requestedIp: ['eip.porter.kubesphere.io/v1alpha1', 'eip.openelb.kubesphere.io/v1alpha1'] as KeyPair,
  /** Requested pool (Eip name) on a Service. */
  pool: POOL,
  /** On an Eip: this is the default pool. */
  defaultEip: ['eip.porter.kubesphere.io/is-default-eip', 'eip.openelb.kubesphere.io/is-default-eip'] as KeyPair,
} as const;

/** `lb.kubesphere.io/v1alpha1: porter or openelb`, for messages. */
export const OPT_IN_TEXT = `${ANNOTATIONS.optIn}: ${Object.keys(ANNOTATIONS.optInValues).join(' or ')}`;

/** Identity and ordering data every stored object carries. */
export interface ObjectMeta {
  /** `namespace/name` for namespaced kinds, `name` for cluster-scoped ones. */
  key: string;
  name: string;
  namespace?: string;
  uid: string;
  resourceVersion: string;
}

export interface NodeRecord extends ObjectMeta {
  kind: 'Node';
  labels: Record<string, string>;
  /** The value of the rack label, or undefined for a node without one. */
  rack: string | undefined;
  /** InternalIP per family (the first one Kubernetes lists). */
  addresses: Partial<Record<Family, string>>;
  /** Ready condition is True. */
  ready: boolean;
  /** Not cordoned (`spec.unschedulable` unset or false). */
  schedulable: boolean;
  /** Carries the speaker placement label `lb.kubesphere.io/v1alpha1=porter` (or `=openelb`). */
  speaker: boolean;
}

export type TrafficPolicy = 'Cluster' | 'Local';

export interface ServiceRecord extends ObjectMeta {
  kind: 'Service';
  namespace: string;
  labels: Record<string, string>;
  /** type LoadBalancer and the opt-in annotation: racklb owns its IP. */
  managed: boolean;
  /**
   * 'OpenELB' when a managed Service opted in with OpenELB's value (`openelb`): its pool label is
   * written under OpenELB's key, and messages name OpenELB's keys. Absent for PorterLB's value, so
   * those records are stored exactly as before racklb read OpenELB's keys.
   */
  naming?: 'OpenELB';
  externalTrafficPolicy: TrafficPolicy;
  /** From the requested-IP annotation, else spec.loadBalancerIP (a dual-stack Service: see dualStack). */
  requestedIp: string | undefined;
  /** From the pool annotation. */
  requestedPool: string | undefined;
  /** spec.ipFamilies, in order; empty means "whatever the pool gives". */
  ipFamilies: Family[];
  /**
   * Only for a managed dual-stack Service (spec.ipFamilyPolicy PreferDualStack or RequireDualStack,
   * both families in ipFamilies): it gets one address per family, and its requests are per family
   * here while requestedIp and requestedPool stay unset. Absent on every single-stack Service, so
   * their stored records are what they were before dual-stack.
   */
  dualStack?: DualStack;
  /**
   * status.loadBalancer.ingress[].ip of a managed Service, canonical, in order: the addresses it
   * showed last. When the store has lost its allocation (Redis restarted empty), one of these is
   * taken back before the lowest free address, so the Service does not move. Absent when there is
   * none, and on records stored before racklb read it: read it as `?? []`.
   */
  ingressIps?: string[];
}

export type DualStackPolicy = 'PreferDualStack' | 'RequireDualStack';

export interface DualStack {
  policy: DualStackPolicy;
  /** From the requested-IP annotation, else spec.loadBalancerIP: at most one address per family. */
  requestedIps: Partial<Record<Family, string>>;
  /** From the pool annotation, in its order; at most two. Which family each serves is known from its Eip. */
  requestedPools: string[];
}

export interface EndpointSliceRecord extends ObjectMeta {
  kind: 'EndpointSlice';
  namespace: string;
  /** `namespace/name` of the owning Service (label kubernetes.io/service-name). */
  service: string;
  /** Sorted, unique names of nodes that host at least one ready endpoint in this slice. */
  readyNodes: string[];
}

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values: string[];
}

export interface LabelSelector {
  matchLabels: Record<string, string>;
  matchExpressions: LabelSelectorRequirement[];
}

export interface EipRecord extends ObjectMeta {
  kind: 'Eip';
  /** As the user wrote it: an IP, a CIDR or a range `a-b`. */
  address: string;
  family: Family;
  /** First and last address of the pool, normalised. */
  firstIp: string;
  lastIp: string;
  /** Number of addresses, as a decimal string (IPv6 pools can exceed 2^53). */
  size: string;
  disable: boolean;
  isDefault: boolean;
  /** Among namespace-bound pools a smaller number is preferred, as in OpenELB (default 0). */
  priority: number;
  namespaces: string[];
  namespaceSelector: LabelSelector | undefined;
}

export interface GracefulRestart {
  enabled: boolean;
  restartTime: number;
  helperOnly: boolean;
  deferralTime: number;
  notificationEnabled: boolean;
  longlivedEnabled: boolean;
  staleRoutesTime: number;
}

export interface BgpPeerRecord extends ObjectMeta {
  kind: 'BgpPeer';
  peerAs: number;
  neighborAddress: string;
  family: Family;
  /** MD5 password (TCP-MD5). Never logged or shown. */
  authPassword: string | undefined;
  description: string | undefined;
  /** Overrides the speaker's ASN toward this peer. */
  localAs: number | undefined;
  ebgpMultihop: { enabled: boolean; multihopTtl: number };
  timers: { connectRetry: number | undefined; holdTime: number | undefined; keepaliveInterval: number | undefined };
  transport: { passiveMode: boolean; remotePort: number | undefined };
  gracefulRestart: GracefulRestart | undefined;
  /** Address families to negotiate; defaults to the neighbor address's family. */
  families: Family[];
  /** undefined: applies to every speaker node. */
  nodeSelector: LabelSelector | undefined;
}

export interface BgpConfRecord extends ObjectMeta {
  kind: 'BgpConf';
  as: number;
  asPerRack: Record<string, number>;
  routerId: string | undefined;
  /** 179 (GoBGP's default) when unset; -1: open no listener. */
  listenPort: number;
  /** Empty: GoBGP's default (every address). */
  listenAddresses: string[];
  gracefulRestart: GracefulRestart | undefined;
}

export type KubeRecord = NodeRecord | ServiceRecord | EndpointSliceRecord | EipRecord | BgpPeerRecord | BgpConfRecord;
export type Kind = KubeRecord['kind'];
export const KINDS: readonly Kind[] = ['Node', 'Service', 'EndpointSlice', 'Eip', 'BgpPeer', 'BgpConf'];

/** The effective BGP global settings for one rack, as a speaker applies them. */
export interface RackBgpConf {
  as: number;
  /** Pinned router ID, else undefined and the speaker uses its node's address. */
  routerId: string | undefined;
  listenPort: number;
  listenAddresses: string[];
  gracefulRestart: GracefulRestart | undefined;
}

/** A Service IP that racklb announces, with what decides its next hops. */
export interface ServiceIpIntent {
  ip: string;
  family: Family;
  /** `namespace/name` of every Service sharing this IP, sorted. */
  services: string[];
  /** Cluster: every eligible node of the rack. Local: only `nodes`. */
  policy: TrafficPolicy;
  /** With policy Local: sorted names of nodes with a ready endpoint of any sharing Service. */
  nodes: string[];
}

/** A node that may be a next hop, as stored per rack. */
export interface NextHopCandidate {
  node: string;
  addresses: Partial<Record<Family, string>>;
}

/** One IP allocation: which Services hold an IP and from which pool. */
export interface Allocation {
  ip: string;
  pool: string;
  services: string[];
  /**
   * The Service that took this address back from its own status (ServiceRecord.ingressIps) because
   * the store held no allocation for it, for `racklb explain`. Absent on every other allocation.
   */
  fromStatus?: string;
}

/** What a handler reports back: the transport maps it to an answer and the journal records it. */
export type Outcome =
  | { outcome: 'applied'; detail: string }
  | { outcome: 'stale'; detail: string }
  | { outcome: 'rejected'; detail: string; field?: string; rule?: string };
