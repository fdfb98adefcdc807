/**
 * The `racklb` command. Each subcommand lives in its own module; this file only wires them.
 *
 * Subcommand modules are loaded only when their command runs: `racklb serve` (a function scaled
 * from zero) must not pay for loading the lab, gRPC and the Kubernetes client.
 */
import { Command } from 'commander';
import { isRacklbError } from '../errors.js';

type Register = (program: Command) => void;

const COMMANDS: Record<string, () => Promise<Register[]>> = {
  serve: async () => [(await import('./serve.js')).registerServe],
  state: async () => [(await import('./state.js')).registerState],
  speaker: async () => [(await import('./speaker.js')).registerSpeaker],
  lab: async () => [(await import('./lab.js')).registerLab],
  bridge: async () => [(await import('./bridge.js')).registerBridge],
  resync: async () => [(await import('./resync.js')).registerResync],
  'status-writer': async () => [(await import('./status-writer.js')).registerStatusWriter],
  events: async () => [(await import('./events.js')).registerEvents],
  replay: async () => [(await import('./events.js')).registerReplay],
  explain: async () => [(await import('./explain.js')).registerExplain],
  inspect: async () => [(await import('./inspect.js')).registerInspect],
};

/** The program with every subcommand, or only `only` when it names one. */
export async function buildProgram(only?: string): Promise<Command> {
  const program = new Command('racklb')
    .description('BGP load balancing for Kubernetes clusters whose nodes sit under several leaf routers')
    .showHelpAfterError();
  const names = only !== undefined && only in COMMANDS ? [only] : Object.keys(COMMANDS);
  for (const name of names) for (const register of await (COMMANDS[name] as () => Promise<Register[]>)()) register(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const first = argv.slice(2).find((a) => !a.startsWith('-'));
  const program = await buildProgram(first);
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
