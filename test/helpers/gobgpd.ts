/**
 * Starts throwaway gobgpd processes for tests. gobgpd needs no config file: the test starts BGP
 * through the API (StartBgp), exactly as the speaker does.
 *
 * Every process is recorded in a module-level set and killed when the test process exits, so a
 * failed or timed-out test cannot leave a gobgpd behind holding ports.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { GobgpClient } from '../../src/gobgp/client.js';

export interface RunningGobgpd {
  /** host:port of the gRPC API. */
  apiAddress: string;
  pid: number;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();

function killAllNow(): void {
  for (const child of live) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  live.clear();
}

let exitHooked = false;
function hookExit(): void {
  if (exitHooked) return;
  exitHooked = true;
  // 'exit' handlers must be synchronous: SIGKILL is the only signal that needs no waiting.
  process.on('exit', killAllNow);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    // Node skips 'exit' handlers when a signal kills it. If nobody else handles the signal, ours
    // must also finish the job by re-raising it; if someone does, they decide when to exit.
    const alone = process.listenerCount(signal) === 0;
    process.once(signal, () => {
      killAllNow();
      if (alone) process.kill(process.pid, signal);
    });
  }
}

/** A TCP port that was free a moment ago on 127.0.0.1 (the kernel picks it). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, host, () => {
      const address = server.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      server.close(() => (port > 0 ? resolve(port) : reject(new Error('no free port'))));
    });
  });
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('exit', onExit);
      resolve(false);
    }, ms);
    const onExit = (): void => {
      clearTimeout(timer);
      resolve(true);
    };
    child.once('exit', onExit);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM');
    if (!(await waitExit(child, 3000))) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
  }
  live.delete(child);
}

/**
 * Resolves once a GetBgp call succeeds: the API is serving, not merely the port bound. Inside a
 * network namespace the API's 127.0.0.1 is not ours, so the check runs there, through the gobgp CLI.
 */
async function waitApi(apiAddress: string, netns: string | undefined, child: ChildProcess, deadline: number, output: () => string): Promise<void> {
  const client = netns === undefined ? new GobgpClient(apiAddress, { callTimeoutMs: 500 }) : undefined;
  const [host, port] = [apiAddress.slice(0, apiAddress.lastIndexOf(':')), apiAddress.slice(apiAddress.lastIndexOf(':') + 1)];
  const probe = (): Promise<boolean> =>
    client !== undefined
      ? client.getGlobal().then(
          () => true,
          () => false,
        )
      : new Promise((resolve) => {
          const cli = spawn('ip', ['netns', 'exec', netns ?? '', 'gobgp', '-u', host, '-p', port, 'global'], { stdio: 'ignore' });
          cli.once('error', () => resolve(false));
          cli.once('exit', (code) => resolve(code === 0));
        });
  try {
    while (true) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`gobgpd exited (${child.exitCode ?? child.signalCode}) before its API answered: ${output()}`);
      }
      if (await probe()) return;
      if (Date.now() > deadline) throw new Error(`gobgpd API at ${apiAddress}${netns === undefined ? '' : ` in netns ${netns}`} did not answer in time: ${output()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    client?.close();
  }
}

export async function startGobgpd(opts: { netns?: string; apiPort?: number } = {}): Promise<RunningGobgpd> {
  hookExit();
  const apiPort = opts.apiPort ?? (await freePort());
  const apiAddress = `127.0.0.1:${apiPort}`;
  // Only a loopback API and no pprof: the defaults listen on every address and on :6060.
  const gobgpdArgs = ['--api-hosts', apiAddress, '--pprof-disable', '-l', 'warn'];
  const [command, args] = opts.netns === undefined ? ['gobgpd', gobgpdArgs] : ['ip', ['netns', 'exec', opts.netns, 'gobgpd', ...gobgpdArgs]];
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  live.add(child);
  let outputText = '';
  for (const stream of [child.stdout, child.stderr]) {
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      // Keep only the tail: it is shown when start-up fails and otherwise thrown away.
      outputText = (outputText + chunk).slice(-4000);
    });
  }
  const spawned = await new Promise<Error | undefined>((resolve) => {
    child.once('spawn', () => resolve(undefined));
    child.once('error', (err) => resolve(err));
  });
  if (spawned !== undefined || child.pid === undefined) {
    live.delete(child);
    throw new Error(`cannot start gobgpd (${command}): ${spawned?.message ?? 'no pid'}; is the Debian package gobgpd installed?`);
  }
  const pid = child.pid;
  try {
    await waitApi(apiAddress, opts.netns, child, Date.now() + 10_000, () => outputText.trim());
  } catch (err) {
    await stopChild(child);
    throw err;
  }
  return { apiAddress, pid, stop: () => stopChild(child) };
}
