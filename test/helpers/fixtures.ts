/**
 * Raw Kubernetes objects as the API server (and Knative's ApiServerSource) hands them over, for unit
 * and integration tests. Every builder returns a fresh, complete object (apiVersion, kind, metadata
 * with uid and resourceVersion) that parses without error unless the caller breaks it on purpose.
 * uids are derived from kind, namespace and name, so the same object built twice has the same uid.
 */

export type Json = Record<string, unknown>;

export const LABEL_RACK = 'porter.kubesphere.io/rack';
export const LABEL_SPEAKER = 'lb.kubesphere.io/v1alpha1';
export const ANNOTATION_OPT_IN = 'lb.kubesphere.io/v1alpha1';
export const ANNOTATION_IP = 'eip.porter.kubesphere.io/v1alpha1';
export const ANNOTATION_POOL = 'eip.porter.kubesphere.io/v1alpha2';
export const ANNOTATION_DEFAULT_EIP = 'eip.porter.kubesphere.io/is-default-eip';
export const CRD_API = 'network.kubesphere.io/v1alpha2';
export const CRD_API_V1ALPHA1 = 'network.kubesphere.io/v1alpha1';

/** A stable, UUID-shaped uid (FNV-1a over the identity, spread over 128 bits). */
export function uidFor(kind: string, name: string, namespace = ''): string {
  let hex = '';
  for (let round = 0; round < 4; round++) {
    let h = 0x811c9dc5 ^ round;
    for (const ch of `${kind}/${namespace}/${name}`) {
      h ^= ch.charCodeAt(0);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    hex += h.toString(16).padStart(8, '0');
  }
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

interface MetaOpts {
  uid?: string;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}

function metadata(kind: string, name: string, namespace: string | undefined, o: MetaOpts): Json {
  return {
    name,
    ...(namespace === undefined ? {} : { namespace }),
    uid: o.uid ?? uidFor(kind, name, namespace),
    resourceVersion: o.resourceVersion ?? '1',
    generation: 1,
    creationTimestamp: '2024-05-01T10:00:00Z',
    labels: { ...(o.labels ?? {}) },
    annotations: { ...(o.annotations ?? {}) },
  };
}

export interface NodeOpts extends MetaOpts {
  name: string;
  /** InternalIP (IPv4). */
  ip?: string;
  /** Second InternalIP (IPv6) for dual-stack nodes. */
  ipv6?: string;
  rack?: string;
  /** Adds `lb.kubesphere.io/v1alpha1=porter`. */
  speaker?: boolean;
  ready?: boolean;
  unschedulable?: boolean;
}

export function node(o: NodeOpts): Json {
  const labels: Record<string, string> = {
    'kubernetes.io/arch': 'amd64',
    'kubernetes.io/hostname': o.name,
    'kubernetes.io/os': 'linux',
    ...(o.rack === undefined ? {} : { [LABEL_RACK]: o.rack }),
    ...(o.speaker === true ? { [LABEL_SPEAKER]: 'porter' } : {}),
    ...(o.labels ?? {}),
  };
  const addresses: Json[] = [];
  if (o.ip !== undefined) addresses.push({ type: 'InternalIP', address: o.ip });
  if (o.ipv6 !== undefined) addresses.push({ type: 'InternalIP', address: o.ipv6 });
  addresses.push({ type: 'Hostname', address: o.name });
  const ready = o.ready ?? true;
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { ...metadata('Node', o.name, undefined, { ...o, labels }) },
    spec: {
      podCIDR: '10.244.0.0/24',
      podCIDRs: ['10.244.0.0/24'],
      ...(o.unschedulable === true ? { unschedulable: true, taints: [{ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }] } : {}),
    },
    status: {
      addresses,
      conditions: [
        { type: 'MemoryPressure', status: 'False', reason: 'KubeletHasSufficientMemory' },
        { type: 'DiskPressure', status: 'False', reason: 'KubeletHasNoDiskPressure' },
        { type: 'PIDPressure', status: 'False', reason: 'KubeletHasSufficientPID' },
        ready
          ? { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' }
          : { type: 'Ready', status: 'Unknown', reason: 'NodeStatusUnknown', message: 'Kubelet stopped posting node status.' },
      ],
      nodeInfo: { kubeletVersion: 'v1.30.0', operatingSystem: 'linux', architecture: 'amd64' },
    },
  };
}

export interface ServiceOpts extends MetaOpts {
  name: string;
  namespace?: string;
  /** Adds the opt-in annotation `lb.kubesphere.io/v1alpha1: porter` (default true). */
  managed?: boolean;
  type?: string;
  externalTrafficPolicy?: 'Cluster' | 'Local';
  /** The requested-IP annotation. */
  requestedIp?: string;
  /** The pool annotation. */
  pool?: string;
  loadBalancerIP?: string;
  ipFamilies?: string[];
  /** spec.ipFamilyPolicy (default SingleStack). */
  ipFamilyPolicy?: string;
  selector?: Record<string, string>;
  /** status.loadBalancer.ingress, as a load balancer wrote it: a string is `{ip}`, an object is taken as it is. */
  ingress?: (string | Json)[];
}

export function service(o: ServiceOpts): Json {
  const namespace = o.namespace ?? 'default';
  const annotations: Record<string, string> = {
    ...((o.managed ?? true) ? { [ANNOTATION_OPT_IN]: 'porter' } : {}),
    ...(o.requestedIp === undefined ? {} : { [ANNOTATION_IP]: o.requestedIp }),
    ...(o.pool === undefined ? {} : { [ANNOTATION_POOL]: o.pool }),
    ...(o.annotations ?? {}),
  };
  const type = o.type ?? 'LoadBalancer';
  const ipFamilies = o.ipFamilies ?? ['IPv4'];
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: metadata('Service', o.name, namespace, { ...o, annotations }),
    spec: {
      type,
      selector: o.selector ?? { app: o.name },
      ports: [{ name: 'http', protocol: 'TCP', port: 80, targetPort: 80, ...(type === 'ClusterIP' ? {} : { nodePort: 30080 }) }],
      clusterIP: '10.96.0.10',
      clusterIPs: ['10.96.0.10'],
      ipFamilies,
      ipFamilyPolicy: o.ipFamilyPolicy ?? 'SingleStack',
      sessionAffinity: 'None',
      ...(type === 'LoadBalancer' || type === 'NodePort' ? { externalTrafficPolicy: o.externalTrafficPolicy ?? 'Cluster' } : {}),
      ...(o.loadBalancerIP === undefined ? {} : { loadBalancerIP: o.loadBalancerIP }),
    },
    status: { loadBalancer: o.ingress === undefined ? {} : { ingress: o.ingress.map((i) => (typeof i === 'string' ? { ip: i } : i)) } },
  };
}

export interface EndpointOpts {
  nodeName?: string;
  /** `conditions.ready`; null leaves it unset (Kubernetes reads that as ready). */
  ready?: boolean | null;
  address?: string;
}

export interface EndpointSliceOpts extends MetaOpts {
  /** Defaults to `<service>-abcde`. */
  name?: string;
  namespace?: string;
  service: string;
  endpoints?: EndpointOpts[];
  addressType?: 'IPv4' | 'IPv6';
}

export function endpointSlice(o: EndpointSliceOpts): Json {
  const namespace = o.namespace ?? 'default';
  const name = o.name ?? `${o.service}-abcde`;
  const labels = { 'kubernetes.io/service-name': o.service, 'endpointslice.kubernetes.io/managed-by': 'endpointslice-controller.k8s.io', ...(o.labels ?? {}) };
  return {
    apiVersion: 'discovery.k8s.io/v1',
    kind: 'EndpointSlice',
    metadata: metadata('EndpointSlice', name, namespace, { ...o, labels }),
    addressType: o.addressType ?? 'IPv4',
    endpoints: (o.endpoints ?? []).map((e, i) => ({
      addresses: [e.address ?? `10.244.${i}.${10 + i}`],
      conditions: e.ready === null ? {} : { ready: e.ready ?? true, serving: e.ready ?? true, terminating: e.ready === false },
      ...(e.nodeName === undefined ? {} : { nodeName: e.nodeName }),
      targetRef: { kind: 'Pod', namespace, name: `${o.service}-pod-${i}` },
    })),
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
  };
}

export interface BgpPeerOpts extends MetaOpts {
  name: string;
  peerAs?: number;
  neighborAddress: string;
  /** Shorthand for `nodeSelector: {matchLabels: {porter.kubesphere.io/rack: <rack>}}`. */
  rack?: string;
  nodeSelector?: Json;
  sendMax?: number;
  /** Merged over the generated spec. */
  spec?: Json;
}

export function bgpPeer(o: BgpPeerOpts): Json {
  const afi = o.neighborAddress.includes(':') ? 'AFI_IP6' : 'AFI_IP';
  const nodeSelector = o.nodeSelector ?? (o.rack === undefined ? undefined : { matchLabels: { [LABEL_RACK]: o.rack } });
  return {
    apiVersion: CRD_API,
    kind: 'BgpPeer',
    metadata: metadata('BgpPeer', o.name, undefined, o),
    spec: {
      conf: { peerAs: o.peerAs ?? 50001, neighborAddress: o.neighborAddress },
      afiSafis: [{ config: { family: { afi, safi: 'SAFI_UNICAST' }, enabled: true }, addPaths: { config: { sendMax: o.sendMax ?? 10 } } }],
      ...(nodeSelector === undefined ? {} : { nodeSelector }),
      ...(o.spec ?? {}),
    },
  };
}

export interface BgpConfOpts extends MetaOpts {
  name?: string;
  as?: number;
  listenPort?: number;
  routerId?: string;
  asPerRack?: Record<string, number>;
  spec?: Json;
}

export function bgpConf(o: BgpConfOpts = {}): Json {
  const name = o.name ?? 'default';
  return {
    apiVersion: CRD_API,
    kind: 'BgpConf',
    metadata: metadata('BgpConf', name, undefined, o),
    spec: {
      as: o.as ?? 50000,
      ...(o.listenPort === undefined ? {} : { listenPort: o.listenPort }),
      ...(o.routerId === undefined ? {} : { routerId: o.routerId }),
      ...(o.asPerRack === undefined ? {} : { asPerRack: o.asPerRack }),
      ...(o.spec ?? {}),
    },
  };
}

export interface EipOpts extends MetaOpts {
  name: string;
  address: string;
  isDefault?: boolean;
  disable?: boolean;
  protocol?: string;
  priority?: number;
  namespaces?: string[];
  namespaceSelector?: Json;
  spec?: Json;
}

export function eip(o: EipOpts): Json {
  const annotations = { ...(o.isDefault === true ? { [ANNOTATION_DEFAULT_EIP]: 'true' } : {}), ...(o.annotations ?? {}) };
  return {
    apiVersion: CRD_API,
    kind: 'Eip',
    metadata: metadata('Eip', o.name, undefined, { ...o, annotations }),
    spec: {
      address: o.address,
      ...(o.protocol === undefined ? {} : { protocol: o.protocol }),
      ...(o.disable === undefined ? {} : { disable: o.disable }),
      ...(o.priority === undefined ? {} : { priority: o.priority }),
      ...(o.namespaces === undefined ? {} : { namespaces: o.namespaces }),
      ...(o.namespaceSelector === undefined ? {} : { namespaceSelector: o.namespaceSelector }),
      ...(o.spec ?? {}),
    },
    status: {},
  };
}

/**
 * PorterLB's multi-router example ("Configure PorterLB for Multi-router Clusters"): master1 and
 * worker-p001 under leaf1 (192.168.0.2), worker-p002 under leaf2 (192.168.1.1); speakers on master1
 * and worker-p002; Service IP 172.22.0.2 with pods on worker-p001 and worker-p002.
 */
export function porterLbExample(): {
  nodes: Json[];
  peers: Json[];
  conf: Json;
  eip: Json;
  service: Json;
  slice: Json;
} {
  return {
    nodes: [
      node({ name: 'master1', ip: '192.168.0.3', rack: 'leaf1', speaker: true }),
      node({ name: 'worker-p001', ip: '192.168.0.4' }),
      node({ name: 'worker-p002', ip: '192.168.1.2', rack: 'leaf2', speaker: true }),
    ],
    peers: [
      bgpPeer({ name: 'bgppeer-leaf1', peerAs: 50001, neighborAddress: '192.168.0.2', rack: 'leaf1' }),
      bgpPeer({ name: 'bgppeer-leaf2', peerAs: 50001, neighborAddress: '192.168.1.1', rack: 'leaf2' }),
    ],
    conf: bgpConf({ as: 50000, listenPort: 17900 }),
    eip: eip({ name: 'porter-bgp-eip', address: '172.22.0.2', isDefault: true }),
    service: service({ name: 'porter-bgp-svc', requestedIp: '172.22.0.2' }),
    slice: endpointSlice({
      service: 'porter-bgp-svc',
      endpoints: [{ nodeName: 'worker-p001' }, { nodeName: 'worker-p002' }],
    }),
  };
}

/** PorterLB's keys and values and OpenELB's for the same settings (src/core/types.ts, LABELS and ANNOTATIONS). */
const OPENELB_KEYS: Record<string, string> = {
  'porter.kubesphere.io/rack': 'openelb.kubesphere.io/rack',
  'eip.porter.kubesphere.io/v1alpha1': 'eip.openelb.kubesphere.io/v1alpha1',
  'eip.porter.kubesphere.io/v1alpha2': 'eip.openelb.kubesphere.io/v1alpha2',
  'eip.porter.kubesphere.io/is-default-eip': 'eip.openelb.kubesphere.io/is-default-eip',
};

/**
 * The object as an OpenELB user has it: every PorterLB label and annotation key (a BgpPeer's
 * nodeSelector included) under OpenELB's name, and `lb.kubesphere.io/v1alpha1: openelb`.
 */
export function asOpenElb(o: Json): Json {
  const copy = structuredClone(o);
  const rename = (map: unknown): void => {
    if (typeof map !== 'object' || map === null) return;
    const m = map as Record<string, unknown>;
    for (const [from, to] of Object.entries(OPENELB_KEYS)) {
      if (!(from in m)) continue;
      m[to] = m[from];
      delete m[from];
    }
    if (m['lb.kubesphere.io/v1alpha1'] === 'porter') m['lb.kubesphere.io/v1alpha1'] = 'openelb';
  };
  const meta = copy.metadata as Json;
  rename(meta.labels);
  rename(meta.annotations);
  rename(((copy.spec as Json | undefined)?.nodeSelector as Json | undefined)?.matchLabels);
  return copy;
}
