/**
 * racklb's access to the Kubernetes API, through @kubernetes/client-node: its KubeConfig (in-cluster
 * service account, or a kubeconfig file) for the address, TLS and credentials; its informers for
 * list+watch; its typed clients for status writes.
 *
 * Lists are read raw, not through the typed clients: those turn timestamps into Date objects and
 * drop fields their models do not know, and the bridge must deliver every object exactly as the API
 * server (and so ApiServerSource) hands it over.
 */
import { request as httpRequest, type RequestOptions } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { CoreV1Api, CustomObjectsApi, KubeConfig, Observable, type ObservableMiddleware } from '@kubernetes/client-node';
import { RacklbError } from '../errors.js';
import { listPath, type KubeObject, type WatchedKind } from './kinds.js';

export interface KubeOptions {
  /** A kubeconfig file; without it: in-cluster config, then $KUBECONFIG or ~/.kube/config. */
  kubeconfig?: string;
  /** Per-request deadline for lists and writes (watches are long-lived and exempt). */
  requestTimeoutMs?: number;
}

export interface RawList {
  items: KubeObject[];
  resourceVersion: string;
}

/** An API answer that is not 2xx, with the Status object's reason when there is one. */
export class KubeApiError extends Error {
  constructor(
    readonly statusCode: number,
    message: string,
  ) {
    super(message);
    this.name = 'KubeApiError';
  }
}

const PAGE_SIZE = 500;

export function loadKubeConfig(kubeconfig?: string): KubeConfig {
  const kc = new KubeConfig();
  try {
    if (kubeconfig) kc.loadFromFile(kubeconfig);
    else kc.loadFromDefault();
  } catch (err) {
    throw new RacklbError('RACKLB_USAGE', `--kubeconfig ${kubeconfig ?? '(default)'}: cannot load: ${(err as Error).message}`);
  }
  if (!kc.getCurrentCluster()) throw new RacklbError('RACKLB_USAGE', `--kubeconfig ${kubeconfig ?? '(default)'}: no current cluster`);
  return kc;
}

export class KubeApi {
  readonly kc: KubeConfig;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly server: string;
  readonly requestTimeoutMs: number;

  constructor(opts: KubeOptions = {}) {
    this.kc = loadKubeConfig(opts.kubeconfig);
    this.server = (this.kc.getCurrentCluster()?.server ?? '').replace(/\/+$/, '');
    this.core = this.kc.makeApiClient(CoreV1Api);
    this.custom = this.kc.makeApiClient(CustomObjectsApi);
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 15_000;
  }

  /** Middleware for typed calls: a deadline, so a hung API server never holds a writer forever. */
  timeoutMiddleware(): ObservableMiddleware {
    const ms = this.requestTimeoutMs;
    return {
      pre: (ctx) => {
        ctx.setSignal(AbortSignal.timeout(ms));
        return new Observable(Promise.resolve(ctx));
      },
      post: (res) => new Observable(Promise.resolve(res)),
    };
  }

  /** GET a path and parse JSON; a non-2xx answer becomes a KubeApiError with the Status message. */
  async getJson(path: string): Promise<Record<string, unknown>> {
    const url = new URL(this.server + path);
    const opts: RequestOptions & { headers: Record<string, string> } = { method: 'GET', headers: { accept: 'application/json' } };
    await this.kc.applyToHTTPSOptions(opts);
    const send = url.protocol === 'http:' ? httpRequest : httpsRequest;
    return new Promise((resolve, reject) => {
      const req = send(url, { ...opts, signal: AbortSignal.timeout(this.requestTimeoutMs) }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown;
          try {
            body = JSON.parse(text);
          } catch {
            body = undefined;
          }
          const status = res.statusCode ?? 0;
          if (status < 200 || status > 299) {
            const msg = typeof body === 'object' && body !== null && typeof (body as { message?: unknown }).message === 'string' ? (body as { message: string }).message : text.slice(0, 200);
            reject(new KubeApiError(status, `GET ${path}: ${status} ${msg}`));
            return;
          }
          if (typeof body !== 'object' || body === null) {
            reject(new KubeApiError(status, `GET ${path}: answer is not a JSON object`));
            return;
          }
          resolve(body as Record<string, unknown>);
        });
      });
      req.on('error', reject);
      req.end();
    });
  }

  /**
   * Every object of a kind, in pages, as one consistent snapshot (the first page's resourceVersion).
   * Items of built-in kinds come without apiVersion and kind; they are filled in from the list, as
   * client-go's unstructured decoder (and so ApiServerSource) does.
   */
  async list(w: WatchedKind): Promise<RawList> {
    const items: KubeObject[] = [];
    let resourceVersion = '';
    let cont = '';
    do {
      const q = new URLSearchParams({ limit: String(PAGE_SIZE) });
      if (cont) q.set('continue', cont);
      const page = await this.getJson(`${listPath(w)}?${q.toString()}`);
      const meta = (page.metadata ?? {}) as Record<string, unknown>;
      if (!resourceVersion) resourceVersion = typeof meta.resourceVersion === 'string' ? meta.resourceVersion : '';
      cont = typeof meta.continue === 'string' ? meta.continue : '';
      const pageItems = Array.isArray(page.items) ? (page.items as KubeObject[]) : [];
      for (const item of pageItems) {
        if (typeof item !== 'object' || item === null) continue;
        items.push(item.kind === undefined && item.apiVersion === undefined ? { apiVersion: w.apiVersion, kind: w.kind, ...item } : item);
      }
    } while (cont);
    return { items, resourceVersion };
  }
}

/** The HTTP status of whatever a client-node call threw, or undefined for network failures. */
export function statusOf(err: unknown): number | undefined {
  if (err instanceof KubeApiError) return err.statusCode;
  const e = err as { code?: unknown; statusCode?: unknown } | undefined;
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** A short reason for logs and metric labels. */
export function reasonOf(err: unknown): string {
  const status = statusOf(err);
  if (status !== undefined) return String(status);
  const e = err as { name?: unknown; code?: unknown } | undefined;
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError') return 'timeout';
  if (typeof e?.code === 'string') return e.code;
  return 'error';
}
