/**
 * The one write path to etcd. Every state change is a `Tx`: compares that make it safe, the
 * puts and deletes, and the audit records that describe it, committed as one etcd transaction
 * (docs/architecture.md, "One write path"). Reads and watches are here too, so the key prefix
 * is applied in exactly one place.
 */
import type { Etcd3, ICompare, IKeyValue, IRequestOp, Watcher } from 'etcd3';
import { CompareResult, CompareTarget } from 'etcd3';
import { ConflictError, NotLeaderError } from '../../common/errors.js';
import { keys } from './keys.js';
import { MAX_RANGE_PAGE, rangePageCap, type PagesOptions } from './range-limits.js';

/** One audit record, in the seed's format. Never carries payloads, results or secrets. */
export interface AuditEvent {
  eventType: string;
  action: string;
  result: 'success' | 'failure';
  userId?: string;
  taskId?: string;
  executionId?: string;
  workerId?: string;
  ipAddress?: string;
  durationMs?: number;
  details?: Record<string, string | number | boolean>;
}

/** Who asked for a change: the authenticated principal and peer, or a system component. */
export interface Actor {
  userId: string;
  ipAddress?: string;
}

/** A leader's proof that it still leads: added to every leader write. */
export interface Fence {
  /** Relative key of the leader's election key. */
  readonly key: string;
  /** Create revision of that key; the compare fails once the key is gone or replaced. */
  readonly createRevision: number;
  /** Called when a commit finds the fence broken. */
  lost(): void;
}

/** A value read from etcd with its revisions (for compare-and-swap). */
export interface Versioned<T> {
  key: string;
  value: T;
  modRevision: number;
  createRevision: number;
  /** Bytes of the stored value, when read from etcd (for byte-bounded pages). */
  size?: number;
}

/** One page of a range read. */
export interface RangePage<T> {
  items: Versioned<T>[];
  /** True if keys after the last item remain. */
  more: boolean;
  /** The store revision the read saw. */
  revision: number;
}

/** A transaction being built. Puts to the same key coalesce (etcd forbids two in one txn). */
export class Tx {
  readonly compares: { key: string; modRevision: number }[] = [];
  readonly puts = new Map<string, Buffer>();
  /** Lease (decimal id) of a put key, for keys that must vanish with a lease. */
  readonly leases = new Map<string, string>();
  readonly deletes = new Set<string>();
  readonly audit: AuditEvent[] = [];

  /** Requires `key` to be unchanged since `modRevision` was read; 0 means it must not exist. */
  expect(key: string, modRevision: number): this {
    this.compares.push({ key, modRevision });
    return this;
  }

  /** Puts `value` at `key`, attached to `leaseId` if given (etcd deletes it when the lease ends). */
  put(key: string, value: string | Buffer, leaseId?: string): this {
    this.deletes.delete(key);
    this.puts.set(key, typeof value === 'string' ? Buffer.from(value) : value);
    if (leaseId === undefined) this.leases.delete(key);
    else this.leases.set(key, leaseId);
    return this;
  }

  putJson(key: string, value: unknown, leaseId?: string): this {
    return this.put(key, JSON.stringify(value), leaseId);
  }

  delete(key: string): this {
    this.puts.delete(key);
    this.leases.delete(key);
    this.deletes.add(key);
    return this;
  }

  record(event: AuditEvent): this {
    this.audit.push(event);
    return this;
  }

  get empty(): boolean {
    return this.puts.size === 0 && this.deletes.size === 0;
  }
}

export interface StoreOptions {
  client: Etcd3;
  /** Key prefix, e.g. `/citadel/`. */
  prefix: string;
  /** Short id of this replica, stamped on audit keys. */
  replicaId: string;
}

/** etcd access with the cluster prefix applied. */
export class Store {
  readonly client: Etcd3;
  readonly prefix: string;
  readonly replicaId: string;
  private auditSeq = 0;

  constructor(options: StoreOptions) {
    this.client = options.client;
    this.prefix = options.prefix;
    this.replicaId = options.replicaId;
  }

  full(key: string): Buffer {
    return Buffer.from(this.prefix + key);
  }

  relative(fullKey: Buffer | string): string {
    return fullKey.toString().slice(this.prefix.length);
  }

  /**
   * Commits `tx` atomically with its audit records. With a `fence`, the write applies only if
   * the fence still stands.
   * @throws ConflictError if a compare on a record failed (re-read and retry).
   * @throws NotLeaderError if the fence is broken (the caller no longer leads; nothing written).
   * @returns the revision of the commit.
   */
  async commit(tx: Tx, fence?: Fence): Promise<number> {
    const compare: ICompare[] = tx.compares.map((c) => ({
      key: this.full(c.key),
      target: CompareTarget.Mod,
      result: CompareResult.Equal,
      mod_revision: c.modRevision,
    }));
    if (fence) {
      compare.push({
        key: this.full(fence.key),
        target: CompareTarget.Create,
        result: CompareResult.Equal,
        create_revision: fence.createRevision,
      });
    }
    const success: IRequestOp[] = [];
    for (const [key, value] of tx.puts) {
      success.push({ request_put: { key: this.full(key), value, lease: tx.leases.get(key) } });
    }
    for (const key of tx.deletes) success.push({ request_delete_range: { key: this.full(key) } });
    const now = Date.now();
    for (const event of tx.audit) {
      const auditKey = `${keys.auditPrefix}${String(now).padStart(13, '0')}-${this.replicaId}-${String(++this.auditSeq % 1e6).padStart(6, '0')}`;
      const record = { timestamp: new Date(now).toISOString(), ...toSnakeCase(event) };
      success.push({
        request_put: { key: this.full(auditKey), value: Buffer.from(JSON.stringify(record)) },
      });
    }
    // On failure, read the fence key back so we can tell a lost leadership from a conflict.
    const failure: IRequestOp[] = fence
      ? [{ request_range: { key: this.full(fence.key), keys_only: true } }]
      : [];
    const res = await this.client.kv.txn({ compare, success, failure });
    if (res.succeeded) return Number(res.header.revision);
    if (fence) {
      const kvs = res.responses[0]?.response_range?.kvs ?? [];
      if (kvs.length === 0 || Number(kvs[0]!.create_revision) !== fence.createRevision) {
        fence.lost();
        throw new NotLeaderError('leadership lost: the write was fenced off');
      }
    }
    throw new ConflictError('a concurrent change won; re-read and retry');
  }

  async get(key: string): Promise<Versioned<Buffer> | undefined> {
    const res = await this.client.kv.range({ key: this.full(key) });
    const kv = res.kvs[0];
    return kv ? this.versioned(kv, kv.value) : undefined;
  }

  async getJson<T>(key: string): Promise<Versioned<T> | undefined> {
    const v = await this.get(key);
    return v && { ...v, value: parseValue<T>(v.value) };
  }

  /**
   * Reads several keys, {@link MAX_RANGE_PAGE} per round trip so that a response of values as
   * large as etcd allows still fits the receive limit (missing keys are left out).
   */
  async getManyJson<T>(keyList: string[]): Promise<Map<string, Versioned<T>>> {
    const out = new Map<string, Versioned<T>>();
    for (let i = 0; i < keyList.length; i += MAX_RANGE_PAGE) {
      const batch = keyList.slice(i, i + MAX_RANGE_PAGE);
      const res = await this.client.kv.txn({
        success: batch.map((k) => ({ request_range: { key: this.full(k) } })),
      });
      for (const r of res.responses) {
        const kv = r.response_range?.kvs[0];
        if (kv) {
          const v = this.versioned(kv, parseValue<T>(kv.value));
          out.set(v.key, v);
        }
      }
    }
    return out;
  }

  /**
   * Reads one page of keys under `prefix` in key order, starting after `startAfter` (a relative
   * key): at most `limit` entries, and never more than {@link MAX_RANGE_PAGE}, so the response
   * fits the client's receive limit whatever the values' sizes. Check `more` and go on with
   * {@link pages} or {@link rangeAll} to read everything.
   */
  async range<T>(
    prefix: string,
    options: { startAfter?: string; limit: number; revision?: number },
  ): Promise<RangePage<T>> {
    return this.rangePage(prefix, options, parseValue<T>);
  }

  /**
   * Reads every key under `prefix`, page by page, all at the revision of the first page (or at
   * `revision`), so the pages together are one consistent snapshot.
   * @throws etcd's OUT_OF_RANGE error if that revision is compacted while paging.
   */
  async *pages<T>(prefix: string, options: PagesOptions = {}): AsyncGenerator<RangePage<T>> {
    yield* this.pagesOf(prefix, options, parseValue<T>);
  }

  /** Every key under `prefix` as raw bytes, paged as {@link pages} (for non-JSON values). */
  async *rawPages(prefix: string, options: PagesOptions = {}): AsyncGenerator<RangePage<Buffer>> {
    yield* this.pagesOf(prefix, options, (value) => value);
  }

  /**
   * Every key under `prefix`, read with {@link pages} and gathered: for tables held in memory
   * anyway. Returns the revision the snapshot was read at.
   */
  async rangeAll<T>(
    prefix: string,
    options: { revision?: number } = {},
  ): Promise<{ items: Versioned<T>[]; revision: number }> {
    const items: Versioned<T>[] = [];
    let revision = options.revision ?? 0;
    for await (const page of this.pages<T>(prefix, options)) {
      items.push(...page.items);
      revision = page.revision;
    }
    return { items, revision };
  }

  private async *pagesOf<T>(
    prefix: string,
    options: PagesOptions,
    parse: (value: Buffer) => T,
  ): AsyncGenerator<RangePage<T>> {
    const cap = rangePageCap(options.maxValueBytes);
    const limit = Math.min(options.pageSize ?? cap, cap);
    let startAfter: string | undefined;
    let revision = options.revision ?? 0;
    for (;;) {
      const page = await this.rangePage(prefix, { startAfter, limit, revision, cap }, parse);
      revision = page.revision;
      yield page;
      if (!page.more || page.items.length === 0) return;
      startAfter = page.items[page.items.length - 1]!.key;
    }
  }

  private async rangePage<T>(
    prefix: string,
    options: { startAfter?: string; limit: number; revision?: number; cap?: number },
    parse: (value: Buffer) => T,
  ): Promise<RangePage<T>> {
    const start = options.startAfter ? options.startAfter + '\0' : prefix;
    // 0 would mean "no limit" to etcd: never ask for that.
    const limit = Math.min(Math.max(1, Math.floor(options.limit)), options.cap ?? MAX_RANGE_PAGE);
    const res = await this.client.kv.range({
      key: this.full(start),
      range_end: prefixEnd(this.full(prefix)),
      limit,
      revision: options.revision ?? 0,
    });
    return {
      items: res.kvs.map((kv) => this.versioned(kv, parse(kv.value))),
      more: res.more,
      revision: Number(res.header.revision),
    };
  }

  /** Counts keys under `prefix` without reading values. */
  async count(prefix: string): Promise<number> {
    const res = await this.client.kv.range({
      key: this.full(prefix),
      range_end: prefixEnd(this.full(prefix)),
      count_only: true,
    });
    return Number(res.count);
  }

  /** Watches keys under `prefix`, from `startRevision` (inclusive) or from now. */
  async watch(prefix: string, startRevision?: number): Promise<Watcher> {
    let builder = this.client.watch().prefix(this.prefix + prefix);
    if (startRevision !== undefined) builder = builder.startRevision(String(startRevision));
    return builder.create();
  }

  private versioned<T>(kv: IKeyValue, value: T): Versioned<T> {
    return {
      key: this.relative(kv.key),
      value,
      modRevision: Number(kv.mod_revision),
      createRevision: Number(kv.create_revision),
      size: kv.value.length,
    };
  }
}

/** The smallest key greater than every key with this prefix. */
export function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]! += 1;
      return end.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

/** JSON values; an empty value (queue entries) reads as null. */
function parseValue<T>(value: Buffer): T {
  return (value.length === 0 ? null : JSON.parse(value.toString())) as T;
}

function toSnakeCase(event: AuditEvent): Record<string, unknown> {
  return {
    event_type: event.eventType,
    action: event.action,
    result: event.result,
    user_id: event.userId,
    task_id: event.taskId,
    execution_id: event.executionId,
    worker_id: event.workerId,
    ip_address: event.ipAddress,
    duration_ms: event.durationMs,
    details: event.details,
  };
}
