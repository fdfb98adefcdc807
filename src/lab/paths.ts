/**
 * Where the lab keeps its run-time files: one directory per router or node, holding its config,
 * control socket, pid file and log. /run is a tmpfs, so a reboot clears it together with the
 * namespaces.
 */
import { join } from 'node:path';

export const LAB_RUN_DIR = '/run/racklb-lab';

/** Network namespace of a router or node of the lab. */
export const NETNS_PREFIX = 'rl-';

export function netnsName(name: string): string {
  return `${NETNS_PREFIX}${name}`;
}

/** The run directory of one router or node: `/run/racklb-lab/<name>`. */
export function labDir(name: string): string {
  return join(LAB_RUN_DIR, name);
}
