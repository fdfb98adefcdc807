import { Command } from 'commander';
import { formatState, readState } from '../state/read.js';
import { readSnapshot } from '../state/snapshot.js';
import { VIEWS, viewRows, viewTable, type ViewName } from '../state/views.js';
import { redisDefault } from './options.js';
import { markComplete } from '../state/complete.js';
import { openStore } from './store.js';
import { formatTable } from './table.js';

/** Re-exported for the lab and tests, which mark the store complete the same way. */
export { markComplete };

interface StateOpts {
  redis?: string;
  prefix: string;
  json?: boolean;
}

const VIEW_HELP: Record<ViewName, string> = {
  racks: 'racks: AS, nodes, eligible next hops, speakers, the routers they peer with, number of routes',
  nodes: 'nodes: rack, addresses, Ready, schedulable, speaker, and whether it is a next hop (or why not)',
  services: 'Services: IP, Eip, traffic policy, requested or allocated, racks that announce it',
  peers: 'BgpPeers: neighbor, AS, node selector, the speakers they apply to and their sessions',
  speakers: 'speakers: one row per peer with the session state, uptime, prefixes, last error, heartbeat',
};

export function registerState(program: Command): void {
  // --redis, --prefix and --json belong to `state` and are read by every view with
  // optsWithGlobals(), so they work before or after the view's name.
  const state = program
    .command('state')
    .description('print the stored state: racks and their routes, Services and their IPs, speakers and their peers; or one view of it')
    .option('--redis <url>', 'Redis URL; env RACKLB_REDIS_URL', redisDefault())
    .option('--prefix <prefix>', 'key prefix in Redis', 'racklb')
    .option('--json', 'one JSON document (a view: a JSON list of its rows)')
    .action(async (opts: StateOpts) => {
      const store = await openStore(opts, 'racklb-state');
      try {
        const doc = await readState(store);
        process.stdout.write(opts.json ? `${JSON.stringify(doc, null, 2)}\n` : `${formatState(doc)}\n`);
      } finally {
        await store.close();
      }
    });
  for (const view of VIEWS) {
    state
      .command(view)
      .description(VIEW_HELP[view])
      .configureHelp({ showGlobalOptions: true })
      .action(async function (this: Command) {
        const opts = this.optsWithGlobals<StateOpts>();
        const store = await openStore(opts, 'racklb-state');
        try {
          const snapshot = await readSnapshot(store);
          if (opts.json) {
            process.stdout.write(`${JSON.stringify(viewRows(view, snapshot), null, 2)}\n`);
          } else {
            const t = viewTable(view, snapshot);
            process.stdout.write(t.rows.length ? `${formatTable(t.headers, t.rows)}\n` : `no ${view}\n`);
          }
        } finally {
          await store.close();
        }
      });
  }
  state
    .command('mark-complete')
    .description('declare that the store holds the complete cluster state, so speakers may withdraw routes again')
    .configureHelp({ showGlobalOptions: true })
    .action(async function (this: Command) {
      const store = await openStore(this.optsWithGlobals<StateOpts>(), 'racklb-state');
      try {
        await markComplete(store);
        process.stdout.write('store marked complete\n');
      } finally {
        await store.close();
      }
    });
}
