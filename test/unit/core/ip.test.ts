import fc from 'fast-check';
import ipaddr from 'ipaddr.js';
import { describe, expect, it } from 'vitest';

import { formatIp, ipKey, keyOf, normalizeIp, parseIp, requireIpv4 } from '../../../src/core/ip.js';
import { expectInvalidField } from './assert.js';

describe('parseIp', () => {
  const accepted: { name: string; input: string; text: string; family: 'ipv4' | 'ipv6' }[] = [
    { name: 'plain IPv4', input: '192.0.2.10', text: '192.0.2.10', family: 'ipv4' },
    { name: 'IPv4 zero', input: '0.0.0.0', text: '0.0.0.0', family: 'ipv4' },
    { name: 'IPv4 broadcast', input: '255.255.255.255', text: '255.255.255.255', family: 'ipv4' },
    { name: 'IPv6 upper case is lowered', input: '2001:DB8::A', text: '2001:db8::a', family: 'ipv6' },
    { name: 'IPv6 full form is compressed', input: '2001:0db8:0000:0000:0000:0000:0000:0001', text: '2001:db8::1', family: 'ipv6' },
    { name: 'IPv6 longest zero run is compressed', input: '2001:db8:0:0:1:0:0:0', text: '2001:db8:0:0:1::', family: 'ipv6' },
    { name: 'IPv6 loopback', input: '::1', text: '::1', family: 'ipv6' },
    { name: 'IPv6 unspecified', input: '::', text: '::', family: 'ipv6' },
    { name: 'IPv6 with dotted tail (NAT64)', input: '64:ff9b::192.0.2.1', text: '64:ff9b::c000:201', family: 'ipv6' },
    { name: 'IPv4-compatible form stays ::/96, not mapped', input: '::192.0.2.1', text: '::c000:201', family: 'ipv6' },
  ];
  it.each(accepted)('accepts $name', ({ input, text, family }) => {
    expect(parseIp(input)).toMatchObject({ text, family });
  });

  const refused: { name: string; input: string }[] = [
    { name: 'empty', input: '' },
    { name: 'IPv4 shorthand', input: '127.1' },
    { name: 'IPv4 hex', input: '0x7f.0.0.1' },
    { name: 'IPv4 leading zero', input: '192.0.02.1' },
    { name: 'IPv4 octet too large', input: '192.0.2.256' },
    { name: 'surrounding space', input: ' 192.0.2.1' },
    { name: 'CIDR', input: '192.0.2.0/24' },
    { name: 'IPv6 zone', input: 'fe80::1%eth0' },
    { name: 'IPv6 too many groups', input: '1:2:3:4:5:6:7:8:9' },
    { name: 'IPv6 two double colons', input: '1::2::3' },
    { name: 'IPv4-mapped IPv6 (Go reads it as IPv4)', input: '::ffff:192.0.2.1' },
    { name: 'IPv4-mapped IPv6 in hex', input: '::ffff:c000:201' },
    { name: 'hostname', input: 'leaf1.example' },
    { name: 'over 45 characters', input: `${'0'.repeat(40)}::1` },
  ];
  it.each(refused)('refuses $name', ({ input }) => {
    expect(parseIp(input)).toBeUndefined();
  });

  it('answers a text it parsed before the same way, and hands out frozen results (they are shared)', () => {
    for (const { input, text, family } of accepted) {
      const first = parseIp(input);
      const again = parseIp(input);
      expect(again).toEqual(first);
      expect(again).toMatchObject({ text, family });
      expect(Object.isFrozen(again)).toBe(true);
    }
    for (const { input } of refused) {
      parseIp(input);
      expect(parseIp(input)).toBeUndefined();
    }
    // More texts than the cache holds: every one still parses as it does alone.
    for (let i = 0; i < 20_000; i++) {
      const ip = `198.18.${i >> 8}.${i & 255}`;
      expect(parseIp(ip)?.text).toBe(ip);
    }
    expect(parseIp('192.0.2.10')?.value).toBe(0xc000020an);
  });

  it('round-trips every IPv4 value through formatIp', () => {
    fc.assert(
      fc.property(fc.ipV4(), (ip) => {
        const p = parseIp(ip);
        expect(p).toBeDefined();
        expect(formatIp('ipv4', p?.value ?? 0n)).toBe(ip);
      }),
    );
  });

  it('canonicalises IPv6 to a fixed point', () => {
    fc.assert(
      fc.property(fc.ipV6(), (ip) => {
        const p = parseIp(ip);
        if (p === undefined) return; // fast-check also generates IPv4-mapped forms, refused on purpose
        expect(parseIp(p.text)?.text).toBe(p.text);
        expect(formatIp('ipv6', p.value)).toBe(p.text);
        expect(p.text).toBe(p.text.toLowerCase());
      }),
    );
  });
});

describe('normalizeIp and requireIpv4', () => {
  it('name the field and the rule', () => {
    expectInvalidField(() => normalizeIp('nope', 'spec.x'), 'spec.x', 'must be an IPv4 address (dotted quad) or an IPv6 address');
    expectInvalidField(() => normalizeIp(42, 'spec.x'), 'spec.x', 'must be an IPv4 address (dotted quad) or an IPv6 address');
    expectInvalidField(() => requireIpv4('2001:db8::1', 'spec.routerId'), 'spec.routerId', 'must be an IPv4 address');
    expect(requireIpv4('192.0.2.1', 'spec.routerId')).toBe('192.0.2.1');
  });
});

describe('ipKey', () => {
  it.each([
    { name: 'IPv4', input: '192.0.2.1', want: '192.0.2.1' },
    { name: 'IPv4 zero', input: '0.0.0.0', want: '0.0.0.0' },
    { name: 'IPv4 top', input: '255.255.255.255', want: '255.255.255.255' },
    { name: 'IPv6 as 32 hex digits', input: '::c000:201', want: '000000000000000000000000c0000201' },
    { name: 'IPv6 non-canonical', input: '2001:DB8:0:0:0:0:0:1', want: '20010db8000000000000000000000001' },
    { name: 'IPv6 leading zeros', input: '2001:0db8::0001', want: '20010db8000000000000000000000001' },
    { name: 'IPv4-mapped refused', input: '::ffff:c000:201', want: undefined },
    { name: 'garbage', input: '1::2::3', want: undefined },
    { name: 'IPv4 with leading zero', input: '192.0.2.01', want: undefined },
  ])('$name', ({ input, want }) => {
    expect(ipKey(input)).toBe(want);
  });

  it('agrees with parseIp on any text', () => {
    fc.assert(
      fc.property(fc.oneof(fc.ipV4(), fc.ipV6(), fc.ipV4Extended(), fc.string(), fc.stringMatching(/^[0-9a-f:]{0,40}$/)), (ip) => {
        const p = parseIp(ip);
        expect(ipKey(ip)).toBe(p === undefined ? undefined : keyOf(p.family, p.value));
      }),
      { numRuns: 5000 },
    );
  });
});

describe('formatIp', () => {
  it('writes IPv6 exactly as ipaddr.js does (RFC 5952)', () => {
    const arbValue = fc.bigInt({ min: 0n, max: 2n ** 128n - 1n });
    const sparse = fc
      .array(fc.constantFrom(0, 0, 0, 1, 0xffff), { minLength: 8, maxLength: 8 })
      .map((gs) => gs.reduce((v, g) => (v << 16n) | BigInt(g), 0n));
    fc.assert(
      fc.property(fc.oneof(arbValue, sparse), (value) => {
        const bytes = Array.from({ length: 16 }, (_, i) => Number((value >> BigInt(8 * (15 - i))) & 255n));
        expect(formatIp('ipv6', value)).toBe(ipaddr.fromByteArray(bytes).toString());
      }),
      { numRuns: 3000 },
    );
  });
});
