/**
 * The leader's scheduler: creates executions for tasks whose `nextRunAt` has come, in order of
 * due time, each in one fenced transaction (TaskEngine.fireDue). Driven by a DeadlineIndex over
 * `tasks/`: a watch and one timer, no polling.
 */
import type { Logger } from 'pino';
import { ConflictError, NotLeaderError } from '../../common/errors.js';
import { DeadlineIndex } from '../store/deadline-index.js';
import { keys } from '../store/keys.js';
import type { LeaderComponent } from '../store/leader-election.js';
import type { Metrics } from '../metrics.js';
import type { TaskRecord } from './records.js';
import type { Fence, Store, Versioned } from '../store/store.js';
import type { TaskEngine } from './task-engine.js';

/** How many tasks are fired concurrently. */
const FIRE_CONCURRENCY = 16;

export class Scheduler implements LeaderComponent {
  readonly name = 'scheduler';
  private index: DeadlineIndex<TaskRecord> | undefined;

  constructor(
    private readonly store: Store,
    private readonly engine: TaskEngine,
    private readonly logger: Logger,
    private readonly metrics?: Metrics,
  ) {}

  async start(fence: Fence): Promise<void> {
    const index = new DeadlineIndex<TaskRecord>({
      store: this.store,
      prefix: keys.taskPrefix,
      dueOf: (t) => (t.enabled ? t.nextRunAt : null),
      onDue: (due): Promise<void> => this.fireAll(index, due, fence),
      logger: this.logger,
    });
    this.index = index;
    await index.start();
    this.logger.info({ tasks: index.size }, 'scheduler started');
  }

  async stop(): Promise<void> {
    await this.index?.stop();
    this.index = undefined;
  }

  private async fireAll(
    index: DeadlineIndex<TaskRecord>,
    due: Versioned<TaskRecord>[],
    fence: Fence,
  ): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < due.length && this.index === index) {
        const task = due[next++]!;
        const dueAt = task.value.nextRunAt ?? Date.now();
        try {
          const fired = await this.engine.fireDue(task, fence);
          if (fired) {
            this.metrics?.firingLateness.observe((Date.now() - dueAt) / 1000);
            index.upsert(fired);
          } else {
            // Not due after all (changed meanwhile, or the clock stepped back): re-read it.
            await index.refresh(task.key);
          }
        } catch (err) {
          if (err instanceof NotLeaderError) return;
          if (err instanceof ConflictError) {
            await index.refresh(task.key);
            continue;
          }
          throw err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(FIRE_CONCURRENCY, due.length) }, worker));
  }
}
