/**
 * One error type for the whole project. Callers match on `code`, never on the message: the
 * message is written for the operator who reads the log, the code is for the program.
 */
export type RacklbErrorCode =
  /** An input object or event breaks a rule; `field` and `rule` say which. Never retried. */
  | 'RACKLB_INVALID_FIELD'
  /** The envelope (CloudEvent, webhook, HTTP request) is malformed. Never retried. */
  | 'RACKLB_INVALID_EVENT'
  /** Redis cannot be reached or answered with an error. The sender should retry. */
  | 'RACKLB_STORE_UNAVAILABLE'
  /** Optimistic concurrency lost too many times in a row. The sender should retry. */
  | 'RACKLB_STORE_CONFLICT'
  /** A record read back from Redis does not parse. Logged and skipped by readers. */
  | 'RACKLB_CORRUPT_RECORD'
  /** gobgpd refused a call or cannot be reached. */
  | 'RACKLB_GOBGP'
  /** The lab or a command cannot run on this machine as asked (not root, missing tool, bad topology). */
  | 'RACKLB_LAB'
  | 'RACKLB_USAGE';

const RETRYABLE: ReadonlySet<RacklbErrorCode> = new Set(['RACKLB_STORE_UNAVAILABLE', 'RACKLB_STORE_CONFLICT', 'RACKLB_GOBGP']);

export class RacklbError extends Error {
  readonly code: RacklbErrorCode;
  /** Dotted path of the offending field inside the object, e.g. `spec.conf.peerAs`. */
  readonly field: string | undefined;
  /** The rule the value broke, in a few words, e.g. `must be between 1 and 4294967295`. */
  readonly rule: string | undefined;
  readonly retryable: boolean;

  constructor(code: RacklbErrorCode, message: string, opts: { field?: string; rule?: string; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RacklbError';
    this.code = code;
    this.field = opts.field;
    this.rule = opts.rule;
    this.retryable = RETRYABLE.has(code);
  }
}

/** An object field that breaks a rule. The message always names both. */
export function invalidField(field: string, rule: string, value?: unknown): RacklbError {
  const shown = value === undefined ? '' : ` (got ${describeValue(value)})`;
  return new RacklbError('RACKLB_INVALID_FIELD', `${field}: ${rule}${shown}`, { field, rule });
}

export function invalidEvent(message: string, field?: string): RacklbError {
  return new RacklbError('RACKLB_INVALID_EVENT', message, field === undefined ? {} : { field, rule: message });
}

export function isRacklbError(err: unknown, code?: RacklbErrorCode): err is RacklbError {
  return err instanceof RacklbError && (code === undefined || err.code === code);
}

function describeValue(value: unknown): string {
  let text: string;
  try {
    text = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
