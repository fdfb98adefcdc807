import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkFrrConfig, FRR_DIR, leafFrrConfig, spineFrrConfig, zebraConfig } from '../../../src/lab/frr.js';
import { DEFAULT_TOPOLOGY_YAML, parseTopology } from '../../../src/lab/topology.js';

const t = parseTopology(DEFAULT_TOPOLOGY_YAML.replace('    asn: 65002\n', '    asn: 65002\n    daemon: frr\n    password: md5-s3cret!\n').replace('asn: 65000 }', 'asn: 65000, daemon: frr }'));

describe('FRR configurations', () => {
  // FRR reads its config as the frr user: the directory must let it in.
  const dir = mkdtempSync(join(tmpdir(), 'racklb-frr-'));
  chmodSync(dir, 0o755);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const check = async (which: 'zebra' | 'bgpd', name: string, text: string): Promise<void> => {
    const file = join(dir, `${name}.conf`);
    writeFileSync(file, text);
    await checkFrrConfig(which, file, name);
  };

  it('reads daemon: frr and the password from the topology', () => {
    expect(t.spine.daemon).toBe('frr');
    expect(t.racks.map((r) => r.daemon)).toEqual(['bird', 'frr']);
  });

  it('leaf: a listen range for the rack, a neighbor per node, ADD-PATH in, nothing out, ECMP, MD5', () => {
    const conf = leafFrrConfig(t, t.racks[1]!);
    for (const line of [
      'router bgp 65002',
      ' bgp router-id 192.0.2.65',
      ' bgp listen range 192.0.2.64/26 peer-group speakers',
      ' neighbor speakers remote-as external',
      ' neighbor speakers password md5-s3cret!',
      ' neighbor 192.0.2.66 peer-group speakers',
      ' neighbor 203.0.113.2 remote-as 65000',
      '  neighbor speakers route-map RACKLB_NONE out',
      '  neighbor 203.0.113.2 next-hop-self',
      '  maximum-paths 64',
      ' bgp bestpath as-path multipath-relax',
      ' timers bgp 3 9',
    ]) {
      expect(conf.split('\n'), line).toContain(line);
    }
    expect(leafFrrConfig(t, t.racks[0]!)).not.toContain('password');
    expect(leafFrrConfig(t, t.racks[1]!, { connectToNodes: false })).not.toContain('neighbor 192.0.2.66');
  });

  it('spine: one neighbor per leaf, exports nothing, ECMP across leaves of different ASes', () => {
    const conf = spineFrrConfig(t);
    expect(conf).toContain(' neighbor 203.0.113.1 remote-as 65001');
    expect(conf).toContain(' neighbor 203.0.113.3 remote-as 65002');
    expect(conf).toContain('  neighbor 203.0.113.3 route-map RACKLB_NONE out');
    expect(conf).toContain(' bgp router-id 203.0.113.0');
  });

  it.skipIf(!existsSync(join(FRR_DIR, 'bgpd')))('passes FRR\'s own dry run, and a refused line or an unreadable file is reported', async () => {
    await check('zebra', 'zebra', zebraConfig('leaf2'));
    await check('bgpd', 'leaf1', leafFrrConfig(t, t.racks[0]!));
    await check('bgpd', 'leaf2', leafFrrConfig(t, t.racks[1]!));
    await check('bgpd', 'spine', spineFrrConfig(t));
    const broken = `${spineFrrConfig(t)}\nrouter bgp 65000\n neighbor 203.0.113.1 frobnicate\n`;
    await expect(check('bgpd', 'broken', broken)).rejects.toThrow(/FRR bgpd rejects the configuration of broken .*\n.*frobnicate/);
    await expect(checkFrrConfig('bgpd', join(dir, 'missing.conf'), 'missing')).rejects.toThrow(/can't open configuration file/);
  });
});
