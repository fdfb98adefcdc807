/**
 * Opening a Redis connection from what an operator gives us: `redis://host:port/db`,
 * `rediss://...` (TLS), `unix:///path/to/socket` or a bare socket path, and a Redis Cluster from
 * one seed node: `redis+cluster://host:port` (`rediss+cluster://` with TLS). Credentials never come
 * from the URL on a command line: RACKLB_REDIS_USERNAME, RACKLB_REDIS_PASSWORD or
 * RACKLB_REDIS_PASSWORD_FILE, and RACKLB_REDIS_CA_FILE for TLS.
 */
import { readFileSync } from 'node:fs';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
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
      throw new RacklbError('RACKLB_USAGE', `--redis ${JSON.stringify(url)}: scheme must be redis:, rediss:, redis+cluster:, rediss+cluster: or unix:`);
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

const lastErrors = new WeakMap<Redis, Error>();

/** `redis+cluster://host:port` or `rediss+cluster://host:port`: one seed node of a Redis Cluster. */
export function isClusterUrl(url: string): boolean {
  return /^rediss?\+cluster:\/\//.test(url);
}

/**
 * A Redis Cluster client for a `redis+cluster://` URL. Every racklb key carries the hash tag
 * `{<prefix>}`, so all of them live in one slot and every WATCH/MULTI/EXEC and Lua call goes to
 * the one master that owns it; the client follows MOVED/ASK when the slot moves. The Cluster
 * client has the same command interface as a single connection, which is how the rest of racklb
 * uses it (keyed commands, duplicate, connect, disconnect).
 */
function connectCluster(url: string, opts: ConnectOptions): Redis {
  const node = redisOptions(url.replace('+cluster', ''), opts);
  if (node.db !== undefined && node.db !== 0) throw new RacklbError('RACKLB_USAGE', `--redis ${JSON.stringify(url)}: a Redis Cluster has only database 0`);
  const { host, port, db: _db, lazyConnect: _lazy, retryStrategy, ...redisOpts } = node;
  const cluster = new Cluster([{ host: host ?? '127.0.0.1', port: port ?? 6379 }], {
    lazyConnect: true,
    redisOptions: redisOpts,
    clusterRetryStrategy: retryStrategy,
    // A cluster client queues commands while it has no cluster, without any timeout: a function
    // (failFast) must answer 503 instead, so its commands fail at once while disconnected.
    enableOfflineQueue: !opts.failFast,
    // A failover or resharding is survivable: retry instead of failing the command at once.
    retryDelayOnFailover: 100,
    retryDelayOnClusterDown: 200,
    retryDelayOnTryAgain: 100,
  });
  return cluster as unknown as Redis;
}

export function connectRedis(url: string, opts: ConnectOptions = {}): Redis {
  const redis = isClusterUrl(url) ? connectCluster(url, opts) : new Redis(redisOptions(url, opts));
  // Errors surface on the commands that fail; an unhandled 'error' event would crash the process.
  // The last one is kept: a refused AUTH or a failed TLS handshake otherwise surfaces only as
  // "Connection is closed", which tells an operator nothing.
  redis.on('error', (err: Error) => lastErrors.set(redis, err));
  return redis;
}

/** The last connection error ioredis reported for this client, if any. */
export function lastConnectionError(redis: Redis): Error | undefined {
  return lastErrors.get(redis);
}

/** Maps whatever ioredis throws to the error our callers understand. */
export function storeError(err: unknown, doing: string): RacklbError {
  if (err instanceof RacklbError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // An EXECABORT says only that queued commands failed; the reason (OOM when Redis is at its
  // maxmemory, a READONLY replica, ...) is in the errors ioredis collected while queueing.
  const previous = (err as { previousErrors?: unknown } | null)?.previousErrors;
  const reason = Array.isArray(previous) && previous[0] instanceof Error ? `: ${previous[0].message}` : '';
  return new RacklbError('RACKLB_STORE_UNAVAILABLE', `Redis ${doing}: ${message}${reason}`, { cause: err });
}
