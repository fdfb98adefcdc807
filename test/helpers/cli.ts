/** `racklb` run as a user runs it (bin/racklb.js over dist/), with its exit code and both outputs. */
import { execFile, spawn, type ChildProcess } from 'node:child_process';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export function cli(args: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['bin/racklb.js', ...args],
      { timeout: opts.timeoutMs ?? 30_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, ...(opts.env ?? {}) } },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A long-running `racklb` (events --follow, inspect) whose output lines the test waits for. */
export interface CliProcess {
  proc: ChildProcess;
  lines: string[];
  /** Resolves with the first line (from the start) that satisfies `match`. */
  waitForLine(match: (line: string) => boolean, timeoutMs?: number): Promise<string>;
  /** SIGINT, then SIGKILL after a grace period; resolves with the exit code. */
  stop(): Promise<number | null>;
}

export function spawnCli(args: string[], opts: { env?: Record<string, string> } = {}): CliProcess {
  const proc = spawn(process.execPath, ['bin/racklb.js', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...(opts.env ?? {}) } });
  const lines: string[] = [];
  let stderr = '';
  let buffer = '';
  const waiters: (() => void)[] = [];
  proc.stdout?.on('data', (chunk: Buffer) => {
    buffer += chunk.toString('utf8');
    const parts = buffer.split('\n');
    buffer = parts.pop() ?? '';
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  return {
    proc,
    lines,
    async waitForLine(match, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const found = lines.find(match);
        if (found !== undefined) return found;
        if (proc.exitCode !== null) throw new Error(`racklb ${args.join(' ')} exited with ${proc.exitCode}: ${stderr}`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`racklb ${args.join(' ')}: no matching line within ${timeoutMs} ms; got:\n${lines.join('\n')}\n${stderr}`);
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, Math.min(left, 200));
          waiters.push(() => {
            clearTimeout(t);
            resolve();
          });
        });
      }
    },
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill('SIGINT');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}
