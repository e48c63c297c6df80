/**
 * Execution state changes after creation: cancel, assign, start and finish (with retries),
 * each one etcd transaction with compares on what it read; reports are checked against the
 * attempt's fencing token. The state machine is in docs/architecture.md.
 */
import {
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from '../../common/errors.js';
import { parseExecutionId } from '../../common/ids.js';
import { retryDelayMs } from './backoff.js';
import { cancelInTx, newExecution, putQueueEntry, SCHEDULER_ACTOR } from './execution-ops.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { keys } from '../store/keys.js';
import {
  isTerminal,
  RETRYABLE_STATES,
  type AssignmentKey,
  type ExecState,
  type ExecutionRecord,
  type ResultRecord,
  type TaskRecord,
} from './records.js';
import { Tx, type Actor, type Fence, type Store, type Versioned } from '../store/store.js';

export class ExecutionEngine {
  private readonly now: () => number;

  constructor(
    private readonly store: Store,
    options: { now?: () => number } = {},
  ) {
    this.now = options.now ?? Date.now;
  }

  async getExecution(id: string): Promise<Versioned<ExecutionRecord>> {
    if (!parseExecutionId(id)) {
      throw new InvalidArgumentError('id', 'is not an execution id (<task id>-<run>-<attempt>)');
    }
    const exec = await this.store.getJson<ExecutionRecord>(keys.execution(id));
    if (!exec) throw new NotFoundError('execution', id);
    return exec;
  }

  /**
   * Cancels a non-terminal execution.
   * @throws FailedPreconditionError if it is already terminal.
   */
  async cancelExecution(actor: Actor, id: string): Promise<Versioned<ExecutionRecord>> {
    return retryOnConflict(async () => {
      const exec = await this.getExecution(id);
      if (isTerminal(exec.value.state)) {
        throw new FailedPreconditionError(`execution is already ${exec.value.state}`);
      }
      const task = await this.store.getJson<TaskRecord>(keys.task(exec.value.taskId));
      const now = this.now();
      const tx = new Tx();
      const taskValue = task ? structuredClone(task.value) : undefined;
      if (task && taskValue) tx.expect(task.key, task.modRevision);
      const cancelled = cancelInTx(tx, taskValue, exec, 'cancelled by user', actor, now);
      if (task && taskValue) tx.putJson(task.key, taskValue);
      const revision = await this.store.commit(tx);
      return { ...exec, value: cancelled, modRevision: revision };
    });
  }

  /**
   * Moves a pending execution to assigned on `workerId` (one-element `assignBatch`).
   * @throws FailedPreconditionError unless it is pending.
   */
  async assignExecution(id: string, workerId: string, fence?: Fence): Promise<ExecutionRecord> {
    const [assigned] = await this.assignBatch([{ id, workerId }], fence);
    if (!assigned) {
      const exec = await this.getExecution(id);
      throw new FailedPreconditionError(`execution is ${exec.value.state}, not pending`);
    }
    return assigned;
  }

  /**
   * Assigns pending executions to workers in one transaction (docs/dispatch.md): the fencing
   * counter advances by one per execution (compared on its revision), and per execution the
   * record becomes assigned with its token, its queue key goes, its `inflight/` and
   * `assignments/` keys are written and the assignment is audited. Executions no longer pending
   * are left out; a conflict re-reads and retries.
   * @param known the fencing counter and these executions as the caller already read them (a
   *   key it read but found missing is absent), to spare the first attempt a read: the
   *   compares guard them like a fresh read. Kept current with what the batch writes, so the
   *   caller can pass it again for its next batch.
   * @returns the executions assigned.
   * @throws NotLeaderError when `fence` is broken.
   */
  async assignBatch(
    wanted: readonly { id: string; workerId: string }[],
    fence?: Fence,
    known?: Map<string, Versioned<unknown>>,
  ): Promise<ExecutionRecord[]> {
    let attempt = 0;
    return retryOnConflict(async () => {
      const read = (
        attempt++ === 0 && known
          ? known
          : await this.store.getManyJson<ExecutionRecord>([
              keys.fencingCounter,
              ...wanted.map((w) => keys.execution(w.id)),
            ])
      ) as Map<string, Versioned<ExecutionRecord>>;
      const counter = read.get(keys.fencingCounter) as Versioned<unknown> | undefined;
      let token = typeof counter?.value === 'number' ? counter.value : 0;
      const now = this.now();
      const tx = new Tx().expect(keys.fencingCounter, counter?.modRevision ?? 0);
      const assigned: ExecutionRecord[] = [];
      for (const { id, workerId } of wanted) {
        const exec = read.get(keys.execution(id));
        if (exec?.value.state !== 'pending') continue;
        token += 1;
        const next: ExecutionRecord = {
          ...exec.value,
          state: 'assigned',
          workerId,
          fencingToken: token,
          assignedAt: now,
        };
        tx.expect(exec.key, exec.modRevision)
          .putJson(exec.key, next)
          .delete(keys.queue(exec.value.priority, exec.value.scheduledAt, id))
          .putJson(keys.inflight(id), {
            deadlineMs: now + next.timeoutMs,
            workerId,
            owner: next.owner,
          })
          .putJson(keys.assignment(workerId, id), {
            taskId: exec.value.taskId,
            fencingToken: token,
            assignedAt: now,
          } satisfies AssignmentKey)
          .record({
            eventType: 'execution_assigned',
            action: 'assign',
            result: 'success',
            userId: SCHEDULER_ACTOR.userId,
            taskId: exec.value.taskId,
            executionId: id,
            workerId,
            details: { fencing_token: token },
          });
        assigned.push(next);
      }
      if (assigned.length === 0) return [];
      tx.putJson(keys.fencingCounter, token);
      const revision = await this.store.commit(tx, fence);
      if (known) {
        const counterKey = keys.fencingCounter;
        const created = counter?.createRevision ?? revision;
        known.set(counterKey, {
          key: counterKey,
          value: token,
          modRevision: revision,
          createRevision: created,
        });
        for (const a of assigned) {
          const key = keys.execution(a.id);
          known.set(key, { ...known.get(key)!, value: a, modRevision: revision });
        }
      }
      return assigned;
    });
  }

  /**
   * Moves an assigned execution to running (the worker's acknowledgement). Idempotent for the
   * worker: one already running on `workerId` with this token is returned unchanged, so an
   * agent whose answer was lost with a replica can repeat the call on another.
   * @throws FailedPreconditionError on a stale fencing token or a wrong state.
   */
  async startExecution(
    id: string,
    fencingToken: number,
    workerId?: string,
  ): Promise<Versioned<ExecutionRecord>> {
    return retryOnConflict(async () => {
      const exec = await this.getExecution(id);
      checkToken(exec.value, fencingToken);
      if (workerId !== undefined) checkWorker(exec.value, workerId);
      if (exec.value.state === 'running' && workerId !== undefined) return exec;
      if (exec.value.state !== 'assigned') {
        throw new FailedPreconditionError(`execution is ${exec.value.state}, not assigned`);
      }
      const now = this.now();
      const next: ExecutionRecord = { ...exec.value, state: 'running', startedAt: now };
      const tx = new Tx()
        .expect(exec.key, exec.modRevision)
        .putJson(exec.key, next)
        .putJson(keys.inflight(id), {
          deadlineMs: now + next.timeoutMs,
          workerId: exec.value.workerId,
          owner: exec.value.owner,
        });
      tx.record({
        eventType: 'task_execution',
        action: 'start',
        result: 'success',
        taskId: exec.value.taskId,
        executionId: id,
        workerId: exec.value.workerId,
      });
      const revision = await this.store.commit(tx);
      return { ...exec, value: next, modRevision: revision };
    });
  }

  /**
   * Ends an assigned or running execution in a terminal state and, for failed, timed_out and
   * lost attempts with attempts left, creates the next attempt in the same transaction.
   * `fencingToken` is checked when given (worker reports); the leader passes its `fence`.
   * @throws FailedPreconditionError if the execution is already terminal or the token is stale.
   */
  async finishExecution(
    id: string,
    state: Exclude<ExecState, 'pending' | 'assigned' | 'running' | 'cancelled'>,
    result: Omit<ResultRecord, 'durationMs'>,
    options: {
      fencingToken?: number;
      /** The reporting worker: it must be the one the execution is assigned to. */
      workerId?: string;
      fence?: Fence;
      actor?: Actor;
      /**
       * Leader timeouts: apply only if the execution, as read now, is past its start plus
       * timeout plus this grace (a report may have restarted the clock since it was judged).
       */
      overdueAfterGraceMs?: number;
    } = {},
  ): Promise<{ execution: Versioned<ExecutionRecord>; retry?: ExecutionRecord }> {
    return retryOnConflict(async () => {
      const exec = await this.getExecution(id);
      if (options.fencingToken !== undefined) checkToken(exec.value, options.fencingToken);
      if (options.workerId !== undefined) checkWorker(exec.value, options.workerId);
      if (isTerminal(exec.value.state) || exec.value.state === 'pending') {
        throw new FailedPreconditionError(
          `execution is ${exec.value.state}; it cannot become ${state}`,
        );
      }
      const now = this.now();
      const started = exec.value.startedAt ?? exec.value.assignedAt ?? now;
      if (
        options.overdueAfterGraceMs !== undefined &&
        started + exec.value.timeoutMs + options.overdueAfterGraceMs > now
      ) {
        throw new FailedPreconditionError(`execution ${id} is not overdue`);
      }
      const task = await this.store.getJson<TaskRecord>(keys.task(exec.value.taskId));
      const next: ExecutionRecord = {
        ...exec.value,
        state,
        endedAt: now,
        result: { ...result, durationMs: Math.max(0, now - started) },
      };
      const tx = new Tx()
        .expect(exec.key, exec.modRevision)
        .putJson(exec.key, next)
        .delete(keys.inflight(id));
      if (exec.value.workerId) tx.delete(keys.assignment(exec.value.workerId, id));
      let retry: ExecutionRecord | undefined;
      if (task) {
        const t = structuredClone(task.value);
        t.active = t.active.filter((a) => a !== id);
        if (RETRYABLE_STATES.has(state) && exec.value.attempt < exec.value.retry.maxAttempts) {
          const due = now + retryDelayMs(exec.value.retry, exec.value.attempt);
          retry = newExecution(t, exec.value.run, exec.value.attempt + 1, due, 'retry', now);
          retry.retry = exec.value.retry;
          retry.timeoutMs = exec.value.timeoutMs;
          putQueueEntry(tx.putJson(keys.execution(retry.id), retry), retry);
          t.active.push(retry.id);
        }
        tx.expect(task.key, task.modRevision).putJson(task.key, t);
      }
      tx.record({
        eventType: 'task_execution',
        action: 'end',
        result: state === 'succeeded' ? 'success' : 'failure',
        userId: options.actor?.userId,
        taskId: exec.value.taskId,
        executionId: id,
        workerId: exec.value.workerId || undefined,
        durationMs: next.result!.durationMs,
        details: { state, ...(retry ? { retry_execution_id: retry.id } : {}) },
      });
      const revision = await this.store.commit(tx, options.fence);
      return { execution: { ...exec, value: next, modRevision: revision }, retry };
    });
  }
}

function checkWorker(exec: ExecutionRecord, workerId: string): void {
  if (exec.workerId !== workerId) {
    throw new FailedPreconditionError(`execution ${exec.id} is not assigned to this worker`);
  }
}

function checkToken(exec: ExecutionRecord, token: number): void {
  if (exec.fencingToken !== token) {
    throw new FailedPreconditionError(
      `stale fencing token ${token} for execution ${exec.id}; the current assignment has another`,
    );
  }
}
