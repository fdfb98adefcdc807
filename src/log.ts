/** Structured JSON logs (pino). One logger per process, named by component. */
import { pino, type Logger } from 'pino';

/** `toStderr` keeps stdout for a command's own output (a report, JSON) when it also logs. */
export function createLogger(component: string, level: string = process.env.RACKLB_LOG_LEVEL ?? 'info', toStderr = false): Logger {
  return pino(
    {
      name: component,
      level,
      // Secrets never reach a log line, whatever a caller passes in.
      redact: { paths: ['authPassword', '*.authPassword', '*.*.authPassword', 'password', '*.password'], censor: '[redacted]' },
    },
    toStderr ? pino.destination(2) : undefined,
  );
}
