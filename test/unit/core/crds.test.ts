import { describe, expect, it } from 'vitest';

import { parseBgpConf, parseBgpPeer, parseEip } from '../../../src/core/objects.js';
import { expectInvalidField, withPath } from './assert.js';
import { CRD_API_V1ALPHA1, bgpConf, bgpPeer, eip, uidFor } from '../../helpers/fixtures.js';

const DEFAULT_ANN = 'metadata.annotations["eip.porter.kubesphere.io/is-default-eip"]';

describe('parseEip', () => {
  it('reads PorterLB\'s example pool', () => {
    expect(parseEip(eip({ name: 'porter-bgp-eip', address: '172.22.0.2', isDefault: true }))).toEqual({
      kind: 'Eip',
      key: 'porter-bgp-eip',
      name: 'porter-bgp-eip',
      uid: uidFor('Eip', 'porter-bgp-eip'),
      resourceVersion: '1',
      address: '172.22.0.2',
      family: 'ipv4',
      firstIp: '172.22.0.2',
      lastIp: '172.22.0.2',
      size: '1',
      disable: false,
      isDefault: true,
      priority: 0,
      namespaces: [],
      namespaceSelector: undefined,
    });
  });

  it.each([
    { name: 'CIDR', o: { address: '192.0.2.0/24' }, want: { firstIp: '192.0.2.0', lastIp: '192.0.2.255', size: '256' } },
    { name: 'range', o: { address: '192.168.0.91-192.168.0.100' }, want: { firstIp: '192.168.0.91', lastIp: '192.168.0.100', size: '10' } },
    { name: 'IPv6 /64', o: { address: '2001:db8:0:1::/64' }, want: { family: 'ipv6', firstIp: '2001:db8:0:1::', lastIp: '2001:db8:0:1:ffff:ffff:ffff:ffff', size: '18446744073709551616' } },
    { name: 'protocol bgp', o: { address: '192.0.2.1', protocol: 'bgp' }, want: { family: 'ipv4' } },
    { name: 'disabled', o: { address: '192.0.2.1', disable: true }, want: { disable: true } },
    { name: 'default annotation false', o: { address: '192.0.2.1', annotations: { 'eip.porter.kubesphere.io/is-default-eip': 'false' } }, want: { isDefault: false } },
    { name: 'priority and namespaces', o: { address: '192.0.2.1', priority: -5, namespaces: ['a', 'b', 'a'] }, want: { priority: -5, namespaces: ['a', 'b'] } },
    {
      name: 'namespaceSelector as OpenELB map',
      o: { address: '192.0.2.1', namespaceSelector: { 'kubesphere.io/workspace': 'ws' } },
      want: { namespaceSelector: { matchLabels: { 'kubesphere.io/workspace': 'ws' }, matchExpressions: [] } },
    },
    {
      name: 'namespaceSelector as LabelSelector',
      o: { address: '192.0.2.1', namespaceSelector: { matchExpressions: [{ key: 'team', operator: 'Exists' }] } },
      want: { namespaceSelector: { matchLabels: {}, matchExpressions: [{ key: 'team', operator: 'Exists', values: [] }] } },
    },
    {
      name: 'namespaceSelector map with a label called matchLabels',
      o: { address: '192.0.2.1', namespaceSelector: { matchLabels: 'yes' } },
      want: { namespaceSelector: { matchLabels: { matchLabels: 'yes' }, matchExpressions: [] } },
    },
    { name: 'empty namespaceSelector selects nothing', o: { address: '192.0.2.1', namespaceSelector: {} }, want: { namespaceSelector: undefined } },
  ])('$name', ({ o, want }) => {
    expect(parseEip(eip({ name: 'e', ...o }))).toMatchObject(want);
  });

  it('converts v1alpha1 (no priority, namespaces, or selector)', () => {
    const raw = withPath(eip({ name: 'old', address: '192.0.2.0/28', disable: true, priority: 7, namespaces: ['a'] }), 'apiVersion', CRD_API_V1ALPHA1);
    expect(parseEip(raw)).toMatchObject({ kind: 'Eip', size: '16', disable: true, priority: 0, namespaces: [], namespaceSelector: undefined });
  });

  it.each([
    { name: 'no spec', raw: withPath(eip({ name: 'e', address: '192.0.2.1' }), 'spec', undefined), field: 'spec', rule: 'must be an object' },
    { name: 'no address', raw: withPath(eip({ name: 'e', address: '192.0.2.1' }), 'spec.address', undefined), field: 'spec.address', rule: 'must be a string' },
    { name: 'garbage address', raw: eip({ name: 'e', address: 'pool-a' }), field: 'spec.address', rule: 'must be an IP address, a CIDR' },
    { name: 'layer2', raw: eip({ name: 'e', address: '192.0.2.1', protocol: 'layer2' }), field: 'spec.protocol', rule: 'racklb announces over BGP only' },
    { name: 'vip', raw: eip({ name: 'e', address: '192.0.2.1', protocol: 'vip' }), field: 'spec.protocol', rule: 'racklb announces over BGP only' },
    { name: 'disable not a bool', raw: withPath(eip({ name: 'e', address: '192.0.2.1' }), 'spec.disable', 'yes'), field: 'spec.disable', rule: 'must be true or false' },
    { name: 'priority fraction', raw: eip({ name: 'e', address: '192.0.2.1', priority: 1.5 }), field: 'spec.priority', rule: 'must be an integer' },
    { name: 'bad namespace', raw: eip({ name: 'e', address: '192.0.2.1', namespaces: ['ok', 'Not OK'] }), field: 'spec.namespaces[1]', rule: 'must be a DNS-1123 label' },
    { name: 'bad namespaceSelector key', raw: eip({ name: 'e', address: '192.0.2.1', namespaceSelector: { 'bad key': 'x' } }), field: 'spec.namespaceSelector["bad key"]', rule: 'must be a label key' },
    { name: 'bad LabelSelector operator', raw: eip({ name: 'e', address: '192.0.2.1', namespaceSelector: { matchExpressions: [{ key: 'a', operator: 'Nope' }] } }), field: 'spec.namespaceSelector.matchExpressions[0].operator' },
    { name: 'default annotation not a string', raw: eip({ name: 'e', address: '192.0.2.1', annotations: { 'eip.porter.kubesphere.io/is-default-eip': true as unknown as string } }), field: DEFAULT_ANN, rule: 'must be a string' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseEip(raw), field, rule);
  });
});

describe('parseBgpPeer', () => {
  const base = bgpPeer({ name: 'bgppeer-leaf1', peerAs: 50001, neighborAddress: '192.168.0.2', rack: 'leaf1' });

  it('reads PorterLB\'s example peer', () => {
    expect(parseBgpPeer(base)).toEqual({
      kind: 'BgpPeer',
      key: 'bgppeer-leaf1',
      name: 'bgppeer-leaf1',
      uid: uidFor('BgpPeer', 'bgppeer-leaf1'),
      resourceVersion: '1',
      peerAs: 50001,
      neighborAddress: '192.168.0.2',
      family: 'ipv4',
      authPassword: undefined,
      description: undefined,
      localAs: undefined,
      ebgpMultihop: { enabled: false, multihopTtl: 255 },
      timers: { connectRetry: undefined, holdTime: undefined, keepaliveInterval: undefined },
      transport: { passiveMode: false, remotePort: undefined },
      gracefulRestart: undefined,
      families: ['ipv4'],
      nodeSelector: { matchLabels: { 'porter.kubesphere.io/rack': 'leaf1' }, matchExpressions: [] },
    });
  });

  it('reads every optional field', () => {
    const raw = bgpPeer({
      name: 'full',
      neighborAddress: '2001:DB8::1',
      spec: {
        conf: { peerAs: 4200000000, neighborAddress: '2001:DB8::1', authPassword: 's3cret', description: 'leaf1 v6', localAs: 65001 },
        ebgpMultihop: { enabled: true, multihopTtl: 3 },
        timers: { config: { connectRetry: '5', holdTime: 9, keepaliveInterval: '3' } },
        transport: { passiveMode: true, remotePort: 1790 },
        gracefulRestart: { enabled: true, restartTime: 120, helperOnly: true, deferralTime: 360, notificationEnabled: true, longlivedEnabled: true, staleRoutesTime: 600 },
        afiSafis: [
          { config: { family: { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' }, enabled: true }, addPaths: { config: { sendMax: 8 } } },
          { config: { family: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' } } },
          { config: { family: { afi: 'AFI_IP6', safi: 'SAFI_UNICAST' } } },
        ],
        nodeSelector: { matchExpressions: [{ key: 'porter.kubesphere.io/rack', operator: 'In', values: ['leaf1'] }] },
      },
    });
    expect(parseBgpPeer(raw)).toMatchObject({
      peerAs: 4200000000,
      neighborAddress: '2001:db8::1',
      family: 'ipv6',
      authPassword: 's3cret',
      description: 'leaf1 v6',
      localAs: 65001,
      ebgpMultihop: { enabled: true, multihopTtl: 3 },
      timers: { connectRetry: 5, holdTime: 9, keepaliveInterval: 3 },
      transport: { passiveMode: true, remotePort: 1790 },
      gracefulRestart: { enabled: true, restartTime: 120, helperOnly: true, deferralTime: 360, notificationEnabled: true, longlivedEnabled: true, staleRoutesTime: 600 },
      families: ['ipv6', 'ipv4'],
    });
  });

  it.each([
    { name: 'no afiSafis: neighbor family', spec: { afiSafis: undefined }, want: { families: ['ipv4'] } },
    { name: 'entry without config: neighbor family', spec: { afiSafis: [{ addPaths: { config: { sendMax: 4 } } }] }, want: { families: ['ipv4'] } },
    { name: 'disabled entry left out', spec: { afiSafis: [{ config: { family: { afi: 'AFI_IP6' }, enabled: false } }, { config: { family: { afi: 'AFI_IP' } } }] }, want: { families: ['ipv4'] } },
    { name: 'localAs 0 means unset', spec: { conf: { peerAs: 1, neighborAddress: '192.0.2.1', localAs: 0 } }, want: { localAs: undefined } },
    { name: 'multihop enabled without ttl', spec: { ebgpMultihop: { enabled: true } }, want: { ebgpMultihop: { enabled: true, multihopTtl: 255 } } },
    { name: 'hold time 0 and keepalive', spec: { timers: { config: { holdTime: '0', keepaliveInterval: '30' } } }, want: { timers: { connectRetry: undefined, holdTime: 0, keepaliveInterval: 30 } } },
    { name: 'empty-string timers are unset', spec: { timers: { config: { holdTime: '', connectRetry: '' } } }, want: { timers: { connectRetry: undefined, holdTime: undefined, keepaliveInterval: undefined } } },
    { name: 'empty password is none', spec: { conf: { peerAs: 1, neighborAddress: '192.0.2.1', authPassword: '' } }, want: { authPassword: undefined } },
    { name: 'ASN bounds', spec: { conf: { peerAs: 4294967295, neighborAddress: '192.0.2.1' } }, want: { peerAs: 4294967295 } },
    { name: 'empty nodeSelector matches all', spec: { nodeSelector: {} }, want: { nodeSelector: { matchLabels: {}, matchExpressions: [] } } },
    { name: 'no nodeSelector', spec: { nodeSelector: undefined }, want: { nodeSelector: undefined } },
  ])('$name', ({ spec, want }) => {
    const raw = structuredClone(base) as { spec: Record<string, unknown> };
    for (const [k, v] of Object.entries(spec)) {
      if (v === undefined) delete raw.spec[k];
      else raw.spec[k] = v;
    }
    expect(parseBgpPeer(raw)).toMatchObject(want);
  });

  it.each([
    { name: 'no conf', path: 'spec.conf', value: undefined, field: 'spec.conf', rule: 'must be an object' },
    { name: 'peerAs 0', path: 'spec.conf.peerAs', value: 0, field: 'spec.conf.peerAs', rule: 'must be an integer between 1 and 4294967295' },
    { name: 'peerAs 2^32', path: 'spec.conf.peerAs', value: 4294967296, field: 'spec.conf.peerAs', rule: 'must be an integer between 1 and 4294967295' },
    { name: 'peerAs negative', path: 'spec.conf.peerAs', value: -1, field: 'spec.conf.peerAs' },
    { name: 'peerAs fraction', path: 'spec.conf.peerAs', value: 65000.5, field: 'spec.conf.peerAs' },
    { name: 'peerAs string', path: 'spec.conf.peerAs', value: '65000', field: 'spec.conf.peerAs' },
    { name: 'peerAs missing', path: 'spec.conf.peerAs', value: undefined, field: 'spec.conf.peerAs' },
    { name: 'neighbor not an IP', path: 'spec.conf.neighborAddress', value: 'leaf1', field: 'spec.conf.neighborAddress', rule: 'must be an IPv4 address (dotted quad) or an IPv6 address' },
    { name: 'neighbor missing', path: 'spec.conf.neighborAddress', value: undefined, field: 'spec.conf.neighborAddress' },
    { name: 'localAs too big', path: 'spec.conf.localAs', value: 4294967296, field: 'spec.conf.localAs' },
    { name: 'description not a string', path: 'spec.conf.description', value: 3, field: 'spec.conf.description', rule: 'must be a string' },
    { name: 'multihopTtl 0', path: 'spec.ebgpMultihop', value: { enabled: true, multihopTtl: 0 }, field: 'spec.ebgpMultihop.multihopTtl', rule: 'must be an integer between 1 and 255' },
    { name: 'multihopTtl 256', path: 'spec.ebgpMultihop', value: { enabled: true, multihopTtl: 256 }, field: 'spec.ebgpMultihop.multihopTtl' },
    { name: 'multihop enabled not bool', path: 'spec.ebgpMultihop', value: { enabled: 'yes' }, field: 'spec.ebgpMultihop.enabled' },
    { name: 'remotePort 0', path: 'spec.transport', value: { remotePort: 0 }, field: 'spec.transport.remotePort', rule: 'must be an integer between 1 and 65535' },
    { name: 'remotePort 65536', path: 'spec.transport', value: { remotePort: 65536 }, field: 'spec.transport.remotePort' },
    { name: 'passiveMode not bool', path: 'spec.transport', value: { passiveMode: 1 }, field: 'spec.transport.passiveMode' },
    { name: 'connectRetry 0', path: 'spec.timers', value: { config: { connectRetry: 0 } }, field: 'spec.timers.config.connectRetry', rule: 'must be an integer between 1 and 65535' },
    { name: 'connectRetry "5s"', path: 'spec.timers', value: { config: { connectRetry: '5s' } }, field: 'spec.timers.config.connectRetry', rule: 'seconds, as a number or a decimal string' },
    { name: 'holdTime 2', path: 'spec.timers', value: { config: { holdTime: 2 } }, field: 'spec.timers.config.holdTime', rule: 'must be 0 or an integer between 3 and 65535' },
    { name: 'holdTime "1"', path: 'spec.timers', value: { config: { holdTime: '1' } }, field: 'spec.timers.config.holdTime' },
    { name: 'holdTime negative', path: 'spec.timers', value: { config: { holdTime: -3 } }, field: 'spec.timers.config.holdTime' },
    { name: 'holdTime huge', path: 'spec.timers', value: { config: { holdTime: 70000 } }, field: 'spec.timers.config.holdTime' },
    { name: 'keepalive 0', path: 'spec.timers', value: { config: { keepaliveInterval: '0' } }, field: 'spec.timers.config.keepaliveInterval', rule: 'must be an integer between 1 and 65535' },
    { name: 'keepalive equal to holdTime', path: 'spec.timers', value: { config: { holdTime: '9', keepaliveInterval: 9 } }, field: 'spec.timers.config.keepaliveInterval', rule: 'must be less than holdTime (9)' },
    { name: 'timers.config not an object', path: 'spec.timers', value: { config: 'fast' }, field: 'spec.timers.config', rule: 'must be an object' },
    { name: 'bad afi', path: 'spec.afiSafis', value: [{ config: { family: { afi: 'AFI_L2VPN', safi: 'SAFI_EVPN' } } }], field: 'spec.afiSafis[0].config.family.afi', rule: 'must be AFI_IP or AFI_IP6' },
    { name: 'bad safi', path: 'spec.afiSafis', value: [{ config: { family: { afi: 'AFI_IP', safi: 'SAFI_FLOWSPEC_UNICAST' } } }], field: 'spec.afiSafis[0].config.family.safi', rule: 'racklb announces unicast routes only' },
    { name: 'all families disabled', path: 'spec.afiSafis', value: [{ config: { family: { afi: 'AFI_IP' }, enabled: false } }], field: 'spec.afiSafis', rule: 'must enable at least one address family' },
    { name: 'afiSafis not a list', path: 'spec.afiSafis', value: {}, field: 'spec.afiSafis', rule: 'must be a list' },
    { name: 'afiSafi entry not an object', path: 'spec.afiSafis', value: ['AFI_IP'], field: 'spec.afiSafis[0]' },
    { name: 'sendMax 256', path: 'spec.afiSafis', value: [{ addPaths: { config: { sendMax: 256 } } }], field: 'spec.afiSafis[0].addPaths.config.sendMax' },
    { name: 'enabled not bool', path: 'spec.afiSafis', value: [{ config: { enabled: 'true' } }], field: 'spec.afiSafis[0].config.enabled' },
    { name: 'restartTime over 12 bits', path: 'spec.gracefulRestart', value: { enabled: true, restartTime: 4096 }, field: 'spec.gracefulRestart.restartTime', rule: 'must be an integer between 0 and 4095' },
    { name: 'staleRoutesTime over 24 bits', path: 'spec.gracefulRestart', value: { staleRoutesTime: 16777216 }, field: 'spec.gracefulRestart.staleRoutesTime' },
    { name: 'gracefulRestart not an object', path: 'spec.gracefulRestart', value: true, field: 'spec.gracefulRestart' },
    { name: 'bad nodeSelector', path: 'spec.nodeSelector', value: { matchLabels: { rack: 'leaf 1' } }, field: 'spec.nodeSelector.matchLabels["rack"]', rule: 'must be a label value' },
  ])('rejects $name', ({ path, value, field, rule }) => {
    expectInvalidField(() => parseBgpPeer(withPath(base, path, value)), field, rule);
  });

  it('never shows the password in an error', () => {
    const long = 'p'.repeat(81);
    const err = expectInvalidField(() => parseBgpPeer(withPath(base, 'spec.conf.authPassword', long)), 'spec.conf.authPassword', 'at most 80 characters');
    expect(err.message).not.toContain('ppp');
    const err2 = expectInvalidField(() => parseBgpPeer(withPath(base, 'spec.conf.authPassword', 123456)), 'spec.conf.authPassword', 'must be a string');
    expect(err2.message).not.toContain('123456');
  });

  it('converts v1alpha1', () => {
    const raw = {
      apiVersion: CRD_API_V1ALPHA1,
      kind: 'BgpPeer',
      metadata: { name: 'old-peer', uid: 'u-1', resourceVersion: '42' },
      spec: { config: { peerAs: 65001, neighborAddress: '192.0.2.254' }, addPaths: { sendMax: 10 }, transport: { passiveMode: false, remotePort: 179 }, usingPortForward: true },
    };
    expect(parseBgpPeer(raw)).toMatchObject({
      key: 'old-peer',
      peerAs: 65001,
      neighborAddress: '192.0.2.254',
      families: ['ipv4'],
      transport: { passiveMode: false, remotePort: 179 },
      nodeSelector: undefined,
      resourceVersion: '42',
    });
    expectInvalidField(() => parseBgpPeer(withPath(raw, 'spec.config.peerAs', 0)), 'spec.config.peerAs', 'must be an integer between 1 and 4294967295');
    expectInvalidField(() => parseBgpPeer(withPath(raw, 'spec.config.neighborAddress', 'x')), 'spec.config.neighborAddress');
    expectInvalidField(() => parseBgpPeer(withPath(raw, 'spec.addPaths.sendMax', 300)), 'spec.addPaths.sendMax');
    expectInvalidField(() => parseBgpPeer(withPath(raw, 'spec.config', undefined)), 'spec.config', 'must be an object');
  });
});

describe('parseBgpConf', () => {
  it('reads a full v1alpha2 BgpConf', () => {
    const raw = bgpConf({
      as: 50000,
      listenPort: 17900,
      routerId: '172.22.0.10',
      asPerRack: { leaf1: 65001, leaf2: 65002 },
      spec: { listenAddresses: ['192.0.2.1', '2001:DB8::1'], gracefulRestart: { enabled: true, restartTime: 90 } },
    });
    expect(parseBgpConf(raw)).toEqual({
      kind: 'BgpConf',
      key: 'default',
      name: 'default',
      uid: uidFor('BgpConf', 'default'),
      resourceVersion: '1',
      as: 50000,
      asPerRack: { leaf1: 65001, leaf2: 65002 },
      routerId: '172.22.0.10',
      listenPort: 17900,
      listenAddresses: ['192.0.2.1', '2001:db8::1'],
      gracefulRestart: { enabled: true, restartTime: 90, helperOnly: false, deferralTime: 0, notificationEnabled: false, longlivedEnabled: false, staleRoutesTime: 0 },
    });
  });

  it.each([
    { name: 'listenPort absent: GoBGP default 179', o: {}, want: { listenPort: 179, routerId: undefined, asPerRack: {}, listenAddresses: [] } },
    { name: 'listenPort -1: no listener', o: { listenPort: -1 }, want: { listenPort: -1 } },
    { name: 'listenPort 65535', o: { listenPort: 65535 }, want: { listenPort: 65535 } },
    { name: 'empty routerId is unset', o: { routerId: '' }, want: { routerId: undefined } },
    { name: 'rack names may contain dots and underscores', o: { asPerRack: { 'row1.rack_2': 65010 } }, want: { asPerRack: { 'row1.rack_2': 65010 } } },
  ])('$name', ({ o, want }) => {
    expect(parseBgpConf(bgpConf(o))).toMatchObject(want);
  });

  it.each([
    { name: 'no spec', raw: withPath(bgpConf(), 'spec', undefined), field: 'spec' },
    { name: 'as 0', raw: bgpConf({ as: 0 }), field: 'spec.as', rule: 'must be an integer between 1 and 4294967295' },
    { name: 'as 2^32', raw: bgpConf({ as: 4294967296 }), field: 'spec.as' },
    { name: 'as missing', raw: withPath(bgpConf(), 'spec.as', undefined), field: 'spec.as' },
    { name: 'asPerRack value 0', raw: bgpConf({ asPerRack: { leaf1: 0 } }), field: 'spec.asPerRack["leaf1"]', rule: 'must be an integer between 1 and 4294967295' },
    { name: 'asPerRack value string', raw: withPath(bgpConf(), 'spec.asPerRack', { leaf1: '65001' }), field: 'spec.asPerRack["leaf1"]' },
    { name: 'asPerRack empty rack name', raw: bgpConf({ asPerRack: { '': 65001 } }), field: 'spec.asPerRack[""]', rule: 'must be keyed by a rack name' },
    { name: 'asPerRack bad rack name', raw: bgpConf({ asPerRack: { 'leaf 1': 65001 } }), field: 'spec.asPerRack["leaf 1"]' },
    { name: 'asPerRack __proto__', raw: withPath(bgpConf(), 'spec.asPerRack', JSON.parse('{"__proto__": 65001}')), field: 'spec.asPerRack["__proto__"]' },
    { name: 'asPerRack not an object', raw: withPath(bgpConf(), 'spec.asPerRack', [65001]), field: 'spec.asPerRack', rule: 'must be an object' },
    { name: 'routerId IPv6', raw: bgpConf({ routerId: '2001:db8::1' }), field: 'spec.routerId', rule: 'must be an IPv4 address' },
    { name: 'routerId garbage', raw: bgpConf({ routerId: 'node-1' }), field: 'spec.routerId' },
    { name: 'listenPort 0', raw: bgpConf({ listenPort: 0 }), field: 'spec.listenPort', rule: 'must be -1 (do not listen) or an integer between 1 and 65535' },
    { name: 'listenPort 65536', raw: bgpConf({ listenPort: 65536 }), field: 'spec.listenPort' },
    { name: 'listenPort -2', raw: bgpConf({ listenPort: -2 }), field: 'spec.listenPort' },
    { name: 'listenPort string', raw: withPath(bgpConf(), 'spec.listenPort', '179'), field: 'spec.listenPort' },
    { name: 'listenAddresses bad', raw: bgpConf({ spec: { listenAddresses: ['0.0.0.0', 'any'] } }), field: 'spec.listenAddresses[1]' },
    { name: 'gracefulRestart bad', raw: bgpConf({ spec: { gracefulRestart: { deferralTime: -1 } } }), field: 'spec.gracefulRestart.deferralTime' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseBgpConf(raw), field, rule);
  });

  it('converts v1alpha1 (as, routerID, port)', () => {
    const raw = {
      apiVersion: CRD_API_V1ALPHA1,
      kind: 'BgpConf',
      metadata: { name: 'default', uid: 'u-2', resourceVersion: '7' },
      spec: { as: 65000, routerID: '192.0.2.1', port: 17900 },
    };
    expect(parseBgpConf(raw)).toMatchObject({ as: 65000, routerId: '192.0.2.1', listenPort: 17900, asPerRack: {}, listenAddresses: [] });
    expect(parseBgpConf(withPath(raw, 'spec.port', undefined)).listenPort).toBe(179);
    expectInvalidField(() => parseBgpConf(withPath(raw, 'spec.port', 0)), 'spec.port', 'must be an integer between 1 and 65535');
    expectInvalidField(() => parseBgpConf(withPath(raw, 'spec.routerID', '::1')), 'spec.routerID', 'must be an IPv4 address');
    expectInvalidField(() => parseBgpConf(withPath(raw, 'spec.as', 0)), 'spec.as');
  });
});
