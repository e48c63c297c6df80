/**
 * The leader's dispatcher (docs/dispatch.md, "The dispatcher"): assigns due pending executions
 * to online workers with free slots, priorities high to low and, within a priority, owners
 * round-robin, each owner within its max_concurrent_executions. Workers, in-flight executions
 * and the queue (ids, due times and owners only: `queue-index.ts`) are held in memory from a
 * range read plus a watch; a dispatch pass runs on every event that can change its outcome
 * (new queue entry, freed slot, worker online, user settings) and at the next due time. Passes
 * never overlap; a pass reads only the records of the executions it is about to assign, and
 * commits them in fenced batches.
 */
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { NotLeaderError } from '../../common/errors.js';
import type { ExecutionEngine } from './execution-engine.js';
import { keys } from '../store/keys.js';
import type { LeaderComponent } from '../store/leader-election.js';
import type { Metrics } from '../metrics.js';
import { parseQueueKey, QueueIndex } from './queue-index.js';
import type { ExecutionRecord, QueueEntryRecord } from './records.js';
import type { Fence, Store } from '../store/store.js';
import type { UserTable } from '../auth/users.js';
import type { LiveRecord } from '../workers/worker-table.js';

/** Queue keys per page when the queue index loads. */
const LOAD_PAGE = 1000;
/** Execution records read per pass to learn the owners of entries from older versions. */
const OWNER_READS = 1000;
/** Assignments per transaction (each takes 5 operations and a compare; etcd allows 128). */
const BATCH = 16;

interface Inflight {
  workerId?: string;
  owner?: string;
}

/**
 * The leader component that assigns pending executions to workers; started and stopped with
 * leadership. Every write is a fenced `assignBatch`, so a deposed leader assigns nothing.
 */
export class Dispatcher implements LeaderComponent {
  readonly name = 'dispatcher';
  private fence: Fence | undefined;
  private watchers: Watcher[] = [];
  /** Online workers and their slots. */
  private readonly workers = new Map<string, number>();
  /** Executions in flight: worker and owner. */
  private readonly inflight = new Map<string, Inflight>();
  /** Pending executions by priority and owner. */
  private readonly queue = new QueueIndex();
  /** A user's changed limit can let waiting work go. */
  private readonly onUserChange = () => this.schedule();
  private running: Promise<void> | undefined;
  private dirty = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly store: Store,
    private readonly executions: ExecutionEngine,
    private readonly users: UserTable,
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
  ) {}

  async start(fence: Fence): Promise<void> {
    this.fence = fence;
    const live = await this.store.rangeAll<LiveRecord>(keys.livePrefix);
    const rev = live.revision;
    const inflight = await this.store.rangeAll<Inflight>(keys.inflightPrefix, { revision: rev });
    for (const w of live.items) {
      this.workers.set(w.key.slice(keys.livePrefix.length), w.value.totalSlots ?? 0);
    }
    for (const i of inflight.items) {
      this.inflight.set(i.key.slice(keys.inflightPrefix.length), holdInflight(i.value));
    }
    await this.loadQueue(rev);
    const id = (key: Buffer, prefix: string) => this.store.relative(key).slice(prefix.length);
    const watch = async (prefix: string, on: (w: Watcher) => void) => {
      const w = await this.store.watch(prefix, rev + 1);
      on(w);
      w.once('error', (err) => {
        // A compacted resume revision: start over from a fresh read.
        this.logger.warn({ err, prefix }, 'dispatcher watch cancelled; reloading');
        if (this.fence === fence) {
          void this.stop().then(() => this.start(fence).catch((e: unknown) => this.fail(e)));
        }
      });
      this.watchers.push(w);
    };
    await watch(keys.livePrefix, (w) => {
      w.on('put', (kv) => {
        const record = JSON.parse(kv.value.toString()) as LiveRecord;
        this.workers.set(id(kv.key, keys.livePrefix), record.totalSlots ?? 0);
        this.schedule();
      });
      w.on('delete', (kv) => this.workers.delete(id(kv.key, keys.livePrefix)));
    });
    await watch(keys.inflightPrefix, (w) => {
      w.on('put', (kv) => {
        this.inflight.set(
          id(kv.key, keys.inflightPrefix),
          holdInflight(JSON.parse(kv.value.toString()) as Inflight),
        );
      });
      w.on('delete', (kv) => {
        this.inflight.delete(id(kv.key, keys.inflightPrefix));
        this.schedule();
      });
    });
    await watch(keys.queuePrefix, (w) => {
      w.on('put', (kv) => {
        this.addEntry(this.store.relative(kv.key), parseEntry(kv.value));
        this.schedule();
      });
      w.on('delete', (kv) => {
        const place = parseQueueKey(this.store.relative(kv.key));
        if (place) this.queue.remove(place.id);
      });
    });
    this.users.on('change', this.onUserChange);
    this.schedule();
  }

  /** Reads the whole queue at `revision`, page by page, into the index. */
  private async loadQueue(revision: number): Promise<void> {
    const pages = this.store.pages<QueueEntryRecord | null>(keys.queuePrefix, {
      revision,
      pageSize: LOAD_PAGE,
      // Queue values are empty or `{"owner": ...}`, written only by this server.
      maxValueBytes: 1024,
    });
    for await (const page of pages) {
      for (const item of page.items) this.addEntry(item.key, item.value);
    }
  }

  /** Indexes one queue entry; one without an owner (older versions) waits for its record. */
  private addEntry(key: string, value: QueueEntryRecord | null): void {
    const place = parseQueueKey(key);
    if (!place) return;
    if (typeof value?.owner === 'string' && value.owner !== '') {
      this.queue.add({ ...place, owner: value.owner });
    } else {
      this.queue.addOwnerless(place);
    }
  }

  async stop(): Promise<void> {
    this.fence = undefined;
    this.users.off('change', this.onUserChange);
    clearTimeout(this.timer);
    const watchers = this.watchers;
    this.watchers = [];
    await Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
    await this.running;
    this.workers.clear();
    this.inflight.clear();
    this.queue.clear();
  }

  /** Runs a pass now, or right after the one in progress. */
  private schedule(): void {
    this.dirty = true;
    if (this.running) return;
    this.running = this.loop().finally(() => {
      this.running = undefined;
      // An event that arrived after the loop's last check must not wait for the next one.
      if (this.dirty && this.fence) this.schedule();
    });
  }

  private async loop(): Promise<void> {
    while (this.dirty && this.fence) {
      this.dirty = false;
      try {
        await this.pass(this.fence);
      } catch (err) {
        if (err instanceof NotLeaderError) return;
        this.fail(err);
        return;
      }
    }
  }

  private fail(err: unknown): void {
    this.logger.error({ err }, 'dispatch pass failed; retrying in 1 s');
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.schedule(), 1000);
  }

  /** One pass over the due queue (docs/dispatch.md, "The dispatcher"). */
  private async pass(fence: Fence): Promise<void> {
    const { free, perOwner } = this.capacity();
    const slots = [...free.values()].reduce((a, b) => a + Math.max(0, b), 0);
    if (slots === 0) return;
    await this.learnOwners();

    const { picks, nextDueMs } = this.queue.select(Date.now(), slots, (owner) => {
      const limit = this.users.get(owner)?.maxConcurrentExecutions ?? 0;
      return limit > 0 ? limit - (perOwner.get(owner) ?? 0) : Infinity;
    });
    clearTimeout(this.timer);
    if (nextDueMs !== Infinity) {
      this.timer = setTimeout(() => this.schedule(), Math.max(0, nextDueMs - Date.now()));
    }
    if (picks.length === 0) return;

    // Only the chosen records, with the fencing counter, so the first attempt of each batch
    // needs no read of its own.
    const records = await this.store.getManyJson<unknown>([
      keys.fencingCounter,
      ...picks.map((p) => keys.execution(p.id)),
    ]);
    let batch: { id: string; workerId: string }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      const assigned = await this.executions.assignBatch(batch, fence, records);
      for (const a of assigned) this.inflight.set(a.id, { workerId: a.workerId, owner: a.owner });
      this.metrics?.dispatched.inc(assigned.length);
      const done = new Set(assigned.map((a) => a.id));
      for (const b of batch) {
        // Assigned, or no longer pending: either way its queue key is gone or going.
        this.queue.remove(b.id);
        if (!done.has(b.id)) this.dirty = true; // its slot is still free
      }
      batch = [];
    };
    for (const pick of picks) {
      const exec = records.get(keys.execution(pick.id))?.value as ExecutionRecord | undefined;
      if (exec?.state !== 'pending') {
        this.queue.remove(pick.id);
        this.dirty = true; // another pass gives its slot to the next entry
        continue;
      }
      const best = mostFree(free);
      if (best === undefined) break;
      free.set(best, free.get(best)! - 1);
      batch.push({ id: pick.id, workerId: best });
      if (batch.length === BATCH) await flush();
    }
    await flush();
  }

  /** Free slots per online worker and executions in flight per owner. */
  private capacity(): { free: Map<string, number>; perOwner: Map<string, number> } {
    const free = new Map<string, number>(this.workers);
    const perOwner = new Map<string, number>();
    for (const i of this.inflight.values()) {
      if (i.workerId !== undefined && free.has(i.workerId)) {
        free.set(i.workerId, free.get(i.workerId)! - 1);
      }
      if (i.owner !== undefined) perOwner.set(i.owner, (perOwner.get(i.owner) ?? 0) + 1);
    }
    return { free, perOwner };
  }

  /**
   * Reads the execution records of entries written by older versions (no owner in the value)
   * to learn their owners, at most OWNER_READS a pass; a record no longer pending drops its
   * entry. Asks for another pass if some remain.
   */
  private async learnOwners(): Promise<void> {
    const places = this.queue.ownerlessEntries(OWNER_READS);
    if (places.length === 0) return;
    const records = await this.store.getManyJson<ExecutionRecord>(
      places.map((p) => keys.execution(p.id)),
    );
    for (const place of places) {
      const exec = records.get(keys.execution(place.id))?.value;
      if (exec?.state === 'pending') this.queue.setOwner(place.id, exec.owner);
      else this.queue.remove(place.id);
    }
    if (this.queue.ownerlessCount > 0) this.dirty = true;
  }
}

/** What the dispatcher keeps of an `inflight/` value: its worker and owner, nothing more. */
function holdInflight(value: Inflight): Inflight {
  return { workerId: value.workerId, owner: value.owner };
}

/** The worker with the most free slots (ties: lowest id), or undefined if none has one. */
function mostFree(free: ReadonlyMap<string, number>): string | undefined {
  let best: string | undefined;
  for (const [workerId, slots] of free) {
    if (slots <= 0) continue;
    const bestSlots = best === undefined ? 0 : free.get(best)!;
    if (best === undefined || slots > bestSlots || (slots === bestSlots && workerId < best)) {
      best = workerId;
    }
  }
  return best;
}

/** A queue entry's value from a watch event: `{owner}`, or null (older versions, unreadable). */
function parseEntry(value: Buffer): QueueEntryRecord | null {
  if (value.length === 0) return null;
  try {
    return JSON.parse(value.toString()) as QueueEntryRecord;
  } catch {
    return null;
  }
}
