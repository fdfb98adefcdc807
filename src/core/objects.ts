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
import { familyName, IP_RULE, normalizeIp, parseIp, requireIp, type ParsedIp } from './ip.js';
import { eitherAnnotation, eitherLabel, readAnnotation, readHeader, readLabels } from './meta.js';
import {
  ANNOTATIONS,
  LABELS,
  type DualStack,
  type DualStackPolicy,
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
  const rack = eitherLabel(labels, LABELS.rack)?.value;
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
    speaker: placesSpeaker(labels),
  };
}

/** The speaker placement label, with PorterLB's value or OpenELB's: what the speaker DaemonSet's affinity selects. */
export function placesSpeaker(labels: Record<string, string>): boolean {
  return Object.hasOwn(labels, LABELS.speaker) && LABELS.speakerValues.includes(labels[LABELS.speaker] as string);
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
  const optIn = readAnnotation(metadata, ANNOTATIONS.optIn);
  const naming = optIn !== undefined && Object.hasOwn(ANNOTATIONS.optInValues, optIn) ? ANNOTATIONS.optInValues[optIn] : undefined;
  const managed = type === 'LoadBalancer' && naming !== undefined;
  const base = {
    kind: 'Service' as const,
    ...meta,
    namespace,
    labels: readLabels(metadata),
    managed,
    // Absent for PorterLB's value, so that those records are stored exactly as before.
    ...(managed && naming === 'OpenELB' ? { naming } : {}),
    externalTrafficPolicy: trafficPolicy(own(spec, 'externalTrafficPolicy')),
  };
  const listed = ipFamilies(own(spec, 'ipFamilies'));
  const policy = ipFamilyPolicy(own(spec, 'ipFamilyPolicy'));
  // PreferDualStack with one family is what the API server leaves on a single-stack cluster: single-stack.
  const dual = policy === 'RequireDualStack' || (policy === 'PreferDualStack' && listed.length === 2);
  const families: Family[] = dual ? [...listed, ...(['ipv4', 'ipv6'] as const).filter((f) => !listed.includes(f))] : listed;
  // A Service racklb does not own may carry another load balancer's notion of these fields; they
  // are neither racklb's to judge nor used, so only an owned Service has them validated.
  if (!managed) return { ...base, requestedIp: undefined, requestedPool: undefined, ipFamilies: families };
  const ip = requestedIpText(metadata, spec);
  const pool = requestedPoolText(metadata);
  const ingress = ingressIps(obj);
  // Absent rather than empty, so that a Service without one is stored exactly as before.
  const shown = ingress.length > 0 ? { ingressIps: ingress } : {};
  if (!dual) {
    return { ...base, requestedIp: ip && singleStackIp(ip, families[0]), requestedPool: pool && singleStackPool(pool), ipFamilies: families, ...shown };
  }
  const dualStack: DualStack = { policy: policy as DualStackPolicy, requestedIps: ip ? ipsPerFamily(ip) : {}, requestedPools: pool ? poolList(pool) : [] };
  return { ...base, requestedIp: undefined, requestedPool: undefined, ipFamilies: families, dualStack, ...shown };
}

/**
 * status.loadBalancer.ingress[].ip, canonical, in order, each once. An entry with only a hostname
 * is another load balancer's way of naming the Service, not an address racklb could keep.
 */
function ingressIps(obj: Record<string, unknown>): string[] {
  const status = optionalObject(own(obj, 'status'), 'status') ?? {};
  const loadBalancer = optionalObject(own(status, 'loadBalancer'), 'status.loadBalancer') ?? {};
  const out: string[] = [];
  optionalArray(own(loadBalancer, 'ingress'), 'status.loadBalancer.ingress').forEach((entry, i) => {
    const field = `status.loadBalancer.ingress[${i}]`;
    const text = optionalString(own(requireObject(entry, field), 'ip'), `${field}.ip`);
    if (text === undefined) return;
    const ip = normalizeIp(text, `${field}.ip`);
    if (!out.includes(ip)) out.push(ip);
  });
  return out;
}

const IP_FAMILY_POLICIES: readonly string[] = ['SingleStack', 'PreferDualStack', 'RequireDualStack'];

/** spec.ipFamilyPolicy; absent is SingleStack, as the API server defaults it. */
function ipFamilyPolicy(raw: unknown): string {
  const v = optionalString(raw, 'spec.ipFamilyPolicy');
  if (v === undefined) return 'SingleStack';
  if (!IP_FAMILY_POLICIES.includes(v)) throw invalidField('spec.ipFamilyPolicy', 'must be SingleStack, PreferDualStack or RequireDualStack', v);
  return v;
}

function trafficPolicy(raw: unknown): TrafficPolicy {
  const v = optionalString(raw, 'spec.externalTrafficPolicy');
  if (v === undefined || v === 'Cluster') return 'Cluster';
  if (v === 'Local') return 'Local';
  throw invalidField('spec.externalTrafficPolicy', 'must be Cluster or Local', v);
}

/** A request as written, with the field it came from. */
interface Request {
  text: string;
  field: string;
}

/** The annotation wins over spec.loadBalancerIP, as in PorterLB and OpenELB; an empty value counts as unset. */
function requestedIpText(metadata: Record<string, unknown>, spec: Record<string, unknown>): Request | undefined {
  const fromAnnotation = eitherAnnotation(metadata, ANNOTATIONS.requestedIp);
  if (fromAnnotation !== undefined) return { text: fromAnnotation.value, field: fromAnnotation.field };
  const fromSpec = optionalString(own(spec, 'loadBalancerIP'), 'spec.loadBalancerIP');
  return fromSpec === undefined ? undefined : { text: fromSpec, field: 'spec.loadBalancerIP' };
}

function requestedPoolText(metadata: Record<string, unknown>): Request | undefined {
  const pool = eitherAnnotation(metadata, ANNOTATIONS.pool);
  return pool === undefined ? undefined : { text: pool.value, field: pool.field };
}

const DUAL_STACK_NEEDS = 'one per IP family needs spec.ipFamilyPolicy PreferDualStack or RequireDualStack with both families in spec.ipFamilies';

/**
 * The elements of a comma-separated list (MetalLB's loadBalancerIPs style). A value without a comma
 * is one element, so a single address or pool reads, and fails, exactly as before lists.
 */
function elements(r: Request, example: string): string[] {
  const parts = r.text.split(',');
  if (parts.some((p) => p === '')) throw invalidField(r.field, `must be a comma-separated list without empty elements, e.g. "${example}"`, r.text);
  return parts;
}

/** Each element an address, at most one per family. */
function parseIpList(r: Request): ParsedIp[] {
  const ips: ParsedIp[] = [];
  for (const text of elements(r, '198.51.100.20,2001:db8::20')) {
    const ip = parseIp(text);
    if (ip === undefined) throw invalidField(r.field, IP_RULE, text);
    const twin = ips.find((x) => x.family === ip.family);
    if (twin !== undefined) throw invalidField(r.field, `must hold at most one address per IP family (${twin.text} and ${ip.text} are both ${familyName(ip.family)})`, r.text);
    ips.push(ip);
  }
  return ips;
}

/**
 * A single-stack Service holds one address. Of a single value only its form is checked here: one
 * of the wrong family is reported by the allocation, as it always was.
 */
function singleStackIp(r: Request, family: Family | undefined): string {
  if (!r.text.includes(',')) return normalizeIp(r.text, r.field);
  const ips = parseIpList(r);
  const foreign = family === undefined ? undefined : ips.find((ip) => ip.family !== family);
  if (foreign !== undefined && family !== undefined) {
    throw invalidField(r.field, `${foreign.text} is ${familyName(foreign.family)}, a family the Service does not have (spec.ipFamilies: ${familyName(family)}); ${DUAL_STACK_NEEDS}`, r.text);
  }
  throw invalidField(r.field, `a single-stack Service takes one address; ${DUAL_STACK_NEEDS}`, r.text);
}

function ipsPerFamily(r: Request): Partial<Record<Family, string>> {
  return Object.fromEntries(parseIpList(r).map((ip) => [ip.family, ip.text]));
}

function singleStackPool(r: Request): string {
  if (r.text.includes(',')) {
    poolList(r);
    throw invalidField(r.field, `a single-stack Service takes one pool; ${DUAL_STACK_NEEDS}`, r.text);
  }
  return requireDnsSubdomain(r.text, r.field);
}

/** Eip names; which family each serves is known only from its Eip, so that is checked at allocation. */
function poolList(r: Request): string[] {
  const names = elements(r, 'eip-v4,eip-v6').map((name) => requireDnsSubdomain(name, r.field));
  if (new Set(names).size < names.length) throw invalidField(r.field, 'must not name a pool twice', r.text);
  if (names.length > 2) throw invalidField(r.field, 'must name at most one pool per IP family (at most two)', r.text);
  return names;
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
