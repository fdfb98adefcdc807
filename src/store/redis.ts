/**
 * Opening a Redis connection from what an operator gives us: `redis://host:port/db`,
 * `rediss://...` (TLS), `unix:///path/to/socket` or a bare socket path. Credentials never come
 * from the URL on a command line: RACKLB_REDIS_USERNAME, RACKLB_REDIS_PASSWORD or
 * RACKLB_REDIS_PASSWORD_FILE, and RACKLB_REDIS_CA_FILE for TLS.
 */
import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import { RacklbError } from '../errors.js';

export interface ConnectOptions {
  /** Fail commands fast while disconnected, so a function answers 503 instead of hanging. */
  failFast?: boolean;
  /** A name shown by CLIENT LIST, to tell racklb's connections apart. */
  connectionName?: string;
  env?: NodeJS.ProcessEnv;
}

export function redisOptions(url: string, opts: ConnectOptions = {}): RedisOptions {
  const env = opts.env ?? process.env;
  const options: RedisOptions = {
    lazyConnect: true,
    connectionName: opts.connectionName ?? 'racklb',
    // Reconnect forever with a bounded backoff: Redis restarts are expected and survivable.
    retryStrategy: (times) => Math.min(50 * 2 ** Math.min(times, 5), 1000),
    maxRetriesPerRequest: opts.failFast ? 1 : null,
    commandTimeout: opts.failFast ? 3000 : undefined,
    enableOfflineQueue: true,
  };
  if (url.startsWith('/') || url.startsWith('unix://')) {
    options.path = url.startsWith('unix://') ? url.slice('unix://'.length) : url;
  } else {
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      throw new RacklbError('RACKLB_USAGE', `--redis ${JSON.stringify(url)}: must be redis://host:port, rediss://host:port or unix:///path`);
    }
    if (parsed.protocol !== 'redis:' && parsed.protocol !== 'rediss:') {
      throw new RacklbError('RACKLB_USAGE', `--redis ${JSON.stringify(url)}: scheme must be redis:, rediss: or unix:`);
    }
    if (parsed.password) {
      throw new RacklbError('RACKLB_USAGE', '--redis: put no password in the URL; set RACKLB_REDIS_PASSWORD or RACKLB_REDIS_PASSWORD_FILE instead');
    }
    options.host = parsed.hostname.replace(/^\[|\]$/g, '');
    options.port = parsed.port ? Number(parsed.port) : 6379;
    const db = parsed.pathname.replace(/^\//, '');
    if (db) options.db = Number(db);
    if (parsed.protocol === 'rediss:') {
      options.tls = env.RACKLB_REDIS_CA_FILE ? { ca: readFileSync(env.RACKLB_REDIS_CA_FILE) } : {};
    }
  }
  if (env.RACKLB_REDIS_USERNAME) options.username = env.RACKLB_REDIS_USERNAME;
  const password = env.RACKLB_REDIS_PASSWORD_FILE ? readFileSync(env.RACKLB_REDIS_PASSWORD_FILE, 'utf8').trim() : env.RACKLB_REDIS_PASSWORD;
  if (password) options.password = password;
  return options;
}

export function connectRedis(url: string, opts: ConnectOptions = {}): Redis {
  const redis = new Redis(redisOptions(url, opts));
  // Errors surface on the commands that fail; an unhandled 'error' event would crash the process.
  redis.on('error', () => undefined);
  return redis;
}

/** Maps whatever ioredis throws to the error our callers understand. */
export function storeError(err: unknown, doing: string): RacklbError {
  if (err instanceof RacklbError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new RacklbError('RACKLB_STORE_UNAVAILABLE', `Redis ${doing}: ${message}`, { cause: err });
}
