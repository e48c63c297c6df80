/**
 * Page tokens of list calls: the base64url of the last key a page returned, checked on the way
 * back in so a token from another call (or a made-up one) is refused rather than followed.
 */
import { InvalidArgumentError } from '../../common/errors.js';

export const encodePageToken = (key: string): string => Buffer.from(key).toString('base64url');

/**
 * The key to start after, or undefined for the first page.
 * @throws InvalidArgumentError (`page_token`) unless the token is one this call made.
 */
export function decodePageToken(token: string, prefix: string): string | undefined {
  if (token === '') return undefined;
  const key = Buffer.from(token, 'base64url').toString();
  if (!key.startsWith(prefix) || encodePageToken(key) !== token) {
    throw new InvalidArgumentError(
      'page_token',
      'is not a token from a previous response of this call',
    );
  }
  return key;
}

/**
 * A list call's page size: 1 to 1000, zero meaning 100.
 * @throws InvalidArgumentError (`page_size`) above 1000.
 */
export function pageSize(n: number): number {
  if (n > 1000) throw new InvalidArgumentError('page_size', 'must be at most 1000');
  return n === 0 ? 100 : n;
}
