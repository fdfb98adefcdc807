/**
 * `racklb inspect` in headless Chromium against the lab: PorterLB's guide "after" on real BIRD
 * routers and speakers. The page must show every session Established, draw a Service's ECMP paths
 * when it is clicked, and change when a node is relabelled, while the routers' kernel tables
 * agree. Screenshots go to test-results/inspect/.
 */
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LabApiServer, parseManifests } from '../../src/lab/apiserver.js';
import { failOnRejections, labDown, labUp, readLabState, syncSpeakers, LAB_REDIS_URL } from '../../src/lab/lab.js';
import { defaultTopology } from '../../src/lab/topology.js';
import { explainService } from '../../src/explain/explain.js';
import { readSnapshot } from '../../src/state/snapshot.js';
import { Store } from '../../src/store/store.js';
import { spawnCli, type CliProcess } from '../helpers/cli.js';
import { isRoot, waitForRoute } from '../helpers/lab.js';

const CHROMIUM = '/usr/bin/chromium';
const SVC_IP = '198.51.100.10';
const SVC = `${SVC_IP}/32`;
const LEAF1 = '192.0.2.1';
const LEAF2 = '192.0.2.65';
const SHOTS = join(process.cwd(), 'test-results', 'inspect');

let api: LabApiServer;
let inspect: CliProcess | undefined;
let url = '';
let context: BrowserContext | undefined;
let page: Page;
let userDataDir = '';

async function shot(name: string): Promise<void> {
  const path = join(SHOTS, `${name}.png`);
  await page.screenshot({ path, fullPage: true });
  expect(statSync(path).size).toBeGreaterThan(5000);
}

/** Paths drawn in the SVG, as "router node". */
async function drawnPaths(): Promise<string[]> {
  return (await page.evaluate(() => [...document.querySelectorAll('svg path.path')].map((e) => `${e.getAttribute('data-router')} ${e.getAttribute('data-node')}`))).sort();
}

describe.skipIf(!isRoot() || !existsSync(CHROMIUM))('racklb inspect in a browser, against the lab', () => {
  beforeAll(async () => {
    await labDown();
    const state = await labUp(defaultTopology());
    api = new LabApiServer(state.functions);
    // The guide's "after": speakers on master1 (leaf1) and worker-p002 (leaf2), a BgpPeer per rack.
    for (const [n, rack] of [['master1', 'leaf1'], ['worker-p002', 'leaf2']] as const) {
      const d = await api.labelNode(n, ['lb.kubesphere.io/v1alpha1=porter', `porter.kubesphere.io/rack=${rack}`]);
      expect(d.status, d.detail).toBe(200);
    }
    for (const file of ['before', 'after']) failOnRejections(await api.apply(parseManifests(readFileSync(`examples/lab/${file}.yaml`, 'utf8'), file)));
    await syncSpeakers(readLabState());
    await waitForRoute('leaf1', SVC, ['192.0.2.3', '192.0.2.4']);
    await waitForRoute('leaf2', SVC, ['192.0.2.66']);

    inspect = spawnCli(['inspect', '--port', '0', '--redis', LAB_REDIS_URL, '--interval', '300']);
    const line = await inspect.waitForLine((l) => l.startsWith('racklb inspect: http://'), 20_000);
    url = line.split(' ')[2] ?? '';
    mkdirSync(SHOTS, { recursive: true });
    userDataDir = mkdtempSync(join(tmpdir(), 'racklb-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1400, height: 700 },
      timeout: 30_000,
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(30_000);
  }, 150_000);

  afterAll(async () => {
    await context?.close().catch(() => undefined);
    await inspect?.stop();
    await labDown();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  }, 120_000);

  it('shows the racks, nodes, routers and every session Established', async () => {
    await page.goto(url);
    // Attached, not visible: a perfectly vertical line has a zero-width box, which Playwright calls hidden.
    await page.waitForSelector(`svg path.session[data-speaker="master1"][data-neighbor="${LEAF1}"][data-state="established"]`, { state: 'attached' });
    await page.waitForSelector(`svg path.session[data-speaker="worker-p002"][data-neighbor="${LEAF2}"][data-state="established"]`, { state: 'attached' });
    // Read in one go in the page: a redraw between two reads would replace the elements.
    const drawn = await page.evaluate(() => {
      const all = (sel: string, f: (e: Element) => string): string[] => [...document.querySelectorAll(sel)].map(f).sort();
      const session = document.querySelector('svg path.session[data-speaker="master1"]');
      return {
        sessions: all('svg path.session', (e) => `${e.getAttribute('data-speaker')} ${e.getAttribute('data-neighbor')} ${e.getAttribute('data-state')}`),
        routers: all('svg g.router', (e) => `${e.getAttribute('data-rack')} ${e.getAttribute('data-router')}`),
        nodes: all('svg g.node', (e) => `${e.getAttribute('data-rack')} ${e.getAttribute('data-node')}`),
        colour: session ? getComputedStyle(session).stroke : null,
      };
    });
    expect(drawn).toEqual({
      sessions: [`master1 ${LEAF1} established`, `worker-p002 ${LEAF2} established`],
      routers: [`leaf1 ${LEAF1}`, `leaf2 ${LEAF2}`],
      nodes: ['- worker-p001', 'leaf1 master1', 'leaf2 worker-p002'],
      // A session is coloured by its state: green when Established.
      colour: 'rgb(31, 157, 85)',
    });
    await shot('1-sessions');
  });

  it('draws a Service\'s ECMP paths from the spine down to the nodes when it is clicked', async () => {
    await page.click(`button.service[data-ip="${SVC_IP}"]`);
    await page.waitForSelector('#paths li[data-path="leaf2 worker-p002"][data-announced="true"]');
    expect(await drawnPaths()).toEqual([`${LEAF1} master1`, `${LEAF1} worker-p001`, `${LEAF2} worker-p002`]);
    // worker-p001 has no rack label: leaf2's speaker may not announce it (off its subnet).
    expect(await page.locator('#paths li[data-path="leaf2 worker-p001"]').getAttribute('data-reason')).toBe('offPeerSubnet');
    await shot('2-paths');
  });

  it('changes the view when a node is relabelled, as the routers change', async () => {
    const before = Number(await page.locator('body').getAttribute('data-revision'));
    const d = await api.labelNode('worker-p001', ['porter.kubesphere.io/rack=leaf2']);
    expect(d.status, d.detail).toBe(200);
    // Now a candidate of leaf2 only, where the speaker cannot announce it: leaf1 keeps master1 alone.
    await waitForRoute('leaf1', SVC, ['192.0.2.3']);
    await page.waitForSelector('svg g.node[data-node="worker-p001"][data-rack="leaf2"]');
    await page.waitForSelector('#paths li[data-path="leaf2 worker-p001"][data-reason="offPeerSubnet"]');
    await page.waitForFunction(() => document.querySelectorAll('svg path.path').length === 2);
    expect(await drawnPaths()).toEqual([`${LEAF1} master1`, `${LEAF2} worker-p002`]);
    expect(await page.locator('#paths li[data-path="leaf1 worker-p001"]').count()).toBe(0);
    expect(Number(await page.locator('body').getAttribute('data-revision'))).toBeGreaterThan(before);
    await shot('3-after-relabel');
  });

  it('serves the same data as JSON under /api/, read-only', async () => {
    const res = await request(`${url}api/paths?ip=${SVC_IP}`);
    const paths = (await res.body.json()) as { racks: { rack: string; announced: string[] }[] };
    expect(Object.fromEntries(paths.racks.map((r) => [r.rack, r.announced]))).toEqual({ leaf1: ['192.0.2.3'], leaf2: ['192.0.2.66'] });
    const post = await request(`${url}api/topology`, { method: 'POST', body: '{}' });
    await post.body.dump();
    expect(post.statusCode).toBe(405);
    const bad = await request(`${url}api/paths?ip=nope`);
    expect(bad.statusCode).toBe(400);
    expect(await bad.body.text()).toContain('ip: must be an IPv4 or IPv6 address');
    // racklb explain, from the real speakers' reports, agrees with the page.
    const store = Store.open(LAB_REDIS_URL);
    try {
      const e = explainService(await readSnapshot(store), 'default/porter-bgp-svc');
      expect(e.racks.find((r) => r.rack === 'leaf2')?.nextHops.find((h) => h.node === 'worker-p001')).toMatchObject({ announced: false, reason: 'offPeerSubnet' });
      expect(e.racks.find((r) => r.rack === 'leaf1')?.speakers[0]).toMatchObject({ node: 'master1', problem: null, knowsSubnets: true, peers: [{ neighborAddress: LEAF1, up: true }] });
    } finally {
      await store.close();
    }
  });
});
