/** Classifying Node system errors by their code (never by their message). */

/** True if `err` is a Node system error with one of `codes` (`ENOENT`, `ESRCH`, ...). */
export function isErrno(err: unknown, ...codes: string[]): boolean {
  return err instanceof Error && codes.includes((err as NodeJS.ErrnoException).code ?? '');
}
