/**
 * Process helpers for everything the lab runs: one-shot commands (ip, bird -p, birdc) and
 * long-lived daemons (BIRD, gobgpd, speakers, functions) that must outlive the CLI that started them.
 * Commands are always argv arrays (execFile/spawn), never shell strings.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { RacklbError } from '../errors.js';

export interface CommandResult {
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the command's stdin (for `ip -batch -`). */
  input?: string;
  /** Default 30 s. The command is killed after it. */
  timeoutMs?: number;
  env?: Record<string, string>;
}

/**
 * Runs a command and resolves with its output. A non-zero exit, a signal, a timeout or a missing
 * binary rejects with RacklbError('RACKLB_LAB') whose message names the command line and carries
 * its stderr verbatim. For `ip -batch`, the failing input line is quoted too.
 */
export function runCommand(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      cmd,
      args,
      {
        encoding: 'utf8',
        maxBuffer: 64 * 1024 * 1024,
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        env: opts.env === undefined ? process.env : { ...process.env, ...opts.env },
      },
      (err, stdout, stderr) => {
        if (err === null) {
          resolve({ stdout, stderr });
          return;
        }
        reject(commandError(cmd, args, err, stderr, opts.input));
      },
    );
    if (opts.input !== undefined) {
      child.stdin?.on('error', () => undefined); // EPIPE when the command exits early; the exit code tells the story
      child.stdin?.end(opts.input);
    }
  });
}

function commandError(cmd: string, args: readonly string[], err: Error & { code?: unknown; signal?: unknown; killed?: boolean }, stderr: string, input: string | undefined): RacklbError {
  const line = [cmd, ...args].join(' ');
  let how: string;
  if (err.code === 'ENOENT') how = `${cmd} is not installed (not found in PATH)`;
  else if (typeof err.code === 'number') how = `exit code ${err.code}`;
  else if (typeof err.signal === 'string') how = err.killed === true ? `killed by ${err.signal} (timed out?)` : `killed by ${err.signal}`;
  else how = err.message;
  let detail = stderr.trim();
  if (input !== undefined) {
    // ip -batch names the failing line as "Command failed -:N".
    const m = /Command failed -:(\d+)/.exec(stderr);
    if (m !== null) {
      const bad = input.split('\n')[Number(m[1]) - 1];
      if (bad !== undefined) detail += `\n  (batch line ${m[1]}: ${bad})`;
    }
  }
  return new RacklbError('RACKLB_LAB', `command failed: ${line}: ${how}${detail === '' ? '' : `\n${detail}`}`, { cause: err });
}

export interface SpawnOptions {
  /** stdout and stderr are appended to this file (its directory is created). */
  logFile: string;
  /** Added to (and overriding) the current environment. */
  env?: Record<string, string>;
  /** The child's pid is written here. */
  pidFile?: string;
}

/**
 * Starts a long-lived process, inside network namespace `netns` (via `ip netns exec`, which execs
 * the command, so the pid is the command's own) or in the current one when netns is undefined.
 * The child is detached into its own process group and unref'd: it survives the CLI exiting.
 * Throws RacklbError('RACKLB_LAB') when the process cannot be started at all (e.g. no such binary
 * when netns is undefined); a command missing inside a namespace shows as an early exit and in
 * the log file instead.
 */
export function spawnInNetns(netns: string | undefined, cmd: string, args: string[], opts: SpawnOptions): ChildProcess {
  mkdirSync(dirname(opts.logFile), { recursive: true });
  const fd = openSync(opts.logFile, 'a');
  const argv = netns === undefined ? [cmd, ...args] : ['ip', 'netns', 'exec', netns, cmd, ...args];
  const [file, ...rest] = argv as [string, ...string[]];
  let child: ChildProcess;
  try {
    child = spawn(file, rest, {
      detached: true,
      stdio: ['ignore', fd, fd],
      env: opts.env === undefined ? process.env : { ...process.env, ...opts.env },
    });
  } finally {
    closeSync(fd);
  }
  // Without a listener a failed spawn would crash the process; the pid check below reports it.
  child.on('error', () => undefined);
  if (child.pid === undefined) {
    throw new RacklbError('RACKLB_LAB', `cannot start ${argv.join(' ')} (is ${file} installed?)`);
  }
  child.unref();
  if (opts.pidFile !== undefined) {
    mkdirSync(dirname(opts.pidFile), { recursive: true });
    writeFileSync(opts.pidFile, `${child.pid}\n`);
  }
  return child;
}

/** True when a process with this pid exists and is not a zombie. */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EPERM') return true;
    return false;
  }
  return !isZombie(pid);
}

function isZombie(pid: number): boolean {
  try {
    // /proc/<pid>/stat: "pid (comm) S ..."; comm may contain spaces and parentheses.
    const stat = readFileSyncSafe(`/proc/${pid}/stat`);
    if (stat === undefined) return false;
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state === 'Z' || state === 'X';
  } catch {
    return false;
  }
}

function readFileSyncSafe(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/** Reads a pid file; undefined when it is missing or does not hold a pid. */
export async function readPidFile(pidFile: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(pidFile, 'utf8');
  } catch {
    return undefined;
  }
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/**
 * Signals a process and waits (bounded) until it is gone, escalating to SIGKILL after `graceMs`.
 * Resolves true when the process was alive and has now exited, false when it was not running.
 */
export async function killPid(pid: number, signal: NodeJS.Signals = 'SIGTERM', graceMs = 5_000): Promise<boolean> {
  if (!isAlive(pid)) return false;
  try {
    process.kill(pid, signal);
  } catch {
    return false;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid)) {
    if (Date.now() >= deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* gone meanwhile */
      }
      await waitFor(`pid ${pid} to exit after SIGKILL`, async () => !isAlive(pid), 5_000, 20);
      break;
    }
    await sleep(20);
  }
  return true;
}

/**
 * Stops the process named by a pid file (SIGTERM by default, SIGKILL after 5 s) and removes the
 * file. Resolves true when a live process was stopped, false when there was nothing to stop.
 */
export async function killPidFile(pidFile: string, signal: NodeJS.Signals = 'SIGTERM'): Promise<boolean> {
  const pid = await readPidFile(pidFile);
  const killed = pid === undefined ? false : await killPid(pid, signal);
  await rm(pidFile, { force: true });
  return killed;
}

/**
 * Polls `fn` every `intervalMs` (default 100) until it returns a value other than undefined or
 * false, and resolves with it. An exception from `fn` counts as "not yet" and is kept for the
 * timeout message. After `timeoutMs` rejects with RacklbError('RACKLB_LAB',
 * `timed out after <N>ms waiting for <what>`).
 */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs: number, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const timedOut = Symbol('timed out');
  let lastError: unknown;
  while (true) {
    // A call that hangs does not hold the wait past its deadline.
    let timer: NodeJS.Timeout | undefined;
    const expiry = new Promise<typeof timedOut>((resolve) => {
      timer = setTimeout(() => resolve(timedOut), Math.max(0, deadline - Date.now()));
    });
    try {
      const value = await Promise.race([fn(), expiry]);
      if (value === timedOut) break;
      if (value !== undefined && value !== false) return value as T;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    } finally {
      clearTimeout(timer);
    }
    const left = deadline - Date.now();
    if (left <= 0) break;
    await sleep(Math.min(intervalMs, left));
  }
  const suffix = lastError === undefined ? '' : ` (last error: ${lastError instanceof Error ? lastError.message : String(lastError)})`;
  throw new RacklbError('RACKLB_LAB', `timed out after ${timeoutMs}ms waiting for ${what}${suffix}`, lastError === undefined ? {} : { cause: lastError });
}

/** Writes a file, creating its directory. */
export async function writeFileMkdir(path: string, text: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  await writeFile(path, text);
}
