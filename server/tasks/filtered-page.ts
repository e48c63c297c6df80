/**
 * One page of a filtered list call: reads records under a prefix, keeps the ones that match, and
 * stops at a full page, a bound on the records read or a bound on the page's bytes, with the page
 * token to go on.
 */
import { encodePageToken } from '../api/page-token.js';
import type { Store, Versioned } from '../store/store.js';

/**
 * Stored bytes one API page may carry: clients keep gRPC's 4 MiB receive limit, and a record's
 * wire form is no larger than its stored (sealed, base64) form. One record always fits (etcd
 * holds none over 1.5 MiB).
 */
export const MAX_PAGE_BYTES = 3 * 1024 * 1024;

/**
 * Reads matching records page by page from `prefix` until `size` matched, their stored bytes
 * reach {@link MAX_PAGE_BYTES}, or the range ends.
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
  let bytes = 0;
  let cursor = startAfter;
  for (;;) {
    const page = await store.range<T>(prefix, {
      startAfter: cursor,
      limit: Math.max(size * 2, 50),
    });
    for (const item of page.items) {
      const match = matches(item.value);
      const itemBytes = item.size ?? 0;
      const prev = items[items.length - 1];
      if (match && prev && bytes + itemBytes > MAX_PAGE_BYTES) {
        // Full by bytes: this record starts the next page.
        return { items, next: encodePageToken(prev.key) };
      }
      cursor = item.key;
      scanned++;
      if (match) {
        items.push(item);
        bytes += itemBytes;
      }
      const last = !page.more && item === page.items[page.items.length - 1];
      if (items.length === size || scanned >= maxScanned) {
        return { items, next: last ? '' : encodePageToken(item.key) };
      }
    }
    if (!page.more) return { items, next: '' };
  }
}
