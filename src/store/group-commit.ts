/**
 * Group commit: the items submitted while a batch is being decided and written wait, and go
 * together as the next batch, one batch at a time. An item submitted while nothing runs starts a
 * batch of its own at once, so a lone event waits for nobody; under load, one transaction (its
 * round trips, its WATCH, its EXEC) serves many events instead of each taking its turn on keys they
 * all share.
 */
import type { Reader, Store, TxJournal, TxPlan } from './store.js';

/** What a batch decided for one of its items: a value, or the error of that item alone. */
export type Settled<O> = { ok: true; value: O } | { ok: false; error: unknown };

interface Waiting<I, O> {
  item: I;
  resolve: (value: O) => void;
  reject: (error: unknown) => void;
}

/** How much the batching took together so far (racklb_function_batches_total and friends). */
export interface BatchStats {
  batches: number;
  items: number;
  largest: number;
}

export class GroupCommit<I, O> {
  private queue: Waiting<I, O>[] = [];
  private running = false;
  readonly stats: BatchStats = { batches: 0, items: 0, largest: 0 };

  /**
   * `run` decides a whole batch and answers per item, in order; when it throws, every item of the
   * batch fails with its error (a store failure: each event is retried by its sender).
   */
  constructor(
    private readonly run: (items: readonly I[]) => Promise<Settled<O>[]>,
    private readonly maxBatch = 128,
  ) {}

  submit(item: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      if (!this.running) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, this.maxBatch);
        this.stats.batches++;
        this.stats.items += batch.length;
        this.stats.largest = Math.max(this.stats.largest, batch.length);
        try {
          const settled = await this.run(batch.map((w) => w.item));
          batch.forEach((w, i) => {
            const s = settled[i];
            if (s === undefined) w.reject(new Error('group commit: the batch gave no answer for this item'));
            else if (s.ok) w.resolve(s.value);
            else w.reject(s.error);
          });
        } catch (err) {
          for (const w of batch) w.reject(err);
        }
      }
    } finally {
      this.running = false;
    }
  }
}

/** An event in a batch: the object it is about, and its journal line (see TxJournal). */
export interface BatchedEvent<O> {
  key: string;
  journal: TxJournal<O> | undefined;
}

/**
 * Decides a batch of events as one after the other would, in order, one transaction per round.
 * Two events of one object never share a round (the later one would be compared with the version
 * before the earlier one), so a batch holding both goes in two. `round` names the keys a round
 * watches and the body that decides it; the body answers per event, in order. The journal lines of
 * the events a round answers go into its EXEC; an event that failed alone gets none (its sender
 * retries it).
 */
export async function decideInRounds<I extends BatchedEvent<O>, O>(
  store: Store,
  items: readonly I[],
  round: (items: readonly I[]) => { watch: string[]; body: (r: Reader) => Promise<TxPlan<Settled<O>[]>> },
): Promise<Settled<O>[]> {
  const out: Settled<O>[] = [];
  let rest = items;
  while (rest.length > 0) {
    const seen = new Set<string>();
    let n = 0;
    while (n < rest.length && !seen.has((rest[n] as I).key)) seen.add((rest[n++] as I).key);
    const these = rest.slice(0, n);
    rest = rest.slice(n);
    const lines: TxJournal<Settled<O>[]> = {
      entriesFor: (settled) =>
        these.flatMap((it, i) => {
          const s = settled[i];
          return s?.ok && it.journal ? it.journal.entriesFor(s.value) : [];
        }),
      journaled: false,
    };
    const { watch, body } = round(these);
    const settled = await store.transact<Settled<O>[]>(watch, body, { journal: lines });
    if (lines.journaled) {
      settled.forEach((s, i) => {
        const line = these[i]?.journal;
        if (s.ok && line) line.journaled = true;
      });
    }
    out.push(...settled);
  }
  return out;
}
