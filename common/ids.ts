/**
 * Identifiers: random task ids and the execution id format shared by server, agent and CLI.
 */
import { randomBytes } from 'node:crypto';

const CROCKFORD = '0123456789abcdefghjkmnpqrstvwxyz';

/** `n` characters of lowercase Crockford base32 from a CSPRNG (5 bits each). */
export function randomBase32(n: number): string {
  const bytes = randomBytes(n);
  let out = '';
  for (let i = 0; i < n; i++) out += CROCKFORD[bytes[i]! & 31];
  return out;
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** `n` uniform base62 characters from a CSPRNG (rejection sampling keeps them uniform). */
export function randomBase62(n: number): string {
  let out = '';
  while (out.length < n) {
    for (const byte of randomBytes(n + 16)) {
      if (byte < 248 && out.length < n) out += BASE62[byte % 62];
    }
  }
  return out;
}

/** A new task id: `t_` + 16 base32 characters (80 bits). */
export function newTaskId(): string {
  return `t_${randomBase32(16)}`;
}

export const TASK_ID_PATTERN = /^t_[0-9a-hjkmnp-tv-z]{16}$/;

/** `<taskId>-<run:8>-<attempt:2>`: the execution's id and the tail of its etcd key. */
export function executionId(taskId: string, run: number, attempt: number): string {
  return `${taskId}-${String(run).padStart(8, '0')}-${String(attempt).padStart(2, '0')}`;
}

const EXECUTION_ID_PATTERN = /^(t_[0-9a-hjkmnp-tv-z]{16})-(\d{8})-(\d{2})$/;

/** Splits an execution id, or returns undefined if it is malformed. */
export function parseExecutionId(
  id: string,
): { taskId: string; run: number; attempt: number } | undefined {
  const m = EXECUTION_ID_PATTERN.exec(id);
  if (!m) return undefined;
  return { taskId: m[1]!, run: Number(m[2]), attempt: Number(m[3]) };
}
