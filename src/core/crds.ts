/**
 * Eip and BgpConf, in network.kubesphere.io/v1alpha2 (OpenELB's storage version) and v1alpha1
 * (PorterLB's first API), both converted to the same records. BgpPeer lives in bgppeer.ts.
 */
import { invalidField } from '../errors.js';
import {
  isLabelValue,
  keyPath,
  optionalArray,
  optionalBool,
  optionalInt,
  optionalObject,
  optionalString,
  own,
  parseLabelMap,
  requireAsn,
  requireDnsLabel,
  requireInt,
  requireObject,
  requireString,
} from './fields.js';
import { normalizeIp, requireIpv4 } from './ip.js';
import { parsePoolAddress } from './ipam.js';
import { parseGracefulRestart } from './bgppeer.js';
import { CRD_V1ALPHA1, eitherAnnotation, readHeader } from './meta.js';
import { parseLabelSelector } from './selector.js';
import { ANNOTATIONS, type BgpConfRecord, type EipRecord, type LabelSelector } from './types.js';

export function parseEip(raw: unknown): EipRecord {
  const { obj, metadata, meta, apiVersion } = readHeader(raw, 'Eip');
  const spec = requireObject(own(obj, 'spec'), 'spec');
  const address = requireString(own(spec, 'address'), 'spec.address');
  const pool = parsePoolAddress(address, 'spec.address');
  const protocol = optionalString(own(spec, 'protocol'), 'spec.protocol');
  if (protocol !== undefined && protocol !== 'bgp') {
    throw invalidField('spec.protocol', 'must be bgp or empty: racklb announces over BGP only', protocol);
  }
  // Read only to reject a wrong type early; racklb has no use for them.
  optionalString(own(spec, 'interface'), 'spec.interface');
  optionalBool(own(spec, 'usingKnownIPs'), 'spec.usingKnownIPs');
  const v1 = apiVersion === CRD_V1ALPHA1;
  return {
    kind: 'Eip',
    ...meta,
    address,
    family: pool.family,
    firstIp: pool.first,
    lastIp: pool.last,
    size: pool.size.toString(),
    disable: optionalBool(own(spec, 'disable'), 'spec.disable'),
    isDefault: eitherAnnotation(metadata, ANNOTATIONS.defaultEip)?.value === 'true',
    priority: v1 ? 0 : (optionalInt(own(spec, 'priority'), 'spec.priority', Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'must be an integer') ?? 0),
    namespaces: v1 ? [] : namespaces(own(spec, 'namespaces')),
    namespaceSelector: v1 ? undefined : namespaceSelector(own(spec, 'namespaceSelector'), 'spec.namespaceSelector'),
  };
}

function namespaces(raw: unknown): string[] {
  const out: string[] = [];
  optionalArray(raw, 'spec.namespaces').forEach((v, i) => {
    const ns = requireDnsLabel(v, `spec.namespaces[${i}]`);
    if (!out.includes(ns)) out.push(ns);
  });
  return out;
}

/**
 * OpenELB declares namespaceSelector as a plain label map (`{team: a}`); a metav1.LabelSelector
 * (`{matchLabels: {...}, matchExpressions: [...]}`) is accepted too. A plain map is told apart by its
 * values all being strings. An empty map selects nothing, as in OpenELB, where Go's omitempty turns
 * `{}` into nil; only the explicit LabelSelector form can select every namespace.
 */
function namespaceSelector(raw: unknown, field: string): LabelSelector | undefined {
  const obj = optionalObject(raw, field);
  if (obj === undefined || Object.keys(obj).length === 0) return undefined;
  const isSelectorForm = ['matchLabels', 'matchExpressions'].some((k) => {
    const v = own(obj, k);
    return v !== undefined && typeof v !== 'string';
  });
  if (isSelectorForm) return parseLabelSelector(obj, field);
  return { matchLabels: parseLabelMap(obj, field), matchExpressions: [] };
}

/**
 * GoBGP's default port. PorterLB passes an unset listenPort straight through to GoBGP's StartBgp,
 * whose SetDefaultGlobalConfigValues turns 0 into 179; OpenELB's documentation says the same
 * ("The default value is 179"). 17900 only appears in its samples, chosen to dodge Calico.
 */
export const DEFAULT_LISTEN_PORT = 179;
/** GoBGP opens no listener for a negative port; PorterLB users write -1 for that. */
export const NO_LISTEN = -1;

export function parseBgpConf(raw: unknown): BgpConfRecord {
  const { obj, meta, apiVersion } = readHeader(raw, 'BgpConf');
  const spec = requireObject(own(obj, 'spec'), 'spec');
  const as = requireAsn(own(spec, 'as'), 'spec.as');
  if (apiVersion === CRD_V1ALPHA1) {
    const routerId = own(spec, 'routerID');
    const port = optionalInt(own(spec, 'port'), 'spec.port', 1, 65535);
    return {
      kind: 'BgpConf',
      ...meta,
      as,
      asPerRack: {},
      routerId: optionalString(routerId, 'spec.routerID') === undefined ? undefined : requireIpv4(routerId, 'spec.routerID'),
      listenPort: port ?? DEFAULT_LISTEN_PORT,
      listenAddresses: [],
      gracefulRestart: undefined,
    };
  }
  const routerId = own(spec, 'routerId');
  return {
    kind: 'BgpConf',
    ...meta,
    as,
    asPerRack: asPerRack(own(spec, 'asPerRack')),
    routerId: optionalString(routerId, 'spec.routerId') === undefined ? undefined : requireIpv4(routerId, 'spec.routerId'),
    listenPort: listenPort(own(spec, 'listenPort')),
    listenAddresses: optionalArray(own(spec, 'listenAddresses'), 'spec.listenAddresses').map((a, i) =>
      normalizeIp(a, `spec.listenAddresses[${i}]`),
    ),
    gracefulRestart: parseGracefulRestart(own(spec, 'gracefulRestart'), 'spec.gracefulRestart'),
  };
}

function listenPort(raw: unknown): number {
  if (raw === undefined || raw === null) return DEFAULT_LISTEN_PORT;
  if (raw === NO_LISTEN) return NO_LISTEN;
  return requireInt(raw, 'spec.listenPort', 1, 65535, 'must be -1 (do not listen) or an integer between 1 and 65535');
}

const RACK_KEY_RULE =
  'must be keyed by a rack name: a non-empty label value of at most 63 characters of letters, digits, "-", "_" and ".", starting and ending with a letter or digit';

function asPerRack(raw: unknown): Record<string, number> {
  const obj = optionalObject(raw, 'spec.asPerRack');
  if (obj === undefined) return {};
  const entries: [string, number][] = [];
  for (const rack of Object.keys(obj)) {
    const field = keyPath('spec.asPerRack', rack);
    if (rack === '' || !isLabelValue(rack)) throw invalidField(field, RACK_KEY_RULE);
    entries.push([rack, requireAsn(obj[rack], field)]);
  }
  return Object.fromEntries(entries);
}
