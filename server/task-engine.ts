/**
 * Task and execution state changes: every operation reads what it needs, decides, and commits
 * one `Tx` through the store with compares on what it read (retrying a bounded number of times
 * when a concurrent change wins). The rules are in docs/architecture.md.
 */
import { createHash } from 'node:crypto';
import {
  AbortedError,
  AlreadyExistsError,
  ConflictError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from '../common/errors.js';
import { executionId, newTaskId, parseExecutionId } from '../common/ids.js';
import { retryDelayMs } from './backoff.js';
import type { Keyring } from './crypto/sealer.js';
import { nextFiring, planCronFirings } from './cron.js';
import { keys } from './keys.js';
import {
  isTerminal,
  openPayload,
  RETRYABLE_STATES,
  sealPayload,
  type ExecState,
  type ExecutionRecord,
  type ResultRecord,
  type TaskRecord,
  type Trigger,
} from './records.js';
import type { Actor, Fence, Store, Versioned } from './store.js';
import { Tx } from './store.js';
import type { TaskDefinition } from './task-validation.js';

export interface EngineOptions {
  /** Firings later than this are "missed" and follow the task's missed-run policy. @default 15000 */
  missedRunThresholdMs: number;
  /** Clock, replaceable in tests of pure timing. @default Date.now */
  now?: () => number;
}

/**
 * Most executions one transaction creates or cancels: each costs 3 etcd operations, and etcd
 * allows 128 in a transaction by default.
 */
const TXN_BATCH = 30;

/**
 * Most non-terminal executions a task may have. Firings past it are skipped (and audited);
 * RunTask fails. Keeps the task record, which lists them, small.
 */
export const MAX_ACTIVE_EXECUTIONS = 1000;

/** The leader's identity for audit records. */
export const SCHEDULER_ACTOR: Actor = { userId: 'system:scheduler' };

const MAX_CONFLICT_RETRIES = 8;

/** Runs `fn` again when a compare-and-swap lost to a concurrent change. */
async function retryOnConflict<T>(fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!(err instanceof ConflictError) || i >= MAX_CONFLICT_RETRIES) throw err;
    }
  }
}

export class TaskEngine {
  private readonly now: () => number;

  constructor(
    private readonly store: Store,
    private readonly keyring: Keyring,
    private readonly options: EngineOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  // --- reads ---------------------------------------------------------------------------------

  async getTask(taskId: string): Promise<Versioned<TaskRecord>> {
    const task = await this.store.getJson<TaskRecord>(keys.task(taskId));
    if (!task) throw new NotFoundError('task', taskId);
    return task;
  }

  async getExecution(id: string): Promise<Versioned<ExecutionRecord>> {
    if (!parseExecutionId(id)) {
      throw new InvalidArgumentError('id', 'is not an execution id (<task id>-<run>-<attempt>)');
    }
    const exec = await this.store.getJson<ExecutionRecord>(keys.execution(id));
    if (!exec) throw new NotFoundError('execution', id);
    return exec;
  }

  /** The definition part of a stored task (payload opened). */
  definitionOf(task: TaskRecord): TaskDefinition {
    return {
      type: task.type,
      payload: openPayload(this.keyring, task),
      schedule: task.schedule,
      priority: task.priority,
      timeoutMs: task.timeoutMs,
      retry: task.retry,
      labels: task.labels,
    };
  }

  // --- task operations -----------------------------------------------------------------------

  /**
   * Creates a task (and its first execution if it is a one-time task due now).
   * @throws AlreadyExistsError if the idempotency key was used for a different request.
   */
  async createTask(
    actor: Actor,
    def: TaskDefinition,
    idempotencyKey: string,
    requestHash: string,
  ): Promise<{ task: Versioned<TaskRecord>; created: boolean }> {
    const idemKey = idempotencyKey ? idempotencyKeyOf(actor.userId, idempotencyKey) : undefined;
    return retryOnConflict(async () => {
      if (idemKey) {
        const prior = await this.store.getJson<{ taskId: string; requestHash: string }>(idemKey);
        if (prior) {
          if (prior.value.requestHash !== requestHash) {
            throw new AlreadyExistsError(
              'idempotency_key was already used for a different request; use a new key',
            );
          }
          return { task: await this.getTask(prior.value.taskId), created: false };
        }
      }
      const now = this.now();
      const id = newTaskId();
      const task: TaskRecord = {
        id,
        type: def.type,
        payload: sealPayload(this.keyring, id, def.payload),
        schedule: def.schedule,
        priority: def.priority,
        timeoutMs: def.timeoutMs,
        retry: def.retry,
        idempotencyKey,
        labels: def.labels,
        owner: actor.userId,
        enabled: true,
        createdAt: now,
        updatedAt: now,
        nextRunAt: firstRunAt(def.schedule, now),
        lastRunAt: null,
        onceFired: false,
        runs: 0,
        active: [],
      };
      const tx = new Tx();
      tx.expect(keys.task(id), 0);
      if (idemKey) tx.expect(idemKey, 0).putJson(idemKey, { taskId: id, requestHash });
      if (task.schedule.kind === 'once' && task.nextRunAt !== null && task.nextRunAt <= now) {
        this.addRun(tx, task, task.nextRunAt, 'schedule', actor, now);
        task.nextRunAt = null;
        task.onceFired = true;
      }
      tx.putJson(keys.task(id), task);
      tx.record({
        eventType: 'task_created',
        action: 'create',
        result: 'success',
        userId: actor.userId,
        ipAddress: actor.ipAddress,
        taskId: id,
        details: { type: task.type, schedule: task.schedule.kind },
      });
      const revision = await this.store.commit(tx);
      return {
        task: { key: keys.task(id), value: task, modRevision: revision, createRevision: revision },
        created: true,
      };
    });
  }

  /** Applies a validated new definition. `etag` (a mod revision) guards against lost updates. */
  async updateTask(
    actor: Actor,
    taskId: string,
    etag: number | undefined,
    change: (current: TaskDefinition) => { definition: TaskDefinition; scheduleChanged: boolean },
  ): Promise<Versioned<TaskRecord>> {
    return retryOnConflict(async () => {
      const current = await this.getTask(taskId);
      if (etag !== undefined && etag !== current.modRevision) {
        throw new AbortedError('etag does not match: the task changed since it was read');
      }
      const { definition, scheduleChanged } = change(this.definitionOf(current.value));
      const now = this.now();
      const task: TaskRecord = {
        ...current.value,
        type: definition.type,
        payload: sealPayload(this.keyring, taskId, definition.payload),
        schedule: definition.schedule,
        priority: definition.priority,
        timeoutMs: definition.timeoutMs,
        retry: definition.retry,
        labels: definition.labels,
        updatedAt: now,
      };
      if (scheduleChanged) {
        // A new schedule starts afresh: a new one-time time fires even if the old one did.
        task.onceFired = false;
        task.nextRunAt = task.enabled ? firstRunAt(task.schedule, now) : null;
      }
      const tx = new Tx().expect(current.key, current.modRevision).putJson(current.key, task);
      tx.record({
        eventType: 'task_updated',
        action: 'update',
        result: 'success',
        userId: actor.userId,
        ipAddress: actor.ipAddress,
        taskId,
        details: { schedule_changed: scheduleChanged },
      });
      const revision = await this.store.commit(tx);
      return { ...current, value: task, modRevision: revision };
    });
  }

  /** Pauses (enabled=false) or resumes a task. Idempotent. */
  async setEnabled(actor: Actor, taskId: string, enabled: boolean): Promise<Versioned<TaskRecord>> {
    return retryOnConflict(async () => {
      const current = await this.getTask(taskId);
      if (current.value.enabled === enabled) return current;
      const now = this.now();
      const task: TaskRecord = { ...current.value, enabled, updatedAt: now };
      if (!enabled) {
        task.nextRunAt = null;
      } else if (task.schedule.kind === 'once') {
        // A one-time task that never fired runs at its time, or now if that has passed.
        task.nextRunAt = task.onceFired ? null : Math.max(task.schedule.runAtMs, now);
      } else {
        task.nextRunAt = firstRunAt(task.schedule, now);
      }
      const tx = new Tx().expect(current.key, current.modRevision).putJson(current.key, task);
      tx.record({
        eventType: enabled ? 'task_resumed' : 'task_paused',
        action: enabled ? 'resume' : 'pause',
        result: 'success',
        userId: actor.userId,
        ipAddress: actor.ipAddress,
        taskId,
      });
      const revision = await this.store.commit(tx);
      return { ...current, value: task, modRevision: revision };
    });
  }

  /**
   * Deletes a task and its idempotency key, cancelling its active executions. Many active
   * executions are cancelled in batches first (etcd bounds the operations in one transaction);
   * the task itself goes in the last one.
   */
  async deleteTask(actor: Actor, taskId: string): Promise<number> {
    let cancelled = 0;
    for (;;) {
      const batch = await retryOnConflict(async () => {
        const current = await this.getTask(taskId);
        const active = [...(await this.readActive(current.value)).values()];
        const now = this.now();
        const tx = new Tx().expect(current.key, current.modRevision);
        const last = active.length <= TXN_BATCH;
        const task = structuredClone(current.value);
        for (const exec of active.slice(0, TXN_BATCH)) {
          this.cancelInTx(tx, task, exec, 'task deleted', actor, now);
        }
        if (!last) {
          tx.putJson(current.key, task);
          await this.store.commit(tx);
          return { count: TXN_BATCH, last };
        }
        tx.delete(current.key);
        if (task.idempotencyKey) tx.delete(idempotencyKeyOf(task.owner, task.idempotencyKey));
        tx.record({
          eventType: 'task_deleted',
          action: 'delete',
          result: 'success',
          userId: actor.userId,
          ipAddress: actor.ipAddress,
          taskId,
          details: { cancelled_executions: cancelled + active.length },
        });
        await this.store.commit(tx);
        return { count: active.length, last };
      });
      cancelled += batch.count;
      if (batch.last) return cancelled;
    }
  }

  /**
   * Creates an execution now (RunTask), obeying the overlap policy of a cron task.
   * @throws FailedPreconditionError under FORBID while an execution is active.
   */
  async runNow(actor: Actor, taskId: string): Promise<Versioned<ExecutionRecord>> {
    return retryOnConflict(async () => {
      const current = await this.getTask(taskId);
      const task = structuredClone(current.value);
      const s = task.schedule;
      if (s.kind === 'cron' && s.overlap === 'forbid' && task.active.length > 0) {
        throw new FailedPreconditionError(
          `task has an active execution (${task.active[0]}) and its overlap policy is FORBID`,
        );
      }
      if (task.active.length >= MAX_ACTIVE_EXECUTIONS) {
        throw new FailedPreconditionError(
          `task has ${task.active.length} active executions, the most allowed; cancel some first`,
        );
      }
      const active =
        s.kind === 'cron' && s.overlap === 'replace'
          ? await this.readActive(task)
          : new Map<string, Versioned<ExecutionRecord>>();
      const now = this.now();
      const tx = new Tx().expect(current.key, current.modRevision);
      for (const exec of active.values())
        this.cancelInTx(tx, task, exec, 'replaced by a newer run', actor, now);
      const exec = this.addRun(tx, task, now, 'manual', actor, now);
      task.updatedAt = now;
      tx.putJson(current.key, task);
      const revision = await this.store.commit(tx);
      return {
        key: keys.execution(exec.id),
        value: exec,
        modRevision: revision,
        createRevision: revision,
      };
    });
  }

  /**
   * The leader's firing of a due task: creates the executions its schedule calls for and
   * advances `nextRunAt`, fenced. Returns the task as committed, or undefined if nothing was due.
   * @throws NotLeaderError if the fence is broken; ConflictError if the task changed meanwhile.
   */
  async fireDue(
    current: Versioned<TaskRecord>,
    fence: Fence,
  ): Promise<Versioned<TaskRecord> | undefined> {
    const now = this.now();
    const task = structuredClone(current.value);
    if (!task.enabled || task.nextRunAt === null || task.nextRunAt > now) return undefined;
    const s = task.schedule;
    let fire: number[];
    let skipped = 0;
    if (s.kind === 'once') {
      fire = [task.nextRunAt];
      task.nextRunAt = null;
      task.onceFired = true;
    } else {
      const plan = planCronFirings({
        expression: s.expression,
        timeZone: s.timeZone,
        nextRunAt: task.nextRunAt,
        now,
        thresholdMs: this.options.missedRunThresholdMs,
        missed: s.missed,
        catchUpWindowMs: s.catchUpWindowMs,
      });
      fire = plan.fire;
      skipped = plan.skipped;
      task.nextRunAt = plan.nextRunAt;
    }
    const tx = new Tx().expect(current.key, current.modRevision);
    const active =
      s.kind === 'cron' && s.overlap === 'replace' && task.active.length > 0
        ? await this.readActive(task)
        : new Map<string, Versioned<ExecutionRecord>>();
    let forbidden = 0;
    let limited = 0;
    if (s.kind === 'cron' && s.overlap === 'replace' && fire.length > 1) {
      // Each firing would cancel the one before it: only the latest of a batch is created.
      skipped += fire.length - 1;
      fire = fire.slice(-1);
    }
    for (const at of fire) {
      if (s.kind === 'cron' && s.overlap === 'forbid' && task.active.length > 0) {
        forbidden++;
        continue;
      }
      // Bounded per transaction; any left over are replaced by the next firing.
      for (const exec of [...active.values()].slice(0, TXN_BATCH)) {
        this.cancelInTx(tx, task, exec, 'replaced by a newer run', SCHEDULER_ACTOR, now);
      }
      active.clear();
      if (task.active.length >= MAX_ACTIVE_EXECUTIONS) {
        limited++;
        continue;
      }
      this.addRun(tx, task, at, 'schedule', SCHEDULER_ACTOR, now);
    }
    if (skipped > 0 || forbidden > 0 || limited > 0) {
      tx.record({
        eventType: 'execution_skipped',
        action: 'schedule',
        result: 'success',
        userId: SCHEDULER_ACTOR.userId,
        taskId: task.id,
        details: { missed: skipped, overlap_forbidden: forbidden, active_limit: limited },
      });
    }
    tx.putJson(current.key, task);
    const revision = await this.store.commit(tx, fence);
    return { ...current, value: task, modRevision: revision };
  }

  // --- execution operations ------------------------------------------------------------------

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
      const cancelled = this.cancelInTx(tx, taskValue, exec, 'cancelled by user', actor, now);
      if (task && taskValue) tx.putJson(task.key, taskValue);
      const revision = await this.store.commit(tx);
      return { ...exec, value: cancelled, modRevision: revision };
    });
  }

  /**
   * Moves a pending execution to assigned on `workerId` with a fencing token. Used by dispatch.
   * @throws FailedPreconditionError unless it is pending.
   */
  async assignExecution(
    id: string,
    workerId: string,
    fencingToken: number,
    fence?: Fence,
  ): Promise<Versioned<ExecutionRecord>> {
    return retryOnConflict(async () => {
      const exec = await this.getExecution(id);
      if (exec.value.state !== 'pending') {
        throw new FailedPreconditionError(`execution is ${exec.value.state}, not pending`);
      }
      const now = this.now();
      const next: ExecutionRecord = {
        ...exec.value,
        state: 'assigned',
        workerId,
        fencingToken,
        assignedAt: now,
      };
      const tx = new Tx()
        .expect(exec.key, exec.modRevision)
        .putJson(exec.key, next)
        .delete(keys.queue(exec.value.priority, exec.value.scheduledAt, id))
        .putJson(keys.inflight(id), { deadlineMs: now + next.timeoutMs });
      tx.record({
        eventType: 'execution_assigned',
        action: 'assign',
        result: 'success',
        userId: SCHEDULER_ACTOR.userId,
        taskId: exec.value.taskId,
        executionId: id,
        workerId,
      });
      const revision = await this.store.commit(tx, fence);
      return { ...exec, value: next, modRevision: revision };
    });
  }

  /**
   * Moves an assigned execution to running (the worker's acknowledgement).
   * @throws FailedPreconditionError on a stale fencing token or a wrong state.
   */
  async startExecution(id: string, fencingToken: number): Promise<Versioned<ExecutionRecord>> {
    return retryOnConflict(async () => {
      const exec = await this.getExecution(id);
      checkToken(exec.value, fencingToken);
      if (exec.value.state !== 'assigned') {
        throw new FailedPreconditionError(`execution is ${exec.value.state}, not assigned`);
      }
      const now = this.now();
      const next: ExecutionRecord = { ...exec.value, state: 'running', startedAt: now };
      const tx = new Tx()
        .expect(exec.key, exec.modRevision)
        .putJson(exec.key, next)
        .putJson(keys.inflight(id), { deadlineMs: now + next.timeoutMs });
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
      let retry: ExecutionRecord | undefined;
      if (task) {
        const t = structuredClone(task.value);
        t.active = t.active.filter((a) => a !== id);
        if (RETRYABLE_STATES.has(state) && exec.value.attempt < exec.value.retry.maxAttempts) {
          const due = now + retryDelayMs(exec.value.retry, exec.value.attempt);
          retry = newExecution(t, exec.value.run, exec.value.attempt + 1, due, 'retry', now);
          retry.retry = exec.value.retry;
          retry.timeoutMs = exec.value.timeoutMs;
          tx.putJson(keys.execution(retry.id), retry).put(
            keys.queue(retry.priority, due, retry.id),
            '',
          );
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

  // --- helpers -------------------------------------------------------------------------------

  /** Adds a new run (attempt 1) of `task` due at `at` to `tx`, mutating `task`. */
  private addRun(
    tx: Tx,
    task: TaskRecord,
    at: number,
    trigger: Trigger,
    actor: Actor,
    now: number,
  ): ExecutionRecord {
    task.runs += 1;
    task.lastRunAt = Math.max(task.lastRunAt ?? 0, at);
    const exec = newExecution(task, task.runs, 1, at, trigger, now);
    tx.putJson(keys.execution(exec.id), exec).put(keys.queue(exec.priority, at, exec.id), '');
    task.active.push(exec.id);
    tx.record({
      eventType: 'execution_created',
      action: trigger,
      result: 'success',
      userId: actor.userId,
      ipAddress: actor.ipAddress,
      taskId: task.id,
      executionId: exec.id,
    });
    return exec;
  }

  /** Adds the cancellation of `exec` to `tx`, removing it from `task.active` if given. */
  private cancelInTx(
    tx: Tx,
    task: TaskRecord | undefined,
    exec: Versioned<ExecutionRecord>,
    reason: string,
    actor: Actor,
    now: number,
  ): ExecutionRecord {
    const e = exec.value;
    const cancelled: ExecutionRecord = {
      ...e,
      state: 'cancelled',
      endedAt: now,
      result: {
        output: null,
        stdoutTruncated: false,
        stderrTruncated: false,
        oomKilled: false,
        timedOut: false,
        message: reason,
        durationMs: e.startedAt === null ? 0 : now - e.startedAt,
      },
    };
    if (exec.modRevision >= 0) tx.expect(exec.key, exec.modRevision);
    tx.putJson(exec.key, cancelled);
    if (e.state === 'pending') tx.delete(keys.queue(e.priority, e.scheduledAt, e.id));
    else tx.delete(keys.inflight(e.id));
    if (task) task.active = task.active.filter((id) => id !== e.id);
    tx.record({
      eventType: 'task_cancellation',
      action: 'cancel',
      result: 'success',
      userId: actor.userId,
      ipAddress: actor.ipAddress,
      taskId: e.taskId,
      executionId: e.id,
      workerId: e.workerId || undefined,
      details: { reason, previous_state: e.state },
    });
    return cancelled;
  }

  /** Reads the task's active executions (those still non-terminal). */
  private async readActive(task: TaskRecord): Promise<Map<string, Versioned<ExecutionRecord>>> {
    const found = await this.store.getManyJson<ExecutionRecord>(
      task.active.map((id) => keys.execution(id)),
    );
    for (const [k, v] of found) if (isTerminal(v.value.state)) found.delete(k);
    return found;
  }
}

function checkToken(exec: ExecutionRecord, token: number): void {
  if (exec.fencingToken !== token) {
    throw new FailedPreconditionError(
      `stale fencing token ${token} for execution ${exec.id}; the current assignment has another`,
    );
  }
}

/** The key that maps an owner's idempotency key to its task. */
function idempotencyKeyOf(owner: string, key: string): string {
  return keys.idempotency(createHash('sha256').update(`${owner}\0${key}`).digest('hex'));
}

/** When a schedule first fires, from `now`. */
function firstRunAt(schedule: TaskDefinition['schedule'], now: number): number | null {
  if (schedule.kind === 'once') return Math.max(schedule.runAtMs, 0);
  return nextFiring(schedule.expression, schedule.timeZone, now);
}

function newExecution(
  task: TaskRecord,
  run: number,
  attempt: number,
  due: number,
  trigger: Trigger,
  now: number,
): ExecutionRecord {
  return {
    id: executionId(task.id, run, attempt),
    taskId: task.id,
    run,
    attempt,
    state: 'pending',
    fencingToken: 0,
    workerId: '',
    trigger,
    priority: task.priority,
    scheduledAt: due,
    createdAt: now,
    assignedAt: null,
    startedAt: null,
    endedAt: null,
    timeoutMs: task.timeoutMs,
    retry: task.retry,
    result: null,
  };
}
