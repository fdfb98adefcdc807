/** `racklb explain service NAMESPACE/NAME` and `racklb explain node NAME`. */
import { Command } from 'commander';
import { RacklbError } from '../errors.js';
import { explainNode, explainService } from '../explain/explain.js';
import { formatNodeExplanation, formatServiceExplanation } from '../explain/format.js';
import { readSnapshot } from '../state/snapshot.js';
import { redisDefault } from './options.js';
import { openStore } from './store.js';

interface ExplainOpts {
  redis?: string;
  prefix: string;
  json?: boolean;
}

export function registerExplain(program: Command): void {
  const explain = program
    .command('explain')
    .description('say why a Service\'s next hops are or are not announced, rack by rack, or what a node takes part in')
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--json', 'the explanation as JSON');
  explain
    .command('service')
    .description('where the Service\'s IP came from and, per rack and node, why each next hop is or is not announced')
    .argument('<namespace/name>', 'the Service')
    .configureHelp({ showGlobalOptions: true })
    .action(async function (this: Command, key: string) {
      if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(key)) {
        throw new RacklbError('RACKLB_USAGE', `explain service ${JSON.stringify(key)}: must be NAMESPACE/NAME (for example default/web)`);
      }
      await run(this.optsWithGlobals<ExplainOpts>(), (s) => explainService(s, key), formatServiceExplanation, (e) => e.found);
    });
  explain
    .command('node')
    .description('which rack the node is in, which speakers and peers that implies, and which routes carry it')
    .argument('<name>', 'the node')
    .configureHelp({ showGlobalOptions: true })
    .action(async function (this: Command, name: string) {
      await run(this.optsWithGlobals<ExplainOpts>(), (s) => explainNode(s, name), formatNodeExplanation, (e) => e.found);
    });
}

async function run<T>(opts: ExplainOpts, explain: (s: Awaited<ReturnType<typeof readSnapshot>>) => T, format: (e: T) => string, found: (e: T) => boolean): Promise<void> {
  const store = await openStore(opts, 'racklb-explain');
  try {
    const e = explain(await readSnapshot(store));
    process.stdout.write(opts.json ? `${JSON.stringify(e, null, 2)}\n` : `${format(e)}\n`);
    if (!found(e)) process.exitCode = 1;
  } finally {
    await store.close();
  }
}
