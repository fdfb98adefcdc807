/** `racklb events` (read the journal) and `racklb replay` (send it again, or rebuild state from it). */
import { Command, InvalidArgumentError, Option } from 'commander';
import { RacklbError } from '../errors.js';
import { followJournal, journalLoss, lastEntries, lastId, OUTCOMES, parseKind, parseTime, type JournalEntry, type JournalFilter } from '../journal/journal.js';
import { diffStates, formatDifferences, replayInto, replayTo, type SendResult } from '../journal/replay.js';
import { FUNCTION_NAMES } from '../functions.js';
import { Keys } from '../store/keys.js';
import { Store } from '../store/store.js';
import { redisDefault } from './options.js';
import { openStore } from './store.js';
import { formatTable } from './table.js';

interface FilterOpts {
  function?: string;
  kind?: string;
  name?: string;
  outcome?: string;
  since?: string;
  until?: string;
}

function filterOf(opts: FilterOpts, defaultOutcomes?: readonly string[]): JournalFilter {
  const now = Date.now();
  const filter: JournalFilter = {};
  if (opts.function !== undefined) filter.fn = opts.function;
  if (opts.kind !== undefined) filter.kind = parseKind(opts.kind);
  if (opts.name !== undefined) filter.name = opts.name;
  if (opts.outcome !== undefined) filter.outcomes = [opts.outcome];
  else if (defaultOutcomes) filter.outcomes = defaultOutcomes;
  if (opts.since !== undefined) filter.since = parseTime(opts.since, '--since', now);
  if (opts.until !== undefined) filter.until = parseTime(opts.until, '--until', now);
  if (filter.since !== undefined && filter.until !== undefined && filter.since > filter.until) throw new RacklbError('RACKLB_USAGE', '--since: must not be later than --until');
  return filter;
}

function positiveNumber(name: string, integer: boolean): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < 0 || (integer && !Number.isInteger(n))) throw new InvalidArgumentError(`${name} must be a ${integer ? 'whole number' : 'number'} of at least 0`);
    return n;
  };
}

function objectOf(e: JournalEntry): string {
  return e.kind ? `${e.kind}/${e.key}` : '-';
}

function timeOf(e: JournalEntry): string {
  return e.at.replace('T', ' ').replace('Z', '');
}

export function formatEntries(entries: readonly JournalEntry[]): string {
  return formatTable(
    ['TIME (UTC)', 'FUNCTION', 'VIA', 'OUTCOME', 'OBJECT', 'RV', 'DETAIL'],
    entries.map((e) => [timeOf(e), e.fn, e.via, e.outcome, objectOf(e), e.rv || '-', e.detail]),
  );
}

/** One journal entry as JSON: the event object, not its serialised text. */
function entryJson(e: JournalEntry): string {
  return JSON.stringify(e);
}

function addFilterOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--function <name>', 'only events received by this function').choices(FUNCTION_NAMES))
    .option('--kind <kind>', 'only this kind (Node, Service, EndpointSlice, Eip, BgpPeer, BgpConf)')
    .option('--name <name>', 'only this object: NAME or NAMESPACE/NAME')
    .option('--since <time>', 'from this time: ISO 8601 or a duration ago (15m, 2h, 1d)')
    .option('--until <time>', 'up to this time: ISO 8601 or a duration ago');
}

export function registerEvents(program: Command): void {
  addFilterOptions(
    program
      .command('events')
      .description('read the event journal: every event the functions received and its outcome')
      .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
      .option('--prefix <prefix>', 'key prefix in Redis', 'racklb'),
  )
    .addOption(new Option('--outcome <outcome>', 'only this outcome').choices(OUTCOMES))
    .option('--limit <n>', 'show the last N matching entries (0: all)', positiveNumber('--limit', true), 100)
    .option('--json', 'one JSON object per entry and line')
    .option('-f, --follow', 'keep printing new entries as they arrive (Ctrl-C stops)')
    .action(async (opts: FilterOpts & { redis?: string; prefix: string; limit: number; json?: boolean; follow?: boolean }) => {
      const filter = filterOf(opts);
      const store = await openStore(opts, 'racklb-events');
      try {
        const after = await lastId(store);
        const entries = await lastEntries(store, filter, opts.limit === 0 ? Number.MAX_SAFE_INTEGER : opts.limit);
        if (opts.json) {
          for (const e of entries) process.stdout.write(`${entryJson(e)}\n`);
        } else if (entries.length > 0) {
          process.stdout.write(`${formatEntries(entries)}\n`);
        } else if (!opts.follow) {
          process.stdout.write('no matching journal entries\n');
        }
        if (!opts.follow) return;
        const stop = new AbortController();
        process.once('SIGINT', () => stop.abort());
        process.once('SIGTERM', () => stop.abort());
        await followJournal(store, after, filter, stop.signal, (e) => {
          process.stdout.write(opts.json ? `${entryJson(e)}\n` : `${formatEntries([e]).split('\n')[1]}\n`);
        });
      } finally {
        await store.close();
      }
    });
}

export function registerReplay(program: Command): void {
  addFilterOptions(
    program
      .command('replay')
      .description('send journaled events again (--to URL), or rebuild state from the journal into another prefix and compare it with the live state (--into PREFIX)')
      .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
      .option('--prefix <prefix>', 'key prefix of the live state in Redis', 'racklb')
      .option('--to <url>', 'a function, a Knative Broker ingress or any CloudEvents URL')
      .option('--into <prefix>', 'rebuild into this key prefix (same Redis), then print the differences from the live state'),
  )
    .addOption(new Option('--outcome <outcome>', 'with --to: only events with this outcome (default: applied and stale)').choices(OUTCOMES))
    .option('--rate <n>', 'with --to: at most N events per second', positiveNumber('--rate', false))
    .option('--retries <n>', 'with --to: retries of a retryable answer (404, 408, 409, 429, 5xx) or connection failure, with backoff', positiveNumber('--retries', true), 5)
    .option('--at <time>', 'with --into: replay only events up to this time, rebuilding the state as it was then')
    .option('--reset', 'with --into: empty the target prefix first if it holds keys')
    .option('--json', 'with --into: print the differences as JSON')
    .action(async (opts: FilterOpts & { redis?: string; prefix: string; to?: string; into?: string; rate?: number; retries: number; at?: string; reset?: boolean; json?: boolean }) => {
      if ((opts.to === undefined) === (opts.into === undefined)) throw new RacklbError('RACKLB_USAGE', 'replay: give exactly one of --to URL and --into PREFIX');
      if (opts.into !== undefined) {
        for (const [flag, value] of [['--rate', opts.rate], ['--outcome', opts.outcome], ['--function', opts.function], ['--kind', opts.kind], ['--name', opts.name], ['--since', opts.since], ['--until', opts.until]] as const) {
          if (value !== undefined) throw new RacklbError('RACKLB_USAGE', `${flag}: not with --into (a rebuild runs every journaled event, up to --at)`);
        }
      } else {
        for (const [flag, value] of [['--at', opts.at], ['--reset', opts.reset], ['--json', opts.json]] as const) {
          if (value !== undefined) throw new RacklbError('RACKLB_USAGE', `${flag}: only with --into`);
        }
        if (opts.rate === 0) throw new RacklbError('RACKLB_USAGE', '--rate: must be above 0');
      }
      if (opts.into !== undefined) {
        try {
          new Keys(opts.into);
        } catch (err) {
          throw new RacklbError('RACKLB_USAGE', `--into: ${(err as Error).message}`);
        }
      }
      const store = await openStore(opts, 'racklb-replay');
      try {
        if (opts.to !== undefined) await runReplayTo(store, opts.to, filterOf(opts, ['applied', 'stale']), opts);
        else await runReplayInto(store, opts.into as string, opts);
      } finally {
        await store.close();
      }
    });
}

async function runReplayTo(store: Store, url: string, filter: JournalFilter, opts: { rate?: number; retries: number }): Promise<void> {
  const report = await replayTo(store, {
    url,
    filter,
    retries: opts.retries,
    ...(opts.rate === undefined ? {} : { rate: opts.rate }),
    onResult: (r: SendResult) => {
      if (!r.ok) process.stdout.write(`FAILED  ${timeOf(r.entry)}  ${objectOf(r.entry)} rv ${r.entry.rv || '-'}  -> ${r.status ?? 'no answer'}: ${r.error ?? ''}\n`);
    },
  });
  const statuses = Object.entries(report.statuses)
    .map(([s, n]) => `${n} x ${s}`)
    .join(', ');
  process.stdout.write(`replayed ${report.sent} events to ${url}: ${report.ok} accepted, ${report.failed} failed${statuses ? ` (${statuses})` : ''}; ${report.skipped} journal entries hold no event to send\n`);
  if (report.failed > 0) process.exitCode = 1;
}

async function runReplayInto(live: Store, prefix: string, opts: { at?: string; reset?: boolean; json?: boolean; redis?: string }): Promise<void> {
  const at = opts.at === undefined ? undefined : parseTime(opts.at, '--at');
  let target: Store;
  try {
    target = Store.open(opts.redis as string, { prefix, failFast: true, connectionName: 'racklb-replay-into' });
  } catch (err) {
    throw new RacklbError('RACKLB_USAGE', `--into: ${(err as Error).message}`);
  }
  try {
    await target.connect();
    const lost = await journalLoss(live);
    const report = await replayInto(live, target, { ...(at === undefined ? {} : { at }), ...(opts.reset ? { reset: true } : {}) });
    const diffs = await diffStates(live, target);
    if (opts.json) {
      process.stdout.write(`${JSON.stringify({ prefix, at: at === undefined ? null : new Date(at).toISOString(), journalEntriesLost: lost ?? null, ...report, differences: diffs }, null, 2)}\n`);
    } else {
      const outcomes = Object.entries(report.outcomes)
        .map(([o, n]) => `${n} ${o}`)
        .join(', ');
      process.stdout.write(`rebuilt prefix ${prefix} from ${report.events} journaled events${at === undefined ? '' : ` up to ${new Date(at).toISOString()}`} (${outcomes || 'none'}; ${report.skipped} entries without an event)\n`);
      if (lost) process.stdout.write(`warning: the journal has lost ${lost} older entries (it is capped): the rebuild starts mid-history, so it can lack objects the live state holds\n`);
      process.stdout.write(diffs.length === 0 ? 'rebuilt state equals the live state\n' : `${diffs.length} difference(s) between the live and the rebuilt state:\n${formatDifferences(diffs)}\n`);
      process.stdout.write(`inspect it with: racklb state --prefix ${prefix}; remove it with the next replay's --reset\n`);
    }
    if (diffs.length > 0) process.exitCode = 1;
  } finally {
    await target.close();
  }
}
