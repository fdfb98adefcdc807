/**
 * GobgpClient against real gobgpd processes on loopback (the one under test never listens for BGP),
 * plus a fake gRPC server for what must never reach gobgpd at all.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { isRacklbError } from '../../src/errors.js';
import { assertPathSet, GobgpClient, type GobgpPath, type GobgpPeerConfig, type GobgpPeerEvent } from '../../src/gobgp/client.js';
import { loadGobgpProto } from '../../src/gobgp/proto.js';
import { freePort, startGobgpd, type RunningGobgpd } from '../helpers/gobgpd.js';

const byKey = (a: GobgpPath, b: GobgpPath): number => (a.prefix === b.prefix ? a.identifier - b.identifier : a.prefix < b.prefix ? -1 : 1);
const sorted = (paths: GobgpPath[]): GobgpPath[] => [...paths].sort(byKey);
const ofPrefix = (paths: GobgpPath[], prefix: string): GobgpPath[] => sorted(paths.filter((p) => p.prefix === prefix));
const v4 = (prefix: string, identifier: number, nextHop: string): GobgpPath => ({ prefix, family: 'ipv4', nextHop, identifier });
const v6 = (prefix: string, identifier: number, nextHop: string): GobgpPath => ({ prefix, family: 'ipv6', nextHop, identifier });

async function until<T>(what: string, timeoutMs: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what}${last === undefined ? '' : `: ${String(last)}`}`);
}

function percentile(samples: number[], p: number): number {
  const s = [...samples].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))] ?? NaN;
}

describe('GobgpClient without gobgpd', () => {
  let server: grpc.Server;
  let address: string;
  const calls: string[] = [];
  const streamed: { paths: Record<string, unknown>[] }[] = [];

  beforeAll(async () => {
    const { service } = loadGobgpProto();
    server = new grpc.Server();
    const impl: grpc.UntypedServiceImplementation = {};
    for (const [name, def] of Object.entries(service)) {
      // Every method records its call, so "sends nothing" means nothing at all reached the server.
      type AnyCall = grpc.ServerReadableStream<unknown, unknown> & grpc.ServerWritableStream<unknown, unknown>;
      const handler = (call: AnyCall, callback?: grpc.sendUnaryData<unknown>): void => {
        calls.push(name);
        if (name === 'AddPathStream') {
          call.on('data', (msg: { paths: Record<string, unknown>[] }) => streamed.push(msg));
          call.on('end', () => callback?.(null, {}));
        } else if (def.responseStream) {
          call.end();
        } else {
          callback?.({ code: grpc.status.UNIMPLEMENTED, details: 'fake server' }, null);
        }
      };
      impl[name] = handler as unknown as grpc.UntypedHandleCall;
    }
    server.addService(service, impl);
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
    address = `127.0.0.1:${port}`;
  });

  afterAll(() => {
    server.forceShutdown();
  });

  test('deletePaths([]) and addPaths([]) send nothing', async () => {
    const client = new GobgpClient(address);
    try {
      await client.waitReady(2000);
      await client.deletePaths([]);
      await client.addPaths([]);
      expect(calls).toEqual([]);
    } finally {
      client.close();
    }
  });

  test('withdrawals travel as complete paths on AddPathStream, never through DeletePath', async () => {
    calls.length = 0;
    streamed.length = 0;
    const client = new GobgpClient(address);
    try {
      const paths = Array.from({ length: 250 }, (_, i) => v4(`198.18.${i >> 8}.${i & 255}/32`, 1 + (i % 3), '10.9.0.1'));
      await client.deletePaths(paths);
      expect(calls).toEqual(['AddPathStream']);
      expect(streamed.map((m) => m.paths.length)).toEqual([100, 100, 50]);
      for (const msg of streamed) {
        for (const p of msg.paths) {
          expect(p.is_withdraw).toBe(true);
          expect(p.nlri).toMatchObject({ type_url: 'type.googleapis.com/apipb.IPAddressPrefix' });
          expect(p.identifier).toBeGreaterThan(0);
        }
      }
    } finally {
      client.close();
    }
  });

  test('no method deletes without a path, and the guard refuses a pathless request', () => {
    const methods = Object.getOwnPropertyNames(GobgpClient.prototype).filter((n) => /delete|withdraw|clear|flush/i.test(n));
    expect(methods.sort()).toEqual(['deletePaths', 'deletePeer']);
    expect(() => assertPathSet({ family: { afi: 'AFI_IP', safi: 'SAFI_UNICAST' } })).toThrow(/without a path/);
    expect(() => assertPathSet({ path: null, uuid: Buffer.alloc(0) })).toThrow(/without a path/);
    expect(() => assertPathSet({ family: null, path: { family: null } })).toThrow(/without a path/);
    expect(() => assertPathSet({ path: { nlri: { type_url: 'type.googleapis.com/apipb.IPAddressPrefix', value: Buffer.alloc(1) } } })).not.toThrow();
    expect(() => assertPathSet({ uuid: Buffer.alloc(16, 1) })).not.toThrow();
  });

  test('a missing schema directory names the Debian package', () => {
    expect(() => loadGobgpProto('/nonexistent/gobgp/api')).toThrow(/golang-github-osrg-gobgp-dev/);
  });

  test('bad paths are refused before anything is sent', async () => {
    calls.length = 0;
    const client = new GobgpClient(address);
    try {
      const bad: GobgpPath[] = [
        v4('2001:db8::1/128', 1, '10.0.0.1'),
        v4('192.0.2.1/33', 1, '10.0.0.1'),
        v4('192.0.2.1', 1, '10.0.0.1'),
        v4('192.0.2.1/32', 0, '10.0.0.1'),
        v4('192.0.2.1/32', 1, '2001:db8::1'),
        v6('2001:db8::1/128', 1, '10.0.0.1'),
      ];
      for (const p of bad) {
        await expect(client.addPaths([p])).rejects.toSatisfy((e) => isRacklbError(e, 'RACKLB_INVALID_FIELD'));
        await expect(client.deletePaths([p])).rejects.toSatisfy((e) => isRacklbError(e, 'RACKLB_INVALID_FIELD'));
      }
      // gobgpd keeps the messages of a stream before a bad one. On a connected channel, 10,000 good
      // paths are 100 messages, more than the call buffers before it waits for 'drain', so checking
      // as the stream takes them would send the first ones: the bad last path must stop the call
      // before its first message, and be named by its index.
      await client.waitReady(2000);
      const good = Array.from({ length: 10_000 }, (_, i) => v4(`198.18.${i >> 8}.${i & 255}/32`, 1, '10.9.0.1'));
      const lastBad = [...good, v4('192.0.2.1/32', 1, '2001:db8::1')];
      await expect(client.addPaths(lastBad)).rejects.toThrow(/paths\[10000\]\.nextHop/);
      await expect(client.deletePaths(lastBad)).rejects.toThrow(/paths\[10000\]\.nextHop/);
      // A good call after them on the same connection: once it is answered, the server has seen
      // every stream opened before it.
      streamed.length = 0;
      await client.addPaths([good[0] as GobgpPath]);
      expect(calls).toEqual(['AddPathStream']);
      expect(streamed.map((m) => m.paths.length)).toEqual([1]);
    } finally {
      client.close();
    }
  });
});

describe('GobgpClient against gobgpd', () => {
  let gobgpd: RunningGobgpd;
  let client: GobgpClient;

  beforeAll(async () => {
    gobgpd = await startGobgpd();
    client = new GobgpClient(gobgpd.apiAddress);
    await client.waitReady(5000);
  });

  afterAll(async () => {
    client?.close();
    await gobgpd?.stop();
  });

  test('startBgp, then getGlobal reads it back', async () => {
    expect(await client.getGlobal()).toBeUndefined();
    await expect(client.listPaths('ipv4')).rejects.toSatisfy((e) => isRacklbError(e, 'RACKLB_GOBGP') && /ListPath failed: bgp server hasn't started yet/.test((e as Error).message));
    await client.startBgp({ asn: 64512, routerId: '10.255.0.1', listenPort: -1, listenAddresses: [] });
    // An empty address list comes back as gobgpd's default wildcard pair.
    expect(await client.getGlobal()).toEqual({ asn: 64512, routerId: '10.255.0.1', listenPort: -1, listenAddresses: ['0.0.0.0', '::'] });
  });

  test('several identifiers on one prefix are separate paths; same prefix + identifier replaces', async () => {
    const prefix = '192.0.2.10/32';
    const paths = [v4(prefix, 1, '10.1.0.1'), v4(prefix, 2, '10.1.0.2'), v4(prefix, 3, '10.1.0.3')];
    await client.addPaths(paths);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual(paths);

    await client.addPaths([v4(prefix, 2, '10.1.0.22')]);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual([paths[0], v4(prefix, 2, '10.1.0.22'), paths[2]]);
  });

  test('prefixes that alternate within one call each keep their own paths', async () => {
    // The client packs a prefix once for the paths that follow it: A, A, B, A must not put A's third path on B.
    const a = '192.0.2.20/32';
    const b = '192.0.2.21/32';
    const paths = [v4(a, 1, '10.1.0.1'), v4(a, 2, '10.1.0.2'), v4(b, 1, '10.1.0.1'), v4(a, 3, '10.1.0.3')];
    await client.addPaths(paths);
    const listed = await client.listPaths('ipv4');
    expect(ofPrefix(listed, a)).toEqual([paths[0], paths[1], paths[3]]);
    expect(ofPrefix(listed, b)).toEqual([paths[2]]);
    await client.deletePaths(paths);
    expect([...ofPrefix(await client.listPaths('ipv4'), a), ...ofPrefix(await client.listPaths('ipv4'), b)]).toEqual([]);
  });

  test('deletePaths removes exactly one prefix + identifier', async () => {
    const prefix = '192.0.2.10/32';
    await client.deletePaths([v4(prefix, 2, '10.1.0.22')]);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual([v4(prefix, 1, '10.1.0.1'), v4(prefix, 3, '10.1.0.3')]);
    // The next hop plays no part in matching a withdrawal.
    await client.deletePaths([v4(prefix, 1, '10.99.99.99')]);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual([v4(prefix, 3, '10.1.0.3')]);
    await client.deletePaths([]);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual([v4(prefix, 3, '10.1.0.3')]);
    await client.deletePaths([v4(prefix, 3, '10.1.0.3')]);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual([]);
  });

  test('1000 paths in one addPaths call, and back out in one deletePaths call', async () => {
    const paths = Array.from({ length: 1000 }, (_, i) => v4(`198.51.${100 + (i >> 8)}.${i & 255}/32`, 1 + (i % 4), `10.2.0.${1 + (i % 4)}`));
    await client.addPaths(paths);
    const listed = (await client.listPaths('ipv4')).filter((p) => p.prefix.startsWith('198.51.'));
    expect(sorted(listed)).toEqual(sorted(paths));
    await client.deletePaths(paths);
    expect((await client.listPaths('ipv4')).filter((p) => p.prefix.startsWith('198.51.'))).toEqual([]);
  });

  test('IPv6 paths', async () => {
    const prefix = '2001:db8:100::a/128';
    const paths = [v6(prefix, 1, '2001:db8:1::1'), v6(prefix, 2, '2001:db8:1::2')];
    await client.addPaths(paths);
    expect(ofPrefix(await client.listPaths('ipv6'), prefix)).toEqual(paths);
    expect(ofPrefix(await client.listPaths('ipv4'), prefix)).toEqual([]);
    await client.deletePaths([paths[0] as GobgpPath]);
    expect(ofPrefix(await client.listPaths('ipv6'), prefix)).toEqual([paths[1]]);
    await client.deletePaths([paths[1] as GobgpPath]);
    expect(await client.listPaths('ipv6')).toEqual([]);
  });

  test('call latency: one path, and 10,000 paths', async () => {
    const one: number[] = [];
    for (let i = 0; i < 200; i++) {
      const p = v4('192.0.2.77/32', 1 + (i % 2), '10.3.0.1');
      const t = performance.now();
      await client.addPaths([p]);
      one.push(performance.now() - t);
    }
    const many = Array.from({ length: 10_000 }, (_, i) => v4(`10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`, 1 + (i % 4), `10.4.0.${1 + (i % 4)}`));
    let t = performance.now();
    await client.addPaths(many);
    const addMs = performance.now() - t;
    t = performance.now();
    const listed = await client.listPaths('ipv4');
    const listMs = performance.now() - t;
    t = performance.now();
    await client.deletePaths(many);
    const deleteMs = performance.now() - t;
    await client.deletePaths([v4('192.0.2.77/32', 1, '10.3.0.1'), v4('192.0.2.77/32', 2, '10.3.0.1')]);
    console.log(
      `gobgpd latency: addPaths(1) p50 ${percentile(one, 0.5).toFixed(2)} ms p99 ${percentile(one, 0.99).toFixed(2)} ms; ` +
        `addPaths(10000) ${addMs.toFixed(0)} ms; listPaths(${listed.length}) ${listMs.toFixed(0)} ms; deletePaths(10000) ${deleteMs.toFixed(0)} ms`,
    );
    expect(listed.length).toBe(10_002);
    expect(await client.listPaths('ipv4')).toEqual([]);
    // Loose bounds: this checks "no per-call schema loading or per-path round trips", not the machine.
    expect(percentile(one, 0.5)).toBeLessThan(20);
    expect(addMs).toBeLessThan(10_000);
  });

  test('addPeer with every field set reads back (all but the password); updatePeer; deletePeer', async () => {
    const peer: GobgpPeerConfig = {
      neighborAddress: '192.0.2.200',
      peerAs: 65010,
      localAs: 64600,
      authPassword: 'md5-secret',
      description: 'leaf rack-a',
      ebgpMultihop: { enabled: true, multihopTtl: 3 },
      timers: { connectRetry: 7, holdTime: 30, keepaliveInterval: 10 },
      transport: { passiveMode: true, remotePort: 1790, localAddress: '127.0.0.1' },
      gracefulRestart: {
        enabled: true,
        restartTime: 120,
        helperOnly: false,
        deferralTime: 300,
        notificationEnabled: true,
        longlivedEnabled: true,
        staleRoutesTime: 600,
      },
      families: ['ipv4', 'ipv6'],
      addPathsSendMax: 64,
    };
    await client.addPeer(peer);
    const [status, ...others] = await client.listPeers();
    expect(others).toEqual([]);
    expect(status).toMatchObject({ neighborAddress: '192.0.2.200', adminState: 'up', uptimeSeconds: 0, localAddress: undefined, lastError: undefined });
    expect(['idle', 'active', 'connect']).toContain(status?.sessionState);
    expect(status?.config).toEqual({ ...peer, authPassword: undefined });

    const changed: GobgpPeerConfig = { ...peer, description: 'leaf rack-a (moved)', timers: { connectRetry: 7, holdTime: 60, keepaliveInterval: 20 } };
    await client.updatePeer(changed);
    expect((await client.listPeers()).map((p) => p.config)).toEqual([{ ...changed, authPassword: undefined }]);

    await expect(client.addPeer(peer)).rejects.toSatisfy((e) => isRacklbError(e, 'RACKLB_GOBGP') && /AddPeer.*existing peer/.test((e as Error).message));
    await client.deletePeer('192.0.2.200');
    expect(await client.listPeers()).toEqual([]);
    await expect(client.deletePeer('192.0.2.200')).rejects.toSatisfy((e) => isRacklbError(e, 'RACKLB_GOBGP') && /DeletePeer/.test((e as Error).message));
  });

  test('a peer with unset optional fields reads back gobgpd defaults', async () => {
    await client.addPeer({
      neighborAddress: '2001:db8::200',
      peerAs: 65011,
      ebgpMultihop: { enabled: false, multihopTtl: 0 },
      timers: {},
      transport: { passiveMode: true },
      families: ['ipv6'],
      addPathsSendMax: 0,
    });
    const [status] = await client.listPeers();
    expect(status?.config).toEqual({
      neighborAddress: '2001:db8::200',
      peerAs: 65011,
      localAs: 64512,
      authPassword: undefined,
      description: undefined,
      ebgpMultihop: { enabled: false, multihopTtl: 0 },
      timers: { connectRetry: 120, holdTime: 90, keepaliveInterval: 30 },
      transport: { passiveMode: true, remotePort: undefined, localAddress: undefined },
      gracefulRestart: undefined,
      families: ['ipv6'],
      addPathsSendMax: 0,
    });
    await client.deletePeer('2001:db8::200');
  });
});

describe('two gobgpd: ours announces with ADD-PATH, the other plays the router', () => {
  let gobgpdA: RunningGobgpd;
  let gobgpdB: RunningGobgpd;
  let a: GobgpClient;
  let b: GobgpClient;

  beforeAll(async () => {
    [gobgpdA, gobgpdB] = await Promise.all([startGobgpd(), startGobgpd()]);
    a = new GobgpClient(gobgpdA.apiAddress);
    b = new GobgpClient(gobgpdB.apiAddress);
  });

  afterAll(async () => {
    a?.close();
    b?.close();
    await Promise.all([gobgpdA?.stop(), gobgpdB?.stop()]);
  });

  test('B learns all three next hops of one prefix; watchPeers sees established', async () => {
    const portB = await freePort();
    await b.startBgp({ asn: 65001, routerId: '10.255.0.2', listenPort: portB, listenAddresses: ['127.0.0.1'] });
    // A connects from 127.0.0.2, so the two ends have distinct addresses on the same loopback.
    await b.addPeer({
      neighborAddress: '127.0.0.2',
      peerAs: 64512,
      ebgpMultihop: { enabled: false, multihopTtl: 0 },
      timers: {},
      transport: { passiveMode: true },
      families: ['ipv4', 'ipv6'],
      addPathsSendMax: 0,
      addPathsReceive: true,
    });

    await a.startBgp({ asn: 64512, routerId: '10.255.0.1', listenPort: -1, listenAddresses: [] });
    const events: GobgpPeerEvent[] = [];
    let ended: Error | undefined | 'no' = 'no';
    const watch = a.watchPeers(
      (e) => events.push(e),
      (err) => (ended = err),
    );
    try {
      await a.addPeer({
        neighborAddress: '127.0.0.1',
        peerAs: 65001,
        ebgpMultihop: { enabled: false, multihopTtl: 0 },
        timers: { connectRetry: 5, holdTime: 9, keepaliveInterval: 3 },
        transport: { passiveMode: false, remotePort: portB, localAddress: '127.0.0.2' },
        families: ['ipv4', 'ipv6'],
        addPathsSendMax: 8,
      });
      const prefix = '203.0.113.10/32';
      const prefix6 = '2001:db8:ff::10/128';
      const nextHops = ['10.1.0.1', '10.1.0.2', '10.1.0.3'];
      const nextHops6 = ['2001:db8:1::1', '2001:db8:1::2', '2001:db8:1::3'];
      await a.addPaths([...nextHops.map((nh, i) => v4(prefix, i + 1, nh)), ...nextHops6.map((nh, i) => v6(prefix6, i + 1, nh))]);

      // gobgpd makes its first outgoing connection attempt 5 to 10 s after the peer is added.
      const learnt = await until('B to learn 3 paths', 30_000, async () => {
        const rib = (await b.listRib('ipv4')).filter((p) => p.prefix === prefix);
        return rib.length === 3 ? rib : undefined;
      });
      expect(learnt.map((p) => p.nextHop).sort()).toEqual(nextHops);
      expect(learnt.every((p) => p.neighborAddress === '127.0.0.2')).toBe(true);
      const learnt6 = await until('B to learn 3 IPv6 paths', 5000, async () => {
        const rib = (await b.listRib('ipv6')).filter((p) => p.prefix === prefix6);
        return rib.length === 3 ? rib : undefined;
      });
      expect(learnt6.map((p) => p.nextHop).sort()).toEqual(nextHops6);
      // B learnt these: its own listPaths (local only) stays empty.
      expect(await b.listPaths('ipv4')).toEqual([]);

      expect(events.filter((e) => e.neighborAddress === '127.0.0.1').map((e) => e.sessionState)).toContain('established');
      const [status] = await a.listPeers();
      expect(status).toMatchObject({ neighborAddress: '127.0.0.1', sessionState: 'established', localAddress: '127.0.0.2', prefixesSent: 6 });
      // GoBGP's message counters (shown in the BgpPeer status): at least the OPEN and the UPDATEs.
      expect(status?.messages?.sent.open).toBe(1);
      expect(status?.messages?.received.open).toBe(1);
      expect(status?.messages?.sent.update).toBeGreaterThanOrEqual(1);
      expect(status?.messages?.sent.total).toBeGreaterThanOrEqual(3);
      const [statusB] = await b.listPeers();
      expect(statusB).toMatchObject({ neighborAddress: '127.0.0.2', sessionState: 'established', prefixesReceived: 6, prefixesAccepted: 6 });

      // A withdrawal of one identifier reaches B as exactly that path.
      await a.deletePaths([v4(prefix, 2, '10.1.0.2')]);
      const after = await until('B to drop one path', 5000, async () => {
        const rib = (await b.listRib('ipv4')).filter((p) => p.prefix === prefix);
        return rib.length === 2 ? rib : undefined;
      });
      expect(after.map((p) => p.nextHop).sort()).toEqual(['10.1.0.1', '10.1.0.3']);
      expect(ended).toBe('no');

      // gobgpd going away ends the watch with an error, and calls fail fast rather than at the deadline.
      await gobgpdA.stop();
      const endErr = await until('the watch to end', 5000, async () => (ended === 'no' ? undefined : ended));
      expect(isRacklbError(endErr, 'RACKLB_GOBGP')).toBe(true);
      const started = Date.now();
      await expect(a.listPeers()).rejects.toSatisfy((e) => isRacklbError(e, 'RACKLB_GOBGP') && /ListPeer failed/.test((e as Error).message));
      expect(Date.now() - started).toBeLessThan(4000);
    } finally {
      watch.close();
    }
  });
});
