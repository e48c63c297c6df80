/**
 * Retry-on-conflict: the read-decide-commit shape of every engine method is run again when its
 * commit lost a compare to a concurrent change (ConflictError), a bounded number of times.
 */
import { ConflictError } from '../../common/errors.js';

/** Tries after the first before the conflict is returned to the caller. */
const MAX_CONFLICT_RETRIES = 8;

/**
 * Runs `fn` again when a compare-and-swap lost to a concurrent change.
 * @throws the last ConflictError after 8 retries, or any other error at once.
 */
export async function retryOnConflict<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof ConflictError) || i >= MAX_CONFLICT_RETRIES) throw err;
    }
  }
}
