/** Structured JSON logs (pino). One logger per process, named by component. */
import { pino, type DestinationStream, type Logger } from 'pino';

/** Buffered loggers write once this much is waiting, or after FLUSH_MS. */
const BUFFER_BYTES = 4096;
const FLUSH_MS = 200;

/**
 * `toStderr` keeps stdout for a command's own output (a report, JSON) when it also logs.
 * `buffered` gathers lines into writes of 4 KiB, at most 200 ms late: a function logs a line per
 * event, and a write(2) per line was half of what a line cost. The writes stay synchronous:
 * pino's asynchronous mode hands each one to libuv's thread pool, which cost as much as it saved.
 * What is left is written when the process exits; only a SIGKILL loses the last 200 ms of lines.
 */
export function createLogger(component: string, level: string = process.env.RACKLB_LOG_LEVEL ?? 'info', toStderr = false, buffered = false): Logger {
  const fd = toStderr ? 2 : 1;
  let destination: DestinationStream | undefined = toStderr ? pino.destination(2) : undefined;
  if (buffered) {
    const buffer = pino.destination({ dest: fd, sync: true, minLength: BUFFER_BYTES, periodicFlush: FLUSH_MS });
    process.once('exit', () => buffer.flushSync());
    destination = buffer;
  }
  return pino(
    {
      name: component,
      level,
      // Secrets never reach a log line, whatever a caller passes in.
      redact: { paths: ['authPassword', '*.authPassword', '*.*.authPassword', 'password', '*.password'], censor: '[redacted]' },
    },
    destination,
  );
}
