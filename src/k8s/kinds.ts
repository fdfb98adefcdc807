/**
 * The Kubernetes resources racklb reads and writes, and where each lives in the API. One table, so
 * the bridge, the resync and the status writer can never disagree on a path or a plural.
 */
import { functionFor } from '../functions.js';
import type { Kind } from '../core/types.js';
import type { FunctionName } from '../store/keys.js';

export interface WatchedKind {
  kind: Kind;
  /** The version racklb lists and watches: OpenELB's storage version for the CRDs. */
  apiVersion: string;
  /** '' for the core group. */
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

export const CRD_GROUP = 'network.kubesphere.io';
export const CRD_VERSION = 'v1alpha2';

export const WATCHED: readonly WatchedKind[] = [
  { kind: 'Node', apiVersion: 'v1', group: '', version: 'v1', plural: 'nodes', namespaced: false },
  { kind: 'Service', apiVersion: 'v1', group: '', version: 'v1', plural: 'services', namespaced: true },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', namespaced: true },
  { kind: 'Eip', apiVersion: `${CRD_GROUP}/${CRD_VERSION}`, group: CRD_GROUP, version: CRD_VERSION, plural: 'eips', namespaced: false },
  { kind: 'BgpPeer', apiVersion: `${CRD_GROUP}/${CRD_VERSION}`, group: CRD_GROUP, version: CRD_VERSION, plural: 'bgppeers', namespaced: false },
  { kind: 'BgpConf', apiVersion: `${CRD_GROUP}/${CRD_VERSION}`, group: CRD_GROUP, version: CRD_VERSION, plural: 'bgpconfs', namespaced: false },
];

export function watchedKind(kind: Kind): WatchedKind {
  const w = WATCHED.find((k) => k.kind === kind);
  if (!w) throw new Error(`kind ${kind} is not watched`);
  return w;
}

function groupPath(w: WatchedKind): string {
  return w.group === '' ? `/api/${w.version}` : `/apis/${w.group}/${w.version}`;
}

/** The cluster-wide collection: what list and watch use. */
export function listPath(w: WatchedKind): string {
  return `${groupPath(w)}/${w.plural}`;
}

export type KubeObject = Record<string, unknown> & { metadata?: Record<string, unknown> };

export function metaOf(o: KubeObject): { name: string; namespace: string | undefined; uid: string; resourceVersion: string } {
  const m = (o.metadata ?? {}) as Record<string, unknown>;
  const str = (v: unknown): string => (typeof v === 'string' ? v : '');
  const ns = str(m.namespace);
  return { name: str(m.name), namespace: ns === '' ? undefined : ns, uid: str(m.uid), resourceVersion: str(m.resourceVersion) };
}

/** The store's key for an object (`namespace/name` or `name`), as src/core/meta.ts builds it. */
export function storeKey(w: WatchedKind, o: KubeObject): string {
  const { name, namespace } = metaOf(o);
  return w.namespaced ? `${namespace ?? ''}/${name}` : name;
}

export function functionOf(w: WatchedKind): FunctionName {
  return functionFor(w.kind).name;
}
