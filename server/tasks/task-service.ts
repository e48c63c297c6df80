/**
 * TaskService handlers: validate the request, call the task and execution engines, shape the
 * response. The task RPCs are here; the execution RPCs are in execution-rpcs.ts.
 */
import { InvalidArgumentError, NotFoundError, PermissionDeniedError } from '../../common/errors.js';
import type { TaskServiceServer } from '../../gen/citadel/v1/task_service.js';
import { decodePageToken, pageSize } from '../api/page-token.js';
import { unary, type Principal } from '../auth/admission.js';
import { canSeeTask } from '../auth/authorization.js';
import type { UserRecord } from '../auth/users.js';
import { keys } from '../store/keys.js';
import { executionRpcs, type ExecutionRpcDeps } from './execution-rpcs.js';
import { filteredPage } from './filtered-page.js';
import { executionToProto, taskToProto, type ExecutionRecord, type TaskRecord } from './records.js';
import type { TaskEngine } from './task-engine.js';
import {
  applyUpdate,
  canonicalCreateRequest,
  validateIdempotencyKey,
  validateNewTask,
  validateTaskId,
  type TaskDefinition,
} from './task-validation.js';

/** What TaskService uses: the execution RPCs' needs and the task engine. */
export interface TaskServiceDeps extends ExecutionRpcDeps {
  engine: TaskEngine;
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

/** Every RPC of TaskService: the task RPCs here and the execution RPCs of execution-rpcs.ts. */
export function taskService(deps: TaskServiceDeps): TaskServiceServer {
  const { engine, keyring, store } = deps;
  const toTask = (t: { value: TaskRecord; modRevision: number }) =>
    taskToProto(keyring, t.value, t.modRevision);
  const toExec = (e: { value: ExecutionRecord }) => executionToProto(keyring, e.value);
  /** The task if the caller's scope includes it; NOT_FOUND otherwise (no existence leak). */
  const visibleTask = async (principal: Principal, id: string) => {
    const task = await engine.getTask(validateTaskId(id));
    if (!canSeeTask(principal.user, task.value.owner)) throw new NotFoundError('task', id);
    return task;
  };

  return {
    createTask: unary(deps, 'TaskService/CreateTask', async (req, { principal }) => {
      const def = validateNewTask(req.task, Date.now());
      checkTaskLimits(principal.user, def);
      const idempotencyKey = validateIdempotencyKey(req.task!.idempotencyKey);
      const { task, created } = await engine.createTask(
        principal,
        def,
        idempotencyKey,
        idempotencyKey ? canonicalCreateRequest(req.task!) : '',
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
      const id = validateTaskId(req.task.id, 'task.id');
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

    ...executionRpcs(deps),
  };
}
