/**
 * The leader's dispatcher (docs/dispatch.md): assigns due pending executions, by priority then
 * due time, to online workers with free slots, within each owner's max_concurrent_executions.
 * Workers and in-flight executions are held in memory from a range read plus a watch; a
 * dispatch pass runs on every event that can change its outcome (new queue entry, freed slot,
 * worker online) and at the next due time. Passes never overlap; assignments are committed in
 * fenced batches.
 */
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { NotLeaderError } from '../../common/errors.js';
import type { ExecutionEngine } from './execution-engine.js';
import { keys } from '../store/keys.js';
import type { LeaderComponent } from '../store/leader-election.js';
import type { Metrics } from '../metrics.js';
import type { ExecutionRecord } from './records.js';
import type { Fence, Store } from '../store/store.js';
import type { UserTable } from '../auth/users.js';
import type { LiveRecord } from '../workers/worker-table.js';

/** Queue entries read per priority and pass. */
const SCAN_LIMIT = 500;
/** Assignments per transaction (each takes 5 operations and a compare; etcd allows 128). */
const BATCH = 16;

interface Inflight {
  workerId?: string;
  owner?: string;
}

export class Dispatcher implements LeaderComponent {
  readonly name = 'dispatcher';
  private fence: Fence | undefined;
  private watchers: Watcher[] = [];
  /** Online workers and their slots. */
  private readonly workers = new Map<string, number>();
  /** Executions in flight: worker and owner. */
  private readonly inflight = new Map<string, Inflight>();
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
    const live = await this.store.range<LiveRecord>(keys.livePrefix);
    const rev = live.revision;
    const inflight = await this.store.range<Inflight>(keys.inflightPrefix, { revision: rev });
    for (const w of live.items) {
      this.workers.set(w.key.slice(keys.livePrefix.length), w.value.totalSlots ?? 0);
    }
    for (const i of inflight.items) {
      this.inflight.set(i.key.slice(keys.inflightPrefix.length), i.value);
    }
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
          JSON.parse(kv.value.toString()) as Inflight,
        );
      });
      w.on('delete', (kv) => {
        this.inflight.delete(id(kv.key, keys.inflightPrefix));
        this.schedule();
      });
    });
    await watch(keys.queuePrefix, (w) => w.on('put', () => this.schedule()));
    this.schedule();
  }

  async stop(): Promise<void> {
    this.fence = undefined;
    clearTimeout(this.timer);
    const watchers = this.watchers;
    this.watchers = [];
    await Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
    await this.running;
    this.workers.clear();
    this.inflight.clear();
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
    const free = new Map<string, number>(this.workers);
    const perOwner = new Map<string, number>();
    for (const i of this.inflight.values()) {
      if (i.workerId !== undefined && free.has(i.workerId)) {
        free.set(i.workerId, free.get(i.workerId)! - 1);
      }
      if (i.owner !== undefined) perOwner.set(i.owner, (perOwner.get(i.owner) ?? 0) + 1);
    }
    const totalFree = () => [...free.values()].reduce((a, b) => a + Math.max(0, b), 0);
    if (totalFree() === 0) return;

    const now = Date.now();
    let nextDue = Infinity;
    const due: string[] = [];
    const pages = await Promise.all(
      [1, 2, 3].map((p) =>
        this.store.range<null>(`${keys.queuePrefix}${p}/`, { limit: SCAN_LIMIT }),
      ),
    );
    for (const page of pages) {
      for (const item of page.items) {
        const [, , dueMs, executionId] = item.key.split('/');
        if (Number(dueMs) > now) {
          nextDue = Math.min(nextDue, Number(dueMs));
          break;
        }
        due.push(executionId!);
      }
    }
    clearTimeout(this.timer);
    if (nextDue !== Infinity) {
      this.timer = setTimeout(() => this.schedule(), Math.max(0, nextDue - Date.now()));
    }
    if (due.length === 0) return;

    // With the fencing counter, so the first attempt of each batch needs no read of its own.
    const records = await this.store.getManyJson<unknown>([
      keys.fencingCounter,
      ...due.map((d) => keys.execution(d)),
    ]);
    let batch: { id: string; workerId: string }[] = [];
    const flush = async () => {
      if (batch.length === 0) return;
      const assigned = await this.executions.assignBatch(batch, fence, records);
      for (const a of assigned) this.inflight.set(a.id, { workerId: a.workerId, owner: a.owner });
      this.metrics?.dispatched.inc(assigned.length);
      batch = [];
    };
    for (const executionId of due) {
      const exec = records.get(keys.execution(executionId))?.value as ExecutionRecord | undefined;
      if (exec?.state !== 'pending') continue;
      const limit = this.users.get(exec.owner)?.maxConcurrentExecutions ?? 0;
      const running = perOwner.get(exec.owner) ?? 0;
      if (limit > 0 && running >= limit) continue; // waits in the queue
      let best: string | undefined;
      for (const [workerId, slots] of free) {
        if (slots <= 0) continue;
        if (
          best === undefined ||
          slots > free.get(best)! ||
          (slots === free.get(best)! && workerId < best)
        ) {
          best = workerId;
        }
      }
      if (best === undefined) break;
      free.set(best, free.get(best)! - 1);
      perOwner.set(exec.owner, running + 1);
      batch.push({ id: executionId, workerId: best });
      if (batch.length === BATCH) await flush();
    }
    await flush();
  }
}
