/**
 * The leader's timeout watcher: an assigned or running execution with no report by its
 * deadline (start + timeout) plus the grace period ends `timed_out`, and is retried per its
 * policy. Driven by a DeadlineIndex over `inflight/`.
 */
import type { Logger } from 'pino';
import {
  ConflictError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  NotLeaderError,
} from '../../common/errors.js';
import { DeadlineIndex } from '../store/deadline-index.js';
import { keys } from '../store/keys.js';
import type { LeaderComponent } from '../store/leader-election.js';
import type { Fence, Store, Versioned } from '../store/store.js';
import type { ExecutionEngine } from './execution-engine.js';
import { SCHEDULER_ACTOR } from './execution-ops.js';

interface Inflight {
  deadlineMs: number;
}

export class TimeoutWatcher implements LeaderComponent {
  readonly name = 'timeout-watcher';
  private index: DeadlineIndex<Inflight> | undefined;

  constructor(
    private readonly store: Store,
    private readonly executions: ExecutionEngine,
    private readonly graceMs: number,
    private readonly logger: Logger,
  ) {}

  async start(fence: Fence): Promise<void> {
    const index = new DeadlineIndex<Inflight>({
      store: this.store,
      prefix: keys.inflightPrefix,
      dueOf: (v) => v.deadlineMs + this.graceMs,
      onDue: (due): Promise<void> => this.expire(index, due, fence),
      logger: this.logger,
    });
    this.index = index;
    await index.start();
  }

  async stop(): Promise<void> {
    await this.index?.stop();
    this.index = undefined;
  }

  private async expire(
    index: DeadlineIndex<Inflight>,
    due: Versioned<Inflight>[],
    fence: Fence,
  ): Promise<void> {
    for (const item of due) {
      if (this.index !== index) return;
      const id = item.key.slice(keys.inflightPrefix.length);
      try {
        await this.executions.finishExecution(
          id,
          'timed_out',
          {
            output: null,
            stdoutTruncated: false,
            stderrTruncated: false,
            oomKilled: false,
            timedOut: true,
            message: 'no report from the worker within the timeout plus grace',
          },
          { fence, actor: SCHEDULER_ACTOR, overdueAfterGraceMs: this.graceMs },
        );
        index.remove(item.key);
      } catch (err) {
        if (err instanceof NotLeaderError) return;
        if (err instanceof ConflictError || err instanceof FailedPreconditionError) {
          // Changed meanwhile (reported, restarted with a new deadline, or ended): re-read.
          await index.refresh(item.key);
        } else if (err instanceof NotFoundError || err instanceof InvalidArgumentError) {
          this.logger.error(
            { err, key: item.key },
            'dropping an in-flight entry without a valid execution',
          );
          index.remove(item.key);
        } else {
          throw err;
        }
      }
    }
  }
}
