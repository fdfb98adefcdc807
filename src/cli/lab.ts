import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { RacklbError } from '../errors.js';
import { formatDeliveries, LabApiServer, parseManifests } from '../lab/apiserver.js';
import { runDemo } from '../lab/demo.js';
import { labDown, labUp, readLabState, restartProcess, syncSpeakers } from '../lab/lab.js';
import { requireRoot } from '../lab/netns.js';
import { formatRoutes, readRoutes } from '../lab/routes.js';
import { defaultTopology, parseTopology } from '../lab/topology.js';
import { connectionsFrom, formatCounts, MAX_CONNECTIONS, RESPONDER_PORT, serveOnNodes } from '../lab/traffic.js';
import { wholeNumber } from './options.js';

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

function readFileArg(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new RacklbError('RACKLB_USAGE', `cannot read ${path}: ${(err as Error).message}`);
  }
}

export function registerLab(program: Command): void {
  const lab = program.command('lab').description('PorterLB\'s multi-router scenario on this machine: network namespaces, BIRD routers, gobgpd, racklb (root)');
  lab.hook('preAction', () => requireRoot());

  lab
    .command('up')
    .description('build the network, start the routers, Redis and the functions, and register the nodes')
    .option('--topology <file>', 'topology YAML (default: PorterLB\'s example)')
    .action(async (opts: { topology?: string }) => {
      const topology = opts.topology ? parseTopology(readFileArg(opts.topology)) : defaultTopology();
      const state = await labUp(topology, say);
      say(`lab is up: routers ${[topology.spine.name, ...topology.racks.map((r) => r.name)].join(', ')}; Redis ${state.redis}`);
    });

  lab
    .command('down')
    .description('remove every namespace, link and process the lab made (safe to run twice)')
    .action(async () => {
      await labDown(say);
    });

  lab
    .command('demo')
    .description('bring the lab up and walk through PorterLB\'s multi-router guide, before and after')
    .action(async () => {
      await runDemo(say);
    });

  for (const verb of ['apply', 'delete'] as const) {
    lab
      .command(verb)
      .description(verb === 'apply' ? 'send every object of a YAML file as an add or update event' : 'send delete events for every object of a YAML file')
      .requiredOption('-f, --filename <file>', 'multi-document YAML')
      .action(async (opts: { filename: string }) => {
        const state = readLabState();
        const api = new LabApiServer(state.functions);
        const objects = parseManifests(readFileArg(opts.filename), opts.filename);
        const deliveries = verb === 'apply' ? await api.apply(objects) : await api.delete(objects);
        say(formatDeliveries(deliveries));
        await syncSpeakers(state, say);
        if (deliveries.some((d) => d.status !== 200 && d.outcome !== 'ignored')) process.exitCode = 1;
      });
  }

  lab
    .command('label')
    .description('kubectl label --overwrite node NAME KEY=VALUE... (KEY- removes)')
    .argument('<resource>', 'node')
    .argument('<name>', 'node name')
    .argument('<labels...>', 'KEY=VALUE or KEY-')
    .action(async (resource: string, name: string, labels: string[]) => {
      if (resource !== 'node' && resource !== 'nodes') throw new RacklbError('RACKLB_USAGE', `lab label: only nodes can be labelled, not ${JSON.stringify(resource)}`);
      const state = readLabState();
      const d = await new LabApiServer(state.functions).labelNode(name, labels);
      say(formatDeliveries([d]));
      await syncSpeakers(state, say);
      if (d.status !== 200) process.exitCode = 1;
    });

  lab
    .command('routes')
    .description('the forwarding table of a router (or node) as its kernel holds it')
    .argument('<router>', 'spine, a leaf, or a node')
    .option('--json', 'prefix -> sorted next-hop addresses')
    .action(async (router: string, opts: { json?: boolean }) => {
      const state = readLabState();
      const names = [state.topology.spine.name, ...state.topology.racks.flatMap((r) => [r.name, ...r.nodes.map((n) => n.name)])];
      if (!names.includes(router)) throw new RacklbError('RACKLB_USAGE', `${JSON.stringify(router)} is not in the lab; routers and nodes: ${names.join(', ')}`);
      const routes = await readRoutes(router);
      process.stdout.write(opts.json ? `${JSON.stringify(routes)}\n` : formatRoutes(routes));
    });

  lab
    .command('traffic')
    .description('open TCP connections to a Service IP from inside a router (or node) and count which node answered; every node holds the IP on its loopback and answers on port 8080, as kube-proxy would')
    .argument('<from>', 'spine, a leaf, or a node')
    .argument('<ip>', 'the Service IP')
    .option('-n, --connections <count>', `connections, one after another (1-${MAX_CONNECTIONS})`, wholeNumber(1, MAX_CONNECTIONS), 60)
    .option('--json', 'node name -> connections it answered')
    .action(async (from: string, ip: string, opts: { connections: number; json?: boolean }) => {
      const state = readLabState();
      const names = [state.topology.spine.name, ...state.topology.racks.flatMap((r) => [r.name, ...r.nodes.map((n) => n.name)])];
      if (!names.includes(from)) throw new RacklbError('RACKLB_USAGE', `${JSON.stringify(from)} is not in the lab; routers and nodes: ${names.join(', ')}`);
      await serveOnNodes(state.topology, ip);
      const counts = await connectionsFrom(from, ip, opts.connections);
      process.stdout.write(opts.json ? `${JSON.stringify(counts)}\n` : `${opts.connections} connections from ${from} to ${ip}:${RESPONDER_PORT}: ${formatCounts(counts)}\n`);
    });

  lab
    .command('restart')
    .description('kill a node\'s speaker or gobgpd with SIGKILL and start it again')
    .argument('<node>')
    .argument('<process>', 'speaker or gobgpd')
    .action(async (node: string, which: string) => {
      if (which !== 'speaker' && which !== 'gobgpd') throw new RacklbError('RACKLB_USAGE', `lab restart: process must be speaker or gobgpd, not ${JSON.stringify(which)}`);
      const r = await restartProcess(node, which);
      say(`${which} on ${node}: killed pid ${r.killed}, started pid ${r.started ?? '(exited at once: see its log)'}`);
    });
}
