/**
 * Assignment delivery (docs/dispatch.md, "Delivery"): what a worker's stream sends for each
 * key under `assignments/<workerId>/`, and the worker's result turned into the store's result
 * record (output, message and detail sealed).
 */
import { InvalidArgumentError } from '../../common/errors.js';
import {
  AssignmentState,
  Outcome,
  type Assignment,
  type ContainerSpec,
  type ReportResultRequest,
} from '../../gen/citadel/v1/worker_service.js';
import { CONTAINER_TASK_TYPE, containerSpec } from './container-task.js';
import type { Keyring } from '../crypto/sealer.js';
import { keys } from '../store/keys.js';
import {
  isTerminal,
  openPayload,
  outputAad,
  reasonToRecord,
  sealText,
  type ExecState,
  type ExecutionRecord,
  type ResultRecord,
  type TaskRecord,
} from './records.js';
import type { Store, Versioned } from '../store/store.js';

/** Most bytes of each output stream a report may carry. */
export const MAX_OUTPUT_BYTES = 64 * 1024;
/** Most characters of a report's message, and of its detail. */
export const MAX_TEXT_CHARS = 1024;

/**
 * The assignment event for `executionId`, or undefined if it is no longer assigned or
 * running. The task's payload is unsealed here, only for the worker that holds the execution.
 * With the assignment key's `taskId` both records are read in one round trip.
 */
export async function buildAssignment(
  store: Store,
  keyring: Keyring,
  executionId: string,
  taskId?: string,
): Promise<Assignment | undefined> {
  const read = await store.getManyJson<ExecutionRecord | TaskRecord>([
    keys.execution(executionId),
    ...(taskId ? [keys.task(taskId)] : []),
  ]);
  const exec = read.get(keys.execution(executionId)) as Versioned<ExecutionRecord> | undefined;
  if (!exec || isTerminal(exec.value.state) || exec.value.state === 'pending') return undefined;
  const e = exec.value;
  const task =
    e.taskId === taskId
      ? (read.get(keys.task(e.taskId)) as Versioned<TaskRecord> | undefined)
      : await store.getJson<TaskRecord>(keys.task(e.taskId));
  let container: ContainerSpec | undefined;
  if (task?.value.type === CONTAINER_TASK_TYPE) {
    try {
      container = containerSpec(openPayload(keyring, task.value));
    } catch {
      container = undefined; // the worker reports it cannot run it
    }
  }
  return {
    executionId: e.id,
    taskId: e.taskId,
    attempt: e.attempt,
    fencingToken: e.fencingToken,
    state:
      e.state === 'running'
        ? AssignmentState.ASSIGNMENT_STATE_RUNNING
        : AssignmentState.ASSIGNMENT_STATE_ASSIGNED,
    taskType: task?.value.type ?? '',
    container,
    timeout: { seconds: Math.floor(e.timeoutMs / 1000), nanos: (e.timeoutMs % 1000) * 1e6 },
  };
}

const OUTCOME_STATE = new Map<
  Outcome,
  Exclude<ExecState, 'pending' | 'assigned' | 'running' | 'cancelled'>
>([
  [Outcome.OUTCOME_SUCCEEDED, 'succeeded'],
  [Outcome.OUTCOME_FAILED, 'failed'],
  [Outcome.OUTCOME_TIMED_OUT, 'timed_out'],
  [Outcome.OUTCOME_LOST, 'lost'],
]);

/**
 * The terminal state and result record of a worker's report. The output is sealed, and so are
 * the message and detail: a worker's words can echo the payload (an engine's error names the
 * image or argv[0]), and an agent's message may not be trusted to be free of it, so none of
 * them reaches etcd in plaintext. Only the reason, from a fixed vocabulary, stays readable.
 * @throws InvalidArgumentError naming the field.
 */
export function reportToResult(
  keyring: Keyring,
  req: ReportResultRequest,
): {
  state: Exclude<ExecState, 'pending' | 'assigned' | 'running' | 'cancelled'>;
  result: Omit<ResultRecord, 'durationMs'>;
} {
  const state = OUTCOME_STATE.get(req.outcome);
  if (!state)
    throw new InvalidArgumentError('outcome', 'is required: SUCCEEDED, FAILED, TIMED_OUT or LOST');
  for (const [field, value] of [
    ['stdout', req.stdout],
    ['stderr', req.stderr],
  ] as const) {
    if (value.length > MAX_OUTPUT_BYTES) {
      throw new InvalidArgumentError(
        field,
        `is over ${MAX_OUTPUT_BYTES} bytes; cap it on the worker`,
      );
    }
  }
  for (const [field, value] of [
    ['message', req.message],
    ['detail', req.detail],
  ] as const) {
    if (value.length > MAX_TEXT_CHARS) {
      throw new InvalidArgumentError(field, `is over ${MAX_TEXT_CHARS} characters`);
    }
  }
  const reason = reasonToRecord(req.reason);
  const captured = req.stdout.length > 0 || req.stderr.length > 0;
  return {
    state,
    result: {
      exitCode: req.exitCode,
      output: captured
        ? keyring
            .sealJson(
              {
                stdout: Buffer.from(req.stdout).toString('base64'),
                stderr: Buffer.from(req.stderr).toString('base64'),
              },
              outputAad(req.executionId),
            )
            .toString('base64')
        : null,
      stdoutTruncated: req.stdoutTruncated,
      stderrTruncated: req.stderrTruncated,
      oomKilled: req.oomKilled,
      timedOut: state === 'timed_out',
      message: '',
      text:
        req.message !== '' || req.detail !== ''
          ? sealText(keyring, req.executionId, { message: req.message, detail: req.detail })
          : null,
      ...(reason === undefined ? {} : { reason }),
    },
  };
}
