/**
 * The `racklb` command. Each subcommand lives in its own module; this file only wires them.
 */
import { Command, InvalidArgumentError } from 'commander';
import { isRacklbError } from '../errors.js';
import { registerServe } from './serve.js';
import { registerState } from './state.js';
import { registerSpeaker } from './speaker.js';
import { registerLab } from './lab.js';
import { registerBridge } from './bridge.js';
import { registerResync } from './resync.js';
import { registerStatusWriter } from './status-writer.js';
import { registerEvents, registerReplay } from './events.js';
import { registerExplain } from './explain.js';
import { registerInspect } from './inspect.js';

export function parsePort(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be an integer port between 0 and 65535');
  return n;
}

export function redisDefault(): string | undefined {
  return process.env.RACKLB_REDIS_URL;
}

export function buildProgram(): Command {
  const program = new Command('racklb')
    .description('BGP load balancing for Kubernetes clusters whose nodes sit under several leaf routers')
    .showHelpAfterError();
  registerServe(program);
  registerState(program);
  registerSpeaker(program);
  registerLab(program);
  registerBridge(program);
  registerResync(program);
  registerStatusWriter(program);
  registerEvents(program);
  registerReplay(program);
  registerExplain(program);
  registerInspect(program);
  return program;
}

const extra: ((program: Command) => void)[] = [];
/** Later subcommands (speaker, lab) register here so main stays a list. */
export function addCommands(register: (program: Command) => void): void {
  extra.push(register);
}

export async function main(argv: string[]): Promise<void> {
  const program = buildProgram();
  for (const register of extra) register(program);
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (isRacklbError(err)) {
      process.stderr.write(`racklb: ${err.message}\n`);
      process.exit(err.code === 'RACKLB_USAGE' ? 2 : 1);
    }
    throw err;
  }
}
