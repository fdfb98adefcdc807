/** The three functions by name: what `racklb serve <name>` runs. */
import { definition as onNodeLabel } from '../functions/on-node-label/handler.js';
import { definition as onService } from '../functions/on-service/handler.js';
import { definition as onBgpPeer } from '../functions/on-bgppeer/handler.js';
import type { FunctionDefinition } from './serve/handler.js';
import type { Kind } from './core/types.js';
import type { FunctionName } from './store/keys.js';

export const FUNCTIONS: Readonly<Record<FunctionName, FunctionDefinition>> = {
  'on-node-label': onNodeLabel,
  'on-service': onService,
  'on-bgppeer': onBgpPeer,
};

export const FUNCTION_NAMES = Object.keys(FUNCTIONS) as FunctionName[];

export function functionFor(kind: Kind): FunctionDefinition {
  const def = Object.values(FUNCTIONS).find((f) => f.kinds.includes(kind));
  if (!def) throw new Error(`no function takes kind ${kind}`);
  return def;
}
