import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isRacklbError } from '../../../src/errors.js';
import { checkBirdConfig, leafBirdConfig, spineBirdConfig, spineProtocolName } from '../../../src/lab/bird.js';
import { formatRoutes } from '../../../src/lab/routes.js';
import { DEFAULT_TOPOLOGY_YAML, defaultTopology, parseTopology, type Topology } from '../../../src/lab/topology.js';

describe('parseTopology', () => {
  it('parses the default topology of issue 4', () => {
    const t = defaultTopology();
    expect(t).toEqual({
      spine: { name: 'spine', asn: 65000, daemon: 'bird' },
      racks: [
        {
          name: 'leaf1',
          asn: 65001,
          subnet: '192.0.2.0/26',
          router: '192.0.2.1',
          uplink: { spine: '203.0.113.0', leaf: '203.0.113.1', prefix: '203.0.113.0/31' },
          nodes: [
            { name: 'master1', ip: '192.0.2.3' },
            { name: 'worker-p001', ip: '192.0.2.4' },
          ],
          daemon: 'bird',
        },
        {
          name: 'leaf2',
          asn: 65002,
          subnet: '192.0.2.64/26',
          router: '192.0.2.65',
          uplink: { spine: '203.0.113.2', leaf: '203.0.113.3', prefix: '203.0.113.2/31' },
          nodes: [{ name: 'worker-p002', ip: '192.0.2.66' }],
          daemon: 'bird',
        },
      ],
    });
    expect(parseTopology(DEFAULT_TOPOLOGY_YAML)).toEqual(t);
  });

  it('assigns missing uplinks from 203.0.113.0/24 in rack order, skipping /31s in use', () => {
    const t = parseTopology(`
spine: { name: spine, asn: 65000 }
racks:
  - { name: a, asn: 1, subnet: 10.0.0.0/24, router: 10.0.0.1, nodes: [] }
  - { name: b, asn: 2, subnet: 10.0.1.0/24, router: 10.0.1.1, nodes: [], uplink: 203.0.113.2/31 }
  - { name: c, asn: 3, subnet: 203.0.113.4/30, router: 203.0.113.5, nodes: [] }
  - { name: d, asn: 4, subnet: 10.0.3.0/24, router: 10.0.3.1, nodes: [] }
`);
    expect(t.racks.map((r) => r.uplink.prefix)).toEqual(['203.0.113.0/31', '203.0.113.2/31', '203.0.113.8/31', '203.0.113.10/31']);
    expect(t.racks[2]!.uplink).toEqual({ spine: '203.0.113.8', leaf: '203.0.113.9', prefix: '203.0.113.8/31' });
  });

  it('accepts long names (interface names are index-based)', () => {
    const long = `n${'x'.repeat(61)}1`; // 63 characters
    const t = parseTopology(`
spine: { name: spine, asn: 65000 }
racks:
  - { name: ${long.replace('n', 'r')}, asn: 1, subnet: 10.0.0.0/24, router: 10.0.0.1, nodes: [{ name: ${long}, ip: 10.0.0.2 }] }
`);
    expect(t.racks[0]!.nodes[0]!.name).toBe(long);
    expect(spineProtocolName(t.racks[0]!.name, 0)).toBe('to_rack0_');
    expect(spineProtocolName('leaf-1', 3)).toBe('to_leaf_1');
  });

  // Each case replaces one thing in the default file; the error must name the field.
  const cases: [string, (y: string) => string, string, RegExp][] = [
    ['node outside the subnet', (y) => y.replace('192.0.2.66 }', '192.0.2.3 }'), 'racks[1].nodes[0].ip', /must be inside the rack subnet 192\.0\.2\.64\/26/],
    ['node on the network address', (y) => y.replace('192.0.2.66 }', '192.0.2.64 }'), 'racks[1].nodes[0].ip', /network address/],
    ['node on the broadcast address', (y) => y.replace('192.0.2.66 }', '192.0.2.127 }'), 'racks[1].nodes[0].ip', /broadcast address/],
    ['node on the router address', (y) => y.replace('ip: 192.0.2.4 }', 'ip: 192.0.2.1 }'), 'racks[0].nodes[1].ip', /unique in the rack, racks\[0\]\.router/],
    ['duplicate node IP', (y) => y.replace('ip: 192.0.2.4 }', 'ip: 192.0.2.3 }'), 'racks[0].nodes[1].ip', /unique/],
    ['not an IP', (y) => y.replace('ip: 192.0.2.4 }', 'ip: 192.0.2.400 }'), 'racks[0].nodes[1].ip', /IPv4 address/],
    ['router outside the subnet', (y) => y.replace('router: 192.0.2.65\n', 'router: 192.0.2.1\n'), 'racks[1].router', /inside the rack subnet/],
    ['duplicate node name', (y) => y.replace('worker-p002', 'master1'), 'racks[1].nodes[0].name', /unique among router and node names, racks\[0\]\.nodes\[0\]\.name/],
    ['node named like a router', (y) => y.replace('worker-p002', 'leaf1'), 'racks[1].nodes[0].name', /unique/],
    ['invalid name', (y) => y.replace('worker-p002', 'Worker_2'), 'racks[1].nodes[0].name', /DNS label/],
    ['name too long', (y) => y.replace('worker-p002', 'w'.repeat(64)), 'racks[1].nodes[0].name', /DNS label/],
    ['asn out of range', (y) => y.replace('asn: 65002', 'asn: 4294967296'), 'racks[1].asn', /between 1 and 4294967295/],
    ['asn zero', (y) => y.replace('asn: 65000', 'asn: 0'), 'spine.asn', /between 1 and 4294967295/],
    ['asn not a number', (y) => y.replace('asn: 65002', 'asn: "x"'), 'racks[1].asn', /integer/],
    ['duplicate asn', (y) => y.replace('asn: 65002', 'asn: 65001'), 'racks[1].asn', /racks\[0\]\.asn already uses it/],
    ['leaf asn equal to the spine', (y) => y.replace('asn: 65002', 'asn: 65000'), 'racks[1].asn', /spine\.asn/],
    ['subnet not a CIDR', (y) => y.replace('subnet: 192.0.2.64/26', 'subnet: 192.0.2.64'), 'racks[1].subnet', /IPv4 network/],
    ['subnet with host bits', (y) => y.replace('subnet: 192.0.2.64/26', 'subnet: 192.0.2.65/26'), 'racks[1].subnet', /did you mean 192\.0\.2\.64\/26/],
    ['overlapping subnets', (y) => y.replace('subnet: 192.0.2.64/26', 'subnet: 192.0.2.0/24'), 'racks[1].subnet', /overlap leaf1/],
    ['uplink not a /31', (y) => y.replace('uplink: 203.0.113.2/31', 'uplink: 203.0.113.0/30'), 'racks[1].uplink', /\/31/],
    ['uplink on the higher address', (y) => y.replace('uplink: 203.0.113.2/31', 'uplink: 203.0.113.3/31'), 'racks[1].uplink', /network address/],
    ['duplicate uplink', (y) => y.replace('uplink: 203.0.113.2/31', 'uplink: 203.0.113.0/31'), 'racks[1].uplink', /leaf1's uplink/],
    ['uplink inside a rack subnet', (y) => y.replace('uplink: 203.0.113.2/31', 'uplink: 192.0.2.10/31'), 'racks[1].uplink', /overlap leaf1's subnet/],
    ['unknown field', (y) => y.replace('subnet: 192.0.2.64/26', 'subnett: 192.0.2.64/26'), 'racks[1].subnett', /unknown field/],
    ['missing subnet', (y) => y.replace('    subnet: 192.0.2.64/26\n', ''), 'racks[1].subnet', /required/],
    ['missing nodes', (y) => y.replace(/ {4}nodes:\n {6}- \{ name: worker-p002, ip: 192\.0\.2\.66 \}\n/, ''), 'racks[1].nodes', /required/],
    ['other daemon', (y) => y.replace('asn: 65000 }', 'asn: 65000, daemon: quagga }'), 'spine.daemon', /"bird" .* or "frr"/],
    ['password with a quote', (y) => y.replace('    asn: 65002\n', '    asn: 65002\n    password: \'se"cret\'\n'), 'racks[1].password', /printable ASCII characters without/],
    ['password with a space', (y) => y.replace('    asn: 65002\n', "    asn: 65002\n    password: 'a b'\n"), 'racks[1].password', /without spaces/],
    ['password too long', (y) => y.replace('    asn: 65002\n', `    asn: 65002\n    password: ${'p'.repeat(81)}\n`), 'racks[1].password', /1 to 80/],
    ['password not a string', (y) => y.replace('    asn: 65002\n', '    asn: 65002\n    password: 12345\n'), 'racks[1].password', /printable ASCII/],
    ['no racks', () => 'spine: { name: spine, asn: 65000 }\nracks: []\n', 'racks', /at least one/],
    ['racks not a list', () => 'spine: { name: spine, asn: 65000 }\nracks: 3\n', 'racks', /list/],
    ['no spine', () => 'racks: []\n', 'spine', /required/],
  ];
  it.each(cases)('rejects %s naming the field', (_what, edit, field, rule) => {
    const yaml = edit(DEFAULT_TOPOLOGY_YAML);
    expect(yaml).not.toBe(DEFAULT_TOPOLOGY_YAML);
    let caught: unknown;
    try {
      parseTopology(yaml);
    } catch (err) {
      caught = err;
    }
    expect(isRacklbError(caught, 'RACKLB_INVALID_FIELD')).toBe(true);
    const e = caught as Error & { field?: string };
    expect(e.field).toBe(field);
    expect(e.message.startsWith(`${field}: `)).toBe(true);
    expect(e.message).toMatch(rule);
  });

  it('gives the exact message of the issue for a node outside its subnet', () => {
    expect(() => parseTopology(DEFAULT_TOPOLOGY_YAML.replace('192.0.2.66 }', '192.0.2.3 }'))).toThrow(
      'racks[1].nodes[0].ip: must be inside the rack subnet 192.0.2.64/26 (got "192.0.2.3")',
    );
  });

  it('limits racks to 16 and nodes to 64 per rack, and says so', () => {
    const racks = Array.from({ length: 17 }, (_, i) => `  - { name: r${i}, asn: ${i + 1}, subnet: 10.${i}.0.0/24, router: 10.${i}.0.1, nodes: [] }`).join('\n');
    expect(() => parseTopology(`spine: { name: s, asn: 65000 }\nracks:\n${racks}\n`)).toThrow(/^racks: the lab supports at most 16 racks/);
    const nodes = Array.from({ length: 65 }, (_, i) => `{ name: n${i}, ip: 10.0.0.${i + 2} }`).join(', ');
    expect(() => parseTopology(`spine: { name: s, asn: 65000 }\nracks:\n  - { name: r, asn: 1, subnet: 10.0.0.0/24, router: 10.0.0.1, nodes: [${nodes}] }\n`)).toThrow(
      /^racks\[0\]\.nodes: the lab supports at most 64 nodes per rack/,
    );
  });

  it('rejects malformed YAML and several documents with RACKLB_LAB', () => {
    for (const text of ['spine: {', 'a: 1\n---\nb: 2\n', '']) {
      let caught: unknown;
      try {
        parseTopology(text);
      } catch (err) {
        caught = err;
      }
      expect(isRacklbError(caught, 'RACKLB_LAB')).toBe(true);
    }
  });
});

describe('BIRD configurations', () => {
  const dir = mkdtempSync(join(tmpdir(), 'racklb-bird-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const check = async (name: string, text: string): Promise<void> => {
    const file = join(dir, `${name}.conf`);
    writeFileSync(file, text);
    await checkBirdConfig(file, name);
  };

  const t = defaultTopology();
  it('leaf config has the key lines and passes bird -p', async () => {
    const conf = leafBirdConfig(t, t.racks[0]!);
    expect(conf).toContain('router id 192.0.2.1;');
    expect(conf).toContain('neighbor range 192.0.2.0/26 external;');
    expect(conf).toContain('protocol bgp node_worker_p001 from rack_speaker');
    expect(conf).toContain('neighbor 192.0.2.4 external;');
    expect(conf).toContain('local 192.0.2.1 as 65001;');
    expect(conf).toContain('add paths rx;');
    expect(conf).toContain('merge paths on limit 64;');
    expect(conf).toContain('graceful restart on;');
    expect(conf).toContain('neighbor 203.0.113.0 as 65000;');
    expect(conf).toContain('next hop self;');
    await check('leaf1', conf);
    await check('leaf2', leafBirdConfig(t, t.racks[1]!, { ecmpLimit: 128, gracefulRestartTime: 300 }));
    const passive = leafBirdConfig(t, t.racks[0]!, { connectToNodes: false });
    expect(passive).not.toContain('node_');
    await check('leaf1-passive', passive);
  });

  it('spine config peers with every leaf and passes bird -p', async () => {
    const conf = spineBirdConfig(t);
    expect(conf).toContain('router id 203.0.113.0;');
    expect(conf).toContain('protocol bgp to_leaf1 from racklb_bgp');
    expect(conf).toContain('neighbor 203.0.113.1 as 65001;');
    expect(conf).toContain('neighbor 203.0.113.3 as 65002;');
    expect(conf).toContain('merge paths on limit 64;');
    await check('spine', conf);
  });

  it('configs for awkward names pass bird -p', async () => {
    const odd: Topology = parseTopology(`
spine: { name: core, asn: 4200000000 }
racks:
  - { name: bgp, asn: 4200000001, subnet: 10.0.0.0/30, router: 10.0.0.1, nodes: [{ name: kernel, ip: 10.0.0.2 }] }
  - { name: 1-rack-${'x'.repeat(56)}, asn: 7, subnet: 10.0.1.0/24, router: 10.0.1.254, nodes: [] }
`);
    await check('odd-spine', spineBirdConfig(odd));
    for (const rack of odd.racks) await check(`odd-${rack.asn}`, leafBirdConfig(odd, rack));
  });

  it('a rack password becomes the leaf\'s TCP-MD5 password toward its speakers, and passes bird -p', async () => {
    const pw = parseTopology(DEFAULT_TOPOLOGY_YAML.replace('    asn: 65002\n', "    asn: 65002\n    password: 'md5-s3cret!'\n"));
    expect(pw.racks[0]!.password).toBeUndefined();
    expect(pw.racks[1]!.password).toBe('md5-s3cret!');
    const conf = leafBirdConfig(pw, pw.racks[1]!);
    expect(conf).toMatch(/template bgp rack_speaker from racklb_bgp \{\n[^}]*password "md5-s3cret!";/);
    expect(conf.match(/password/g)?.length).toBe(1);
    expect(leafBirdConfig(pw, pw.racks[0]!)).not.toContain('password');
    await check('leaf2-md5', conf);
  });

  it('reports BIRD errors verbatim', async () => {
    await expect(check('broken', `${leafBirdConfig(t, t.racks[0]!)}\nprotocol bogus {}\n`)).rejects.toThrow(/BIRD rejects the configuration of broken .*\n.*broken\.conf:\d+:\d+ /);
  });
});

describe('formatRoutes', () => {
  it('lines up prefixes and next hops', () => {
    expect(formatRoutes({ '198.51.100.10/32': ['192.0.2.3', '192.0.2.4'], '0.0.0.0/0': ['192.0.2.1'] })).toBe(
      '198.51.100.10/32  via 192.0.2.3, 192.0.2.4\n0.0.0.0/0         via 192.0.2.1\n',
    );
    expect(formatRoutes({})).toBe('(no routes with a next hop)\n');
  });
});
