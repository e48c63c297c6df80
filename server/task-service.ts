/**
 * TaskService handlers: validate the request, call the task and execution engines, shape the response.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import { GRPCOutOfRangeError, type IWatchResponse } from 'etcd3';
import { InvalidArgumentError, OutOfRangeError, QuotaExceededError } from '../common/errors.js';
import { TASK_ID_PATTERN } from '../common/ids.js';
import { Task } from '../gen/citadel/v1/task.js';
import type {
  TaskServiceServer,
  WatchExecutionsRequest,
  WatchExecutionsResponse,
} from '../gen/citadel/v1/task_service.js';
import type { Keyring } from './crypto/sealer.js';
import { keys } from './keys.js';
import {
  executionToProto,
  stateFromProto,
  taskToProto,
  type ExecState,
  type ExecutionRecord,
  type TaskRecord,
} from './records.js';
import { serverStream, unary, type RpcDeps } from './rpc.js';
import type { Store, Versioned } from './store.js';
import type { ExecutionEngine } from './execution-engine.js';
import type { TaskEngine } from './task-engine.js';
import {
  applyUpdate,
  requestHash,
  validateIdempotencyKey,
  validateNewTask,
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

function pageSize(n: number): number {
  if (n > 1000) throw new InvalidArgumentError('page_size', 'must be at most 1000');
  return n === 0 ? 100 : n;
}

const encodeToken = (key: string) => Buffer.from(key).toString('base64url');

function decodeToken(token: string, prefix: string): string | undefined {
  if (token === '') return undefined;
  const key = Buffer.from(token, 'base64url').toString();
  if (!key.startsWith(prefix) || encodeToken(key) !== token) {
    throw new InvalidArgumentError(
      'page_token',
      'is not a token from a previous response of this call',
    );
  }
  return key;
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
  let cursor = startAfter;
  for (;;) {
    const page = await store.range<T>(prefix, {
      startAfter: cursor,
      limit: Math.max(size * 2, 50),
    });
    for (const item of page.items) {
      cursor = item.key;
      if (!matches(item.value)) continue;
      items.push(item);
      if (items.length === size) {
        return {
          items,
          next:
            page.more || item !== page.items[page.items.length - 1] ? encodeToken(item.key) : '',
        };
      }
    }
    if (!page.more) return { items, next: '' };
  }
}

export function taskService(deps: TaskServiceDeps): TaskServiceServer {
  const { engine, executions, keyring, store } = deps;
  const toTask = (t: { value: TaskRecord; modRevision: number }) =>
    taskToProto(keyring, t.value, t.modRevision);
  const toExec = (e: { value: ExecutionRecord }) => executionToProto(keyring, e.value);

  return {
    createTask: unary(deps, 'CreateTask', async (req, { principal }) => {
      const def = validateNewTask(req.task, Date.now());
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
      const { task, created } = await engine.createTask(principal, def, idempotencyKey, hash);
      return { task: toTask(task), created };
    }),

    getTask: unary(deps, 'GetTask', async (req) => ({
      task: toTask(await engine.getTask(taskId(req.id))),
    })),

    listTasks: unary(deps, 'ListTasks', async (req) => {
      const size = pageSize(req.pageSize);
      const start = decodeToken(req.pageToken, keys.taskPrefix);
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
          labels.every(([k, v]) => t.labels[k] === v),
      );
      return { tasks: items.map(toTask), nextPageToken: next };
    }),

    updateTask: unary(deps, 'UpdateTask', async (req, { principal }) => {
      if (!req.task) throw new InvalidArgumentError('task', 'is required');
      const id = taskId(req.task.id, 'task.id');
      let etag: number | undefined;
      if (req.etag !== '') {
        etag = Number(req.etag);
        if (!Number.isSafeInteger(etag) || etag <= 0)
          throw new InvalidArgumentError('etag', 'is not an etag from this server');
      }
      const paths = req.updateMask ?? [];
      const updated = await engine.updateTask(principal, id, etag, (current) =>
        applyUpdate(current, req.task!, paths, Date.now()),
      );
      return { task: toTask(updated) };
    }),

    deleteTask: unary(deps, 'DeleteTask', async (req, { principal }) => ({
      cancelledExecutions: await engine.deleteTask(principal, taskId(req.id)),
    })),

    pauseTask: unary(deps, 'PauseTask', async (req, { principal }) => ({
      task: toTask(await engine.setEnabled(principal, taskId(req.id), false)),
    })),

    resumeTask: unary(deps, 'ResumeTask', async (req, { principal }) => ({
      task: toTask(await engine.setEnabled(principal, taskId(req.id), true)),
    })),

    runTask: unary(deps, 'RunTask', async (req, { principal }) => ({
      execution: toExec(await engine.runNow(principal, taskId(req.id))),
    })),

    listExecutions: unary(deps, 'ListExecutions', async (req) => {
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
        decodeToken(req.pageToken, prefix),
        size,
        (e) => states.size === 0 || states.has(e.state),
      );
      return { executions: items.map(toExec), nextPageToken: next };
    }),

    getExecution: unary(deps, 'GetExecution', async (req) => ({
      execution: toExec(await executions.getExecution(req.id)),
    })),

    cancelExecution: unary(deps, 'CancelExecution', async (req, { principal }) => ({
      execution: toExec(await executions.cancelExecution(principal, req.id)),
    })),

    watchExecutions: serverStream(deps, 'WatchExecutions', (req, _ctx, call) =>
      watchExecutions(deps, req, call),
    ),
  };
}

/** Streams execution changes until the client goes away or the watch fails. */
async function watchExecutions(
  deps: TaskServiceDeps,
  req: WatchExecutionsRequest,
  call: ServerWritableStream<WatchExecutionsRequest, WatchExecutionsResponse>,
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
      watcher.removeAllListeners();
      void watcher.cancel().catch(() => undefined);
      if (err) reject(err);
      else resolve();
    };
    const close = () => finish();
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
      const puts = res.events.filter((e) => e.type === 'Put' && e.kv);
      puts.forEach((e, i) => {
        const revision = Number(e.kv.mod_revision);
        const record = JSON.parse(e.kv.value.toString()) as ExecutionRecord;
        const next = puts[i + 1];
        const flushed = call.write({
          execution: executionToProto(deps.keyring, record),
          revision,
          revisionComplete: next === undefined || Number(next.kv.mod_revision) !== revision,
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
