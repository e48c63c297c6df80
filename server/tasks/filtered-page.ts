/**
 * One page of a filtered list call: reads records under a prefix, keeps the ones that match, and
 * stops at a full page or a bound on the records read, with the page token to go on.
 */
import { encodePageToken } from '../api/page-token.js';
import type { Store, Versioned } from '../store/store.js';

/**
 * Reads matching records page by page from `prefix` until `size` matched or the range ends.
 */
export async function filteredPage<T>(
  store: Store,
  prefix: string,
  startAfter: string | undefined,
  size: number,
  matches: (value: T) => boolean,
): Promise<{ items: Versioned<T>[]; next: string }> {
  const items: Versioned<T>[] = [];
  // Bounded work per call: a selective filter returns a shorter page and a token to go on.
  const maxScanned = Math.max(10 * size, 1000);
  let scanned = 0;
  let cursor = startAfter;
  for (;;) {
    const page = await store.range<T>(prefix, {
      startAfter: cursor,
      limit: Math.max(size * 2, 50),
    });
    for (const item of page.items) {
      cursor = item.key;
      scanned++;
      if (matches(item.value)) items.push(item);
      const last = !page.more && item === page.items[page.items.length - 1];
      if (items.length === size || scanned >= maxScanned) {
        return { items, next: last ? '' : encodePageToken(item.key) };
      }
    }
    if (!page.more) return { items, next: '' };
  }
}
