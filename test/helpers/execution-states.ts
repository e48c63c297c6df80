/** Execution states for tests and the bench: which ones are final. */
import { ExecutionState } from '../../gen/citadel/v1/execution.js';

/** The terminal states: an execution in one never changes again. */
export const TERMINAL: ReadonlySet<ExecutionState> = new Set([
  ExecutionState.EXECUTION_STATE_SUCCEEDED,
  ExecutionState.EXECUTION_STATE_FAILED,
  ExecutionState.EXECUTION_STATE_TIMED_OUT,
  ExecutionState.EXECUTION_STATE_CANCELLED,
  ExecutionState.EXECUTION_STATE_LOST,
]);
