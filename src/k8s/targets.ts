/**
 * The delivery target options shared by `racklb bridge` and `racklb resync`: exactly one of
 * `--function-url NAME=URL` (all three functions), `--broker URL` or `--streams` (with --redis).
 */
import { RacklbError } from '../errors.js';
import { FUNCTION_NAMES } from '../functions.js';
import type { FunctionName } from '../store/keys.js';
import type { Store } from '../store/store.js';
import type { Target } from './deliver.js';

export interface TargetFlags {
  functionUrl?: string[];
  broker?: string;
  streams?: boolean;
}

function httpUrl(value: string, option: string): string {
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new RacklbError('RACKLB_USAGE', `${option} ${JSON.stringify(value)}: must be an http:// or https:// URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new RacklbError('RACKLB_USAGE', `${option} ${JSON.stringify(value)}: must be an http:// or https:// URL`);
  return value;
}

export function parseFunctionUrls(values: readonly string[]): Record<FunctionName, string> {
  const urls: Partial<Record<FunctionName, string>> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    const name = v.slice(0, eq);
    if (eq < 0 || !(FUNCTION_NAMES as string[]).includes(name)) {
      throw new RacklbError('RACKLB_USAGE', `--function-url ${JSON.stringify(v)}: must be NAME=URL with NAME one of ${FUNCTION_NAMES.join(', ')}`);
    }
    urls[name as FunctionName] = httpUrl(v.slice(eq + 1), `--function-url ${name}=`);
  }
  const missing = FUNCTION_NAMES.filter((n) => urls[n] === undefined);
  if (missing.length > 0) throw new RacklbError('RACKLB_USAGE', `--function-url: every function needs a URL; missing ${missing.join(', ')}`);
  return urls as Record<FunctionName, string>;
}

/** Turns the flags into a target; `store` is the one opened from --redis, if any. */
export function parseTarget(flags: TargetFlags, store: Store | undefined): Target {
  const chosen = [flags.functionUrl?.length ? '--function-url' : '', flags.broker ? '--broker' : '', flags.streams ? '--streams' : ''].filter(Boolean);
  if (chosen.length !== 1) {
    throw new RacklbError('RACKLB_USAGE', `choose exactly one delivery target: --function-url NAME=URL (for each function), --broker URL or --streams${chosen.length ? ` (got ${chosen.join(' and ')})` : ''}`);
  }
  if (flags.functionUrl?.length) return { type: 'functions', urls: parseFunctionUrls(flags.functionUrl) };
  if (flags.broker) return { type: 'broker', url: httpUrl(flags.broker, '--broker') };
  if (!store) throw new RacklbError('RACKLB_USAGE', '--streams needs --redis (or RACKLB_REDIS_URL): the streams live in racklb\'s Redis');
  return { type: 'streams', store };
}

export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
