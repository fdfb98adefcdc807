/** BgpPeer: one router a speaker peers with. v1alpha2 is OpenELB's shape, v1alpha1 PorterLB's first one. */
import { invalidField } from '../errors.js';
import { REDACTED } from '../secrets.js';
import {
  type Obj,
  MAX_ASN,
  intRule,
  optionalArray,
  optionalBool,
  optionalInt,
  optionalObject,
  optionalString,
  own,
  requireAsn,
  requireInt,
  requireObject,
} from './fields.js';
import { requireIp } from './ip.js';
import { CRD_V1ALPHA1, readHeader } from './meta.js';
import { parseLabelSelector } from './selector.js';
import type { BgpPeerRecord, Family, GracefulRestart, ObjectMeta } from './types.js';

/** GoBGP's TTL when ebgp-multihop is enabled without one; only read when multihop is enabled. */
export const DEFAULT_MULTIHOP_TTL = 255;
/** Linux's TCP_MD5SIG_MAXKEYLEN. */
const MAX_MD5_KEY = 80;
const MAX_SECONDS = 65535;

export function parseBgpPeer(raw: unknown): BgpPeerRecord {
  const { obj, meta, apiVersion } = readHeader(raw, 'BgpPeer');
  const spec = requireObject(own(obj, 'spec'), 'spec');
  return apiVersion === CRD_V1ALPHA1 ? fromV1alpha1(spec, meta) : fromV1alpha2(spec, meta);
}

function fromV1alpha2(spec: Obj, meta: ObjectMeta): BgpPeerRecord {
  const conf = requireObject(own(spec, 'conf'), 'spec.conf');
  const neighbor = requireIp(own(conf, 'neighborAddress'), 'spec.conf.neighborAddress');
  const multihop = optionalObject(own(spec, 'ebgpMultihop'), 'spec.ebgpMultihop') ?? {};
  const transport = optionalObject(own(spec, 'transport'), 'spec.transport') ?? {};
  return {
    kind: 'BgpPeer',
    ...meta,
    peerAs: requireAsn(own(conf, 'peerAs'), 'spec.conf.peerAs'),
    neighborAddress: neighbor.text,
    family: neighbor.family,
    authPassword: authPassword(own(conf, 'authPassword'), 'spec.conf.authPassword'),
    description: optionalString(own(conf, 'description'), 'spec.conf.description'),
    // Go's omitempty cannot tell 0 from unset, and GoBGP reads a local AS of 0 as "the global AS".
    localAs: optionalInt(own(conf, 'localAs'), 'spec.conf.localAs', 0, MAX_ASN) || undefined,
    ebgpMultihop: {
      enabled: optionalBool(own(multihop, 'enabled'), 'spec.ebgpMultihop.enabled'),
      multihopTtl: optionalInt(own(multihop, 'multihopTtl'), 'spec.ebgpMultihop.multihopTtl', 1, 255) ?? DEFAULT_MULTIHOP_TTL,
    },
    timers: timers(own(spec, 'timers')),
    transport: {
      passiveMode: optionalBool(own(transport, 'passiveMode'), 'spec.transport.passiveMode'),
      remotePort: optionalInt(own(transport, 'remotePort'), 'spec.transport.remotePort', 1, 65535),
    },
    gracefulRestart: parseGracefulRestart(own(spec, 'gracefulRestart'), 'spec.gracefulRestart'),
    families: families(own(spec, 'afiSafis'), neighbor.family),
    nodeSelector: parseLabelSelector(own(spec, 'nodeSelector'), 'spec.nodeSelector'),
  };
}

/** v1alpha1 has no node selector (every speaker peers) and no timers; usingPortForward is PorterLB's iptables trick, not ours. */
function fromV1alpha1(spec: Obj, meta: ObjectMeta): BgpPeerRecord {
  const config = requireObject(own(spec, 'config'), 'spec.config');
  const neighbor = requireIp(own(config, 'neighborAddress'), 'spec.config.neighborAddress');
  const transport = optionalObject(own(spec, 'transport'), 'spec.transport') ?? {};
  const addPaths = optionalObject(own(spec, 'addPaths'), 'spec.addPaths') ?? {};
  optionalInt(own(addPaths, 'sendMax'), 'spec.addPaths.sendMax', 0, 255);
  optionalBool(own(spec, 'usingPortForward'), 'spec.usingPortForward');
  return {
    kind: 'BgpPeer',
    ...meta,
    peerAs: requireAsn(own(config, 'peerAs'), 'spec.config.peerAs'),
    neighborAddress: neighbor.text,
    family: neighbor.family,
    authPassword: authPassword(own(config, 'authPassword'), 'spec.config.authPassword'),
    description: optionalString(own(config, 'description'), 'spec.config.description'),
    localAs: undefined,
    ebgpMultihop: { enabled: false, multihopTtl: DEFAULT_MULTIHOP_TTL },
    timers: { connectRetry: undefined, holdTime: undefined, keepaliveInterval: undefined },
    transport: {
      passiveMode: optionalBool(own(transport, 'passiveMode'), 'spec.transport.passiveMode'),
      remotePort: optionalInt(own(transport, 'remotePort'), 'spec.transport.remotePort', 1, 65535),
    },
    gracefulRestart: undefined,
    families: [neighbor.family],
    nodeSelector: undefined,
  };
}

/** The password never appears in an error message, not even when it has the wrong type. */
function authPassword(raw: unknown, field: string): string | undefined {
  if (raw === undefined || raw === null || raw === '') return undefined;
  if (typeof raw !== 'string') throw invalidField(field, 'must be a string');
  if (raw.length > MAX_MD5_KEY) throw invalidField(field, `must be at most ${MAX_MD5_KEY} characters (the TCP-MD5 key limit)`);
  // The journal keeps events with the password replaced by this placeholder (src/secrets.ts); a
  // replayed copy must not become the session's MD5 key.
  if (raw === REDACTED) throw invalidField(field, `must not be ${JSON.stringify(REDACTED)}, the journal's placeholder for a redacted password: apply the BgpPeer from its source`);
  return raw;
}

/** OpenELB types the timers as strings ("90") while users also write numbers; both are seconds. */
function seconds(raw: unknown, field: string, min: number, rule: string): number | undefined {
  if (raw === undefined || raw === null || raw === '') return undefined;
  const n = typeof raw === 'string' && /^\d{1,10}$/.test(raw) ? Number(raw) : raw;
  return requireInt(n, field, min, MAX_SECONDS, rule);
}

const SECONDS = '(seconds, as a number or a decimal string)';
const POSITIVE_SECONDS_RULE = `${intRule(1, MAX_SECONDS)} ${SECONDS}`;
const HOLD_TIME_RULE = `must be 0 or an integer between 3 and ${MAX_SECONDS} ${SECONDS}`;

function timers(raw: unknown): BgpPeerRecord['timers'] {
  const t = optionalObject(raw, 'spec.timers') ?? {};
  const f = 'spec.timers.config';
  const c = optionalObject(own(t, 'config'), f) ?? {};
  const connectRetry = seconds(own(c, 'connectRetry'), `${f}.connectRetry`, 1, POSITIVE_SECONDS_RULE);
  // RFC 4271: a hold time is 0 (no keepalives) or at least 3 seconds. GoBGP reads 0 as its default (90).
  const holdTime = seconds(own(c, 'holdTime'), `${f}.holdTime`, 0, HOLD_TIME_RULE);
  if (holdTime === 1 || holdTime === 2) throw invalidField(`${f}.holdTime`, HOLD_TIME_RULE, own(c, 'holdTime'));
  const keepaliveInterval = seconds(own(c, 'keepaliveInterval'), `${f}.keepaliveInterval`, 1, POSITIVE_SECONDS_RULE);
  if (keepaliveInterval !== undefined && holdTime !== undefined && holdTime > 0 && keepaliveInterval >= holdTime) {
    throw invalidField(`${f}.keepaliveInterval`, `must be less than holdTime (${holdTime})`, own(c, 'keepaliveInterval'));
  }
  return { connectRetry, holdTime, keepaliveInterval };
}

const AFIS: Readonly<Record<string, Family>> = { AFI_IP: 'ipv4', AFI_IP6: 'ipv6' };

/**
 * Families in the order given. An entry without config or family stands for the neighbor address's
 * family, as PorterLB fills it in; only an explicit `enabled: false` turns an entry off.
 */
function families(raw: unknown, neighborFamily: Family): Family[] {
  const entries = optionalArray(raw, 'spec.afiSafis');
  if (entries.length === 0) return [neighborFamily];
  const out: Family[] = [];
  entries.forEach((entry, i) => {
    const field = `spec.afiSafis[${i}]`;
    const e = requireObject(entry, field);
    const config = optionalObject(own(e, 'config'), `${field}.config`) ?? {};
    const family = afiSafiFamily(own(config, 'family'), `${field}.config.family`) ?? neighborFamily;
    const enabledRaw = own(config, 'enabled');
    const enabled = enabledRaw === undefined || enabledRaw === null ? true : optionalBool(enabledRaw, `${field}.config.enabled`);
    const addPaths = optionalObject(own(e, 'addPaths'), `${field}.addPaths`) ?? {};
    const apConfig = optionalObject(own(addPaths, 'config'), `${field}.addPaths.config`) ?? {};
    optionalInt(own(apConfig, 'sendMax'), `${field}.addPaths.config.sendMax`, 0, 255);
    optionalBool(own(apConfig, 'receive'), `${field}.addPaths.config.receive`);
    if (enabled && !out.includes(family)) out.push(family);
  });
  if (out.length === 0) throw invalidField('spec.afiSafis', 'must enable at least one address family');
  return out;
}

function afiSafiFamily(raw: unknown, field: string): Family | undefined {
  const fam = optionalObject(raw, field);
  if (fam === undefined) return undefined;
  const afi = own(fam, 'afi');
  const family = typeof afi === 'string' && Object.hasOwn(AFIS, afi) ? AFIS[afi] : undefined;
  if (family === undefined) throw invalidField(`${field}.afi`, 'must be AFI_IP or AFI_IP6', afi);
  const safi = own(fam, 'safi');
  if (safi !== undefined && safi !== null && safi !== 'SAFI_UNICAST') {
    throw invalidField(`${field}.safi`, 'must be SAFI_UNICAST: racklb announces unicast routes only', safi);
  }
  return family;
}

/** Bounds are the wire formats': 12-bit restart time (RFC 4724), 24-bit stale time (RFC 9494). */
export function parseGracefulRestart(raw: unknown, field: string): GracefulRestart | undefined {
  const gr = optionalObject(raw, field);
  if (gr === undefined) return undefined;
  return {
    enabled: optionalBool(own(gr, 'enabled'), `${field}.enabled`),
    restartTime: optionalInt(own(gr, 'restartTime'), `${field}.restartTime`, 0, 4095) ?? 0,
    helperOnly: optionalBool(own(gr, 'helperOnly'), `${field}.helperOnly`),
    deferralTime: optionalInt(own(gr, 'deferralTime'), `${field}.deferralTime`, 0, 65535) ?? 0,
    notificationEnabled: optionalBool(own(gr, 'notificationEnabled'), `${field}.notificationEnabled`),
    longlivedEnabled: optionalBool(own(gr, 'longlivedEnabled'), `${field}.longlivedEnabled`),
    staleRoutesTime: optionalInt(own(gr, 'staleRoutesTime'), `${field}.staleRoutesTime`, 0, 16777215) ?? 0,
  };
}
