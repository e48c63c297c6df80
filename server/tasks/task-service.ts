/**
 * TaskService handlers: validate the request, call the task and execution engines, shape the response.
 */
import { decodePageToken, encodePageToken, pageSize } from '../api/page-token.js';
import type { ServerWritableStream } from '@grpc/grpc-js';
import { GRPCOutOfRangeError, type IWatchResponse } from 'etcd3';
import {
  InvalidArgumentError,
  NotFoundError,
  OutOfRangeError,
  PermissionDeniedError,
  QuotaExceededError,
  UnauthenticatedError,
} from '../../common/errors.js';
import { TASK_ID_PATTERN } from '../../common/ids.js';
import { Task } from '../../gen/citadel/v1/task.js';
import type {
  TaskServiceServer,
  WatchExecutionsRequest,
  WatchExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import type { Keyring } from '../crypto/sealer.js';
import { keys } from '../store/keys.js';
import {
  executionToProto,
  stateFromProto,
  taskToProto,
  type ExecState,
  type ExecutionRecord,
  type TaskRecord,
} from './records.js';
import { canSeeTask } from '../auth/authorization.js';
import { serverStream, unary, type Principal, type RpcDeps } from '../auth/admission.js';
import type { Store, Versioned } from '../store/store.js';
import type { ExecutionEngine } from './execution-engine.js';
import type { TaskEngine } from './task-engine.js';
import type { UserRecord } from '../auth/users.js';
import {
  applyUpdate,
  requestHash,
  validateIdempotencyKey,
  validateNewTask,
  type TaskDefinition,
} from './task-validation.js';

/** Changes a watch stream may buffer for a slow client before it is ended. */
const MAX_BUFFERED_EVENTS = 10_000;

export interface TaskServiceDeps extends RpcDeps {
  store: Store;
  engine: TaskEngine;
  executions: ExecutionEngine;
  keyring: Keyring;
  /** Aborted when the replica shuts down: open watch streams then end cleanly. */
  shutdown: AbortSignal;
}

function taskId(id: string, field = 'id'): string {
  if (!TASK_ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(
      field,
      id === '' ? 'is required' : 'is not a task id (t_ + 16 characters)',
    );
  }
  return id;
}

/**
 * Reads matching records page by page from `prefix` until `size` matched or the range ends.
 */
async function filteredPage<T>(
  store: Store,
  prefix: string,
  startAfter: string | undefined,
  size: number,
  matches: (value: T) => boolean,
): Promise<{ items: Versioned<T>[]; next: string }> {
  const items: Versioned<T>[] = [];
  // Bounded work per call: a selective filter returns a shorter page and a token to go on.
  const maxScanned = Math.max(10 * size, 1000);
  let scanned = 0;
  let cursor = startAfter;
  for (;;) {
    const page = await store.range<T>(prefix, {
      startAfter: cursor,
      limit: Math.max(size * 2, 50),
    });
    for (const item of page.items) {
      cursor = item.key;
      scanned++;
      if (matches(item.value)) items.push(item);
      const last = !page.more && item === page.items[page.items.length - 1];
      if (items.length === size || scanned >= maxScanned) {
        return { items, next: last ? '' : encodePageToken(item.key) };
      }
    }
    if (!page.more) return { items, next: '' };
  }
}

/**
 * The caller's own limits on what tasks may look like (admins have none).
 * @throws PermissionDeniedError naming the field outside the limits.
 */
export function checkTaskLimits(user: UserRecord, def: TaskDefinition): void {
  if (user.role === 'admin') return;
  const kinds = user.allowedTaskTypes.filter((t) => t === 'one_time' || t === 'cron');
  const types = user.allowedTaskTypes.filter((t) => t !== 'one_time' && t !== 'cron');
  const kind = def.schedule.kind === 'once' ? 'one_time' : 'cron';
  if (kinds.length > 0 && !kinds.includes(kind)) {
    throw new PermissionDeniedError(
      `task.${kind}: ${user.id} may create only ${kinds.join(' or ')} tasks`,
    );
  }
  if (types.length > 0 && !types.includes(def.type)) {
    throw new PermissionDeniedError(
      `task.type: ${JSON.stringify(def.type)} is not among ${user.id}'s allowed task types (${types.join(', ')})`,
    );
  }
  if (user.allowedPriorities.length > 0 && !user.allowedPriorities.includes(def.priority)) {
    const name = (p: number) => (p === 1 ? 'high' : p === 3 ? 'low' : 'medium');
    throw new PermissionDeniedError(
      `task.priority: ${name(def.priority)} is not among ${user.id}'s allowed priorities (${user.allowedPriorities.map(name).join(', ')})`,
    );
  }
}

export function taskService(deps: TaskServiceDeps): TaskServiceServer {
  const { engine, executions, keyring, store } = deps;
  const toTask = (t: { value: TaskRecord; modRevision: number }) =>
    taskToProto(keyring, t.value, t.modRevision);
  const toExec = (e: { value: ExecutionRecord }) => executionToProto(keyring, e.value);
  /** The task if the caller's scope includes it; NOT_FOUND otherwise (no existence leak). */
  const visibleTask = async (principal: Principal, id: string) => {
    const task = await engine.getTask(taskId(id));
    if (!canSeeTask(principal.user, task.value.owner)) throw new NotFoundError('task', id);
    return task;
  };
  const visibleExecution = async (principal: Principal, id: string) => {
    const exec = await executions.getExecution(id);
    if (!canSeeTask(principal.user, exec.value.owner)) throw new NotFoundError('execution', id);
    return exec;
  };

  return {
    createTask: unary(deps, 'TaskService/CreateTask', async (req, { principal }) => {
      const def = validateNewTask(req.task, Date.now());
      checkTaskLimits(principal.user, def);
      const idempotencyKey = validateIdempotencyKey(req.task!.idempotencyKey);
      // Output-only fields do not make two requests different.
      const hash = requestHash(
        Task.toJSON({
          ...req.task!,
          id: '',
          owner: '',
          enabled: false,
          createTime: undefined,
          updateTime: undefined,
          nextRunTime: undefined,
          lastRunTime: undefined,
          etag: '',
        }),
      );
      const { task, created } = await engine.createTask(
        principal,
        def,
        idempotencyKey,
        hash,
        principal.user.role === 'admin' ? 0 : principal.user.maxTasks,
      );
      return { task: toTask(task), created };
    }),

    getTask: unary(deps, 'TaskService/GetTask', async (req, { principal }) => ({
      task: toTask(await visibleTask(principal, req.id)),
    })),

    listTasks: unary(deps, 'TaskService/ListTasks', async (req, { principal }) => {
      const size = pageSize(req.pageSize);
      const start = decodePageToken(req.pageToken, keys.taskPrefix);
      const labels = Object.entries(req.labels);
      const { items, next } = await filteredPage<TaskRecord>(
        store,
        keys.taskPrefix,
        start,
        size,
        (t) =>
          (req.type === '' || t.type === req.type) &&
          (req.enabled === undefined || t.enabled === req.enabled) &&
          (req.owner === '' || t.owner === req.owner) &&
          canSeeTask(principal.user, t.owner) &&
          labels.every(([k, v]) => t.labels[k] === v),
      );
      return { tasks: items.map(toTask), nextPageToken: next };
    }),

    updateTask: unary(deps, 'TaskService/UpdateTask', async (req, { principal }) => {
      if (!req.task) throw new InvalidArgumentError('task', 'is required');
      const id = taskId(req.task.id, 'task.id');
      let etag: number | undefined;
      if (req.etag !== '') {
        etag = Number(req.etag);
        if (!Number.isSafeInteger(etag) || etag <= 0)
          throw new InvalidArgumentError('etag', 'is not an etag from this server');
      }
      const paths = req.updateMask ?? [];
      await visibleTask(principal, id);
      const updated = await engine.updateTask(principal, id, etag, (current) => {
        const result = applyUpdate(current, req.task!, paths, Date.now());
        checkTaskLimits(principal.user, result.definition);
        return result;
      });
      return { task: toTask(updated) };
    }),

    deleteTask: unary(deps, 'TaskService/DeleteTask', async (req, { principal }) => {
      await visibleTask(principal, req.id);
      return { cancelledExecutions: await engine.deleteTask(principal, req.id) };
    }),

    pauseTask: unary(deps, 'TaskService/PauseTask', async (req, { principal }) => {
      await visibleTask(principal, req.id);
      return { task: toTask(await engine.setEnabled(principal, req.id, false)) };
    }),

    resumeTask: unary(deps, 'TaskService/ResumeTask', async (req, { principal }) => {
      await visibleTask(principal, req.id);
      return { task: toTask(await engine.setEnabled(principal, req.id, true)) };
    }),

    runTask: unary(deps, 'TaskService/RunTask', async (req, { principal }) => {
      await visibleTask(principal, req.id);
      return { execution: toExec(await engine.runNow(principal, req.id)) };
    }),

    listExecutions: unary(deps, 'TaskService/ListExecutions', async (req, { principal }) => {
      const size = pageSize(req.pageSize);
      const prefix =
        req.taskId === ''
          ? keys.executionPrefix
          : keys.taskExecutionPrefix(taskId(req.taskId, 'task_id'));
      const states = new Set<ExecState>(
        req.states.map((s, i) => {
          const state = stateFromProto(s);
          if (!state)
            throw new InvalidArgumentError(
              `states[${i}]`,
              `${String(s)} is not an execution state`,
            );
          return state;
        }),
      );
      const { items, next } = await filteredPage<ExecutionRecord>(
        store,
        prefix,
        decodePageToken(req.pageToken, prefix),
        size,
        (e) => (states.size === 0 || states.has(e.state)) && canSeeTask(principal.user, e.owner),
      );
      return { executions: items.map(toExec), nextPageToken: next };
    }),

    getExecution: unary(deps, 'TaskService/GetExecution', async (req, { principal }) => ({
      execution: toExec(await visibleExecution(principal, req.id)),
    })),

    cancelExecution: unary(deps, 'TaskService/CancelExecution', async (req, { principal }) => {
      await visibleExecution(principal, req.id);
      return { execution: toExec(await executions.cancelExecution(principal, req.id)) };
    }),

    watchExecutions: serverStream(deps, 'TaskService/WatchExecutions', (req, { principal }, call) =>
      watchExecutions(deps, req, call, principal),
    ),
  };
}

/** Streams execution changes until the client goes away or the watch fails. */
async function watchExecutions(
  deps: TaskServiceDeps,
  req: WatchExecutionsRequest,
  call: ServerWritableStream<WatchExecutionsRequest, WatchExecutionsResponse>,
  principal: Principal,
): Promise<void> {
  const prefix =
    req.taskId === ''
      ? keys.executionPrefix
      : keys.taskExecutionPrefix(taskId(req.taskId, 'task_id'));
  if (req.afterRevision < 0)
    throw new InvalidArgumentError('after_revision', 'must not be negative');
  if (req.afterRevision > 0) {
    // Fail early, by etcd's error code, when the revision is compacted or in the future.
    try {
      await deps.store.client.kv.range({
        key: deps.store.full(prefix),
        revision: req.afterRevision,
        count_only: true,
      });
    } catch (err) {
      if (err instanceof GRPCOutOfRangeError) {
        throw new OutOfRangeError(
          'after_revision is compacted or in the future; list executions, then watch from now',
        );
      }
      throw err;
    }
  }
  const watcher = await deps.store.watch(
    prefix,
    req.afterRevision > 0 ? req.afterRevision + 1 : undefined,
  );
  await new Promise<void>((resolve, reject) => {
    const finish = (err?: Error) => {
      deps.shutdown.removeEventListener('abort', close);
      deps.users.off('change', recheck);
      deps.apiKeys.off('change', recheck);
      clearTimeout(expiry);
      watcher.removeAllListeners();
      void watcher.cancel().catch(() => undefined);
      if (err) reject(err);
      else resolve();
    };
    const close = () => finish();
    // A revoked key or a disabled user ends the stream at once, not at its next call.
    const recheck = () => {
      if (!deps.authenticator.stillAuthenticated(principal)) {
        finish(
          new UnauthenticatedError(
            'the credential expired or was revoked, or the user was disabled or changed; reconnect',
          ),
        );
      }
    };
    deps.users.on('change', recheck);
    deps.apiKeys.on('change', recheck);
    // An expiring key or token ends the stream when it expires.
    const expiry =
      principal.expiresAt === undefined
        ? undefined
        : setTimeout(recheck, Math.min(Math.max(0, principal.expiresAt - Date.now()), 2 ** 31 - 1));
    recheck(); // a change between authentication and here is not missed
    call.on('cancelled', close);
    call.on('close', close);
    if (deps.shutdown.aborted) close();
    deps.shutdown.addEventListener('abort', close, { once: true });
    // A watch response holds every change of the revisions it covers (etcd never splits a
    // revision across responses), so the last change of each revision can be marked.
    watcher.on('data', (res: IWatchResponse) => {
      // etcd3 rethrows a handler's exception outside any promise, which would end the process:
      // a record that cannot be read ends this stream instead.
      try {
        send(res);
      } catch (err) {
        finish(err instanceof Error ? err : new Error(String(err)));
      }
    });
    const send = (res: IWatchResponse) => {
      // Only changes inside the caller's task scope are sent; the last one sent of each
      // revision carries revision_complete.
      const puts = res.events
        .filter((e) => e.type === 'Put' && e.kv)
        .map((e) => ({
          record: JSON.parse(e.kv.value.toString()) as ExecutionRecord,
          revision: Number(e.kv.mod_revision),
        }))
        .filter(({ record }) => canSeeTask(principal.user, record.owner));
      puts.forEach(({ record, revision }, i) => {
        const next = puts[i + 1];
        const flushed = call.write({
          execution: executionToProto(deps.keyring, record),
          revision,
          revisionComplete: next === undefined || next.revision !== revision,
        });
        if (!flushed && call.writableLength > MAX_BUFFERED_EVENTS) {
          finish(
            new QuotaExceededError(
              'the client reads too slowly; watch again with after_revision to resume',
            ),
          );
        }
      });
    };
    watcher.on('error', (err: Error) => finish(err));
  });
}
