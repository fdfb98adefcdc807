/**
 * The lab plays the Kubernetes API server: it keeps the objects, gives every change a growing
 * resourceVersion and a stable uid, and delivers each change to the function that owns the kind
 * as the CloudEvent Knative's ApiServerSource would send, retrying like a broker does.
 */
import { randomUUID } from 'node:crypto';
import { closeSync, existsSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { parseAllDocuments } from 'yaml';
import { KINDS, type Kind } from '../core/types.js';
import { RacklbError } from '../errors.js';
import { apiServerEvent, toHttpMessage, type KubeAction } from '../events/codec.js';
import { functionFor } from '../functions.js';
import type { FunctionName } from '../store/keys.js';
import { LAB_RUN_DIR } from './paths.js';

type Obj = Record<string, unknown>;

interface ObjectsFile {
  nextResourceVersion: number;
  objects: Record<string, Obj>;
}

export interface Delivery {
  kind: string;
  key: string;
  action: KubeAction;
  status: number;
  outcome: string;
  detail: string;
  /** The resourceVersion the event carried (tests check that acknowledged versions are stored). */
  resourceVersion?: string;
}

const OBJECTS_FILE = join(LAB_RUN_DIR, 'objects.json');
const LOCK_FILE = join(LAB_RUN_DIR, 'objects.lock');

function objectKey(o: Obj): string {
  const meta = o.metadata as Obj;
  return `${String(o.kind)}/${meta.namespace ? `${String(meta.namespace)}/` : ''}${String(meta.name)}`;
}

/** Reads a multi-document YAML file into objects, naming the document that is wrong. */
export function parseManifests(text: string, source: string): Obj[] {
  const out: Obj[] = [];
  parseAllDocuments(text).forEach((doc, i) => {
    if (doc.errors.length > 0) throw new RacklbError('RACKLB_USAGE', `${source}: document ${i + 1}: ${doc.errors[0]?.message ?? 'invalid YAML'}`);
    const value = doc.toJS() as unknown;
    if (value === null || value === undefined) return;
    if (typeof value !== 'object' || Array.isArray(value)) throw new RacklbError('RACKLB_USAGE', `${source}: document ${i + 1}: must be a Kubernetes object`);
    const o = value as Obj;
    const meta = o.metadata as Obj | undefined;
    if (typeof o.kind !== 'string' || typeof o.apiVersion !== 'string' || typeof meta?.name !== 'string') {
      throw new RacklbError('RACKLB_USAGE', `${source}: document ${i + 1}: needs apiVersion, kind and metadata.name`);
    }
    if (o.kind === 'List' && Array.isArray(o.items)) out.push(...(o.items as Obj[]));
    else out.push(o);
  });
  return out;
}

export class LabApiServer {
  constructor(private readonly functionUrls: Record<FunctionName, string>) {}

  /** Runs `fn` holding the objects file exclusively: lab commands may run side by side. */
  private async locked<T>(fn: (file: ObjectsFile) => Promise<T>): Promise<T> {
    const deadline = Date.now() + 30_000;
    for (;;) {
      try {
        closeSync(openSync(LOCK_FILE, 'wx'));
        break;
      } catch {
        // A lock older than a minute belongs to a command that crashed.
        try {
          if (Date.now() - statSync(LOCK_FILE).mtimeMs > 60_000) rmSync(LOCK_FILE, { force: true });
        } catch {
          /* gone meanwhile */
        }
        if (Date.now() > deadline) throw new RacklbError('RACKLB_LAB', `another lab command holds ${LOCK_FILE}; remove it if none is running`);
        await sleep(50);
      }
    }
    try {
      const file: ObjectsFile = existsSync(OBJECTS_FILE) ? (JSON.parse(readFileSync(OBJECTS_FILE, 'utf8')) as ObjectsFile) : { nextResourceVersion: 1, objects: {} };
      const result = await fn(file);
      writeFileSync(`${OBJECTS_FILE}.tmp`, JSON.stringify(file));
      renameSync(`${OBJECTS_FILE}.tmp`, OBJECTS_FILE);
      return result;
    } finally {
      rmSync(LOCK_FILE, { force: true });
    }
  }

  list(kind?: string): Obj[] {
    if (!existsSync(OBJECTS_FILE)) return [];
    const file = JSON.parse(readFileSync(OBJECTS_FILE, 'utf8')) as ObjectsFile;
    return Object.values(file.objects).filter((o) => kind === undefined || o.kind === kind);
  }

  get(kind: string, name: string, namespace?: string): Obj | undefined {
    return this.list(kind).find((o) => (o.metadata as Obj).name === name && (namespace === undefined || (o.metadata as Obj).namespace === namespace));
  }

  /** Creates or replaces each object, as `kubectl apply` would, and delivers the events. */
  async apply(objects: Obj[]): Promise<Delivery[]> {
    return this.locked(async (file) => {
      const out: Delivery[] = [];
      for (const input of objects) {
        const o = structuredClone(input);
        const meta = (o.metadata ?? {}) as Obj;
        o.metadata = meta;
        if (!(KINDS as readonly string[]).includes(String(o.kind))) {
          out.push({ kind: String(o.kind), key: objectKey(o), action: 'add', status: 0, outcome: 'ignored', detail: `racklb does not consume kind ${String(o.kind)}` });
          continue;
        }
        if (meta.namespace === undefined && (o.kind === 'Service' || o.kind === 'EndpointSlice')) meta.namespace = 'default';
        const key = objectKey(o);
        const existing = file.objects[key];
        const action: KubeAction = existing ? 'update' : 'add';
        const prevMeta = (existing?.metadata ?? {}) as Obj;
        meta.uid = prevMeta.uid ?? randomUUID();
        meta.creationTimestamp = prevMeta.creationTimestamp ?? new Date().toISOString();
        meta.resourceVersion = String(file.nextResourceVersion++);
        file.objects[key] = o;
        out.push(await this.deliver(action, o));
      }
      return out;
    });
  }

  /** Deletes each object (matched by kind, namespace and name) and delivers delete events. */
  async delete(objects: Obj[]): Promise<Delivery[]> {
    return this.locked(async (file) => {
      const out: Delivery[] = [];
      for (const input of objects) {
        const probe = structuredClone(input);
        const meta = (probe.metadata ?? {}) as Obj;
        if (meta.namespace === undefined && (probe.kind === 'Service' || probe.kind === 'EndpointSlice')) meta.namespace = 'default';
        probe.metadata = meta;
        const key = objectKey(probe);
        const existing = file.objects[key];
        if (!existing) {
          out.push({ kind: String(probe.kind), key, action: 'delete', status: 0, outcome: 'not found', detail: `${key} does not exist` });
          continue;
        }
        delete file.objects[key];
        const gone = structuredClone(existing);
        (gone.metadata as Obj).resourceVersion = String(file.nextResourceVersion++);
        (gone.metadata as Obj).deletionTimestamp = new Date().toISOString();
        out.push(await this.deliver('delete', gone));
      }
      return out;
    });
  }

  /** `kubectl label --overwrite node NAME k=v k2-`. */
  async labelNode(name: string, changes: string[]): Promise<Delivery> {
    const node = this.get('Node', name);
    if (!node) throw new RacklbError('RACKLB_USAGE', `node ${JSON.stringify(name)} does not exist in the lab`);
    const labels = { ...(((node.metadata as Obj).labels ?? {}) as Record<string, string>) };
    for (const change of changes) {
      if (change.endsWith('-') && !change.includes('=')) {
        delete labels[change.slice(0, -1)];
        continue;
      }
      const eq = change.indexOf('=');
      if (eq <= 0) throw new RacklbError('RACKLB_USAGE', `label ${JSON.stringify(change)}: write KEY=VALUE to set or KEY- to remove`);
      labels[change.slice(0, eq)] = change.slice(eq + 1);
    }
    const updated = structuredClone(node);
    (updated.metadata as Obj).labels = labels;
    const [delivery] = await this.apply([updated]);
    return delivery as Delivery;
  }

  /** Re-sends every stored object as an add: what a relist after a lost watch delivers. */
  async resendAll(): Promise<Delivery[]> {
    const out: Delivery[] = [];
    for (const o of this.list()) out.push(await this.deliver('add', o));
    return out;
  }

  private async deliver(action: KubeAction, o: Obj): Promise<Delivery> {
    const def = functionFor(o.kind as Kind);
    const url = this.functionUrls[def.name];
    const { headers, body } = toHttpMessage(apiServerEvent(action, o, 'racklb-lab/apiserver'));
    let last: Delivery | undefined;
    // Like a Knative broker: retry what may succeed later, never a 4xx that will not.
    for (let attempt = 0; attempt < 6; attempt++) {
      try {
        const res = await request(url, { method: 'POST', headers, body, headersTimeout: 10_000, bodyTimeout: 10_000 });
        const text = await res.body.text();
        const outcome = String(res.headers['racklb-outcome'] ?? (res.statusCode >= 500 ? 'retry' : 'error'));
        let detail = String(res.headers['racklb-detail'] ?? '');
        if (!detail && text) {
          try {
            detail = String((JSON.parse(text) as { error?: string }).error ?? text);
          } catch {
            detail = text;
          }
        }
        last = { kind: String(o.kind), key: objectKey(o), action, status: res.statusCode, outcome, detail, resourceVersion: String((o.metadata as Obj).resourceVersion) };
        if (res.statusCode < 500) return last;
      } catch (err) {
        last = { kind: String(o.kind), key: objectKey(o), action, status: 0, outcome: 'unreachable', detail: `${def.name} at ${url}: ${(err as Error).message}` };
      }
      await sleep(100 * 2 ** attempt);
    }
    return last as Delivery;
  }
}

export function formatDeliveries(list: Delivery[]): string {
  return list.map((d) => `${d.action.padEnd(6)} ${d.key.padEnd(40)} ${d.outcome}${d.detail ? `: ${d.detail}` : ''}`).join('\n');
}
