import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { identify, parseEndpointSlice, parseNode, parseObject, parseService } from '../../../src/core/objects.js';
import { RacklbError } from '../../../src/errors.js';
import { expectInvalidField, withPath } from './assert.js';
import { bgpConf, bgpPeer, eip, endpointSlice, node, service, uidFor, type Json } from '../../helpers/fixtures.js';

const IP_ANN = 'eip.porter.kubesphere.io/v1alpha1';
const POOL_ANN = 'eip.porter.kubesphere.io/v1alpha2';

describe('metadata', () => {
  const base = node({ name: 'n1', ip: '192.0.2.1' });
  it.each([
    { name: 'not an object', raw: 'Node', field: '.', rule: 'must be a JSON object' },
    { name: 'an array', raw: [base], field: '.', rule: 'must be a JSON object' },
    { name: 'null', raw: null, field: '.', rule: 'must be a JSON object' },
    { name: 'missing kind', raw: withPath(base, 'kind', undefined), field: 'kind', rule: 'must be Node' },
    { name: 'wrong apiVersion', raw: withPath(base, 'apiVersion', 'v2'), field: 'apiVersion', rule: 'must be v1 for kind Node' },
    { name: 'metadata missing', raw: withPath(base, 'metadata', undefined), field: 'metadata', rule: 'must be an object' },
    { name: 'metadata an array', raw: withPath(base, 'metadata', []), field: 'metadata', rule: 'must be an object' },
    { name: 'name missing', raw: withPath(base, 'metadata.name', undefined), field: 'metadata.name', rule: 'must be a DNS-1123 subdomain' },
    { name: 'name upper case', raw: withPath(base, 'metadata.name', 'Node1'), field: 'metadata.name', rule: 'must be a DNS-1123 subdomain' },
    { name: 'name too long', raw: withPath(base, 'metadata.name', 'a'.repeat(254)), field: 'metadata.name', rule: 'at most 253' },
    { name: 'name with empty label', raw: withPath(base, 'metadata.name', 'a..b'), field: 'metadata.name' },
    { name: 'uid missing', raw: withPath(base, 'metadata.uid', undefined), field: 'metadata.uid', rule: 'must be a non-empty string' },
    { name: 'uid empty', raw: withPath(base, 'metadata.uid', ''), field: 'metadata.uid', rule: 'must be a non-empty string' },
    { name: 'uid huge', raw: withPath(base, 'metadata.uid', 'u'.repeat(10_000)), field: 'metadata.uid', rule: 'at most 256' },
    { name: 'resourceVersion missing', raw: withPath(base, 'metadata.resourceVersion', undefined), field: 'metadata.resourceVersion' },
    { name: 'resourceVersion a number', raw: withPath(base, 'metadata.resourceVersion', 5), field: 'metadata.resourceVersion' },
    { name: 'labels not an object', raw: withPath(base, 'metadata.labels', 'a=b'), field: 'metadata.labels', rule: 'must be an object' },
    { name: 'label value not a string', raw: withPath(base, ['metadata', 'labels', 'a'], true), field: 'metadata.labels["a"]', rule: 'must be a label value' },
    { name: 'label key invalid', raw: withPath(base, ['metadata', 'labels', 'a b'], 'x'), field: 'metadata.labels["a b"]', rule: 'must be a label key' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseNode(raw), field, rule);
  });

  it('requires a namespace on namespaced kinds', () => {
    const raw = withPath(service({ name: 's' }), 'metadata.namespace', undefined);
    expectInvalidField(() => parseService(raw), 'metadata.namespace', 'must be a DNS-1123 label');
    expectInvalidField(() => parseService(withPath(raw, 'metadata.namespace', 'Kube_System')), 'metadata.namespace');
  });

  it('ignores a namespace on cluster-scoped kinds', () => {
    const rec = parseNode(withPath(base, 'metadata.namespace', 'default'));
    expect(rec.key).toBe('n1');
    expect(rec.namespace).toBeUndefined();
  });

  it('builds keys', () => {
    expect(parseNode(base).key).toBe('n1');
    expect(parseService(service({ name: 's', namespace: 'team-a' })).key).toBe('team-a/s');
  });
});

describe('identify', () => {
  it.each([
    { name: 'Node', raw: node({ name: 'n1' }), want: { kind: 'Node', key: 'n1', name: 'n1' } },
    { name: 'Service', raw: service({ name: 's', namespace: 'ns' }), want: { kind: 'Service', key: 'ns/s', name: 's', namespace: 'ns' } },
    { name: 'EndpointSlice', raw: endpointSlice({ service: 's' }), want: { kind: 'EndpointSlice', key: 'default/s-abcde', namespace: 'default' } },
    { name: 'Eip', raw: eip({ name: 'e', address: '192.0.2.0/24' }), want: { kind: 'Eip', key: 'e' } },
    { name: 'BgpPeer', raw: bgpPeer({ name: 'p', neighborAddress: '192.0.2.1' }), want: { kind: 'BgpPeer', key: 'p' } },
    { name: 'BgpConf', raw: bgpConf(), want: { kind: 'BgpConf', key: 'default' } },
  ])('identifies a $name', ({ raw, want }) => {
    expect(identify(raw)).toMatchObject({ ...want, resourceVersion: '1' });
  });

  it('works on an object whose spec is invalid (deletes must go through)', () => {
    const raw = withPath(bgpPeer({ name: 'p', neighborAddress: '192.0.2.1' }), 'spec.conf.peerAs', 0);
    expect(() => parseObject(raw)).toThrow(RacklbError);
    expect(identify(raw)).toEqual({ kind: 'BgpPeer', key: 'p', name: 'p', uid: uidFor('BgpPeer', 'p'), resourceVersion: '1' });
  });

  it('omits namespace for cluster-scoped kinds', () => {
    expect('namespace' in identify(node({ name: 'n1' }))).toBe(false);
  });

  it('still validates the header', () => {
    expectInvalidField(() => identify({ kind: 'Pod', apiVersion: 'v1', metadata: {} }), 'kind', 'must be one of Node, Service, EndpointSlice, Eip, BgpPeer, BgpConf');
    expectInvalidField(() => identify(withPath(node({ name: 'n' }), 'metadata.uid', '')), 'metadata.uid');
  });
});

describe('parseObject', () => {
  it.each([
    { name: 'Node', raw: node({ name: 'n1', ip: '192.0.2.1' }) },
    { name: 'Service', raw: service({ name: 's' }) },
    { name: 'EndpointSlice', raw: endpointSlice({ service: 's' }) },
    { name: 'Eip', raw: eip({ name: 'e', address: '192.0.2.0/24' }) },
    { name: 'BgpPeer', raw: bgpPeer({ name: 'p', neighborAddress: '192.0.2.1' }) },
    { name: 'BgpConf', raw: bgpConf() },
  ])('dispatches a $name', ({ name, raw }) => {
    expect(parseObject(raw).kind).toBe(name);
  });

  it.each([
    { name: 'unknown kind', raw: { apiVersion: 'v1', kind: 'Pod', metadata: {} }, field: 'kind' },
    { name: 'kind of wrong type', raw: { apiVersion: 'v1', kind: 7, metadata: {} }, field: 'kind' },
    { name: 'Service with discovery apiVersion', raw: withPath(service({ name: 's' }), 'apiVersion', 'discovery.k8s.io/v1'), field: 'apiVersion' },
    { name: 'EndpointSlice v1beta1', raw: withPath(endpointSlice({ service: 's' }), 'apiVersion', 'discovery.k8s.io/v1beta1'), field: 'apiVersion' },
    { name: 'Eip of another group', raw: withPath(eip({ name: 'e', address: '192.0.2.1' }), 'apiVersion', 'metallb.io/v1beta1'), field: 'apiVersion' },
  ])('rejects $name', ({ raw, field }) => {
    expectInvalidField(() => parseObject(raw), field);
  });

  it('typed parsers check the kind', () => {
    expectInvalidField(() => parseNode(service({ name: 's' })), 'kind', 'must be Node');
    expectInvalidField(() => parseService(node({ name: 'n' })), 'kind', 'must be Service');
  });

  it('survives prototype keys, deep nesting and huge strings', () => {
    const proto = JSON.parse(
      '{"apiVersion":"v1","kind":"Node","metadata":{"name":"n","uid":"u","resourceVersion":"1","labels":{"__proto__":{"polluted":"yes"}}}}',
    ) as unknown;
    expectInvalidField(() => parseObject(proto), 'metadata.labels["__proto__"]', 'must be a label key');
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();

    const protoAnn = JSON.parse(
      '{"apiVersion":"v1","kind":"Service","metadata":{"name":"s","namespace":"d","uid":"u","resourceVersion":"1","annotations":{"__proto__":"x"}},"spec":{"type":"LoadBalancer"}}',
    ) as unknown;
    expect(parseObject(protoAnn)).toMatchObject({ managed: false });

    let deep: unknown = 'x';
    for (let i = 0; i < 10_000; i++) deep = { a: deep };
    expect(parseObject(withPath(node({ name: 'n' }), 'spec.extra', deep)).kind).toBe('Node');
    expect(parseObject(withPath(node({ name: 'n' }), 'spec', deep)).kind).toBe('Node');
    expectInvalidField(() => parseObject(withPath(node({ name: 'n' }), 'spec.unschedulable', deep)), 'spec.unschedulable');

    const huge = 'a'.repeat(5_000_000);
    expectInvalidField(() => parseObject(withPath(node({ name: 'n' }), 'metadata.name', huge)), 'metadata.name');
    expectInvalidField(() => parseObject(withPath(node({ name: 'n', ip: '192.0.2.1' }), 'status.addresses.0.address', huge)), 'status.addresses[0].address');
    const err = expectInvalidField(() => parseObject(withPath(node({ name: 'n' }), ['metadata', 'labels', huge], 'x')), `metadata.labels["${'a'.repeat(317)}..."]`);
    expect(err.message.length).toBeLessThan(1000);
  });

  it('throws nothing but RacklbError on arbitrary JSON', () => {
    const kinds = fc.constantFrom('Node', 'Service', 'EndpointSlice', 'Eip', 'BgpPeer', 'BgpConf', 'Pod', '__proto__');
    const apiVersions = fc.constantFrom('v1', 'discovery.k8s.io/v1', 'network.kubesphere.io/v1alpha2', 'network.kubesphere.io/v1alpha1');
    const envelope = fc.record({
      apiVersion: apiVersions,
      kind: kinds,
      metadata: fc.oneof(fc.anything(), fc.record({ name: fc.constantFrom('a', 'default'), namespace: fc.constant('ns'), uid: fc.constant('u'), resourceVersion: fc.constant('1'), labels: fc.anything(), annotations: fc.anything() })),
      spec: fc.anything(),
      status: fc.anything(),
      endpoints: fc.anything(),
    });
    const inputs = fc.oneof(fc.anything(), fc.object(), fc.jsonValue(), envelope);
    fc.assert(
      fc.property(inputs, (raw) => {
        try {
          parseObject(raw);
        } catch (err) {
          expect(err).toBeInstanceOf(RacklbError);
          expect((err as RacklbError).code).toBe('RACKLB_INVALID_FIELD');
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('parses valid fixtures whatever their spec-level extras', () => {
    const fixtures: Json[] = [node({ name: 'n', ip: '192.0.2.1' }), service({ name: 's' }), eip({ name: 'e', address: '192.0.2.1' })];
    fc.assert(
      fc.property(fc.constantFrom(...fixtures), fc.string(), fc.jsonValue(), (raw, key, value) => {
        const rec = parseObject(withPath(raw, ['status', `x-${key}`], value));
        expect(rec.name).toBeDefined();
      }),
    );
  });
});

describe('parseNode', () => {
  it('reads PorterLB labels, address, readiness', () => {
    const rec = parseNode(node({ name: 'master1', ip: '192.168.0.3', rack: 'leaf1', speaker: true }));
    expect(rec).toMatchObject({
      kind: 'Node',
      key: 'master1',
      rack: 'leaf1',
      speaker: true,
      ready: true,
      schedulable: true,
      addresses: { ipv4: '192.168.0.3' },
      uid: uidFor('Node', 'master1'),
      resourceVersion: '1',
    });
    expect(rec.labels['porter.kubesphere.io/rack']).toBe('leaf1');
  });

  it.each([
    { name: 'no rack label', raw: node({ name: 'n' }), want: { rack: undefined, speaker: false } },
    { name: 'empty rack label', raw: node({ name: 'n', labels: { 'porter.kubesphere.io/rack': '' } }), want: { rack: undefined } },
    { name: 'speaker label with another value', raw: node({ name: 'n', labels: { 'lb.kubesphere.io/v1alpha1': 'metallb' } }), want: { speaker: false } },
    { name: 'speaker label with OpenELB\'s value', raw: node({ name: 'n', labels: { 'lb.kubesphere.io/v1alpha1': 'openelb' } }), want: { speaker: true } },
    { name: 'not ready', raw: node({ name: 'n', ready: false }), want: { ready: false } },
    { name: 'cordoned', raw: node({ name: 'n', unschedulable: true }), want: { schedulable: false } },
    { name: 'no status at all', raw: withPath(node({ name: 'n' }), 'status', undefined), want: { ready: false, addresses: {} } },
    { name: 'null spec', raw: withPath(node({ name: 'n' }), 'spec', null), want: { schedulable: true } },
    { name: 'dual stack, v6 canonicalised', raw: node({ name: 'n', ip: '192.0.2.1', ipv6: '2001:DB8:0::1' }), want: { addresses: { ipv4: '192.0.2.1', ipv6: '2001:db8::1' } } },
    {
      name: 'first InternalIP per family wins, ExternalIP ignored',
      raw: withPath(node({ name: 'n' }), 'status.addresses', [
        { type: 'ExternalIP', address: '203.0.113.9' },
        { type: 'InternalIP', address: '192.0.2.1' },
        { type: 'InternalIP', address: '192.0.2.2' },
        { type: 'Hostname', address: 'n' },
      ]),
      want: { addresses: { ipv4: '192.0.2.1' } },
    },
    {
      name: 'Ready condition status False',
      raw: withPath(node({ name: 'n' }), 'status.conditions', [{ type: 'Ready', status: 'False' }]),
      want: { ready: false },
    },
  ])('$name', ({ raw, want }) => {
    expect(parseNode(raw)).toMatchObject(want);
  });

  it.each([
    { name: 'InternalIP not an IP', path: 'status.addresses.0.address', value: 'node-1', field: 'status.addresses[0].address' },
    { name: 'InternalIP a number', path: 'status.addresses.0.address', value: 3232235523, field: 'status.addresses[0].address' },
    { name: 'address entry not an object', path: 'status.addresses.0', value: '192.0.2.1', field: 'status.addresses[0]' },
    { name: 'addresses not a list', path: 'status.addresses', value: {}, field: 'status.addresses' },
    { name: 'conditions not a list', path: 'status.conditions', value: 'Ready', field: 'status.conditions' },
    { name: 'condition not an object', path: 'status.conditions.0', value: 1, field: 'status.conditions[0]' },
    { name: 'unschedulable not a bool', path: 'spec.unschedulable', value: 'true', field: 'spec.unschedulable' },
    { name: 'spec not an object', path: 'spec', value: [], field: 'spec' },
    { name: 'status not an object', path: 'status', value: 'Ready', field: 'status' },
  ])('rejects $name', ({ path, value, field }) => {
    expectInvalidField(() => parseNode(withPath(node({ name: 'n', ip: '192.0.2.1' }), path, value)), field);
  });

  it('rejects an invalid rack label value', () => {
    expectInvalidField(
      () => parseNode(node({ name: 'n', labels: { 'porter.kubesphere.io/rack': 'leaf 1' } })),
      'metadata.labels["porter.kubesphere.io/rack"]',
      'must be a label value',
    );
  });
});

describe('parseService', () => {
  it('reads a managed Service', () => {
    expect(parseService(service({ name: 'web', namespace: 'shop', requestedIp: '172.22.0.2', pool: 'porter-bgp-eip' }))).toEqual({
      kind: 'Service',
      key: 'shop/web',
      name: 'web',
      namespace: 'shop',
      uid: uidFor('Service', 'web', 'shop'),
      resourceVersion: '1',
      labels: {},
      managed: true,
      externalTrafficPolicy: 'Cluster',
      requestedIp: '172.22.0.2',
      requestedPool: 'porter-bgp-eip',
      ipFamilies: ['ipv4'],
    });
  });

  it.each([
    { name: 'ClusterIP is not managed', raw: service({ name: 's', type: 'ClusterIP' }), want: { managed: false } },
    { name: 'no opt-in annotation', raw: service({ name: 's', managed: false }), want: { managed: false } },
    { name: 'OpenELB opt-in value', raw: service({ name: 's', managed: false, annotations: { 'lb.kubesphere.io/v1alpha1': 'openelb' } }), want: { managed: true, naming: 'OpenELB' } },
    { name: 'another opt-in value', raw: service({ name: 's', managed: false, annotations: { 'lb.kubesphere.io/v1alpha1': 'metallb' } }), want: { managed: false } },
    { name: 'no spec', raw: withPath(service({ name: 's' }), 'spec', undefined), want: { managed: false, externalTrafficPolicy: 'Cluster', ipFamilies: [] } },
    { name: 'Local policy', raw: service({ name: 's', externalTrafficPolicy: 'Local' }), want: { externalTrafficPolicy: 'Local' } },
    { name: 'policy absent defaults to Cluster', raw: withPath(service({ name: 's' }), 'spec.externalTrafficPolicy', undefined), want: { externalTrafficPolicy: 'Cluster' } },
    { name: 'loadBalancerIP when no annotation', raw: service({ name: 's', loadBalancerIP: '192.0.2.7' }), want: { requestedIp: '192.0.2.7' } },
    { name: 'annotation wins over loadBalancerIP', raw: service({ name: 's', loadBalancerIP: '192.0.2.7', requestedIp: '192.0.2.8' }), want: { requestedIp: '192.0.2.8' } },
    { name: 'empty annotation falls back to loadBalancerIP', raw: service({ name: 's', loadBalancerIP: '192.0.2.7', requestedIp: '' }), want: { requestedIp: '192.0.2.7' } },
    { name: 'IPv6 request canonicalised', raw: service({ name: 's', requestedIp: '2001:DB8::0:5', ipFamilies: ['IPv6'] }), want: { requestedIp: '2001:db8::5', ipFamilies: ['ipv6'] } },
    { name: 'dual stack families in order', raw: service({ name: 's', ipFamilies: ['IPv6', 'IPv4'] }), want: { ipFamilies: ['ipv6', 'ipv4'] } },
    { name: 'empty pool annotation', raw: service({ name: 's', pool: '' }), want: { requestedPool: undefined } },
    { name: 'unmanaged Service keeps no request, even an invalid one', raw: service({ name: 's', managed: false, requestedIp: 'garbage', loadBalancerIP: 'x' }), want: { requestedIp: undefined, requestedPool: undefined } },
    { name: 'labels kept', raw: service({ name: 's', labels: { 'eip.porter.kubesphere.io/v1alpha2': 'eip-a' } }), want: { labels: { 'eip.porter.kubesphere.io/v1alpha2': 'eip-a' } } },
  ])('$name', ({ raw, want }) => {
    expect(parseService(raw)).toMatchObject(want);
  });

  it.each([
    { name: 'bad policy', raw: service({ name: 's', externalTrafficPolicy: 'Global' as 'Local' }), field: 'spec.externalTrafficPolicy', rule: 'must be Cluster or Local' },
    { name: 'bad requested IP', raw: service({ name: 's', requestedIp: '300.1.1.1' }), field: `metadata.annotations["${IP_ANN}"]`, rule: 'must be an IPv4 address' },
    { name: 'requested IP a CIDR', raw: service({ name: 's', requestedIp: '192.0.2.0/24' }), field: `metadata.annotations["${IP_ANN}"]` },
    { name: 'bad loadBalancerIP', raw: service({ name: 's', loadBalancerIP: 'lb.example' }), field: 'spec.loadBalancerIP' },
    { name: 'loadBalancerIP a number', raw: withPath(service({ name: 's' }), 'spec.loadBalancerIP', 1), field: 'spec.loadBalancerIP', rule: 'must be a string' },
    { name: 'bad pool name', raw: service({ name: 's', pool: 'Not_A_Name' }), field: `metadata.annotations["${POOL_ANN}"]`, rule: 'must be a DNS-1123 subdomain' },
    { name: 'annotation not a string', raw: withPath(service({ name: 's' }), ['metadata', 'annotations', IP_ANN], 5), field: `metadata.annotations["${IP_ANN}"]`, rule: 'must be a string' },
    { name: 'annotations not an object', raw: withPath(service({ name: 's' }), 'metadata.annotations', 'a'), field: 'metadata.annotations', rule: 'must be an object' },
    { name: 'bad ip family', raw: service({ name: 's', ipFamilies: ['IPv4', 'IPX'] }), field: 'spec.ipFamilies[1]', rule: 'must be IPv4 or IPv6' },
    { name: 'ip families not a list', raw: withPath(service({ name: 's' }), 'spec.ipFamilies', 'IPv4'), field: 'spec.ipFamilies', rule: 'must be a list' },
    { name: 'type not a string', raw: withPath(service({ name: 's' }), 'spec.type', 1), field: 'spec.type' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseService(raw), field, rule);
  });
});

describe('parseEndpointSlice', () => {
  it('collects sorted unique ready nodes', () => {
    const raw = endpointSlice({
      service: 'web',
      namespace: 'shop',
      endpoints: [
        { nodeName: 'worker-b' },
        { nodeName: 'worker-a' },
        { nodeName: 'worker-b' },
        { nodeName: 'worker-c', ready: false },
        { nodeName: 'worker-d', ready: null },
        {},
      ],
    });
    expect(parseEndpointSlice(raw)).toMatchObject({
      kind: 'EndpointSlice',
      key: 'shop/web-abcde',
      namespace: 'shop',
      service: 'shop/web',
      readyNodes: ['worker-a', 'worker-b', 'worker-d'],
    });
  });

  it.each([
    { name: 'null endpoints', value: null },
    { name: 'no endpoints', value: undefined },
    { name: 'empty endpoints', value: [] },
  ])('$name gives no nodes', ({ value }) => {
    expect(parseEndpointSlice(withPath(endpointSlice({ service: 's' }), 'endpoints', value)).readyNodes).toEqual([]);
  });

  it('counts an endpoint with null conditions as ready', () => {
    const raw = withPath(endpointSlice({ service: 's', endpoints: [{ nodeName: 'n1' }] }), 'endpoints.0.conditions', null);
    expect(parseEndpointSlice(raw).readyNodes).toEqual(['n1']);
  });

  it.each([
    { name: 'no service-name label', raw: withPath(endpointSlice({ service: 's' }), ['metadata', 'labels', 'kubernetes.io/service-name'], undefined), field: 'metadata.labels["kubernetes.io/service-name"]', rule: 'must name the Service' },
    { name: 'empty service-name label', raw: endpointSlice({ name: 'web-1', service: '' }), field: 'metadata.labels["kubernetes.io/service-name"]' },
    { name: 'endpoints not a list', raw: withPath(endpointSlice({ service: 's' }), 'endpoints', {}), field: 'endpoints', rule: 'must be a list' },
    { name: 'endpoint not an object', raw: withPath(endpointSlice({ service: 's' }), 'endpoints', [1]), field: 'endpoints[0]' },
    { name: 'ready a string', raw: withPath(endpointSlice({ service: 's', endpoints: [{ nodeName: 'n' }] }), 'endpoints.0.conditions.ready', 'true'), field: 'endpoints[0].conditions.ready', rule: 'must be true, false or null' },
    { name: 'nodeName invalid', raw: endpointSlice({ service: 's', endpoints: [{ nodeName: 'Node_1' }] }), field: 'endpoints[0].nodeName' },
    { name: 'nodeName a number', raw: withPath(endpointSlice({ service: 's', endpoints: [{ nodeName: 'n' }] }), 'endpoints.0.nodeName', 1), field: 'endpoints[0].nodeName' },
  ])('rejects $name', ({ raw, field, rule }) => {
    expectInvalidField(() => parseEndpointSlice(raw), field, rule);
  });
});

/**
 * OpenELB (PorterLB's name since v0.4) moved the rack label and the Eip annotations under
 * openelb.kubesphere.io and opts in with `openelb`: its users' objects must read as PorterLB's do.
 */
describe("OpenELB's labels and annotations", () => {
  const OE_RACK = 'openelb.kubesphere.io/rack';
  const OE_IP = 'eip.openelb.kubesphere.io/v1alpha1';
  const OE_POOL = 'eip.openelb.kubesphere.io/v1alpha2';
  const OE_DEFAULT = 'eip.openelb.kubesphere.io/is-default-eip';
  const openElbService = (annotations: Record<string, string>): Json =>
    service({ name: 's', managed: false, annotations: { 'lb.kubesphere.io/v1alpha1': 'openelb', ...annotations } });

  it('reads the rack from OpenELB\'s label, alone or agreeing with PorterLB\'s', () => {
    expect(parseNode(node({ name: 'n', labels: { [OE_RACK]: 'leaf2' } })).rack).toBe('leaf2');
    expect(parseNode(node({ name: 'n', labels: { [OE_RACK]: 'leaf2', 'porter.kubesphere.io/rack': 'leaf2' } })).rack).toBe('leaf2');
    // An empty value names no rack, as PorterLB's does: the other key decides.
    expect(parseNode(node({ name: 'n', labels: { [OE_RACK]: '', 'porter.kubesphere.io/rack': 'leaf1' } })).rack).toBe('leaf1');
    expect(parseNode(node({ name: 'n', labels: { [OE_RACK]: '' } })).rack).toBeUndefined();
  });

  it('reads a Service that opted in with openelb: requested IP and pool from OpenELB\'s annotations', () => {
    expect(parseService(openElbService({ [OE_IP]: '198.51.100.7', [OE_POOL]: 'eip-a' }))).toMatchObject({
      managed: true,
      naming: 'OpenELB',
      requestedIp: '198.51.100.7',
      requestedPool: 'eip-a',
    });
    // Either product's key works under either opt-in value.
    expect(parseService(service({ name: 's', annotations: { [OE_POOL]: 'eip-b' } }))).toMatchObject({ managed: true, requestedPool: 'eip-b' });
    expect(parseService(service({ name: 's', annotations: { [OE_POOL]: 'eip-b' } }))).not.toHaveProperty('naming');
    // OpenELB's annotation wins over spec.loadBalancerIP, as PorterLB's does.
    expect(parseService(openElbService({ [OE_IP]: '198.51.100.8' }))).toMatchObject({ requestedIp: '198.51.100.8' });
    expect(parseService(withPath(openElbService({ [OE_IP]: '' }), 'spec.loadBalancerIP', '198.51.100.9'))).toMatchObject({ requestedIp: '198.51.100.9' });
  });

  it('reads an Eip marked default with OpenELB\'s annotation', () => {
    const raw = eip({ name: 'pool', address: '198.51.100.0/28' });
    (raw.metadata as Json).annotations = { [OE_DEFAULT]: 'true' };
    expect(parseObject(raw)).toMatchObject({ kind: 'Eip', isDefault: true });
    (raw.metadata as Json).annotations = { [OE_DEFAULT]: 'true', 'eip.porter.kubesphere.io/is-default-eip': 'false' };
    expectInvalidField(() => parseObject(raw), `metadata.annotations["${OE_DEFAULT}"]`, 'must equal metadata.annotations["eip.porter.kubesphere.io/is-default-eip"] ("false")');
  });

  it.each([
    {
      name: 'two racks',
      parse: () => parseNode(node({ name: 'n', labels: { 'porter.kubesphere.io/rack': 'leaf1', [OE_RACK]: 'leaf2' } })),
      field: `metadata.labels["${OE_RACK}"]`,
      rule: 'must equal metadata.labels["porter.kubesphere.io/rack"] ("leaf1") or be left out',
    },
    {
      name: 'two requested IPs',
      parse: () => parseService(openElbService({ [IP_ANN]: '198.51.100.7', [OE_IP]: '198.51.100.8' })),
      field: `metadata.annotations["${OE_IP}"]`,
      rule: `must equal metadata.annotations["${IP_ANN}"] ("198.51.100.7")`,
    },
    {
      name: 'two pools',
      parse: () => parseService(openElbService({ [POOL_ANN]: 'eip-a', [OE_POOL]: 'eip-b' })),
      field: `metadata.annotations["${OE_POOL}"]`,
      rule: "PorterLB's and OpenELB's key for one setting",
    },
    {
      name: 'a bad IP under OpenELB\'s key',
      parse: () => parseService(openElbService({ [OE_IP]: '300.1.1.1' })),
      field: `metadata.annotations["${OE_IP}"]`,
      rule: 'must be an IPv4 address',
    },
  ])('refuses $name, naming the key and the rule', ({ parse, field, rule }) => {
    expectInvalidField(parse, field, rule);
  });
});
