/**
 * What every benchmark hands back, and how it is shown and kept: a table a person reads at a glance,
 * bench/results/<name>.json with the commit and machine it measured, and latest.json / latest.md
 * rebuilt from every per-benchmark file present (each keeps its own commit and date, so a partial
 * run never passes off older figures as new ones).
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, freemem, totalmem, release } from 'node:os';
import { join } from 'node:path';

export interface RunMeta {
  commit: string;
  /** Uncommitted changes in the tree when it ran (figures then describe the commit plus them). */
  dirty: boolean;
  date: string;
  quick: boolean;
  machine: {
    cpus: number;
    cpu_model: string;
    memory_mb: number;
    free_memory_mb: number;
    kernel: string;
    node: string;
    redis: string;
    gobgpd: string;
    bird: string;
  };
}

export interface Row {
  figure: string;
  value: string;
  floor: string;
  ratio: string;
  target: string;
  /** 'yes' / 'no' where the issue sets a target, '' where it does not ('met' only in the header). */
  met: '' | 'yes' | 'no' | 'met';
}

export interface BenchResult {
  name: string;
  meta: RunMeta;
  /** Top-level sections merged into latest.json (e.g. `{ convergence: {...} }`). */
  sections: Record<string, unknown>;
  rows: Row[];
  notes: string[];
  seconds: number;
}

function tryRun(cmd: string, args: string[]): string {
  // Both streams, whatever the exit code: bird --version prints to stderr and exits 0, so stdout
  // alone read as an empty version.
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 10_000 });
  const said = `${r.stdout ?? ''}${r.stderr ?? ''}`.trim();
  return said === '' && (r.error !== undefined || r.status !== 0) ? 'unknown' : said;
}

export function runMeta(root: string, quick: boolean): RunMeta {
  const commit = tryRun('git', ['-C', root, 'rev-parse', 'HEAD']);
  const dirty = tryRun('git', ['-C', root, 'status', '--porcelain', '--untracked-files=no']) !== '';
  return {
    commit,
    dirty,
    date: new Date().toISOString(),
    quick,
    machine: {
      cpus: cpus().length,
      cpu_model: cpus()[0]?.model ?? 'unknown',
      memory_mb: Math.round(totalmem() / 2 ** 20),
      free_memory_mb: Math.round(freemem() / 2 ** 20),
      kernel: release(),
      node: process.version,
      redis: tryRun('redis-server', ['--version']).replace(/^Redis server /, '').split(' ')[0] ?? 'unknown',
      gobgpd: tryRun('gobgpd', ['--version']).replace(/^gobgpd version /, ''),
      bird: tryRun('bird', ['--version']).replace(/^BIRD version /, ''),
    },
  };
}

/** A number for a table cell: three significant digits, thousands grouped. */
export function fmt(x: number | undefined, unit = ''): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  const abs = Math.abs(x);
  const text = abs >= 1000 ? Math.round(x).toLocaleString('en-US') : abs >= 100 ? x.toFixed(0) : abs >= 10 ? x.toFixed(1) : abs >= 1 ? x.toFixed(2) : x.toPrecision(2);
  return `${text}${unit}`;
}

export function fmtRatio(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '-' : `${x.toFixed(2)}x`;
}

export function met(ok: boolean | undefined): '' | 'yes' | 'no' {
  return ok === undefined ? '' : ok ? 'yes' : 'no';
}

const HEAD: Row = { figure: 'figure', value: 'racklb', floor: 'floor', ratio: 'ratio', target: 'target', met: 'met' };

export function formatTable(results: readonly BenchResult[]): string {
  const rows = results.flatMap((r) => r.rows.map((row) => ({ ...row, figure: `${r.name}: ${row.figure}` })));
  const all = [HEAD, ...rows];
  const cols: (keyof Row)[] = ['figure', 'value', 'floor', 'ratio', 'target', 'met'];
  const width = Object.fromEntries(cols.map((c) => [c, Math.max(...all.map((r) => r[c].length))])) as Record<keyof Row, number>;
  const line = (r: Row): string => cols.map((c) => (c === 'figure' || c === 'target' ? r[c].padEnd(width[c]) : r[c].padStart(width[c]))).join('  ').trimEnd();
  const sep = cols.map((c) => '-'.repeat(width[c])).join('  ');
  return [line(HEAD), sep, ...rows.map(line)].join('\n');
}

function markdownTable(r: BenchResult): string {
  const lines = ['| figure | racklb | floor | ratio | target | met |', '|---|---:|---:|---:|---|---|'];
  for (const row of r.rows) lines.push(`| ${row.figure} | ${row.value} | ${row.floor} | ${row.ratio} | ${row.target} | ${row.met} |`);
  return lines.join('\n');
}

function describeMeta(m: RunMeta): string {
  return `commit ${m.commit.slice(0, 12)}${m.dirty ? ' (with uncommitted changes)' : ''}, ${m.date}${m.quick ? ', quick run' : ''}; ${m.machine.cpus} × ${m.machine.cpu_model}, ${m.machine.memory_mb} MB, Linux ${m.machine.kernel}, Node ${m.machine.node}, Redis ${m.machine.redis}, gobgpd ${m.machine.gobgpd}, BIRD ${m.machine.bird}`;
}

export function writeResult(dir: string, r: BenchResult): string {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${r.name}.json`);
  writeFileSync(path, `${JSON.stringify(r, null, 2)}\n`);
  return path;
}

/** The order benchmarks appear in latest.* whatever order they ran in. */
export const ORDER = ['convergence', 'bulk', 'throughput', 'change', 'memory'];

export function readResults(dir: string): BenchResult[] {
  if (!existsSync(dir)) return [];
  const out: BenchResult[] = [];
  for (const f of readdirSync(dir)) {
    if (!f.endsWith('.json') || f === 'latest.json') continue;
    try {
      const r = JSON.parse(readFileSync(join(dir, f), 'utf8')) as BenchResult;
      if (typeof r.name === 'string' && r.meta && Array.isArray(r.rows)) out.push(r);
    } catch {
      // Not one of ours: leave it alone.
    }
  }
  return out.sort((a, b) => ORDER.indexOf(a.name) - ORDER.indexOf(b.name));
}

/** latest.json: every section of every benchmark file, with the run each came from. */
export function writeLatest(dir: string, current: RunMeta): void {
  const results = readResults(dir);
  const doc: Record<string, unknown> = { meta: current, runs: Object.fromEntries(results.map((r) => [r.name, { ...r.meta, seconds: r.seconds }])) };
  for (const r of results) Object.assign(doc, r.sections);
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(doc, null, 2)}\n`);

  const md: string[] = ['# racklb benchmark results', '', 'Written by `npm run bench` (see docs/performance.md for the methods). Each benchmark names the commit and machine it measured.', ''];
  for (const r of results) {
    md.push(`## ${r.name}`, '', describeMeta(r.meta), '', markdownTable(r), '');
    if (r.notes.length) md.push(...r.notes.map((n) => `- ${n}`), '');
  }
  writeFileSync(join(dir, 'latest.md'), md.join('\n'));
}
