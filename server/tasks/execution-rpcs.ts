/**
 * The execution half of TaskService: ListExecutions, GetExecution, CancelExecution and
 * WatchExecutions (its stream is execution-watch.ts). A caller sees only the executions of the
 * tasks in its scope; any other is NOT_FOUND.
 */
import { InvalidArgumentError, NotFoundError } from '../../common/errors.js';
import type { TaskServiceServer } from '../../gen/citadel/v1/task_service.js';
import { decodePageToken, pageSize } from '../api/page-token.js';
import { serverStream, unary, type Principal } from '../auth/admission.js';
import { canSeeTask } from '../auth/authorization.js';
import { keys } from '../store/keys.js';
import type { ExecutionEngine } from './execution-engine.js';
import { watchExecutions, type ExecutionWatchDeps } from './execution-watch.js';
import { filteredPage } from './filtered-page.js';
import {
  executionToProto,
  stateFromProto,
  type ExecState,
  type ExecutionRecord,
} from './records.js';
import { validateTaskId } from './task-validation.js';

/** What the execution RPCs use: the watch's needs and the execution engine. */
export interface ExecutionRpcDeps extends ExecutionWatchDeps {
  executions: ExecutionEngine;
}

type ExecutionRpcs = Pick<
  TaskServiceServer,
  'listExecutions' | 'getExecution' | 'cancelExecution' | 'watchExecutions'
>;

/** ListExecutions, GetExecution, CancelExecution and WatchExecutions of TaskService. */
export function executionRpcs(deps: ExecutionRpcDeps): ExecutionRpcs {
  const { executions, keyring, store } = deps;
  const toExec = (e: { value: ExecutionRecord }) => executionToProto(keyring, e.value);
  /** The execution if the caller's scope includes its task; NOT_FOUND otherwise. */
  const visibleExecution = async (principal: Principal, id: string) => {
    const exec = await executions.getExecution(id);
    if (!canSeeTask(principal.user, exec.value.owner)) throw new NotFoundError('execution', id);
    return exec;
  };

  return {
    listExecutions: unary(deps, 'TaskService/ListExecutions', async (req, { principal }) => {
      const size = pageSize(req.pageSize);
      const prefix =
        req.taskId === ''
          ? keys.executionPrefix
          : keys.taskExecutionPrefix(validateTaskId(req.taskId, 'task_id'));
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
