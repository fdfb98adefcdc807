/**
 * The lab's IPv6 fields (subnet6, router6, uplink6, ip6): parsing, field-named errors, and router
 * configurations that BIRD and FRR themselves accept.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkBirdConfig, leafBirdConfig, spineBirdConfig } from '../../../src/lab/bird.js';
import { checkFrrConfig, FRR_DIR, leafFrrConfig, spineFrrConfig } from '../../../src/lab/frr.js';
import { parseTopology } from '../../../src/lab/topology.js';

const EXAMPLE = readFileSync('examples/lab/dual-stack-topology.yaml', 'utf8');

/** A one-rack topology with the given extra rack fields and node fields. */
function oneRack(rackExtra: string, nodeExtra = ''): string {
  return `spine: { name: spine, asn: 65000 }
racks:
  - { name: r1, asn: 65001, subnet: 192.0.2.0/26, router: 192.0.2.1${rackExtra}, nodes: [{ name: n1, ip: 192.0.2.3${nodeExtra} }] }
`;
}

describe('dual-stack topology', () => {
  it('parses the example: IPv6 segment, router address, node addresses, uplink /127s from the pool in rack order', () => {
    const t = parseTopology(EXAMPLE);
    expect(t.racks.map((r) => r.ipv6)).toEqual([
      { subnet: '2001:db8:0:1::/64', router: '2001:db8:0:1::1', uplink: { spine: '2001:db8:ffff::', leaf: '2001:db8:ffff::1', prefix: '2001:db8:ffff::/127' } },
      { subnet: '2001:db8:0:2::/64', router: '2001:db8:0:2::1', uplink: { spine: '2001:db8:ffff::2', leaf: '2001:db8:ffff::3', prefix: '2001:db8:ffff::2/127' } },
    ]);
    expect(t.racks[0]!.nodes).toEqual([
      { name: 'master1', ip: '192.0.2.3', ip6: '2001:db8:0:1::3' },
      { name: 'worker-p001', ip: '192.0.2.4', ip6: '2001:db8:0:1::4' },
    ]);
    expect(t.racks[1]!.daemon).toBe('frr');
  });

  it('keeps IPv4-only racks exactly as they were, and lets a rack mix IPv4-only nodes in', () => {
    const t = parseTopology(oneRack(''));
    expect(t.racks[0]).not.toHaveProperty('ipv6');
    const mixed = parseTopology(oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:9::1"'));
    expect(mixed.racks[0]!.nodes[0]).toEqual({ name: 'n1', ip: '192.0.2.3' });
  });

  it('writes addresses in canonical form and takes an explicit uplink6', () => {
    const t = parseTopology(oneRack(', subnet6: "2001:DB8:0:9:0:0:0:0/64", router6: "2001:db8:0:9:0::a", uplink6: "2001:db8:eeee::10/127"', ', ip6: "2001:0db8:0:9::0b"'));
    expect(t.racks[0]!.ipv6).toEqual({ subnet: '2001:db8:0:9::/64', router: '2001:db8:0:9::a', uplink: { spine: '2001:db8:eeee::10', leaf: '2001:db8:eeee::11', prefix: '2001:db8:eeee::10/127' } });
    expect(t.racks[0]!.nodes[0]!.ip6).toBe('2001:db8:0:9::b');
  });

  it.each([
    [oneRack(', subnet6: "2001:db8:0:9::/64"'), /^racks\[0\]\.router6: is required with subnet6/],
    [oneRack(', router6: "2001:db8:0:9::1"'), /^racks\[0\]\.router6: needs subnet6/],
    [oneRack(', uplink6: "2001:db8:eeee::/127"'), /^racks\[0\]\.uplink6: needs subnet6/],
    [oneRack('', ', ip6: "2001:db8:0:9::3"'), /^racks\[0\]\.nodes\[0\]\.ip6: needs subnet6 in rack r1/],
    [oneRack(', subnet6: "192.0.2.0/26", router6: "2001:db8::1"'), /^racks\[0\]\.subnet6: must be an IPv6 network such as 2001:db8:0:1::\/64/],
    [oneRack(', subnet6: "2001:db8:0:9::1/64", router6: "2001:db8:0:9::2"'), /^racks\[0\]\.subnet6: must be a network address: the host bits are set \(did you mean 2001:db8:0:9::\/64\?\)/],
    [oneRack(', subnet6: "2001:db8:0:9::/127", router6: "2001:db8:0:9::1"'), /^racks\[0\]\.subnet6: must be \/126 or larger/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:8::1"'), /^racks\[0\]\.router6: must be inside the rack subnet6 2001:db8:0:9::\/64/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:9::"'), /^racks\[0\]\.router6: must not be the network \(Subnet-Router anycast\) address/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "fe80::1%eth0"'), /^racks\[0\]\.router6: must be an IPv6 address/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "::ffff:192.0.2.1"'), /^racks\[0\]\.router6: must be an IPv6 address/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:9::1"', ', ip6: "2001:db8:0:9::1"'), /^racks\[0\]\.nodes\[0\]\.ip6: must be unique in the rack, racks\[0\]\.router6 already uses it/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:9::1", uplink6: "2001:db8:eeee::/126"'), /^racks\[0\]\.uplink6: must be a \/127/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:9::1", uplink6: "2001:db8:0:9::10/127"'), /^racks\[0\]\.uplink6: must not overlap r1's subnet6 2001:db8:0:9::\/64/],
    [oneRack(', subnet6: "2001:db8:0:9::/64", router6: "2001:db8:0:9::1", ipv6: 1'), /^racks\[0\]\.ipv6: unknown field/],
    [EXAMPLE.replace('subnet6: 2001:db8:0:2::/64', 'subnet6: 2001:db8:0:1::/64').replace('router6: 2001:db8:0:2::1', 'router6: 2001:db8:0:1::2').replace("'2001:db8:0:2::66'", "'2001:db8:0:1::66'"), /^racks\[1\]\.subnet6: must not overlap leaf1's subnet6 2001:db8:0:1::\/64/],
  ])('rejects a bad IPv6 field, naming it (%#)', (text, message) => {
    expect(() => parseTopology(text)).toThrow(message);
  });

  it('skips uplink6 /127s that a rack already uses', () => {
    const t = parseTopology(EXAMPLE.replace('    router6: 2001:db8:0:1::1\n', '    router6: 2001:db8:0:1::1\n    uplink6: 2001:db8:ffff::2/127\n'));
    expect(t.racks.map((r) => r.ipv6?.uplink.prefix)).toEqual(['2001:db8:ffff::2/127', '2001:db8:ffff::/127']);
  });
});

describe('dual-stack router configurations', () => {
  const dir = mkdtempSync(join(tmpdir(), 'racklb-dual-'));
  // FRR reads its config as the frr user: the directory must let it in.
  chmodSync(dir, 0o755);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const t = parseTopology(EXAMPLE);
  const v4Only = parseTopology(oneRack(''));

  it('BIRD: IPv6 sessions beside the IPv4 ones on the leaf, a kernel protocol per family, global next hops at the spine; bird -p accepts them', async () => {
    const leaf = leafBirdConfig(t, t.racks[0]!);
    for (const line of [
      'template bgp rack_speaker6 from racklb_bgp {',
      '  local 2001:db8:0:1::1 as 65001;',
      'protocol bgp node6_master1 from rack_speaker6 {',
      '  neighbor 2001:db8:0:1::3 external;',
      '  neighbor range 2001:db8:0:1::/64 external;',
      '  neighbor 2001:db8:ffff:: as 65000;',
      'protocol kernel kernel_ipv6 {',
    ]) {
      expect(leaf.split('\n'), line).toContain(line);
    }
    const spine = spineBirdConfig(t);
    expect(spine).toContain('protocol bgp to_leaf2_v6 from racklb_bgp {');
    expect(spine).toContain('  neighbor 2001:db8:ffff::3 as 65002;');
    expect(spine).toContain('    next hop prefer global;');
    expect(spineBirdConfig(v4Only)).not.toContain('ipv6');
    expect(leafBirdConfig(v4Only, v4Only.racks[0]!)).not.toContain('ipv6');
    for (const [name, text] of [
      ['leaf1', leaf],
      ['leaf2', leafBirdConfig(t, t.racks[1]!)],
      ['spine', spine],
    ] as const) {
      const file = join(dir, `${name}.conf`);
      writeFileSync(file, text);
      await checkBirdConfig(file, name);
    }
  });

  it('FRR: an IPv6 peer group and listen range, the IPv6 uplink, the spine preferring global next hops', () => {
    const leaf = leafFrrConfig(t, t.racks[1]!).split('\n');
    for (const line of [' bgp listen range 2001:db8:0:2::/64 peer-group speakers6', ' neighbor 2001:db8:0:2::66 peer-group speakers6', ' neighbor 2001:db8:ffff::2 remote-as 65000', ' address-family ipv6 unicast', '  neighbor speakers6 activate', '  neighbor 2001:db8:ffff::2 next-hop-self']) {
      expect(leaf, line).toContain(line);
    }
    const spine = spineFrrConfig(t).split('\n');
    for (const line of [' set ipv6 next-hop prefer-global', ' neighbor 2001:db8:ffff::1 remote-as 65001', '  neighbor 2001:db8:ffff::3 route-map RACKLB_PREFER_GLOBAL in']) {
      expect(spine, line).toContain(line);
    }
    expect(spineFrrConfig(v4Only)).not.toContain('ipv6');
  });

  it.skipIf(!existsSync(join(FRR_DIR, 'bgpd')))('FRR: its own dry run accepts the dual-stack configurations', async () => {
    for (const [name, text] of [
      ['frr-leaf1', leafFrrConfig(t, t.racks[0]!)],
      ['frr-leaf2', leafFrrConfig(t, t.racks[1]!)],
      ['frr-spine', spineFrrConfig(t)],
    ] as const) {
      const file = join(dir, `${name}.conf`);
      writeFileSync(file, text);
      await checkFrrConfig('bgpd', file, name);
    }
  });
});
