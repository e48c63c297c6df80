/**
 * The leader's worker reaper (docs/workers.md, "Liveness"): when a worker's lease lapses etcd
 * deletes `live/<id>`; the reaper sees the delete on its watch and, fenced, marks the worker
 * offline with a `deregister` audit record and ends every execution assigned to it as `lost`
 * (retried per policy). On gaining leadership it first reconciles: every worker marked online
 * without a live key is deregistered the same way, so a lapse during a leader change is not
 * missed.
 */
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { FailedPreconditionError, NotLeaderError, NotFoundError } from '../../common/errors.js';
import type { ExecutionEngine } from './execution-engine.js';
import { SCHEDULER_ACTOR } from './execution-ops.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { keys } from '../store/keys.js';
import type { LeaderComponent } from '../store/leader-election.js';
import { Tx, type Fence, type Store } from '../store/store.js';
import type { WorkerRecord } from '../workers/worker-table.js';

/** An `inflight/` entry: an assigned or running execution and its worker. */
interface Inflight {
  deadlineMs: number;
  workerId?: string;
}

export class WorkerReaper implements LeaderComponent {
  readonly name = 'worker-reaper';
  private watcher: Watcher | undefined;
  private running = false;
  /** Deregistrations run one at a time, in the order etcd reported the lapses. */
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly store: Store,
    private readonly executions: ExecutionEngine,
    private readonly logger: Logger,
  ) {}

  async start(fence: Fence): Promise<void> {
    this.running = true;
    await this.watchFrom(fence);
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
    await this.queue;
  }

  /** Reconciles every worker, then watches `live/` from the revision the reconcile read. */
  private async watchFrom(fence: Fence): Promise<void> {
    const workers = await this.store.rangeAll<WorkerRecord>(keys.workerPrefix);
    const live = await this.store.rangeAll<unknown>(keys.livePrefix, {
      revision: workers.revision,
    });
    const alive = new Set(live.items.map((i) => i.key.slice(keys.livePrefix.length)));
    for (const w of workers.items) {
      if (w.value.online && w.value.state === 'active' && !alive.has(w.value.id)) {
        this.enqueue(w.value.id, fence);
      }
    }
    const watcher = await this.store.watch(keys.livePrefix, workers.revision + 1);
    watcher.on('delete', (kv) => {
      this.enqueue(this.store.relative(kv.key).slice(keys.livePrefix.length), fence);
    });
    watcher.once('error', (err) => {
      this.logger.warn({ err }, 'worker reaper watch cancelled; reconciling again');
      void watcher.cancel().catch(() => undefined);
      if (this.running) {
        this.watchFrom(fence).catch((e: unknown) => {
          this.logger.error({ err: e }, 'worker reaper could not restart its watch');
        });
      }
    });
    this.watcher = watcher;
    if (!this.running) await this.stop();
  }

  private enqueue(workerId: string, fence: Fence): void {
    this.queue = this.queue.then(() =>
      this.deregister(workerId, fence).catch((err: unknown) => {
        if (err instanceof NotLeaderError) return;
        this.logger.error({ err, workerId }, 'could not deregister a worker whose lease lapsed');
      }),
    );
  }

  /** Marks the worker offline (unless it registered again meanwhile) and loses its work. */
  private async deregister(workerId: string, fence: Fence): Promise<void> {
    if (!this.running) return;
    const deregistered = await retryOnConflict(async () => {
      const worker = await this.store.getJson<WorkerRecord>(keys.worker(workerId));
      if (!worker?.value.online) return false;
      if (await this.store.get(keys.live(workerId))) return false; // registered again
      const tx = new Tx()
        .expect(keys.live(workerId), 0)
        .expect(worker.key, worker.modRevision)
        .putJson(worker.key, { ...worker.value, online: false })
        .record({
          eventType: 'worker_registration',
          action: 'deregister',
          result: 'success',
          userId: SCHEDULER_ACTOR.userId,
          workerId,
          details: { reason: 'lease_expired' },
        });
      await this.store.commit(tx, fence);
      return true;
    });
    if (deregistered) this.logger.warn({ workerId }, 'worker lease lapsed; deregistered');
    await this.loseExecutionsOf(workerId, fence);
  }

  /** Ends every execution assigned to or running on `workerId` as lost (retried per policy). */
  private async loseExecutionsOf(workerId: string, fence: Fence): Promise<void> {
    if (await this.store.get(keys.live(workerId))) return;
    let startAfter: string | undefined;
    for (;;) {
      const page = await this.store.range<Inflight>(keys.inflightPrefix, {
        startAfter,
        limit: 500,
      });
      for (const item of page.items) {
        if (item.value.workerId !== workerId) continue;
        const id = item.key.slice(keys.inflightPrefix.length);
        try {
          await this.executions.finishExecution(
            id,
            'lost',
            {
              output: null,
              stdoutTruncated: false,
              stderrTruncated: false,
              oomKilled: false,
              timedOut: false,
              message: `worker ${workerId} was lost (its lease lapsed)`,
            },
            { fence, actor: SCHEDULER_ACTOR },
          );
        } catch (err) {
          // Reported or ended meanwhile: nothing to lose.
          if (!(err instanceof FailedPreconditionError || err instanceof NotFoundError)) throw err;
        }
      }
      if (!page.more) return;
      startAfter = page.items[page.items.length - 1]!.key;
    }
  }
}
