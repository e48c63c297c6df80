/**
 * Building blocks shared by the task and execution engines: adding a run or a cancellation to
 * a transaction, reading a task's active executions.
 */
import { executionId } from '../../common/ids.js';
import { keys } from '../store/keys.js';
import {
  isTerminal,
  type ExecutionRecord,
  type QueueEntryRecord,
  type TaskRecord,
  type Trigger,
} from './records.js';
import type { Actor, Store, Tx, Versioned } from '../store/store.js';

/**
 * Most executions one transaction creates or cancels: each costs 3 etcd operations, and etcd
 * allows 128 in a transaction by default.
 */
export const TXN_BATCH = 30;

/**
 * Most non-terminal executions a task may have. Firings past it are skipped (and audited);
 * RunTask fails. Keeps the task record, which lists them, small.
 */
export const MAX_ACTIVE_EXECUTIONS = 1000;

/** The leader's identity for audit records. */
export const SCHEDULER_ACTOR: Actor = { userId: 'system:scheduler' };

/** Adds a new run (attempt 1) of `task` due at `at` to `tx`, mutating `task`. */
export function addRun(
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
  putQueueEntry(tx.putJson(keys.execution(exec.id), exec), exec);
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

/**
 * Adds the queue entry of the pending execution `exec` to `tx`: keyed by priority and due time,
 * its value names the owner (docs/dispatch.md). Every queue entry is written here.
 */
export function putQueueEntry(tx: Tx, exec: ExecutionRecord): Tx {
  const entry: QueueEntryRecord = { owner: exec.owner };
  return tx.putJson(keys.queue(exec.priority, exec.scheduledAt, exec.id), entry);
}

/** Adds the cancellation of `exec` to `tx`, removing it from `task.active` if given. */
export function cancelInTx(
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
  if (e.workerId) tx.delete(keys.assignment(e.workerId, e.id));
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
export async function readActive(
  store: Store,
  task: TaskRecord,
): Promise<Map<string, Versioned<ExecutionRecord>>> {
  const found = await store.getManyJson<ExecutionRecord>(
    task.active.map((id) => keys.execution(id)),
  );
  for (const [k, v] of found) if (isTerminal(v.value.state)) found.delete(k);
  return found;
}

/** A pending execution record (not yet stored). */
export function newExecution(
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
    owner: task.owner,
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
