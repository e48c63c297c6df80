/**
 * JSON logging (pino) with redaction of fields that may carry secrets or personal data, as a
 * second line of defence: code never passes payloads, results or keys to a log call.
 */
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'payload',
  '*.payload',
  'apiKey',
  '*.apiKey',
  'authorization',
  '*.authorization',
  'stdout',
  'stderr',
  '*.stdout',
  '*.stderr',
  'secret',
  '*.secret',
];

/** A JSON logger on stdout (or `destination`), level from `level`. */
export function createLogger(options: {
  name: string;
  level?: string;
  destination?: number;
}): Logger {
  return pino(
    {
      name: options.name,
      level: options.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    pino.destination({ dest: options.destination ?? 1, sync: true }),
  );
}
