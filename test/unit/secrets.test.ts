import { describe, expect, it } from 'vitest';
import { REDACTED, redactedJson, redactReplacer, redactText } from '../../src/secrets.js';

describe('secrets', () => {
  const cases: { name: string; text: string; secret: string }[] = [
    { name: 'plain JSON', text: '{"spec":{"conf":{"authPassword":"s3cr\\"et","peerAs":1}}}', secret: 's3cr' },
    { name: 'spaces', text: '{"authPassword" :  "top-secret" }', secret: 'top-secret' },
    { name: 'not a string', text: '{"authPassword":123456,"x":1}', secret: '123456' },
    { name: 'escaped inside a JSON string', text: JSON.stringify({ data: JSON.stringify({ conf: { authPassword: 'in-a-string', peerAs: 1 } }) }), secret: 'in-a-string' },
    { name: 'escaped quote in an escaped value', text: JSON.stringify({ data: JSON.stringify({ authPassword: 'a"b-c', x: 1 }) }), secret: 'b-c' },
    { name: 'truncated body', text: '{"conf":{"authPassword":"cut-off', secret: 'cut-off' },
    { name: 'redis password', text: '{"password":"hunter2"}', secret: 'hunter2' },
  ];
  for (const c of cases) {
    it(`redacts ${c.name}`, () => {
      const out = redactText(c.text);
      expect(out).toContain(REDACTED);
      expect(out).not.toContain(c.secret);
    });
  }
  it('replaces secret members when stringifying, wherever they are', () => {
    const text = JSON.stringify({ a: { authPassword: 'x1' }, list: [{ password: 'x2' }], authPassword: '' }, redactReplacer);
    expect(text).not.toMatch(/x1|x2/);
    expect(text).toContain(REDACTED);
  });
  it('stringifies as the replacer does, with or without secrets in the value', () => {
    const values: unknown[] = [
      { spec: { conf: { authPassword: 's3cret', peerAs: 1 } } },
      { list: [{ password: 'x2' }, { password: '' }] },
      { note: 'a value that reads "password":"not-a-member"', n: 1 },
      { ['pass\u0077ord']: 'escaped-name' },
      JSON.parse('{"pass\\u0077ord":"escaped-in-text"}'),
      { metadata: { name: 'n1', labels: { a: 'b' } }, list: [1, null, true] },
    ];
    for (const v of values) expect(redactedJson(v)).toBe(JSON.stringify(v, redactReplacer));
    expect(redactedJson(values[4])).not.toContain('escaped-in-text');
  });
});
