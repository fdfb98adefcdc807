/**
 * Plain JSON webhooks beside CloudEvents: any tool that can POST a Kubernetes watch event drives
 * a function. They are authenticated with a shared secret: the sender signs the timestamp and the
 * raw body with HMAC-SHA256,
 *
 *   X-Racklb-Timestamp: <unix seconds>
 *   X-Racklb-Signature: sha256=<hex of HMAC-SHA256(secret, "<timestamp>.<raw body>")>
 *
 * Signing the timestamp with the body means a captured request cannot be sent again with a fresh
 * timestamp; the bounded window means it cannot be sent again later. Inside the window a resend is
 * harmless: the store orders by uid and resourceVersion, so it is reported stale.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { RacklbError } from '../errors.js';

export const SIGNATURE_HEADER = 'x-racklb-signature';
export const TIMESTAMP_HEADER = 'x-racklb-timestamp';
/** How far a webhook's timestamp may be from the receiver's clock, either way. */
export const DEFAULT_TOLERANCE_SECONDS = 300;
/** A shorter secret is guessable offline from one signed request. */
export const MIN_SECRET_BYTES = 16;

export interface WebhookOptions {
  /** The shared secret; without it plain webhooks are refused unless `allowUnsigned`. */
  secret?: Buffer;
  /** Accept plain webhooks and /resync without a signature (no secret configured). */
  allowUnsigned?: boolean;
  toleranceSeconds?: number;
  /** Clock in milliseconds, for tests. */
  now?: () => number;
}

type HeaderValue = string | string[] | undefined;

export type WebhookAuth = { ok: true; signed: boolean } | { ok: false; status: 401 | 403; reason: string };

/** CloudEvents announce themselves (ce-* headers, or the structured content type); anything else is a webhook. */
export function isCloudEventRequest(headers: Record<string, HeaderValue>): boolean {
  const contentType = String(headers['content-type'] ?? '').toLowerCase();
  return headers['ce-specversion'] !== undefined || contentType.startsWith('application/cloudevents');
}

export function signWebhook(secret: Buffer | string, timestamp: number | string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex')}`;
}

/** Headers a sender adds to a webhook: the timestamp it signs and the signature. */
export function webhookHeaders(secret: Buffer | string, body: string, nowMs: number = Date.now()): Record<string, string> {
  const timestamp = Math.floor(nowMs / 1000);
  return { [TIMESTAMP_HEADER]: String(timestamp), [SIGNATURE_HEADER]: signWebhook(secret, timestamp, body) };
}

function single(value: HeaderValue): string | undefined {
  return Array.isArray(value) ? (value.length === 1 ? value[0] : undefined) : value;
}

/** Decides whether a webhook (or /resync) request may go on; every refusal says why. */
export function authenticateWebhook(headers: Record<string, HeaderValue>, body: string, opts: WebhookOptions): WebhookAuth {
  if (opts.secret === undefined) {
    if (opts.allowUnsigned) return { ok: true, signed: false };
    return { ok: false, status: 403, reason: 'plain webhooks are off: set RACKLB_WEBHOOK_SECRET or RACKLB_WEBHOOK_SECRET_FILE (or start with --allow-unsigned-webhooks)' };
  }
  const timestampText = single(headers[TIMESTAMP_HEADER]);
  const signatureText = single(headers[SIGNATURE_HEADER]);
  if (timestampText === undefined) return { ok: false, status: 401, reason: `${TIMESTAMP_HEADER}: required (unix seconds, signed with the body)` };
  if (signatureText === undefined) return { ok: false, status: 401, reason: `${SIGNATURE_HEADER}: required (sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">)` };
  if (!/^\d{1,12}$/.test(timestampText)) return { ok: false, status: 401, reason: `${TIMESTAMP_HEADER}: must be unix seconds (digits only)` };
  const tolerance = opts.toleranceSeconds ?? DEFAULT_TOLERANCE_SECONDS;
  const skew = Math.floor((opts.now ?? Date.now)() / 1000) - Number(timestampText);
  if (Math.abs(skew) > tolerance) {
    return { ok: false, status: 401, reason: `${TIMESTAMP_HEADER}: ${skew > 0 ? `${skew} s old` : `${-skew} s in the future`}, outside the ${tolerance} s window (replayed, delayed, or a clock off)` };
  }
  const match = /^sha256=([0-9a-fA-F]{64})$/.exec(signatureText);
  if (!match?.[1]) return { ok: false, status: 401, reason: `${SIGNATURE_HEADER}: must be sha256=<64 hex digits>` };
  const given = Buffer.from(match[1], 'hex');
  const expected = createHmac('sha256', opts.secret).update(`${timestampText}.`).update(body).digest();
  // Both are 32 bytes here, as timingSafeEqual requires; the comparison takes the same time wherever they differ.
  if (!timingSafeEqual(given, expected)) return { ok: false, status: 401, reason: `${SIGNATURE_HEADER}: does not match the body and timestamp (wrong secret, or the body was changed)` };
  return { ok: true, signed: true };
}

/**
 * The secret from the environment: RACKLB_WEBHOOK_SECRET, or the file RACKLB_WEBHOOK_SECRET_FILE
 * names (a mounted Kubernetes Secret; one trailing newline is dropped). Never from the command
 * line, where every user of the machine can read it in the process list.
 */
export function loadWebhookSecret(env: Record<string, string | undefined> = process.env): Buffer | undefined {
  const inline = env.RACKLB_WEBHOOK_SECRET;
  const file = env.RACKLB_WEBHOOK_SECRET_FILE;
  if (inline !== undefined && file !== undefined) {
    throw new RacklbError('RACKLB_USAGE', 'RACKLB_WEBHOOK_SECRET and RACKLB_WEBHOOK_SECRET_FILE: set one, not both');
  }
  let secret: Buffer;
  let name: string;
  if (file !== undefined) {
    name = 'RACKLB_WEBHOOK_SECRET_FILE';
    try {
      secret = readFileSync(file);
    } catch (err) {
      throw new RacklbError('RACKLB_USAGE', `RACKLB_WEBHOOK_SECRET_FILE: cannot read ${file}: ${(err as Error).message}`);
    }
    if (secret.length > 0 && secret[secret.length - 1] === 0x0a) secret = secret.subarray(0, secret.length - (secret[secret.length - 2] === 0x0d ? 2 : 1));
  } else if (inline !== undefined) {
    name = 'RACKLB_WEBHOOK_SECRET';
    secret = Buffer.from(inline, 'utf8');
  } else {
    return undefined;
  }
  if (secret.length < MIN_SECRET_BYTES) throw new RacklbError('RACKLB_USAGE', `${name}: the webhook secret must be at least ${MIN_SECRET_BYTES} bytes (got ${secret.length})`);
  return secret;
}
