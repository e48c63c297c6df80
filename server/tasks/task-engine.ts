/**
 * Task state changes (create, update, pause / resume, delete, run now) and the leader's
 * firing of due tasks: every operation reads what it needs, decides, and commits one `Tx`
 * through the store with compares on what it read (retrying a bounded number of times when a
 * concurrent change wins). The rules are in docs/architecture.md.
 */
import {
  AbortedError,
  AlreadyExistsError,
  FailedPreconditionError,
  NotFoundError,
  QuotaExceededError,
} from '../../common/errors.js';
import { newTaskId } from '../../common/ids.js';
import type { Keyring } from '../crypto/sealer.js';
import {
  addRun,
  cancelInTx,
  MAX_ACTIVE_EXECUTIONS,
  readActive,
  SCHEDULER_ACTOR,
  TXN_BATCH,
} from './execution-ops.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { keys } from '../store/keys.js';
import { openPayload, sealPayload, type ExecutionRecord, type TaskRecord } from './records.js';
import { Tx, type Actor, type Fence, type Store, type Versioned } from '../store/store.js';
import { firstRunAt, planDueFirings } from './schedule-firing.js';
import type { TaskDefinition } from './task-validation.js';
import {
  requestFingerprint,
  sameRequest,
  idempotencyKeyOf,
  type IdempotencyRecord,
} from './idempotency.js';

export interface EngineOptions {
  /** Firings later than this are "missed" and follow the task's missed-run policy. @default 15000 */
  missedRunThresholdMs: number;
  /** Clock, replaceable in tests of pure timing. @default Date.now */
  now?: () => number;
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

  /**
   * Adds to `tx` what keeps `owner` within `maxTasks`: the count of owned tasks is read after
   * the owner's quota guard, and the guard is bumped in the same transaction, so two creates
   * racing for the last slot cannot both commit (the loser re-reads and is refused).
   * @throws QuotaExceededError if the owner already has `maxTasks` tasks.
   */
  private async reserveTaskSlot(tx: Tx, owner: string, maxTasks: number): Promise<void> {
    const guard = await this.store.get(keys.quota(owner));
    const owned = await this.store.count(keys.ownedPrefix(owner));
    if (owned >= maxTasks) {
      throw new QuotaExceededError(
        `max_tasks: ${owner} owns ${owned} tasks, the most allowed; delete some or ask an admin to raise the limit`,
      );
    }
    tx.expect(keys.quota(owner), guard?.modRevision ?? 0).put(keys.quota(owner), '');
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
   * @param request the canonical request (task-validation `canonicalCreateRequest`), to tell a
   *   retry from another request under the same idempotency key; only its fingerprint is kept.
   * @throws AlreadyExistsError if the idempotency key was used for a different request.
   */
  async createTask(
    actor: Actor,
    def: TaskDefinition,
    idempotencyKey: string,
    request: string,
    /** The owner's max_tasks; 0 means no limit. */
    maxTasks = 0,
  ): Promise<{ task: Versioned<TaskRecord>; created: boolean }> {
    const idemKey = idempotencyKey ? idempotencyKeyOf(actor.userId, idempotencyKey) : undefined;
    return retryOnConflict(async () => {
      if (idemKey) {
        const prior = await this.store.getJson<IdempotencyRecord>(idemKey);
        if (prior) {
          if (!sameRequest(this.keyring, prior.value, actor.userId, request)) {
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
      tx.expect(keys.task(id), 0).put(keys.owned(actor.userId, id), '');
      if (maxTasks > 0) await this.reserveTaskSlot(tx, actor.userId, maxTasks);
      if (idemKey) {
        const kid = this.keyring.activeKid;
        tx.expect(idemKey, 0).putJson(idemKey, {
          taskId: id,
          kid,
          requestHmac: requestFingerprint(this.keyring, actor.userId, request, kid),
        } satisfies IdempotencyRecord);
      }
      if (task.schedule.kind === 'once' && task.nextRunAt !== null && task.nextRunAt <= now) {
        addRun(tx, task, task.nextRunAt, 'schedule', actor, now);
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
        const active = [...(await readActive(this.store, current.value)).values()];
        const now = this.now();
        const tx = new Tx().expect(current.key, current.modRevision);
        const last = active.length <= TXN_BATCH;
        const task = structuredClone(current.value);
        for (const exec of active.slice(0, TXN_BATCH)) {
          cancelInTx(tx, task, exec, 'task deleted', actor, now);
        }
        if (!last) {
          tx.putJson(current.key, task);
          await this.store.commit(tx);
          return { count: TXN_BATCH, last };
        }
        tx.delete(current.key).delete(keys.owned(task.owner, taskId));
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
          ? await readActive(this.store, task)
          : new Map<string, Versioned<ExecutionRecord>>();
      const now = this.now();
      const tx = new Tx().expect(current.key, current.modRevision);
      // Bounded per transaction; any left over are replaced by the next run.
      for (const exec of [...active.values()].slice(0, TXN_BATCH)) {
        cancelInTx(tx, task, exec, 'replaced by a newer run', actor, now);
      }
      const exec = addRun(tx, task, now, 'manual', actor, now);
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
    const { fire, skipped, nextRunAt } = planDueFirings(
      s,
      task.nextRunAt,
      now,
      this.options.missedRunThresholdMs,
    );
    task.nextRunAt = nextRunAt;
    if (s.kind === 'once') task.onceFired = true;
    const tx = new Tx().expect(current.key, current.modRevision);
    const active =
      s.kind === 'cron' && s.overlap === 'replace' && task.active.length > 0
        ? await readActive(this.store, task)
        : new Map<string, Versioned<ExecutionRecord>>();
    let forbidden = 0;
    let limited = 0;
    for (const at of fire) {
      if (s.kind === 'cron' && s.overlap === 'forbid' && task.active.length > 0) {
        forbidden++;
        continue;
      }
      // Bounded per transaction; any left over are replaced by the next firing.
      for (const exec of [...active.values()].slice(0, TXN_BATCH)) {
        cancelInTx(tx, task, exec, 'replaced by a newer run', SCHEDULER_ACTOR, now);
      }
      active.clear();
      if (task.active.length >= MAX_ACTIVE_EXECUTIONS) {
        limited++;
        continue;
      }
      addRun(tx, task, at, 'schedule', SCHEDULER_ACTOR, now);
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
}
