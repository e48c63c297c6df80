/**
 * Bounded reads (docs/architecture.md, "Bounded reads"): how many entries one etcd range
 * response may carry so that it never exceeds the etcd client's receive limit, whatever the
 * values' sizes. The store pages every range read by these numbers.
 */

/**
 * The largest value etcd can hold: a put is one request, and etcd refuses requests over its
 * `--max-request-bytes` (1.5 MiB by default; Citadel never raises it), so no stored value, and
 * hence no range entry, is larger.
 */
export const ETCD_MAX_VALUE_BYTES = 1.5 * 1024 * 1024;

/** Allowance per range entry for its key, revisions and protobuf framing (keys are short). */
export const RANGE_ENTRY_OVERHEAD_BYTES = 4 * 1024;

/**
 * The etcd client's gRPC max receive message length, set explicitly (server/cluster/
 * etcd-client.ts): gRPC's default of 4 MiB is smaller than four legal values, so any unpaged
 * read could fail. 64 MiB is a response we are willing to hold in memory at once.
 */
export const ETCD_MAX_RECEIVE_BYTES = 64 * 1024 * 1024;

/**
 * The most entries one range response may carry so that it can never exceed the receive limit,
 * even if every value is as large as etcd allows (41 with the defaults above). Responses also
 * carry a small header, hence the one entry held back.
 */
export const MAX_RANGE_PAGE = rangePageCap();

/** Options of {@link Store.pages}. */
export interface PagesOptions {
  /** Read at this revision. @default the revision of the first page */
  revision?: number;
  /** Entries per page, capped so the response fits. @default MAX_RANGE_PAGE */
  pageSize?: number;
  /**
   * The caller's bound on each value, for prefixes whose values only this server writes and
   * keeps small (queue entries): raises the page cap. @default ETCD_MAX_VALUE_BYTES
   */
  maxValueBytes?: number;
}

/** The most entries one response may carry when no value exceeds `maxValueBytes`. */
export function rangePageCap(maxValueBytes = ETCD_MAX_VALUE_BYTES): number {
  return Math.max(
    1,
    Math.floor(ETCD_MAX_RECEIVE_BYTES / (maxValueBytes + RANGE_ENTRY_OVERHEAD_BYTES)) - 1,
  );
}
