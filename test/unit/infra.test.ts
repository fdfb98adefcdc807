/**
 * Every manifest under infra/ against the real schemas: Kubernetes (kubernetes-models), Knative
 * Serving and Eventing (@kubernetes-models/knative) and KEDA (@kubernetes-models/keda), each object
 * built from its YAML and validate()d. The CRDs are validated as apiextensions/v1 objects, and their
 * OpenAPI schemas are then run (with ajv and the Kubernetes formats of @kubernetes-models/validate)
 * over PorterLB-shaped objects: the lab's examples and the guide's objects must pass, objects
 * breaking the ASN, IP or port rules must fail, and racklb's own parser must agree on each. Then
 * the manifests are checked against the code they deploy (routes, streams, RBAC, CLI flags), and
 * each kustomize overlay is rendered.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import { formats } from '@kubernetes-models/validate';
import { ConfigMap, Namespace, Service, ServiceAccount } from 'kubernetes-models/v1';
import { DaemonSet, Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob } from 'kubernetes-models/batch/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { CustomResourceDefinition } from 'kubernetes-models/apiextensions.k8s.io/v1';
import { Service as KnativeService } from '@kubernetes-models/knative/serving.knative.dev/v1';
import { Broker, Trigger } from '@kubernetes-models/knative/eventing.knative.dev/v1';
import { ApiServerSource, PingSource } from '@kubernetes-models/knative/sources.knative.dev/v1';
import { ScaledObject, TriggerAuthentication } from '@kubernetes-models/keda/keda.sh/v1alpha1';
import { parseObject, placesSpeaker } from '../../src/core/objects.js';
import { LABELS } from '../../src/core/types.js';
import { buildProgram } from '../../src/cli/main.js';
import { FUNCTION_NAMES, functionFor } from '../../src/functions.js';
import { WATCHED } from '../../src/k8s/kinds.js';
import { SPEAKER_NODE_FLAGS } from '../../src/lab/lab.js';
import { Keys } from '../../src/store/keys.js';
import { bgpConf, bgpPeer, eip, porterLbExample, type Json } from '../helpers/fixtures.js';

const INFRA = 'infra';

interface Model {
  validate(): void;
}
type ModelClass = new (data: Json) => Model;

/** Every kind the manifests may use, with the schema it must satisfy. An unknown kind fails. */
const MODELS: Record<string, ModelClass> = {
  'v1/Namespace': Namespace as unknown as ModelClass,
  'v1/ServiceAccount': ServiceAccount as unknown as ModelClass,
  'v1/Service': Service as unknown as ModelClass,
  'v1/ConfigMap': ConfigMap as unknown as ModelClass,
  'apps/v1/Deployment': Deployment as unknown as ModelClass,
  'apps/v1/DaemonSet': DaemonSet as unknown as ModelClass,
  'apps/v1/StatefulSet': StatefulSet as unknown as ModelClass,
  'batch/v1/CronJob': CronJob as unknown as ModelClass,
  'rbac.authorization.k8s.io/v1/ClusterRole': ClusterRole as unknown as ModelClass,
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': ClusterRoleBinding as unknown as ModelClass,
  'apiextensions.k8s.io/v1/CustomResourceDefinition': CustomResourceDefinition as unknown as ModelClass,
  'serving.knative.dev/v1/Service': KnativeService as unknown as ModelClass,
  'eventing.knative.dev/v1/Broker': Broker as unknown as ModelClass,
  'eventing.knative.dev/v1/Trigger': Trigger as unknown as ModelClass,
  'sources.knative.dev/v1/ApiServerSource': ApiServerSource as unknown as ModelClass,
  'sources.knative.dev/v1/PingSource': PingSource as unknown as ModelClass,
  'keda.sh/v1alpha1/ScaledObject': ScaledObject as unknown as ModelClass,
  'keda.sh/v1alpha1/TriggerAuthentication': TriggerAuthentication as unknown as ModelClass,
};

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return yamlFiles(path);
    return path.endsWith('.yaml') && name !== 'kustomization.yaml' ? [path] : [];
  });
}

function parseDocs(text: string, source: string): Json[] {
  return parseAllDocuments(text).flatMap((doc, i) => {
    if (doc.errors.length > 0) throw new Error(`${source}: document ${i + 1}: ${doc.errors[0]?.message}`);
    const value = doc.toJS() as Json | null;
    return value ? [value] : [];
  });
}

const manifests: { file: string; doc: Json }[] = yamlFiles(INFRA).flatMap((file) => parseDocs(readFileSync(file, 'utf8'), file).map((doc) => ({ file, doc })));
const nameOf = (o: Json): string => String((o.metadata as Json | undefined)?.name ?? '?');
const idOf = (o: Json): string => `${String(o.apiVersion)}/${String(o.kind)}`;
const ofKind = (kind: string, apiVersion?: string): Json[] => manifests.map((m) => m.doc).filter((d) => d.kind === kind && (apiVersion === undefined || d.apiVersion === apiVersion));

function validateModel(doc: Json, where: string): void {
  const Model = MODELS[idOf(doc)];
  if (!Model) throw new Error(`${where}: no schema known for ${idOf(doc)}; add its model to this test`);
  new Model(doc).validate();
}

describe('infra manifests against the Kubernetes, Knative and KEDA schemas', () => {
  it('finds the manifests of both deployment styles', () => {
    expect(manifests.length).toBeGreaterThan(40);
    for (const dir of ['crds', 'rbac', 'redis', 'speaker', 'status-writer', 'knative', 'keda']) {
      expect(manifests.some((m) => relative(INFRA, m.file).startsWith(`${dir}/`)), dir).toBe(true);
    }
  });

  for (const { file, doc } of manifests) {
    it(`${relative(INFRA, file)}: ${String(doc.kind)} ${nameOf(doc)} is valid`, () => {
      validateModel(doc, file);
    });
  }
});

// ---- the CRDs' own OpenAPI schemas -------------------------------------------------------------

const crds = ofKind('CustomResourceDefinition') as unknown as {
  spec: { group: string; names: { kind: string; plural: string }; versions: { name: string; served: boolean; storage: boolean; subresources?: Json; schema: { openAPIV3Schema: Json } }[] };
}[];

const ajv = new Ajv({ strict: false, allErrors: true });
for (const [name, format] of Object.entries(formats)) ajv.addFormat(name, format);
const compiled = new Map<string, ValidateFunction>();

function crdErrors(o: Json): ErrorObject[] {
  const [group, version] = String(o.apiVersion).split('/');
  const crd = crds.find((c) => c.spec.group === group && c.spec.names.kind === o.kind);
  const v = crd?.spec.versions.find((x) => x.name === version);
  if (!crd || !v) throw new Error(`no CRD serves ${String(o.apiVersion)} ${String(o.kind)}`);
  const id = `${String(o.kind)}/${version}`;
  let fn = compiled.get(id);
  if (!fn) {
    fn = ajv.compile(v.schema.openAPIV3Schema);
    compiled.set(id, fn);
  }
  return fn(o) ? [] : (fn.errors ?? []);
}

function withMeta(o: Json, name: string): Json {
  return { ...o, metadata: { name, uid: `uid-${name}`, resourceVersion: '1' } };
}

/** The API server's structural-schema rules that a CRD must meet to be accepted at all. */
function structuralProblems(schema: Json, path: string, inValueValidation = false): string[] {
  const problems: string[] = [];
  const intOrString = schema['x-kubernetes-int-or-string'] === true;
  const preserve = schema['x-kubernetes-preserve-unknown-fields'] === true;
  if (!inValueValidation && schema.type === undefined && !intOrString && !preserve) problems.push(`${path}: no type`);
  if (inValueValidation && (schema.type !== undefined || schema.description !== undefined || schema.default !== undefined || schema.additionalProperties !== undefined)) {
    problems.push(`${path}: type, description, default or additionalProperties inside anyOf/allOf/oneOf/not`);
  }
  for (const [k, sub] of Object.entries((schema.properties ?? {}) as Record<string, Json>)) problems.push(...structuralProblems(sub, `${path}.${k}`));
  if (typeof schema.items === 'object' && schema.items !== null) problems.push(...structuralProblems(schema.items as Json, `${path}[]`));
  if (typeof schema.additionalProperties === 'object' && schema.additionalProperties !== null) problems.push(...structuralProblems(schema.additionalProperties as Json, `${path}{}`));
  for (const key of ['anyOf', 'allOf', 'oneOf'] as const) {
    const list = (schema[key] ?? []) as Json[];
    // The one exception: int-or-string's own `anyOf: [{type: integer}, {type: string}]`.
    const allowed = intOrString && key === 'anyOf' && list.length === 2 && list.every((x) => Object.keys(x).length === 1 && (x.type === 'integer' || x.type === 'string'));
    if (!allowed) list.forEach((x, i) => problems.push(...structuralProblems(x, `${path}.${key}[${i}]`, true)));
  }
  if (schema.not) problems.push(...structuralProblems(schema.not as Json, `${path}.not`, true));
  return problems;
}

describe('CRDs: BgpConf, BgpPeer and Eip in network.kubesphere.io v1alpha1 and v1alpha2', () => {
  it('define the three kinds, v1alpha2 stored with a status subresource, v1alpha1 served', () => {
    expect(crds.map((c) => c.spec.names.kind).sort()).toEqual(['BgpConf', 'BgpPeer', 'Eip']);
    for (const c of crds) {
      expect(c.spec.group).toBe('network.kubesphere.io');
      const v2 = c.spec.versions.find((v) => v.name === 'v1alpha2');
      const v1 = c.spec.versions.find((v) => v.name === 'v1alpha1');
      expect(v2?.storage && v2.served).toBe(true);
      expect(v2?.subresources).toEqual({ status: {} });
      expect(v1?.served).toBe(true);
      expect(v1?.storage).toBe(false);
    }
  });

  it('have structural schemas, as the API server requires', () => {
    for (const c of crds) for (const v of c.spec.versions) expect(structuralProblems(v.schema.openAPIV3Schema, `${c.spec.names.kind}/${v.name}`)).toEqual([]);
  });

  const labExamples = ['examples/lab/before.yaml', 'examples/lab/after.yaml'].flatMap((f) => parseDocs(readFileSync(f, 'utf8'), f)).filter((d) => String(d.apiVersion).startsWith('network.kubesphere.io/'));
  const guide = porterLbExample();
  const valid: { name: string; object: Json }[] = [
    ...labExamples.map((o) => ({ name: `examples/lab ${String(o.kind)} ${nameOf(o)}`, object: withMeta(o, nameOf(o)) })),
    { name: "the guide's BgpConf", object: guide.conf },
    ...guide.peers.map((p) => ({ name: `the guide's BgpPeer ${nameOf(p)}`, object: p })),
    { name: "the guide's Eip", object: guide.eip },
    { name: 'BgpConf with asPerRack and a pinned router ID', object: bgpConf({ as: 4200000000, asPerRack: { leaf1: 65001, leaf2: 65002 }, routerId: '192.0.2.250', listenPort: -1 }) },
    { name: 'BgpPeer over IPv6 with string timers (OpenELB types them as strings)', object: bgpPeer({ name: 'v6', neighborAddress: '2001:db8::1', peerAs: 4294967295, spec: { timers: { config: { holdTime: '90', keepaliveInterval: '30', connectRetry: 5 } }, transport: { remotePort: 1179, passiveMode: true }, ebgpMultihop: { enabled: true, multihopTtl: 3 } } }) },
    { name: 'Eip as a CIDR', object: eip({ name: 'cidr', address: '198.51.100.0/24' }) },
    { name: 'Eip as an IPv4 range', object: eip({ name: 'range', address: '198.51.100.10-198.51.100.20' }) },
    { name: 'Eip as an IPv6 range', object: eip({ name: 'range6', address: '2001:db8::10-2001:db8::ff' }) },
    { name: 'Eip with OpenELB\'s plain-map namespaceSelector', object: eip({ name: 'ns', address: '203.0.113.0/28', namespaceSelector: { team: 'a' }, namespaces: ['web'], priority: 2 }) },
    { name: 'v1alpha1 BgpConf', object: withMeta({ apiVersion: 'network.kubesphere.io/v1alpha1', kind: 'BgpConf', spec: { as: 65000, port: 17900, routerID: '192.0.2.1' } }, 'default') },
    { name: 'v1alpha1 BgpPeer', object: withMeta({ apiVersion: 'network.kubesphere.io/v1alpha1', kind: 'BgpPeer', spec: { config: { peerAs: 65001, neighborAddress: '192.0.2.2' }, addPaths: { sendMax: 10 }, transport: { passiveMode: false, remotePort: 179 }, usingPortForward: true } }, 'old-peer') },
    { name: 'v1alpha1 Eip', object: withMeta({ apiVersion: 'network.kubesphere.io/v1alpha1', kind: 'Eip', spec: { address: '192.0.2.0/28', protocol: 'bgp' } }, 'old-eip') },
  ];

  it('accept PorterLB-shaped objects, and racklb\'s functions accept them too', () => {
    expect(labExamples.length).toBeGreaterThanOrEqual(4);
    for (const { name, object } of valid) {
      expect(crdErrors(object), name).toEqual([]);
      expect(() => parseObject(object), name).not.toThrow();
    }
  });

  const peer = (spec: Json): Json => bgpPeer({ name: 'p', neighborAddress: '192.0.2.1', spec });
  const invalid: { name: string; object: Json; path: string }[] = [
    { name: 'peerAs 0', object: bgpPeer({ name: 'p', neighborAddress: '192.0.2.1', peerAs: 0 }), path: '/spec/conf/peerAs' },
    { name: 'peerAs above 32 bits', object: bgpPeer({ name: 'p', neighborAddress: '192.0.2.1', peerAs: 4294967296 }), path: '/spec/conf/peerAs' },
    { name: 'a neighbor address that is not an IP', object: bgpPeer({ name: 'p', neighborAddress: 'leaf1.example' }), path: '/spec/conf/neighborAddress' },
    { name: 'remote port 70000', object: peer({ transport: { remotePort: 70000 } }), path: '/spec/transport/remotePort' },
    { name: 'a hold time that is not seconds', object: peer({ timers: { config: { holdTime: 'ninety' } } }), path: '/spec/timers/config/holdTime' },
    { name: 'multihop TTL 256', object: peer({ ebgpMultihop: { enabled: true, multihopTtl: 256 } }), path: '/spec/ebgpMultihop/multihopTtl' },
    { name: 'an address family racklb does not announce', object: peer({ afiSafis: [{ config: { family: { afi: 'AFI_L2VPN', safi: 'SAFI_EVPN' }, enabled: true } }] }), path: '/spec/afiSafis/0/config/family/afi' },
    { name: 'an MD5 password over the kernel\'s limit', object: peer({ conf: { peerAs: 65001, neighborAddress: '192.0.2.1', authPassword: 'x'.repeat(81) } }), path: '/spec/conf/authPassword' },
    { name: 'BgpConf as 0', object: bgpConf({ as: 0 }), path: '/spec/as' },
    { name: 'BgpConf listen port 0', object: bgpConf({ listenPort: 0 }), path: '/spec/listenPort' },
    { name: 'BgpConf listen port 65536', object: bgpConf({ listenPort: 65536 }), path: '/spec/listenPort' },
    { name: 'a router ID that is not an IPv4 address', object: bgpConf({ routerId: '300.1.1.1' }), path: '/spec/routerId' },
    { name: 'an asPerRack ASN of 0', object: bgpConf({ asPerRack: { leaf1: 0 } }), path: '/spec/asPerRack/leaf1' },
    { name: 'an Eip address that is a name', object: eip({ name: 'e', address: 'pool-a' }), path: '/spec/address' },
    { name: 'an Eip CIDR with a /33', object: eip({ name: 'e', address: '198.51.100.0/33' }), path: '/spec/address' },
    { name: 'a v1alpha1 BgpConf router ID that is not IPv4', object: withMeta({ apiVersion: 'network.kubesphere.io/v1alpha1', kind: 'BgpConf', spec: { as: 65000, port: 179, routerID: '2001:db8::1' } }, 'default'), path: '/spec/routerID' },
    { name: 'a v1alpha1 BgpPeer port 0', object: withMeta({ apiVersion: 'network.kubesphere.io/v1alpha1', kind: 'BgpPeer', spec: { config: { peerAs: 65001, neighborAddress: '192.0.2.2' }, transport: { remotePort: 0 } } }, 'p'), path: '/spec/transport/remotePort' },
  ];

  it('refuse objects that break the ASN, IP and port rules, naming the field, as racklb\'s functions do', () => {
    for (const { name, object, path } of invalid) {
      const errors = crdErrors(object);
      expect(errors.length, name).toBeGreaterThan(0);
      expect(errors.map((e) => e.instancePath), name).toContain(path);
      expect(() => parseObject(object), name).toThrow();
    }
  });
});

// ---- the manifests agree with the code they deploy ---------------------------------------------

type Container = { name?: string; image?: string; args?: string[]; command?: string[]; env?: Json[]; ports?: Json[]; readinessProbe?: Json; livenessProbe?: Json };

function podSpecOf(o: Json): Json | undefined {
  const spec = o.spec as Json | undefined;
  if (o.kind === 'CronJob') return (((spec?.jobTemplate as Json).spec as Json).template as Json).spec as Json;
  return (spec?.template as Json | undefined)?.spec as Json | undefined;
}

describe('the manifests agree with the code', () => {
  it('route every kind and event type to the function that owns it, with retries and a dead-letter sink', () => {
    const triggers = ofKind('Trigger');
    for (const w of WATCHED) {
      for (const action of ['add', 'update', 'delete']) {
        const t = triggers.filter((x) => {
          const attrs = ((x.spec as Json).filter as Json).attributes as Json;
          return attrs.type === `dev.knative.apiserver.resource.${action}` && attrs.kind === w.kind;
        });
        expect(t, `${w.kind} ${action}`).toHaveLength(1);
        const spec = t[0]?.spec as Json;
        expect(((spec.subscriber as Json).ref as Json).name, `${w.kind} ${action}`).toBe(functionFor(w.kind).name);
        const delivery = spec.delivery as Json;
        expect(delivery.retry).toBeGreaterThan(0);
        expect(delivery.backoffPolicy).toBe('exponential');
        expect(((delivery.deadLetterSink as Json).ref as Json).name).toBe('racklb-resync');
      }
    }
    expect(triggers).toHaveLength(WATCHED.length * 3);
  });

  it('source every watched kind once, in Resource mode, into the Broker', () => {
    const sources = ofKind('ApiServerSource').map((s) => s.spec as Json);
    expect(sources.map((s) => (s.resources as Json[]).map((r) => `${String(r.apiVersion)} ${String(r.kind)}`)).flat().sort()).toEqual(WATCHED.map((w) => `${w.apiVersion} ${w.kind}`).sort());
    for (const s of sources) {
      expect(s.mode).toBe('Resource');
      expect(((s.sink as Json).ref as Json).kind).toBe('Broker');
    }
  });

  it('scale each stream consumer on its own stream and group, in lag mode, from zero', () => {
    const keys = new Keys();
    const deployments = new Map(ofKind('Deployment').map((d) => [nameOf(d), d]));
    const scaled = ofKind('ScaledObject');
    expect(scaled).toHaveLength(FUNCTION_NAMES.length);
    for (const fn of FUNCTION_NAMES) {
      const so = scaled.find((s) => ((s.spec as Json).scaleTargetRef as Json).name === `racklb-${fn}`)?.spec as Json;
      expect(so, fn).toBeDefined();
      expect(so.minReplicaCount).toBe(0);
      const trigger = (so.triggers as Json[])[0] as Json;
      const meta = trigger.metadata as Json;
      expect(trigger.type).toBe('redis-streams');
      expect(meta.stream).toBe(keys.eventStream(fn));
      expect(meta.consumerGroup).toBe(fn);
      expect(meta.lagCount).toMatch(/^\d+$/);
      const container = ((podSpecOf(deployments.get(`racklb-${fn}`) as Json)?.containers as Container[]) ?? [])[0];
      expect(container?.args?.slice(0, 3)).toEqual(['serve', fn, '--from-stream']);
      // The probes and a scrape reach the port the consumer serves its metrics and health on.
      const port = Number(container?.args?.find((a) => a.startsWith('--metrics-port='))?.split('=')[1]);
      expect(container?.args, fn).toContain('--metrics-host=0.0.0.0');
      expect(container?.ports?.find((p) => p.name === 'metrics')?.containerPort, fn).toBe(port);
      expect(container?.readinessProbe?.httpGet, fn).toEqual({ path: '/health/readiness', port: 'metrics' });
      expect(container?.livenessProbe?.httpGet, fn).toEqual({ path: '/health/liveness', port: 'metrics' });
    }
  });

  it('give each component only the API access it needs', () => {
    const roles = new Map(ofKind('ClusterRole').map((r) => [nameOf(r), (r.rules as Json[]) ?? []]));
    const reader = roles.get('racklb-reader') ?? [];
    const granted = reader.flatMap((r) => (r.resources as string[]).map((res) => `${String((r.apiGroups as string[])[0])}/${res}:${(r.verbs as string[]).join(',')}`)).sort();
    expect(granted).toEqual(WATCHED.map((w) => `${w.group}/${w.plural}:get,list,watch`).sort());
    const writer = (roles.get('racklb-status-writer') ?? []).flatMap((r) => (r.resources as string[]).map((res) => `${res}:${(r.verbs as string[]).join(',')}`)).sort();
    expect(writer).toEqual(['bgpconfs/status:get,update', 'bgppeers/status:get,update', 'eips/status:get,update', 'services/status:get,patch', 'services:get,list,patch']);
    const bound = ofKind('ClusterRoleBinding').flatMap((b) => (b.subjects as Json[]).map((s) => String(s.name)));
    for (const sa of ['racklb-functions', 'racklb-speaker']) {
      expect(bound, sa).not.toContain(sa);
      expect(ofKind('ServiceAccount').find((s) => nameOf(s) === sa)?.automountServiceAccountToken, sa).toBe(false);
    }
    // Every workload runs under racklb's ServiceAccounts, never the namespace default.
    for (const o of manifests.map((m) => m.doc)) {
      const spec = o.kind === 'Service' && o.apiVersion === 'serving.knative.dev/v1' ? ((o.spec as Json).template as Json).spec as Json : podSpecOf(o);
      if (!spec || !['Deployment', 'DaemonSet', 'CronJob', 'Service'].includes(String(o.kind))) continue;
      expect(String(spec.serviceAccountName), `${String(o.kind)} ${nameOf(o)}`).toMatch(/^racklb-/);
    }
  });

  it('run racklb with subcommands and flags that exist', async () => {
    const program = await buildProgram();
    const workloads = manifests.map((m) => m.doc).flatMap((o) => {
      const spec = o.apiVersion === 'serving.knative.dev/v1' ? ((o.spec as Json).template as Json).spec as Json : podSpecOf(o);
      return ((spec?.containers as Container[] | undefined) ?? []).filter((c) => String(c.image).includes('/racklb/') && !c.command).map((c) => ({ where: `${String(o.kind)} ${nameOf(o)}`, args: c.args ?? [] }));
    });
    expect(workloads.length).toBeGreaterThanOrEqual(10);
    for (const { where, args } of workloads) {
      const cmd = program.commands.find((c) => c.name() === args[0]);
      expect(cmd, `${where}: racklb ${args[0]}`).toBeDefined();
      const longs = new Set(cmd?.options.map((o) => o.long));
      for (const a of args.slice(1).filter((x) => x.startsWith('--'))) expect(longs.has(a.split('=')[0]), `${where}: ${a}`).toBe(true);
      if (args[0] === 'serve') expect(FUNCTION_NAMES, where).toContain(args[1]);
    }
  });

  it('place the speaker with gobgpd on the host network of every speaker node', () => {
    const [ds] = ofKind('DaemonSet');
    const spec = podSpecOf(ds as Json) as Json;
    expect(spec.hostNetwork).toBe(true);
    // Scheduled on exactly the nodes the functions count as speaker nodes: PorterLB's value and OpenELB's.
    expect(spec.nodeSelector).toBeUndefined();
    expect(spec.affinity).toEqual({
      nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: LABELS.speaker, operator: 'In', values: [...LABELS.speakerValues] }] }] } },
    });
    expect(LABELS.speakerValues.every((v) => placesSpeaker({ [LABELS.speaker]: v }))).toBe(true);
    const containers = spec.containers as Container[];
    expect(containers.map((c) => c.name)).toEqual(['gobgpd', 'speaker']);
    expect(containers[0]?.command).toContain('--pprof-disable');
    expect(JSON.stringify(containers[0]?.readinessProbe)).toContain('global');
    expect(containers[1]?.args).toContain('--gobgp=127.0.0.1:50051');
    // The speaker runs with the V8 flags the lab (and its memory benchmark) gives it, on the image's
    // node and entry point (infra/images/speaker.Containerfile), none of them through NODE_OPTIONS.
    expect(containers[1]?.command).toEqual(['node', ...SPEAKER_NODE_FLAGS, '/opt/racklb/bin/racklb.js']);
    expect(readFileSync(join(INFRA, 'images', 'speaker.Containerfile'), 'utf8')).toContain('ENTRYPOINT ["node", "/opt/racklb/bin/racklb.js"]');
    const env = (containers[1] as { env?: { name: string; value?: string }[] }).env ?? [];
    expect(env.find((e) => e.name === 'NODE_OPTIONS')).toBeUndefined();
  });

  it('keep Redis on append-only persistence, synced before Redis answers (an acknowledged event survives a crash)', () => {
    const [cm] = ofKind('ConfigMap').filter((c) => nameOf(c) === 'racklb-redis');
    expect(String((cm?.data as Json)['redis.conf'])).toMatch(/^appendonly yes$/m);
    expect(String((cm?.data as Json)['redis.conf'])).toMatch(/^appendfsync always$/m);
  });

  it('let Redis refuse writes well before its container would be killed for memory', () => {
    const [cm] = ofKind('ConfigMap').filter((c) => nameOf(c) === 'racklb-redis');
    const conf = String((cm?.data as Json)['redis.conf']);
    expect(conf).toMatch(/^maxmemory-policy noeviction$/m);
    const maxMb = Number(/^maxmemory (\d+)mb$/m.exec(conf)?.[1]);
    const [redis] = ofKind('StatefulSet').filter((s) => nameOf(s) === 'racklb-redis');
    const container = ((redis?.spec as Json).template as { spec: { containers: Container[] } }).spec.containers.find((c) => c.name === 'redis');
    const limit = String((container as { resources?: { limits?: { memory?: string } } } | undefined)?.resources?.limits?.memory);
    const limitMb = Number(/^(\d+)Gi$/.exec(limit)?.[1]) * 1024 || Number(/^(\d+)Mi$/.exec(limit)?.[1]);
    // An AOF rewrite forks: the copy-on-write of a busy Redis needs room above maxmemory.
    expect(maxMb).toBeGreaterThan(0);
    expect(maxMb).toBeLessThanOrEqual(limitMb * 0.7);
  });
});

// ---- kustomize ----------------------------------------------------------------------------------

function hasKubectl(): boolean {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore', timeout: 10_000 });
    return true;
  } catch {
    return false;
  }
}

describe.skipIf(!hasKubectl())('kustomize overlays (kubectl kustomize)', () => {
  for (const style of ['knative', 'keda']) {
    it(`${style}: renders, every rendered object is valid, and all of it lives in racklb-system`, () => {
      const out = execFileSync('kubectl', ['kustomize', join(INFRA, 'overlays', style)], { encoding: 'utf8', timeout: 60_000 });
      const docs = parseDocs(out, `overlays/${style}`);
      for (const d of docs) validateModel(d, `overlays/${style}`);
      const namespaced = docs.filter((d) => !['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition'].includes(String(d.kind)));
      for (const d of namespaced) expect((d.metadata as Json).namespace, `${String(d.kind)} ${nameOf(d)}`).toBe('racklb-system');
      const kinds = new Set(docs.map((d) => String(d.kind)));
      expect(kinds.has('DaemonSet') && kinds.has('StatefulSet') && kinds.has('CustomResourceDefinition')).toBe(true);
      if (style === 'knative') expect(['Broker', 'Trigger', 'ApiServerSource', 'PingSource'].every((k) => kinds.has(k))).toBe(true);
      else expect(['ScaledObject', 'TriggerAuthentication', 'CronJob'].every((k) => kinds.has(k))).toBe(true);
    });
  }
});
