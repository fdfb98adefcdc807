/**
 * Where the lab keeps its run-time files: one directory per router or node, holding its config,
 * control socket, pid file and log. /run is a tmpfs, so a reboot clears it together with the
 * namespaces.
 */
import { join } from 'node:path';

/**
 * One lab per run directory and namespace prefix. The defaults are the user's lab; tests and
 * benchmarks that must not disturb it (or each other) set RACKLB_LAB_RUN_DIR and
 * RACKLB_LAB_NETNS_PREFIX, which every process the lab starts inherits.
 */
export const LAB_RUN_DIR = process.env.RACKLB_LAB_RUN_DIR ?? '/run/racklb-lab';

/** Network namespace of a router or node of the lab: `rl-<name>` unless RACKLB_LAB_NETNS_PREFIX says otherwise. */
export const NETNS_PREFIX = process.env.RACKLB_LAB_NETNS_PREFIX ?? 'rl-';
if (!/^[a-z0-9-]{1,16}$/.test(NETNS_PREFIX)) throw new Error(`RACKLB_LAB_NETNS_PREFIX ${JSON.stringify(NETNS_PREFIX)}: must be 1-16 characters of a-z, 0-9 and '-'`);

export function netnsName(name: string): string {
  return `${NETNS_PREFIX}${name}`;
}

/** The run directory of one router or node: `/run/racklb-lab/<name>`. */
export function labDir(name: string): string {
  return join(LAB_RUN_DIR, name);
}
