/**
 * A Kubernetes API server for tests, since no real one can run here: it answers the calls racklb
 * makes, with the real API's JSON shapes and semantics.
 *
 * - One global resourceVersion counter (an etcd revision): every write bumps it, lists carry it.
 * - List: `{kind: <Kind>List, apiVersion, metadata: {resourceVersion, continue}, items}`; items of
 *   built-in kinds come without apiVersion and kind, as the real server sends them; `limit` and
 *   `continue` page; `labelSelector` supports `key` and `key=value`.
 * - Watch (`?watch=true&resourceVersion=N`): newline-delimited `{type, object}` events after N, then
 *   live ones. A resourceVersion older than the last compaction gets what the real server sends:
 *   200, one ERROR event carrying a 410 Expired Status, end of stream. `expireWatches()` compacts
 *   and closes every open watch, which is how a watch expires.
 * - Get, and the status subresource: GET, PUT (replace: needs metadata.resourceVersion, 409 when it
 *   is not the current one) and PATCH with application/merge-patch+json (409 when the patch carries
 *   a stale metadata.resourceVersion). A status write changes only status; a main-resource write
 *   never changes status.
 * - 404 NotFound, 409 Conflict, 410 Expired, 401, 415 and 422 answers are `Status` objects.
 * - Faults for tests: `fail()` answers the next matching requests with a status (or never answers);
 *   `interfere()` makes another writer update an object just before racklb's next write to it.
 */
import { randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export type Json = Record<string, unknown>;

interface Resource {
  kind: string;
  group: string;
  version: string;
  plural: string;
  namespaced: boolean;
}

const RESOURCES: readonly Resource[] = [
  { kind: 'Node', group: '', version: 'v1', plural: 'nodes', namespaced: false },
  { kind: 'Service', group: '', version: 'v1', plural: 'services', namespaced: true },
  { kind: 'EndpointSlice', group: 'discovery.k8s.io', version: 'v1', plural: 'endpointslices', namespaced: true },
  { kind: 'Eip', group: 'network.kubesphere.io', version: 'v1alpha2', plural: 'eips', namespaced: false },
  { kind: 'BgpPeer', group: 'network.kubesphere.io', version: 'v1alpha2', plural: 'bgppeers', namespaced: false },
  { kind: 'BgpConf', group: 'network.kubesphere.io', version: 'v1alpha2', plural: 'bgpconfs', namespaced: false },
];

const TOKEN = 'racklb-test-token';

function apiVersionOf(r: Resource): string {
  return r.group ? `${r.group}/${r.version}` : r.version;
}

function resourceOfKind(kind: string): Resource {
  const r = RESOURCES.find((x) => x.kind === kind);
  if (!r) throw new Error(`fake API: unknown kind ${kind}`);
  return r;
}

interface Watcher {
  r: Resource;
  res: ServerResponse;
}

interface HistoryEntry {
  rv: number;
  r: Resource;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Json;
}

export interface Fault {
  method?: string;
  /** Matched against the path (without the query). */
  path: RegExp;
  /** The status to answer with; omit with `hang` to never answer. */
  status?: number;
  hang?: boolean;
  /** How many matching requests it affects (default 1; Infinity for all). */
  times?: number;
}

export interface RequestLog {
  method: string;
  path: string;
  query: string;
  status: number;
  /** Content-Type of a write. */
  contentType?: string;
  body?: unknown;
}

export interface FakeKubeApi {
  url: string;
  /** A kubeconfig file pointing at this server, with a bearer token it accepts. */
  kubeconfig: string;
  resourceVersion(): number;
  apply(object: Json, opts?: { silent?: boolean }): Json;
  remove(kind: string, name: string, namespace?: string, opts?: { silent?: boolean }): void;
  get(kind: string, name: string, namespace?: string): Json | undefined;
  list(kind: string): Json[];
  /** Another controller writes an object's status (through the status subresource). */
  setStatus(kind: string, name: string, namespace: string | undefined, status: Json): Json;
  expireWatches(): void;
  fail(fault: Fault): void;
  clearFaults(): void;
  interfere(kind: string, name: string, namespace: string | undefined, times: number): void;
  openWatches(): number;
  requests: RequestLog[];
  close(): Promise<void>;
}

function status(code: number, reason: string, message: string, details?: Json): Json {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, ...(details ? { details } : {}), code };
}

/** RFC 7386. */
function mergePatch(target: unknown, patch: unknown): unknown {
  if (typeof patch !== 'object' || patch === null || Array.isArray(patch)) return structuredClone(patch);
  const base: Json = typeof target === 'object' && target !== null && !Array.isArray(target) ? { ...(target as Json) } : {};
  for (const [k, v] of Object.entries(patch as Json)) {
    if (v === null) delete base[k];
    else base[k] = mergePatch(base[k], v);
  }
  return base;
}

function selectorMatches(selector: string | null, labels: Record<string, string>): boolean {
  if (!selector) return true;
  return selector.split(',').every((term) => {
    const eq = term.indexOf('=');
    if (eq < 0) return Object.hasOwn(labels, term);
    return labels[term.slice(0, eq)] === term.slice(eq + 1);
  });
}

export async function startKubeApi(): Promise<FakeKubeApi> {
  let rv = 100;
  let compactedBelow = 0;
  const objects = new Map<string, { r: Resource; object: Json }>();
  const history: HistoryEntry[] = [];
  const watchers = new Set<Watcher>();
  const faults: (Fault & { left: number })[] = [];
  const interferences = new Map<string, number>();
  const requests: RequestLog[] = [];
  const hung = new Set<ServerResponse>();

  const idOf = (r: Resource, name: string, namespace?: string): string => `${r.kind}/${r.namespaced ? `${namespace ?? ''}/` : ''}${name}`;

  function emit(r: Resource, type: HistoryEntry['type'], object: Json): void {
    const entry: HistoryEntry = { rv, r, type, object: structuredClone(object) };
    history.push(entry);
    for (const w of watchers) if (w.r === r) w.res.write(`${JSON.stringify({ type, object: entry.object })}\n`);
  }

  function store(r: Resource, object: Json, type: HistoryEntry['type'], silent: boolean): Json {
    rv++;
    const meta = object.metadata as Json;
    meta.resourceVersion = String(rv);
    objects.set(idOf(r, String(meta.name), meta.namespace as string | undefined), { r, object });
    if (!silent) emit(r, type, object);
    return object;
  }

  const api: Omit<FakeKubeApi, 'url' | 'kubeconfig' | 'close'> = {
    requests,
    resourceVersion: () => rv,
    apply(input, opts = {}) {
      const r = resourceOfKind(String(input.kind));
      const meta = { ...((input.metadata ?? {}) as Json) };
      const id = idOf(r, String(meta.name), meta.namespace as string | undefined);
      const existing = objects.get(id)?.object;
      const object: Json = structuredClone({ ...input, apiVersion: apiVersionOf(r), kind: r.kind });
      const m = object.metadata as Json;
      Object.assign(m, meta);
      m.uid = existing ? (existing.metadata as Json).uid : (meta.uid ?? randomUUID());
      m.creationTimestamp = existing ? (existing.metadata as Json).creationTimestamp : '2024-05-01T10:00:00Z';
      // An update through the main resource never changes status (the status subresource owns it).
      if (existing) {
        if (existing.status === undefined) delete object.status;
        else object.status = structuredClone(existing.status);
      }
      return structuredClone(store(r, object, existing ? 'MODIFIED' : 'ADDED', opts.silent ?? false));
    },
    remove(kind, name, namespace, opts = {}) {
      const r = resourceOfKind(kind);
      const id = idOf(r, name, namespace);
      const found = objects.get(id);
      if (!found) throw new Error(`fake API: ${id} does not exist`);
      objects.delete(id);
      rv++;
      // The DELETED event carries the object at the deletion's resourceVersion.
      (found.object.metadata as Json).resourceVersion = String(rv);
      if (!opts.silent) emit(r, 'DELETED', found.object);
    },
    get(kind, name, namespace) {
      const o = objects.get(idOf(resourceOfKind(kind), name, namespace))?.object;
      return o ? structuredClone(o) : undefined;
    },
    list(kind) {
      const r = resourceOfKind(kind);
      return [...objects.values()].filter((o) => o.r === r).map((o) => structuredClone(o.object));
    },
    setStatus(kind, name, namespace, statusValue) {
      const r = resourceOfKind(kind);
      const found = objects.get(idOf(r, name, namespace));
      if (!found) throw new Error(`fake API: ${kind} ${name} does not exist`);
      return structuredClone(store(r, { ...structuredClone(found.object), status: structuredClone(statusValue) }, 'MODIFIED', false));
    },
    expireWatches() {
      // Like an etcd compaction at the current revision: a watch that resumes from any earlier
      // resourceVersion gets 410; one from the current revision (a fresh list) is fine.
      compactedBelow = rv;
      history.length = 0;
      for (const w of watchers) w.res.end();
      watchers.clear();
    },
    fail(fault) {
      faults.push({ ...fault, left: fault.times ?? 1 });
    },
    clearFaults() {
      faults.length = 0;
      for (const res of hung) res.destroy();
      hung.clear();
    },
    interfere(kind, name, namespace, times) {
      interferences.set(idOf(resourceOfKind(kind), name, namespace), times);
    },
    openWatches: () => watchers.size,
  };

  function send(res: ServerResponse, log: RequestLog, code: number, body: Json): void {
    log.status = code;
    const text = JSON.stringify(body);
    res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }

  function route(path: string): { r: Resource; namespace?: string; name?: string; sub?: string } | undefined {
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    let group = '';
    let version: string | undefined;
    let rest: string[];
    if (parts[0] === 'api') {
      version = parts[1];
      rest = parts.slice(2);
    } else if (parts[0] === 'apis') {
      group = parts[1] ?? '';
      version = parts[2];
      rest = parts.slice(3);
    } else return undefined;
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const r = RESOURCES.find((x) => x.group === group && x.version === version && x.plural === rest[0]);
    if (!r || rest.length > 3 || (rest.length === 3 && rest[2] !== 'status')) return undefined;
    if (rest.length >= 2 && r.namespaced !== (namespace !== undefined)) return undefined;
    return { r, namespace, name: rest[1], sub: rest[2] };
  }

  async function readBody(req: IncomingMessage): Promise<string> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const method = req.method ?? 'GET';
    const log: RequestLog = { method, path: url.pathname, query: url.search, status: 0 };
    requests.push(log);
    if (req.headers.authorization !== `Bearer ${TOKEN}`) return send(res, log, 401, status(401, 'Unauthorized', 'Unauthorized'));

    const fault = faults.find((f) => f.left > 0 && (f.method === undefined || f.method === method) && f.path.test(url.pathname));
    if (fault) {
      fault.left--;
      if (fault.hang) {
        log.status = -1;
        hung.add(res);
        return;
      }
      const code = fault.status ?? 500;
      return send(res, log, code, status(code, code === 429 ? 'TooManyRequests' : 'InternalError', `injected fault: ${code}`));
    }

    const target = route(url.pathname);
    if (!target) return send(res, log, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
    const { r, namespace, name, sub } = target;
    const resourceName = r.group ? `${r.plural}.${r.group}` : r.plural;

    if (name === undefined) {
      if (method !== 'GET') return send(res, log, 405, status(405, 'MethodNotAllowed', `${method} is not supported on a collection here`));
      if (url.searchParams.get('watch') === 'true') return watch(r, url, res, log);
      const all = [...objects.values()].filter((o) => o.r === r && (namespace === undefined || (o.object.metadata as Json).namespace === namespace));
      const selected = all
        .filter((o) => selectorMatches(url.searchParams.get('labelSelector'), ((o.object.metadata as Json).labels ?? {}) as Record<string, string>))
        .sort((a, b) => (idOf(a.r, String((a.object.metadata as Json).name), (a.object.metadata as Json).namespace as string) < idOf(b.r, String((b.object.metadata as Json).name), (b.object.metadata as Json).namespace as string) ? -1 : 1));
      const limit = Number(url.searchParams.get('limit') ?? '0');
      const cont = url.searchParams.get('continue');
      let offset = 0;
      let listRv = String(rv);
      if (cont) {
        const parsed = JSON.parse(Buffer.from(cont, 'base64').toString('utf8')) as { offset: number; rv: string };
        offset = parsed.offset;
        listRv = parsed.rv;
      }
      const page = limit > 0 ? selected.slice(offset, offset + limit) : selected.slice(offset);
      const next = limit > 0 && offset + limit < selected.length ? Buffer.from(JSON.stringify({ offset: offset + limit, rv: listRv })).toString('base64') : undefined;
      // Items of built-in kinds carry no apiVersion and kind in a list; custom resources do.
      const items = page.map((o) => {
        const copy = structuredClone(o.object);
        if (!r.group.includes('.') || r.group.endsWith('k8s.io')) {
          delete copy.apiVersion;
          delete copy.kind;
        }
        return copy;
      });
      return send(res, log, 200, { kind: `${r.kind}List`, apiVersion: apiVersionOf(r), metadata: { resourceVersion: listRv, ...(next ? { continue: next } : {}) }, items });
    }

    const id = idOf(r, name, namespace);
    const notFound = (): void => send(res, log, 404, status(404, 'NotFound', `${resourceName} "${name}" not found`, { name, ...(r.group ? { group: r.group } : {}), kind: r.plural }));
    const conflict = (): void =>
      send(res, log, 409, status(409, 'Conflict', `Operation cannot be fulfilled on ${resourceName} "${name}": the object has been modified; please apply your changes to the latest version and try again`, { name, ...(r.group ? { group: r.group } : {}), kind: r.plural }));

    if (method === 'GET') {
      const found = objects.get(id);
      return found ? send(res, log, 200, found.object) : notFound();
    }
    if (method !== 'PUT' && method !== 'PATCH') return send(res, log, 405, status(405, 'MethodNotAllowed', `${method} is not supported here`));

    const text = await readBody(req);
    log.contentType = String(req.headers['content-type'] ?? '');
    let body: Json;
    try {
      body = JSON.parse(text) as Json;
    } catch {
      return send(res, log, 400, status(400, 'BadRequest', 'the body is not JSON'));
    }
    log.body = body;
    const found = objects.get(id);
    if (!found) return notFound();
    // Another writer gets in first: racklb's resourceVersion is stale now.
    const left = interferences.get(id) ?? 0;
    if (left > 0) {
      interferences.set(id, left - 1);
      const bumped = structuredClone(found.object);
      const meta = bumped.metadata as Json;
      meta.annotations = { ...((meta.annotations ?? {}) as Json), 'test/interfered': String(left) };
      store(r, bumped, 'MODIFIED', false);
    }
    const current = objects.get(id)!.object;
    const currentRv = String((current.metadata as Json).resourceVersion);
    const bodyRv = (body.metadata as Json | undefined)?.resourceVersion;

    let next: Json;
    if (method === 'PUT') {
      if (sub !== 'status') return send(res, log, 405, status(405, 'MethodNotAllowed', 'racklb only replaces status'));
      if (typeof bodyRv !== 'string' || bodyRv === '') {
        return send(res, log, 422, status(422, 'Invalid', `${r.kind} "${name}" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update`));
      }
      if (bodyRv !== currentRv) return conflict();
      next = { ...structuredClone(current), status: structuredClone(body.status) };
    } else {
      if (!log.contentType.startsWith('application/merge-patch+json')) {
        return send(res, log, 415, status(415, 'UnsupportedMediaType', `the body of the request was in an unknown format - accepted media types include: application/merge-patch+json`));
      }
      if (bodyRv !== undefined && bodyRv !== null && bodyRv !== currentRv) return conflict();
      const patched = mergePatch(current, body) as Json;
      (patched.metadata as Json).resourceVersion = currentRv;
      next = sub === 'status' ? { ...structuredClone(current), status: patched.status } : { ...patched, status: structuredClone(current.status) };
      if (next.status === undefined) delete next.status;
    }
    (next.metadata as Json).uid = (current.metadata as Json).uid;
    return send(res, log, 200, store(r, next, 'MODIFIED', false));
  }

  function watch(r: Resource, url: URL, res: ServerResponse, log: RequestLog): void {
    const from = Number(url.searchParams.get('resourceVersion') ?? '0');
    log.status = 200;
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    // The real server answers a watch at once, before any event.
    res.flushHeaders();
    if (from < compactedBelow) {
      const err = status(410, 'Expired', `too old resource version: ${from} (${compactedBelow})`);
      res.end(`${JSON.stringify({ type: 'ERROR', object: err })}\n`);
      return;
    }
    for (const e of history) if (e.r === r && e.rv > from) res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    const w: Watcher = { r, res };
    watchers.add(w);
    res.on('close', () => watchers.delete(w));
  }

  const server = createServer((req, res) => {
    void handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify(status(500, 'InternalError', String(err))));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const dir = mkdtempSync(join(tmpdir(), 'racklb-kubeapi-'));
  const kubeconfig = join(dir, 'kubeconfig.yaml');
  writeFileSync(
    kubeconfig,
    [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      `- name: fake\n  cluster:\n    server: ${url}\n    insecure-skip-tls-verify: true`,
      'users:',
      `- name: racklb\n  user:\n    token: ${TOKEN}`,
      'contexts:',
      '- name: fake\n  context:\n    cluster: fake\n    user: racklb',
      'current-context: fake',
      '',
    ].join('\n'),
  );
  return {
    ...api,
    url,
    kubeconfig,
    close: async () => {
      for (const w of watchers) w.res.destroy();
      for (const res of hung) res.destroy();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
