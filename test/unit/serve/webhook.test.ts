/** Webhook authentication and the secret's sources, table-driven with a fixed clock. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { authenticateWebhook, isCloudEventRequest, loadWebhookSecret, signWebhook, SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../../../src/serve/webhook.js';

const secret = Buffer.from('0123456789abcdef0123456789abcdef');
const NOW = 1_700_000_000_000;
const ts = NOW / 1000;
const body = '{"type":"ADDED","object":{}}';

describe('authenticateWebhook', () => {
  const cases: { name: string; headers: Record<string, string>; body?: string; ok: boolean; status?: number; says?: string }[] = [
    { name: 'a correct signature', headers: { [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: signWebhook(secret, ts, body) }, ok: true },
    { name: 'upper-case hex', headers: { [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: `sha256=${signWebhook(secret, ts, body).slice(7).toUpperCase()}` }, ok: true },
    { name: 'the edge of the window', headers: { [TIMESTAMP_HEADER]: String(ts - 300), [SIGNATURE_HEADER]: signWebhook(secret, ts - 300, body) }, ok: true },
    { name: 'one second past the window', headers: { [TIMESTAMP_HEADER]: String(ts - 301), [SIGNATURE_HEADER]: signWebhook(secret, ts - 301, body) }, ok: false, status: 401, says: '301 s old' },
    { name: 'no timestamp', headers: { [SIGNATURE_HEADER]: signWebhook(secret, ts, body) }, ok: false, status: 401, says: TIMESTAMP_HEADER },
    { name: 'no signature', headers: { [TIMESTAMP_HEADER]: String(ts) }, ok: false, status: 401, says: SIGNATURE_HEADER },
    { name: 'a timestamp in milliseconds', headers: { [TIMESTAMP_HEADER]: String(NOW), [SIGNATURE_HEADER]: signWebhook(secret, NOW, body) }, ok: false, status: 401, says: 'unix seconds' },
    { name: 'a non-numeric timestamp', headers: { [TIMESTAMP_HEADER]: '2024-01-01T00:00:00Z', [SIGNATURE_HEADER]: signWebhook(secret, ts, body) }, ok: false, status: 401, says: 'unix seconds' },
    { name: 'a short signature', headers: { [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: 'sha256=abcd' }, ok: false, status: 401, says: '64 hex digits' },
    { name: 'another body', headers: { [TIMESTAMP_HEADER]: String(ts), [SIGNATURE_HEADER]: signWebhook(secret, ts, body) }, body: `${body} `, ok: false, status: 401, says: 'does not match' },
  ];
  for (const c of cases) {
    it(`${c.ok ? 'accepts' : 'refuses'} ${c.name}`, () => {
      const auth = authenticateWebhook(c.headers, c.body ?? body, { secret, now: () => NOW });
      expect(auth.ok).toBe(c.ok);
      if (!auth.ok) {
        expect(auth.status).toBe(c.status);
        expect(auth.reason).toContain(c.says);
      }
    });
  }

  it('refuses everything without a secret unless unsigned webhooks are allowed', () => {
    expect(authenticateWebhook({}, body, {})).toMatchObject({ ok: false, status: 403 });
    expect(authenticateWebhook({}, body, { allowUnsigned: true })).toEqual({ ok: true, signed: false });
  });

  it('tells CloudEvents from webhooks by their envelope', () => {
    expect(isCloudEventRequest({ 'ce-specversion': '1.0' })).toBe(true);
    expect(isCloudEventRequest({ 'content-type': 'application/cloudevents+json; charset=utf-8' })).toBe(true);
    expect(isCloudEventRequest({ 'content-type': 'application/json' })).toBe(false);
    expect(isCloudEventRequest({})).toBe(false);
  });
});

describe('loadWebhookSecret', () => {
  const dir = mkdtempSync(join(tmpdir(), 'racklb-secret-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('reads the variable, or the file without its trailing newline', () => {
    expect(loadWebhookSecret({})).toBeUndefined();
    expect(loadWebhookSecret({ RACKLB_WEBHOOK_SECRET: 'a-secret-of-24-characters' })?.toString()).toBe('a-secret-of-24-characters');
    expect(loadWebhookSecret({ RACKLB_WEBHOOK_SECRET_FILE: file('s1', 'a-secret-from-a-mounted-file\n') })?.toString()).toBe('a-secret-from-a-mounted-file');
    expect(loadWebhookSecret({ RACKLB_WEBHOOK_SECRET_FILE: file('s2', 'a-secret-from-a-windows-file\r\n') })?.toString()).toBe('a-secret-from-a-windows-file');
  });

  const bad: { name: string; env: Record<string, string>; says: string }[] = [
    { name: 'both sources', env: { RACKLB_WEBHOOK_SECRET: 'x'.repeat(20), RACKLB_WEBHOOK_SECRET_FILE: '/nonexistent' }, says: 'set one, not both' },
    { name: 'a missing file', env: { RACKLB_WEBHOOK_SECRET_FILE: join(dir, 'missing') }, says: 'RACKLB_WEBHOOK_SECRET_FILE: cannot read' },
    { name: 'a short secret', env: { RACKLB_WEBHOOK_SECRET: 'short' }, says: 'RACKLB_WEBHOOK_SECRET: the webhook secret must be at least 16 bytes' },
    { name: 'an empty file', env: { RACKLB_WEBHOOK_SECRET_FILE: file('empty', '\n') }, says: 'at least 16 bytes (got 0)' },
  ];
  for (const c of bad) {
    it(`refuses ${c.name}, naming the variable`, () => {
      expect(() => loadWebhookSecret(c.env)).toThrow(c.says);
    });
  }
});
