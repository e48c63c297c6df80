/** The lowercase names of execution states (as stored and printed), mapped to the proto enum. */
import { ExecutionState } from '../gen/citadel/v1/execution.js';

export const EXECUTION_STATE_BY_NAME = {
  pending: ExecutionState.EXECUTION_STATE_PENDING,
  assigned: ExecutionState.EXECUTION_STATE_ASSIGNED,
  running: ExecutionState.EXECUTION_STATE_RUNNING,
  succeeded: ExecutionState.EXECUTION_STATE_SUCCEEDED,
  failed: ExecutionState.EXECUTION_STATE_FAILED,
  timed_out: ExecutionState.EXECUTION_STATE_TIMED_OUT,
  cancelled: ExecutionState.EXECUTION_STATE_CANCELLED,
  lost: ExecutionState.EXECUTION_STATE_LOST,
} as const satisfies Record<string, ExecutionState>;

export type ExecutionStateName = keyof typeof EXECUTION_STATE_BY_NAME;
