/**
 * `npm run bench [-- --only NAME[,NAME] --quick]`: runs the benchmarks of issue 7, prints one table
 * and writes bench/results/<name>.json (bench/results/quick/ for --quick) plus latest.json and
 * latest.md. Benchmarks are not tests: nothing here passes or fails on a figure; targets are shown
 * next to the figures.
 *
 * The routing benchmarks run their own lab: namespaces `rlb-*` and run directory /run/racklb-bench,
 * set here before any lab module is loaded (they read them once, at load), and inherited by every
 * process the lab starts. A lab the user left up (`rl-*`, /run/racklb-lab) is never touched.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command, InvalidArgumentError } from 'commander';

process.env.RACKLB_LAB_NETNS_PREFIX = 'rlb-';
process.env.RACKLB_LAB_RUN_DIR = '/run/racklb-bench';
// Speakers and functions log at info; a file per process under the run directory holds it.
process.env.RACKLB_LOG_LEVEL ??= 'info';

const NAMES = ['throughput', 'change', 'convergence', 'bulk', 'memory'] as const;
type Name = (typeof NAMES)[number];
const LAB_BENCHMARKS: readonly Name[] = ['convergence', 'bulk', 'memory'];

/** The options, read by commander as racklb's own CLI is; a bad one is refused with its usage. */
function parseArgs(argv: string[]): { only: Name[]; quick: boolean } {
  const names = (value: string): Name[] => {
    const list = value.split(',').map((x) => x.trim()).filter(Boolean);
    const unknown = list.filter((n) => !(NAMES as readonly string[]).includes(n));
    if (list.length === 0 || unknown.length > 0) throw new InvalidArgumentError(`${unknown.length ? `unknown benchmark ${unknown.map((n) => JSON.stringify(n)).join(', ')}` : 'no benchmark named'}: must be one or more of ${NAMES.join(', ')}, comma-separated`);
    return list as Name[];
  };
  const cmd = new Command('npm run bench --')
    .description('runs the benchmarks of docs/performance.md and writes bench/results')
    .option('--only <names>', `run only these (${NAMES.join(', ')}; default: all), comma-separated`, names)
    .option('--quick', 'fewer trials and smaller sizes (same JSON keys), written to bench/results/quick/', false)
    .allowExcessArguments(false)
    .parse(argv, { from: 'user' });
  const opts = cmd.opts<{ only?: Name[]; quick: boolean }>();
  const only = opts.only ?? NAMES;
  return { only: NAMES.filter((n) => only.includes(n)), quick: opts.quick };
}

async function main(): Promise<number> {
  const { only, quick } = parseArgs(process.argv.slice(2));
  const [{ repoRoot }, results, { BenchLab }] = await Promise.all([import('../src/lab/lab.js'), import('./lib/results.js'), import('./lib/benchlab.js')]);
  const benchmarks: Record<Name, (ctx: import('./lib/context.js').BenchContext) => Promise<import('./lib/context.js').BenchOutput>> = {
    throughput: (await import('./throughput.js')).throughput,
    change: (await import('./change.js')).change,
    convergence: (await import('./convergence.js')).convergence,
    bulk: (await import('./bulk.js')).bulk,
    memory: (await import('./memory.js')).memory,
  };
  const root = repoRoot();
  const outDir = join(root, 'bench', 'results', ...(quick ? ['quick'] : []));
  const workDir = mkdtempSync(join(tmpdir(), 'racklb-bench-'));
  const started = performance.now();
  const say = (line: string): void => {
    process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s] ${line}\n`);
  };

  const needsLab = only.some((n) => LAB_BENCHMARKS.includes(n));
  if (needsLab && (typeof process.getuid !== 'function' || process.getuid() !== 0)) {
    throw new Error(`${only.filter((n) => LAB_BENCHMARKS.includes(n)).join(', ')} need the lab, which needs root (network namespaces): run as root, or --only ${only.filter((n) => !LAB_BENCHMARKS.includes(n)).join(',') || 'throughput,change'}`);
  }

  type Lab = Awaited<ReturnType<typeof BenchLab.up>>;
  let lab: Lab | undefined;
  let labUp: Promise<Lab> | undefined;
  const teardown = async (): Promise<void> => {
    const l = lab ?? (labUp ? await labUp.catch(() => undefined) : undefined);
    lab = undefined;
    labUp = undefined;
    if (l) {
      say('lab: tearing down');
      await l.down().catch((err: unknown) => say(`lab: teardown failed: ${String(err)}`));
    }
  };
  // A stray rejection is reported, not fatal: dying here would skip the lab's teardown.
  process.on('unhandledRejection', (err) => say(`unhandled rejection: ${err instanceof Error ? err.message : String(err)}`));
  // Interrupted: the lab goes anyway (its namespaces would otherwise outlive us).
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      say(`${signal}: stopping`);
      void teardown().finally(() => process.exit(130));
    });
  }
  const ctx = {
    quick,
    workDir,
    say,
    lab: async () => {
      if (lab) return lab;
      labUp ??= BenchLab.up(say);
      lab = await labUp;
      return lab;
    },
  };

  const meta = results.runMeta(root, quick);
  const done: import('./lib/results.js').BenchResult[] = [];
  const failed: string[] = [];
  try {
    for (const name of only) {
      say(`${name}: starting`);
      const t0 = performance.now();
      try {
        const out = await benchmarks[name](ctx);
        const r = { name, meta: { ...meta, date: new Date().toISOString() }, ...out, seconds: Math.round((performance.now() - t0) / 100) / 10 };
        results.writeResult(outDir, r);
        done.push(r);
        process.stdout.write(`\n${results.formatTable([r])}\n\n`);
      } catch (err) {
        failed.push(name);
        say(`${name}: FAILED: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
      }
      // The lab is only needed by lab benchmarks still to come.
      if (!only.slice(only.indexOf(name) + 1).some((n) => LAB_BENCHMARKS.includes(n))) await teardown();
    }
  } finally {
    await teardown();
    rmSync(workDir, { recursive: true, force: true });
  }
  results.writeLatest(outDir, meta);
  if (done.length) {
    process.stdout.write(`== racklb benchmarks (commit ${meta.commit.slice(0, 12)}${meta.dirty ? ', uncommitted changes' : ''}${quick ? ', quick' : ''}) ==\n`);
    process.stdout.write(`${results.formatTable(done)}\n\n`);
    process.stdout.write(`written: ${outDir}/{${done.map((d) => d.name).join(',')}}.json, latest.json, latest.md\n`);
  }
  say(`done in ${((performance.now() - started) / 1000).toFixed(0)} s${failed.length ? `; failed: ${failed.join(', ')}` : ''}`);
  return failed.length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  },
);
