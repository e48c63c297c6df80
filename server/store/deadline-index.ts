/**
 * An in-memory index of the records under one etcd prefix, each with a due time, kept current
 * by a watch, with one timer armed for the earliest due time. The leader's scheduler and
 * timeout watcher are built on it: no polling loop.
 */
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import type { Store, Versioned } from './store.js';

export interface DeadlineIndexOptions<T> {
  store: Store;
  prefix: string;
  /** When the record is due, or null if it never is. */
  dueOf: (value: T, key: string) => number | null;
  /** Handles the records due now (oldest first). Errors are logged and retried later. */
  onDue: (due: Versioned<T>[], now: number) => Promise<void>;
  logger: Logger;
  /** Longest timer; re-checks at least this often in case of clock jumps. @default 30000 */
  maxSleepMs?: number;
  now?: () => number;
}

export class DeadlineIndex<T> {
  private readonly items = new Map<string, Versioned<T>>();
  private watcher: Watcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running = false;
  private busy = false;
  /** When the armed timer fires (Infinity when none is armed). */
  private armedAt = Infinity;
  private readonly now: () => number;

  constructor(private readonly options: DeadlineIndexOptions<T>) {
    this.now = options.now ?? Date.now;
  }

  get size(): number {
    return this.items.size;
  }

  /**
   * Loads every record as one snapshot read in bounded pages (Store.pages), then watches from
   * that revision.
   */
  async start(): Promise<void> {
    this.running = true;
    await this.load();
  }

  private async load(): Promise<void> {
    const { store, prefix } = this.options;
    let revision = 0;
    for await (const page of store.pages<T>(prefix)) {
      revision = page.revision;
      for (const item of page.items) this.upsert(item);
    }
    if (!this.running) return;
    const watcher = await store.watch(prefix, revision + 1);
    if (!this.running) {
      await watcher.cancel();
      return;
    }
    this.watcher = watcher;
    watcher.on('put', (kv) => {
      this.upsert({
        key: store.relative(kv.key),
        value: JSON.parse(kv.value.toString()) as T,
        modRevision: Number(kv.mod_revision),
        createRevision: Number(kv.create_revision),
      });
    });
    watcher.on('delete', (kv) => {
      const key = store.relative(kv.key);
      const current = this.items.get(key);
      // A removed record needs no timer change: an early wake-up finds nothing due.
      if (current && current.modRevision <= Number(kv.mod_revision)) this.items.delete(key);
    });
    // etcd cancels a watch whose resume revision was compacted (after a reconnect): changes
    // would be missed from then on, so start over from a fresh snapshot.
    watcher.once('error', (err) => {
      this.options.logger.warn({ err }, 'watch cancelled; reloading the index');
      if (this.watcher === watcher) this.watcher = undefined;
      void watcher.cancel().catch(() => undefined);
      void this.reload();
    });
    this.arm();
  }

  private async reload(): Promise<void> {
    while (this.running) {
      try {
        this.items.clear();
        await this.load();
        return;
      } catch (err) {
        this.options.logger.error({ err }, 'reloading the index failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  async stop(): Promise<void> {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = undefined;
    const watcher = this.watcher;
    this.watcher = undefined;
    this.items.clear();
    if (watcher) await watcher.cancel().catch(() => undefined);
  }

  /** Records a version we wrote ourselves, without waiting for the watch to echo it. */
  upsert(item: Versioned<T>): void {
    const current = this.items.get(item.key);
    if (current && current.modRevision >= item.modRevision) return;
    const due = this.options.dueOf(item.value, item.key);
    if (due === null) {
      this.items.delete(item.key);
      return;
    }
    this.items.set(item.key, item);
    // Only an earlier due time moves the timer, so an update costs O(1), not a scan.
    if (this.running && !this.busy && due < this.armedAt) this.setTimer(due);
  }

  remove(key: string): void {
    this.items.delete(key);
  }

  /** Re-reads one record from etcd (after a lost compare) and re-indexes it. */
  async refresh(key: string): Promise<void> {
    const fresh = await this.options.store.getJson<T>(key);
    // upsert keeps whichever version is newer: the watch may have delivered one meanwhile.
    if (!fresh) this.items.delete(key);
    else this.upsert(fresh);
  }

  /** Arms the timer for the earliest due record (a full scan). */
  arm(): void {
    if (!this.running || this.busy) return;
    let earliest = Infinity;
    for (const item of this.items.values()) {
      const due = this.options.dueOf(item.value, item.key);
      if (due !== null && due < earliest) earliest = due;
    }
    clearTimeout(this.timer);
    this.timer = undefined;
    this.armedAt = Infinity;
    if (earliest !== Infinity) this.setTimer(earliest);
  }

  private setTimer(due: number): void {
    clearTimeout(this.timer);
    const now = this.now();
    const delay = Math.min(Math.max(0, due - now), this.options.maxSleepMs ?? 30_000);
    this.armedAt = now + delay;
    this.timer = setTimeout(() => void this.fire(), delay);
  }

  private async fire(): Promise<void> {
    if (!this.running) return;
    this.busy = true;
    this.armedAt = Infinity;
    const now = this.now();
    const due: { item: Versioned<T>; at: number }[] = [];
    for (const item of this.items.values()) {
      const at = this.options.dueOf(item.value, item.key);
      if (at !== null && at <= now) due.push({ item, at });
    }
    due.sort((a, b) => a.at - b.at);
    try {
      if (due.length > 0)
        await this.options.onDue(
          due.map((d) => d.item),
          now,
        );
    } catch (err) {
      this.options.logger.error({ err }, 'handling due records failed; retrying shortly');
      this.busy = false;
      // Through setTimer, so armedAt is set and an upsert of a later record cannot displace it.
      if (this.running) this.setTimer(this.now() + 250);
      return;
    }
    this.busy = false;
    this.arm();
  }
}
