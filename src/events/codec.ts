/**
 * The one place that turns CloudEvents into racklb's events and back. Knative's ApiServerSource
 * in Resource mode is the reference format: type dev.knative.apiserver.resource.{add,update,delete},
 * the whole object as data, extensions kind/name/namespace/apiversion, and a fresh id per emission
 * (so the id is useless for deduplication: the store orders by uid and resourceVersion instead).
 */
import { randomUUID } from 'node:crypto';
import { CloudEvent, HTTP, ValidationError } from 'cloudevents';
import type { KubeRecord } from '../core/types.js';
import { invalidEvent } from '../errors.js';
import { jsonShapeProblem } from './json.js';

export type KubeAction = 'add' | 'update' | 'delete';

export const APISERVER_TYPE_PREFIX = 'dev.knative.apiserver.resource.';
const REF_TYPE_PREFIX = 'dev.knative.apiserver.ref.';

export interface KubeEvent {
  id: string;
  source: string;
  type: string;
  time: string | undefined;
  action: KubeAction;
  /** The Kubernetes object exactly as received. */
  object: unknown;
  /**
   * Set only by a resync (src/serve/resync.ts), never from the wire: the stored record to derive
   * from again. `object` then carries just its apiVersion, kind and metadata.
   */
  record?: KubeRecord;
}

/** The CloudEvents versions the SDK reads; it accepts any other string without complaint. */
const SPEC_VERSIONS: readonly string[] = ['1.0', '0.3'];

type HeaderValue = string | string[] | undefined;

/** Decodes an HTTP request in binary or structured mode; every failure names what is wrong. */
export function decodeHttpEvent(headers: Record<string, HeaderValue>, body: string): KubeEvent {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    flat[name.toLowerCase()] = Array.isArray(value) ? value.join(',') : value;
  }
  const hasCeHeaders = 'ce-specversion' in flat;
  const structured = (flat['content-type'] ?? '').startsWith('application/cloudevents+json');
  if (!hasCeHeaders && !structured) {
    throw invalidEvent('not a CloudEvent: expected ce-* headers (binary mode) or content-type application/cloudevents+json (structured mode)');
  }
  refuseBadJsonShape(body);
  if (structured) {
    // The SDK accepts structured bodies that are not JSON objects; check first for a clear answer.
    let parsed: unknown;
    try {
      parsed = JSON.parse(body);
    } catch {
      throw invalidEvent('structured CloudEvent body is not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalidEvent('structured CloudEvent body must be a JSON object');
  }
  let event: CloudEvent<unknown>;
  // The SDK's JSON parser builds two ValidationErrors on every call, in case it needs them, and
  // capturing their stack traces was a third of the cost of decoding an event. Only their messages
  // are ever read here, so no frames are captured while the SDK runs (synchronously: nothing else
  // can observe the setting).
  const stackTraceLimit = Error.stackTraceLimit;
  Error.stackTraceLimit = 0;
  try {
    let decoded: CloudEvent<unknown> | CloudEvent<unknown>[];
    try {
      decoded = HTTP.toEvent<unknown>({ headers: flat, body }) as CloudEvent<unknown> | CloudEvent<unknown>[];
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    if (Array.isArray(decoded)) throw invalidEvent('batched CloudEvents are not accepted: send one event per request');
    event = decoded;
    // HTTP.toEvent builds events without validating them, and validate() takes any specversion.
    event.validate();
    if (!SPEC_VERSIONS.includes(event.specversion)) {
      throw invalidEvent(`specversion ${JSON.stringify(event.specversion)}: must be 1.0 (or 0.3)`, 'specversion');
    }
  } catch (err) {
    if (err instanceof ValidationError) {
      const detail = Array.isArray(err.errors) && err.errors.length > 0 ? `: ${JSON.stringify(err.errors).slice(0, 300)}` : '';
      throw invalidEvent(`invalid CloudEvent (${err.message})${detail}`);
    }
    if (err instanceof Error && err.name === 'RacklbError') throw err;
    throw invalidEvent(`cannot decode CloudEvent: ${err instanceof Error ? err.message : String(err)}`);
  }
  return fromCloudEvent(event);
}

/** Duplicate keys and over-deep nesting, refused before any JSON parser sees the text (see json.ts). */
function refuseBadJsonShape(text: string): void {
  const start = text.trimStart().charCodeAt(0);
  if (start !== 0x7b && start !== 0x5b) return;
  const problem = jsonShapeProblem(text);
  if (problem) throw invalidEvent(`${problem.field}: ${problem.rule}`, problem.field);
}

export function fromCloudEvent(event: CloudEvent<unknown>): KubeEvent {
  const type = event.type;
  if (type.startsWith(REF_TYPE_PREFIX)) {
    throw invalidEvent(`event type ${type}: ApiServerSource must run in Resource mode (mode: Resource), Reference mode sends no object`, 'type');
  }
  if (!type.startsWith(APISERVER_TYPE_PREFIX)) {
    throw invalidEvent(`event type ${JSON.stringify(type)}: must be ${APISERVER_TYPE_PREFIX}add, .update or .delete`, 'type');
  }
  const action = type.slice(APISERVER_TYPE_PREFIX.length);
  if (action !== 'add' && action !== 'update' && action !== 'delete') {
    throw invalidEvent(`event type ${JSON.stringify(type)}: must be ${APISERVER_TYPE_PREFIX}add, .update or .delete`, 'type');
  }
  let data: unknown = event.data;
  if (data === undefined && event.data_base64 !== undefined) data = Buffer.from(event.data_base64, 'base64').toString('utf8');
  if (typeof data === 'string' || data instanceof Uint8Array) {
    const text = typeof data === 'string' ? data : Buffer.from(data).toString('utf8');
    refuseBadJsonShape(text);
    try {
      data = JSON.parse(text);
    } catch {
      throw invalidEvent('event data is not JSON: expected the Kubernetes object', 'data');
    }
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw invalidEvent('event data must be the Kubernetes object (a JSON object)', 'data');
  }
  return { id: event.id, source: event.source, type, time: event.time, action, object: data };
}

/** client-go's UnsafeGuessKindToResource, which ApiServerSource uses for the subject. */
function guessResource(kind: string): string {
  const singular = kind.toLowerCase();
  if (singular.endsWith('s')) return `${singular}es`;
  if (singular.endsWith('y')) return `${singular.slice(0, -1)}ies`;
  return `${singular}s`;
}

/**
 * The CloudEvent ApiServerSource would send for this change of this object, attribute for attribute
 * (knative.dev/eventing pkg/adapter/apiserver/events): the four extensions are always set, empty for
 * a cluster-scoped object's namespace, and the subject always has the `/namespaces/<ns>/` part.
 */
export function apiServerEvent(action: KubeAction, object: Record<string, unknown>, source: string, id?: string): CloudEvent<Record<string, unknown>> {
  const meta = (object.metadata ?? {}) as Record<string, unknown>;
  const str = (v: unknown): string => (typeof v === 'string' ? v : '');
  const kind = str(object.kind);
  const apiVersion = str(object.apiVersion);
  const name = str(meta.name);
  const namespace = str(meta.namespace);
  // ApiServerSource's own workaround for a group without a version.
  const version = apiVersion.includes('.') && !apiVersion.includes('/') ? `${apiVersion}/versionUnknown` : apiVersion;
  return new CloudEvent<Record<string, unknown>>({
    ...(id === undefined ? {} : { id }),
    type: `${APISERVER_TYPE_PREFIX}${action}`,
    source,
    subject: `/apis/${version}/namespaces/${namespace}/${guessResource(kind)}/${name}`,
    datacontenttype: 'application/json',
    data: object,
    kind,
    apiversion: apiVersion,
    name,
    namespace,
  });
}

/** Binary-mode HTTP message, as Knative delivers it. */
export function toHttpMessage(event: CloudEvent<unknown>): { headers: Record<string, string>; body: string } {
  const message = HTTP.binary(event);
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(message.headers)) if (v !== undefined) headers[k] = String(v);
  const body = typeof message.body === 'string' ? message.body : JSON.stringify(message.body);
  return { headers, body };
}

/** Structured JSON, as kept on Redis streams and in the journal. */
export function toStructuredJson(event: CloudEvent<unknown>): string {
  return JSON.stringify(event.toJSON());
}

export function decodeStructuredJson(text: string): KubeEvent {
  return decodeHttpEvent({ 'content-type': 'application/cloudevents+json' }, text);
}

/** The watch event types of the Kubernetes API that carry a change, and the action each is. */
const WATCH_ACTIONS: Readonly<Record<string, KubeAction>> = { ADDED: 'add', MODIFIED: 'update', DELETED: 'delete' };

/** The source of events that came in as plain webhooks, in the journal and on replay. */
export const WEBHOOK_SOURCE = 'racklb/webhook';

/**
 * Decodes a plain JSON webhook shaped as a Kubernetes watch event, `{"type":"ADDED","object":{...}}`
 * (what `kubectl get -w -o json` and client-go watches produce). It becomes the event
 * ApiServerSource would have sent, so the journal and `racklb replay` treat both alike.
 */
export function decodeWatchEvent(body: string): KubeEvent {
  refuseBadJsonShape(body);
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    throw invalidEvent('webhook body is not valid JSON: expected a Kubernetes watch event {"type":"ADDED|MODIFIED|DELETED","object":{...}}');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
    throw invalidEvent('webhook body must be a JSON object {"type":"ADDED|MODIFIED|DELETED","object":{...}}');
  }
  const { type, object } = parsed as Record<string, unknown>;
  const action = typeof type === 'string' && Object.hasOwn(WATCH_ACTIONS, type) ? WATCH_ACTIONS[type] : undefined;
  if (action === undefined) throw invalidEvent(`type: must be ADDED, MODIFIED or DELETED (got ${JSON.stringify(type ?? null).slice(0, 40)})`, 'type');
  if (typeof object !== 'object' || object === null || Array.isArray(object)) throw invalidEvent('object: must be the Kubernetes object (a JSON object)', 'object');
  return { id: randomUUID(), source: WEBHOOK_SOURCE, type: `${APISERVER_TYPE_PREFIX}${action}`, time: new Date().toISOString(), action, object };
}

/** An event as the journal keeps it (src/serve/handler.ts writes it): enough to send it again. */
export interface JournaledEvent {
  id: string;
  source: string;
  type: string;
  time?: string | undefined;
  data: unknown;
}

/** The CloudEvent a journaled event was (or, for a webhook, stands for), with ApiServerSource's extensions. */
export function journaledCloudEvent(e: JournaledEvent): CloudEvent<Record<string, unknown>> {
  const decoded = fromJournal(e);
  const base = apiServerEvent(decoded.action, decoded.object as Record<string, unknown>, e.source, e.id);
  return e.time === undefined ? base : base.cloneWith({ time: e.time });
}

/** A journaled event back into racklb's event, with the checks a received one gets. */
export function fromJournal(e: JournaledEvent): KubeEvent {
  if (typeof e.id !== 'string' || e.id === '' || typeof e.source !== 'string' || e.source === '' || typeof e.type !== 'string') {
    throw invalidEvent('journaled event needs id, source and type');
  }
  const event = new CloudEvent<unknown>({ id: e.id, source: e.source, type: e.type, ...(e.time ? { time: e.time } : {}), data: e.data }, false);
  return fromCloudEvent(event);
}
