/**
 * Raw Kubernetes JSON -> validated records. Built-in kinds live here, racklb's CRDs (Eip, BgpPeer,
 * BgpConf) in crds.ts; parseObject dispatches over both.
 */
import { invalidField } from '../errors.js';
import { parseBgpPeer } from './bgppeer.js';
import { parseBgpConf, parseEip } from './crds.js';
import {
  isDnsLabel,
  keyPath,
  optionalArray,
  optionalBool,
  optionalObject,
  optionalString,
  own,
  requireDnsSubdomain,
  requireObject,
} from './fields.js';
import { normalizeIp, requireIp } from './ip.js';
import { readAnnotation, readHeader, readLabels } from './meta.js';
import {
  ANNOTATIONS,
  LABELS,
  type EndpointSliceRecord,
  type Family,
  type KubeRecord,
  type NodeRecord,
  type ServiceRecord,
  type TrafficPolicy,
} from './types.js';

export { identify, type Identity } from './meta.js';
export { parseBgpPeer } from './bgppeer.js';
export { parseBgpConf, parseEip } from './crds.js';

export function parseObject(raw: unknown): KubeRecord {
  const { kind } = readHeader(raw);
  switch (kind) {
    case 'Node':
      return parseNode(raw);
    case 'Service':
      return parseService(raw);
    case 'EndpointSlice':
      return parseEndpointSlice(raw);
    case 'Eip':
      return parseEip(raw);
    case 'BgpPeer':
      return parseBgpPeer(raw);
    case 'BgpConf':
      return parseBgpConf(raw);
  }
}

export function parseNode(raw: unknown): NodeRecord {
  const { obj, metadata, meta } = readHeader(raw, 'Node');
  const labels = readLabels(metadata);
  // readLabels has checked the value as a label value; an empty one is legal but names no rack.
  const rack = Object.hasOwn(labels, LABELS.rack) && labels[LABELS.rack] !== '' ? labels[LABELS.rack] : undefined;
  const spec = optionalObject(own(obj, 'spec'), 'spec') ?? {};
  const status = optionalObject(own(obj, 'status'), 'status') ?? {};
  return {
    kind: 'Node',
    ...meta,
    labels,
    rack,
    addresses: nodeAddresses(own(status, 'addresses')),
    ready: nodeReady(own(status, 'conditions')),
    schedulable: !optionalBool(own(spec, 'unschedulable'), 'spec.unschedulable'),
    speaker: Object.hasOwn(labels, LABELS.speaker) && labels[LABELS.speaker] === LABELS.speakerValue,
  };
}

function nodeAddresses(raw: unknown): Partial<Record<Family, string>> {
  const out: Partial<Record<Family, string>> = {};
  optionalArray(raw, 'status.addresses').forEach((entry, i) => {
    const field = `status.addresses[${i}]`;
    const a = requireObject(entry, field);
    if (own(a, 'type') !== 'InternalIP') return;
    const ip = requireIp(own(a, 'address'), `${field}.address`);
    out[ip.family] ??= ip.text;
  });
  return out;
}

function nodeReady(raw: unknown): boolean {
  let ready = false;
  optionalArray(raw, 'status.conditions').forEach((entry, i) => {
    const c = requireObject(entry, `status.conditions[${i}]`);
    if (own(c, 'type') === 'Ready') ready = own(c, 'status') === 'True';
  });
  return ready;
}

const IP_FAMILIES: Readonly<Record<string, Family>> = { IPv4: 'ipv4', IPv6: 'ipv6' };

export function parseService(raw: unknown): ServiceRecord {
  const { obj, metadata, meta } = readHeader(raw, 'Service');
  const namespace = meta.namespace ?? '';
  const spec = optionalObject(own(obj, 'spec'), 'spec') ?? {};
  const type = optionalString(own(spec, 'type'), 'spec.type') ?? 'ClusterIP';
  const managed = type === 'LoadBalancer' && readAnnotation(metadata, ANNOTATIONS.optIn) === ANNOTATIONS.optInValue;
  return {
    kind: 'Service',
    ...meta,
    namespace,
    labels: readLabels(metadata),
    managed,
    externalTrafficPolicy: trafficPolicy(own(spec, 'externalTrafficPolicy')),
    // A Service racklb does not own may carry another load balancer's notion of these fields; they
    // are neither racklb's to judge nor used, so only an owned Service has them validated.
    requestedIp: managed ? requestedIp(metadata, spec) : undefined,
    requestedPool: managed ? requestedPool(metadata) : undefined,
    ipFamilies: ipFamilies(own(spec, 'ipFamilies')),
  };
}

function trafficPolicy(raw: unknown): TrafficPolicy {
  const v = optionalString(raw, 'spec.externalTrafficPolicy');
  if (v === undefined || v === 'Cluster') return 'Cluster';
  if (v === 'Local') return 'Local';
  throw invalidField('spec.externalTrafficPolicy', 'must be Cluster or Local', v);
}

/** The annotation wins over spec.loadBalancerIP, as in PorterLB; an empty value counts as unset. */
function requestedIp(metadata: Record<string, unknown>, spec: Record<string, unknown>): string | undefined {
  const fromAnnotation = readAnnotation(metadata, ANNOTATIONS.requestedIp);
  if (fromAnnotation !== undefined && fromAnnotation !== '') {
    return normalizeIp(fromAnnotation, keyPath('metadata.annotations', ANNOTATIONS.requestedIp));
  }
  const fromSpec = optionalString(own(spec, 'loadBalancerIP'), 'spec.loadBalancerIP');
  return fromSpec === undefined ? undefined : normalizeIp(fromSpec, 'spec.loadBalancerIP');
}

function requestedPool(metadata: Record<string, unknown>): string | undefined {
  const pool = readAnnotation(metadata, ANNOTATIONS.pool);
  if (pool === undefined || pool === '') return undefined;
  return requireDnsSubdomain(pool, keyPath('metadata.annotations', ANNOTATIONS.pool));
}

function ipFamilies(raw: unknown): Family[] {
  const out: Family[] = [];
  optionalArray(raw, 'spec.ipFamilies').forEach((v, i) => {
    const family = typeof v === 'string' && Object.hasOwn(IP_FAMILIES, v) ? IP_FAMILIES[v] : undefined;
    if (family === undefined) throw invalidField(`spec.ipFamilies[${i}]`, 'must be IPv4 or IPv6', v);
    if (!out.includes(family)) out.push(family);
  });
  return out;
}

export function parseEndpointSlice(raw: unknown): EndpointSliceRecord {
  const { obj, metadata, meta } = readHeader(raw, 'EndpointSlice');
  const namespace = meta.namespace ?? '';
  const labels = readLabels(metadata);
  const serviceName = Object.hasOwn(labels, LABELS.serviceName) ? labels[LABELS.serviceName] : undefined;
  if (serviceName === undefined || !isDnsLabel(serviceName)) {
    throw invalidField(keyPath('metadata.labels', LABELS.serviceName), 'must name the Service this slice belongs to', serviceName);
  }
  return {
    kind: 'EndpointSlice',
    ...meta,
    namespace,
    service: `${namespace}/${serviceName}`,
    readyNodes: readyNodes(own(obj, 'endpoints')),
  };
}

/** Kubernetes: a missing or null `ready` condition means ready. */
function readyNodes(raw: unknown): string[] {
  const nodes = new Set<string>();
  optionalArray(raw, 'endpoints').forEach((entry, i) => {
    const field = `endpoints[${i}]`;
    const ep = requireObject(entry, field);
    const conditions = optionalObject(own(ep, 'conditions'), `${field}.conditions`) ?? {};
    const ready = own(conditions, 'ready');
    if (ready !== undefined && ready !== null && typeof ready !== 'boolean') {
      throw invalidField(`${field}.conditions.ready`, 'must be true, false or null', ready);
    }
    const nodeName = optionalString(own(ep, 'nodeName'), `${field}.nodeName`);
    if (ready === false || nodeName === undefined) return;
    nodes.add(requireDnsSubdomain(nodeName, `${field}.nodeName`));
  });
  return [...nodes].sort();
}
