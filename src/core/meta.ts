/** apiVersion, kind and metadata: the part of an object every event carries, deletes included. */
import { invalidField } from '../errors.js';
import {
  type Obj,
  isObject,
  keyPath,
  optionalObject,
  own,
  parseLabelMap,
  requireDnsLabel,
  requireDnsSubdomain,
} from './fields.js';
import { KINDS, type KeyPair, type Kind, type ObjectMeta } from './types.js';

export const CRD_GROUP = 'network.kubesphere.io';
export const CRD_V1ALPHA2 = `${CRD_GROUP}/v1alpha2`;
export const CRD_V1ALPHA1 = `${CRD_GROUP}/v1alpha1`;

const API_VERSIONS: Readonly<Record<Kind, readonly string[]>> = {
  Node: ['v1'],
  Service: ['v1'],
  EndpointSlice: ['discovery.k8s.io/v1'],
  Eip: [CRD_V1ALPHA2, CRD_V1ALPHA1],
  BgpPeer: [CRD_V1ALPHA2, CRD_V1ALPHA1],
  BgpConf: [CRD_V1ALPHA2, CRD_V1ALPHA1],
};

/** The apiVersion racklb writes when it must name one (a resync's event header). */
export function preferredApiVersion(kind: Kind): string {
  return API_VERSIONS[kind][0] ?? 'v1';
}

const NAMESPACED: ReadonlySet<Kind> = new Set<Kind>(['Service', 'EndpointSlice']);

/** Opaque identifiers; the bound only keeps hostile input from bloating keys and logs. */
const MAX_OPAQUE = 256;

export interface Header {
  kind: Kind;
  apiVersion: string;
  /** The whole object. */
  obj: Obj;
  metadata: Obj;
  meta: ObjectMeta;
}

export interface Identity {
  kind: Kind;
  key: string;
  name: string;
  namespace?: string;
  uid: string;
  resourceVersion: string;
}

function isKind(value: unknown): value is Kind {
  return typeof value === 'string' && (KINDS as readonly string[]).includes(value);
}

/**
 * Checks apiVersion, kind (against `expected` when given) and metadata. Cluster-scoped kinds ignore
 * a namespace: the API server never sets one on them.
 */
export function readHeader(raw: unknown, expected?: Kind): Header {
  if (!isObject(raw)) throw invalidField('.', 'must be a JSON object', raw);
  const kindValue = own(raw, 'kind');
  if (expected !== undefined && kindValue !== expected) throw invalidField('kind', `must be ${expected}`, kindValue);
  if (!isKind(kindValue)) throw invalidField('kind', `must be one of ${KINDS.join(', ')}`, kindValue);
  const kind = kindValue;
  const versions = API_VERSIONS[kind];
  const apiVersion = own(raw, 'apiVersion');
  if (typeof apiVersion !== 'string' || !versions.includes(apiVersion)) {
    throw invalidField('apiVersion', `must be ${versions.join(' or ')} for kind ${kind}`, apiVersion);
  }
  const metadata = own(raw, 'metadata');
  if (!isObject(metadata)) throw invalidField('metadata', 'must be an object', metadata);
  const name = requireDnsSubdomain(own(metadata, 'name'), 'metadata.name');
  const uid = requireOpaque(own(metadata, 'uid'), 'metadata.uid');
  const resourceVersion = requireOpaque(own(metadata, 'resourceVersion'), 'metadata.resourceVersion');
  let meta: ObjectMeta;
  if (NAMESPACED.has(kind)) {
    const namespace = requireDnsLabel(own(metadata, 'namespace'), 'metadata.namespace');
    meta = { key: `${namespace}/${name}`, name, namespace, uid, resourceVersion };
  } else {
    meta = { key: name, name, uid, resourceVersion };
  }
  return { kind, apiVersion, obj: raw, metadata, meta };
}

function requireOpaque(value: unknown, field: string): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > MAX_OPAQUE) {
    throw invalidField(field, `must be a non-empty string of at most ${MAX_OPAQUE} characters`, value);
  }
  return value;
}

export function identify(raw: unknown): Identity {
  const { kind, meta } = readHeader(raw);
  return { kind, ...meta };
}

export function readLabels(metadata: Obj): Record<string, string> {
  return parseLabelMap(own(metadata, 'labels'), 'metadata.labels');
}

/** One annotation; annotations other than the ones racklb reads are not inspected. */
export function readAnnotation(metadata: Obj, key: string): string | undefined {
  const annotations = optionalObject(own(metadata, 'annotations'), 'metadata.annotations');
  if (annotations === undefined) return undefined;
  const value = own(annotations, key);
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'string') throw invalidField(keyPath('metadata.annotations', key), 'must be a string', value);
  return value;
}

/** A setting's value and the field it was read from, e.g. `metadata.labels["openelb.kubesphere.io/rack"]`. */
export interface Setting {
  value: string;
  field: string;
}

/**
 * A setting PorterLB and OpenELB name by different keys (KeyPair): whichever key is set, an empty
 * value counting as unset. Both set to different values is refused, naming both: racklb cannot
 * tell which one the user meant.
 */
function readEither(pair: KeyPair, base: string, lookup: (key: string) => string | undefined): Setting | undefined {
  let found: Setting | undefined;
  for (const key of pair) {
    const value = lookup(key);
    if (value === undefined || value === '') continue;
    const field = keyPath(base, key);
    if (found !== undefined && found.value !== value) {
      throw invalidField(field, `must equal ${found.field} (${JSON.stringify(found.value)}) or be left out: PorterLB's and OpenELB's key for one setting`, value);
    }
    found ??= { value, field };
  }
  return found;
}

/** A label of either product's key (readEither), from labels readLabels has checked. */
export function eitherLabel(labels: Record<string, string>, pair: KeyPair): Setting | undefined {
  return readEither(pair, 'metadata.labels', (key) => (Object.hasOwn(labels, key) ? labels[key] : undefined));
}

/** An annotation of either product's key (readEither). */
export function eitherAnnotation(metadata: Obj, pair: KeyPair): Setting | undefined {
  return readEither(pair, 'metadata.annotations', (key) => readAnnotation(metadata, key));
}
