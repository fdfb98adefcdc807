/** What bench/run.ts hands every benchmark. */
import type { BenchLab } from './benchlab.js';
import type { Row } from './results.js';

export interface BenchContext {
  quick: boolean;
  /** Scratch space for private Redis servers and logs (removed at the end). */
  workDir: string;
  say(line: string): void;
  /** The routing lab, brought up on first use and torn down by the runner, even on failure. */
  lab(): Promise<BenchLab>;
}

export interface BenchOutput {
  sections: Record<string, unknown>;
  rows: Row[];
  notes: string[];
}

export type Benchmark = (ctx: BenchContext) => Promise<BenchOutput>;
