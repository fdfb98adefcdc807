/** Structured JSON logs (pino). One logger per process, named by component. */
import { pino, type Logger } from 'pino';

export function createLogger(component: string, level: string = process.env.RACKLB_LOG_LEVEL ?? 'info'): Logger {
  return pino({
    name: component,
    level,
    // Secrets never reach a log line, whatever a caller passes in.
    redact: { paths: ['authPassword', '*.authPassword', '*.*.authPassword', 'password', '*.password'], censor: '[redacted]' },
  });
}
