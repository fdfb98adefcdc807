import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { isRacklbError } from '../../../src/errors.js';
import { isAlive, killPidFile, readPidFile, runCommand, spawnInNetns, waitFor } from '../../../src/lab/process.js';
import { routesFromIpJson } from '../../../src/lab/routes.js';

const dir = mkdtempSync(join(tmpdir(), 'racklb-process-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('runCommand', () => {
  it('returns stdout and feeds stdin', async () => {
    expect((await runCommand('cat', [], { input: 'hello\n' })).stdout).toBe('hello\n');
  });
  it('names the command, its exit code and its stderr', async () => {
    const err = await runCommand('sh', ['-c', 'echo oops >&2; exit 3']).catch((e: unknown) => e);
    expect(isRacklbError(err, 'RACKLB_LAB')).toBe(true);
    expect((err as Error).message).toBe('command failed: sh -c echo oops >&2; exit 3: exit code 3\noops');
  });
  it('quotes the failing line of a batch', async () => {
    const err = await runCommand('sh', ['-c', 'cat >/dev/null; echo "Command failed -:2" >&2; exit 1'], { input: 'one\ntwo\nthree\n' }).catch((e: unknown) => e);
    expect((err as Error).message).toContain('(batch line 2: two)');
  });
  it('says when a binary is missing', async () => {
    await expect(runCommand('racklb-no-such-binary', [])).rejects.toThrow(/racklb-no-such-binary is not installed/);
  });
});

describe('waitFor', () => {
  it('resolves with the first truthy value', async () => {
    let n = 0;
    expect(await waitFor('n to reach 3', async () => (++n >= 3 ? n : false), 1_000, 1)).toBe(3);
  });
  it('times out with the documented message and the last error', async () => {
    const err = await waitFor('nothing', async () => {
      throw new Error('not yet');
    }, 50, 10).catch((e: unknown) => e);
    expect(isRacklbError(err, 'RACKLB_LAB')).toBe(true);
    expect((err as Error).message).toBe('timed out after 50ms waiting for nothing (last error: not yet)');
  });
  it('does not wait past its deadline for a call that hangs', async () => {
    const t0 = Date.now();
    await expect(waitFor('a hanging call', () => new Promise<undefined>(() => undefined), 100)).rejects.toThrow('timed out after 100ms waiting for a hanging call');
    expect(Date.now() - t0).toBeLessThan(1_000);
  });
});

describe('spawnInNetns, isAlive, killPidFile', () => {
  it('starts a detached process with a log and a pid file, and stops it', async () => {
    const logFile = join(dir, 'sub', 'sleep.log');
    const pidFile = join(dir, 'sub', 'sleep.pid');
    const child = spawnInNetns(undefined, 'sh', ['-c', 'echo started; exec sleep 30'], { logFile, pidFile, env: { RACKLB_TEST: '1' } });
    expect(await readPidFile(pidFile)).toBe(child.pid);
    expect(isAlive(child.pid!)).toBe(true);
    await waitFor('the log line', async () => (await import('node:fs/promises')).readFile(logFile, 'utf8').then((t) => t.includes('started')), 5_000, 20);
    expect(await killPidFile(pidFile)).toBe(true);
    expect(isAlive(child.pid!)).toBe(false);
    expect(await readPidFile(pidFile)).toBeUndefined();
    expect(await killPidFile(pidFile)).toBe(false);
  });
  it('throws for a binary that does not exist', () => {
    expect(() => spawnInNetns(undefined, 'racklb-no-such-binary', [], { logFile: join(dir, 'x.log') })).toThrow(/cannot start racklb-no-such-binary/);
  });
  it('isAlive is false for impossible pids', () => {
    expect(isAlive(0)).toBe(false);
    expect(isAlive(-1)).toBe(false);
    expect(isAlive(2 ** 22 + 1)).toBe(false);
  });
});

describe('routesFromIpJson', () => {
  it('adds lengths to host routes, keeps multipath, drops connected routes, sorts numerically', () => {
    const v4 = JSON.stringify([
      { dst: 'default', gateway: '192.0.2.1', dev: 'eth0', flags: [] },
      { dst: '192.0.2.0/26', dev: 'br0', protocol: 'kernel', scope: 'link', prefsrc: '192.0.2.1', flags: [] },
      { dst: '198.51.100.10', protocol: 'bird', metric: 32, flags: [], nexthops: [
        { gateway: '192.0.2.10', dev: 'br0', weight: 1, flags: [] },
        { gateway: '192.0.2.9', dev: 'br0', weight: 1, flags: [] },
      ] },
      { dst: '198.51.100.0/24', gateway: '203.0.113.0', dev: 'up0', flags: [] },
      { dst: '198.51.100.2', type: 'blackhole', flags: [] },
    ]);
    const v6 = JSON.stringify([
      { dst: 'fe80::/64', dev: 'eth0', protocol: 'kernel', metric: 256, flags: [] },
      { dst: '2001:db8::10', gateway: 'fe80::2', dev: 'eth0', flags: [] },
      { dst: '2001:db8::10', gateway: 'fe80::1', dev: 'eth0', flags: [] },
    ]);
    const routes = routesFromIpJson([{ family: 'ipv4', json: v4 }, { family: 'ipv6', json: v6 }]);
    expect(routes).toEqual({
      '0.0.0.0/0': ['192.0.2.1'],
      '198.51.100.0/24': ['203.0.113.0'],
      '198.51.100.10/32': ['192.0.2.9', '192.0.2.10'],
      '2001:db8::10/128': ['fe80::1', 'fe80::2'],
    });
    expect(Object.keys(routes)).toEqual(['0.0.0.0/0', '198.51.100.0/24', '198.51.100.10/32', '2001:db8::10/128']);
    expect(routesFromIpJson([{ family: 'ipv4', json: '' }])).toEqual({});
  });
});
