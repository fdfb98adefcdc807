/**
 * The one place that turns CloudEvents into racklb's events and back. Knative's ApiServerSource
 * in Resource mode is the reference format: type dev.knative.apiserver.resource.{add,update,delete},
 * the whole object as data, extensions kind/name/namespace/apiversion, and a fresh id per emission
 * (so the id is useless for deduplication: the store orders by uid and resourceVersion instead).
 */
import { CloudEvent, HTTP, ValidationError } from 'cloudevents';
import { invalidEvent } from '../errors.js';

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
}

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
  try {
    const decoded = HTTP.toEvent<unknown>({ headers: flat, body }) as CloudEvent<unknown> | CloudEvent<unknown>[];
    if (Array.isArray(decoded)) throw invalidEvent('batched CloudEvents are not accepted: send one event per request');
    event = decoded;
    // HTTP.toEvent builds events without validating them.
    event.validate();
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
    try {
      data = JSON.parse(typeof data === 'string' ? data : Buffer.from(data).toString('utf8'));
    } catch {
      throw invalidEvent('event data is not JSON: expected the Kubernetes object', 'data');
    }
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw invalidEvent('event data must be the Kubernetes object (a JSON object)', 'data');
  }
  return { id: event.id, source: event.source, type, time: event.time, action, object: data };
}

/** The CloudEvent ApiServerSource would send for this change of this object. */
export function apiServerEvent(action: KubeAction, object: Record<string, unknown>, source: string, id?: string): CloudEvent<Record<string, unknown>> {
  const meta = (object.metadata ?? {}) as Record<string, unknown>;
  const ext: Record<string, string> = {};
  if (typeof object.kind === 'string') ext.kind = object.kind;
  if (typeof meta.name === 'string') ext.name = meta.name;
  if (typeof meta.namespace === 'string') ext.namespace = meta.namespace;
  if (typeof object.apiVersion === 'string') ext.apiversion = object.apiVersion;
  return new CloudEvent<Record<string, unknown>>({
    ...(id === undefined ? {} : { id }),
    type: `${APISERVER_TYPE_PREFIX}${action}`,
    source,
    subject: typeof meta.namespace === 'string' ? `/apis/v1/namespaces/${meta.namespace}/${String(object.kind ?? '').toLowerCase()}s/${String(meta.name)}` : undefined,
    datacontenttype: 'application/json',
    data: object,
    ...ext,
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
