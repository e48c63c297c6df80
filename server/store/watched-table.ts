/**
 * An in-memory copy of every record under one etcd prefix, loaded as one snapshot read in
 * bounded pages (Store.rangeAll) and kept current by a watch; if etcd cancels the watch (a compacted resume revision after a
 * reconnect) the copy is reloaded, so a change such as a revocation is never missed. Used for
 * small, hot tables read on every call: API keys and users.
 */
import { EventEmitter } from 'node:events';
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import type { Store } from './store.js';

/** Emits `change` (with the row id) after every put or delete it applies. */
export class WatchedTable<T> extends EventEmitter {
  private rows = new Map<string, T>();
  private watcher: Watcher | undefined;
  private running = false;

  constructor(
    private readonly store: Store,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {
    super();
    this.setMaxListeners(0); // one listener per open stream
  }

  async start(): Promise<void> {
    this.running = true;
    await this.load();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
  }

  /** The row under `prefix + id`. */
  get(id: string): T | undefined {
    return this.rows.get(id);
  }

  values(): IterableIterator<T> {
    return this.rows.values();
  }

  private async load(): Promise<void> {
    const page = await this.store.rangeAll<T>(this.prefix);
    const fresh = new Map<string, T>();
    for (const item of page.items) fresh.set(item.key.slice(this.prefix.length), item.value);
    const watcher = await this.store.watch(this.prefix, page.revision + 1);
    // Swap in one step, so a removed row is never briefly back.
    this.rows = fresh;
    this.emit('change', undefined);
    const id = (key: Buffer) => this.store.relative(key).slice(this.prefix.length);
    watcher.on('put', (kv) => {
      this.rows.set(id(kv.key), JSON.parse(kv.value.toString()) as T);
      this.emit('change', id(kv.key));
    });
    watcher.on('delete', (kv) => {
      this.rows.delete(id(kv.key));
      this.emit('change', id(kv.key));
    });
    watcher.once('error', (err) => {
      this.logger.warn({ err, prefix: this.prefix }, 'watch cancelled; reloading the table');
      void watcher.cancel().catch(() => undefined);
      void this.reload();
    });
    this.watcher = watcher;
    if (!this.running) await this.stop();
  }

  private async reload(): Promise<void> {
    while (this.running) {
      try {
        await this.load();
        return;
      } catch (err) {
        this.logger.error({ err, prefix: this.prefix }, 'reloading the table failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }
}
