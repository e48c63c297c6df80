/**
 * The records stored in etcd (JSON), and their conversion to the public proto messages.
 * Sensitive fields are sealed (server/crypto/sealer.ts): a task's payload, and of a result the
 * captured output and everything the worker said in words (its message and detail, which can
 * echo the payload); a result's plaintext holds only flags, numbers, a reason from a fixed
 * vocabulary and the server's own fixed messages.
 */
import {
  ExecutionState,
  ExecutionTrigger,
  FailureReason,
  type Execution,
  type ExecutionResult,
} from '../../gen/citadel/v1/execution.js';
import {
  MissedRunPolicy,
  OverlapPolicy,
  Priority,
  type RetryPolicy,
  type Task,
} from '../../gen/citadel/v1/task.js';
import { durationToProto } from '../../common/duration.js';
import { EXECUTION_STATE_BY_NAME, type ExecutionStateName } from '../../common/execution-states.js';
import type { Keyring } from '../crypto/sealer.js';
import type { PriorityRank } from '../store/keys.js';

export type { PriorityRank };

export type OverlapMode = 'allow' | 'forbid' | 'replace';
export type MissedMode = 'skip' | 'catch_up_once';

export type Schedule =
  | { kind: 'once'; runAtMs: number }
  | {
      kind: 'cron';
      expression: string;
      timeZone: string;
      overlap: OverlapMode;
      missed: MissedMode;
      catchUpWindowMs: number;
    };

export interface RetrySpec {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
  jitter: number;
}

export interface TaskRecord {
  id: string;
  type: string;
  /** Sealed JSON of the payload object (base64), or null when the payload is empty. */
  payload: string | null;
  schedule: Schedule;
  priority: PriorityRank;
  timeoutMs: number;
  retry: RetrySpec;
  idempotencyKey: string;
  labels: Record<string, string>;
  owner: string;
  enabled: boolean;
  createdAt: number;
  updatedAt: number;
  nextRunAt: number | null;
  lastRunAt: number | null;
  /** Whether a one-time schedule has fired (RunTask runs do not count). */
  onceFired: boolean;
  /** Runs created so far; the next run is `runs + 1`. */
  runs: number;
  /** Ids of this task's executions that are not terminal. */
  active: string[];
}

export type ExecState = ExecutionStateName;

export type Trigger = 'schedule' | 'manual' | 'retry';

/** A FailureReason by its name without the prefix, lower case: `image_missing`, ... */
export type FailureReasonName = string;

export interface ResultRecord {
  exitCode?: number;
  /** Sealed JSON `{stdout, stderr}` (base64 strings), or null when nothing was captured. */
  output: string | null;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  oomKilled: boolean;
  timedOut: boolean;
  /**
   * In plaintext, only a message the server wrote itself (fixed words and ids); '' when the
   * message is the worker's, which is in `text`.
   */
  message: string;
  /**
   * Sealed JSON `{message, detail}` (base64) of what the worker reported in words; absent or
   * null for results the server wrote. Records written before it was sealed have none and keep
   * the worker's message in `message`.
   */
  text?: string | null;
  /** The reported FailureReason (see {@link reasonToRecord}); absent when unspecified. */
  reason?: FailureReasonName;
  durationMs: number;
}

export interface ExecutionRecord {
  id: string;
  taskId: string;
  /** The task's owner when the execution was created (for task scopes). */
  owner: string;
  run: number;
  attempt: number;
  state: ExecState;
  fencingToken: number;
  workerId: string;
  trigger: Trigger;
  priority: PriorityRank;
  scheduledAt: number;
  createdAt: number;
  assignedAt: number | null;
  startedAt: number | null;
  endedAt: number | null;
  timeoutMs: number;
  retry: RetrySpec;
  result: ResultRecord | null;
}

/** `assignments/<workerId>/<executionId>`: present while the execution is on that worker. */
export interface AssignmentKey {
  /** Lets delivery read the execution and its task at once. */
  taskId: string;
  fencingToken: number;
  assignedAt: number;
}

/**
 * `queue/<p>/<dueMs>/<executionId>`: present while the execution is pending. Names the owner so
 * the dispatcher can serve owners fairly without reading the execution (docs/dispatch.md);
 * versions before it wrote an empty value.
 */
export interface QueueEntryRecord {
  owner: string;
}

export const TERMINAL_STATES: ReadonlySet<ExecState> = new Set([
  'succeeded',
  'failed',
  'timed_out',
  'cancelled',
  'lost',
]);

/** States whose attempt is retried per the retry policy. */
export const RETRYABLE_STATES: ReadonlySet<ExecState> = new Set(['failed', 'timed_out', 'lost']);

export const isTerminal = (state: ExecState): boolean => TERMINAL_STATES.has(state);

// --- enum mappings -------------------------------------------------------------------------

export const priorityFromProto = (p: Priority): PriorityRank =>
  p === Priority.PRIORITY_HIGH ? 1 : p === Priority.PRIORITY_LOW ? 3 : 2;

export const priorityToProto = (p: PriorityRank): Priority =>
  p === 1 ? Priority.PRIORITY_HIGH : p === 3 ? Priority.PRIORITY_LOW : Priority.PRIORITY_MEDIUM;

export const overlapFromProto = (p: OverlapPolicy): OverlapMode =>
  p === OverlapPolicy.OVERLAP_POLICY_FORBID
    ? 'forbid'
    : p === OverlapPolicy.OVERLAP_POLICY_REPLACE
      ? 'replace'
      : 'allow';

const OVERLAP_TO_PROTO: Record<OverlapMode, OverlapPolicy> = {
  allow: OverlapPolicy.OVERLAP_POLICY_ALLOW,
  forbid: OverlapPolicy.OVERLAP_POLICY_FORBID,
  replace: OverlapPolicy.OVERLAP_POLICY_REPLACE,
};

export const missedFromProto = (p: MissedRunPolicy): MissedMode =>
  p === MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE ? 'catch_up_once' : 'skip';

const STATE_TO_PROTO: Record<ExecState, ExecutionState> = EXECUTION_STATE_BY_NAME;

export const stateToProto = (s: ExecState): ExecutionState => STATE_TO_PROTO[s];

/** Maps a proto state to ours; undefined for UNSPECIFIED or unknown values. */
export function stateFromProto(s: ExecutionState): ExecState | undefined {
  for (const [k, v] of Object.entries(STATE_TO_PROTO)) if (v === s) return k as ExecState;
  return undefined;
}

const TRIGGER_TO_PROTO: Record<Trigger, ExecutionTrigger> = {
  schedule: ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE,
  manual: ExecutionTrigger.EXECUTION_TRIGGER_MANUAL,
  retry: ExecutionTrigger.EXECUTION_TRIGGER_RETRY,
};

// --- sealing helpers -------------------------------------------------------------------------

export const payloadAad = (taskId: string) => `task/${taskId}/payload`;
export const outputAad = (executionId: string) => `execution/${executionId}/output`;
export const textAad = (executionId: string) => `execution/${executionId}/text`;

/** What a worker reported in words, as sealed in a result's `text`. */
export interface ReportedText {
  message: string;
  detail: string;
}

/** Seals a worker's message and detail for the result record of `executionId`. */
export function sealText(keyring: Keyring, executionId: string, text: ReportedText): string {
  return keyring.sealJson(text, textAad(executionId)).toString('base64');
}

const REASON_PREFIX = 'FAILURE_REASON_';

/** A reported FailureReason as stored: its short name, or undefined when unspecified or unknown. */
export function reasonToRecord(reason: FailureReason): FailureReasonName | undefined {
  const name = (FailureReason as Record<number, string | undefined>)[reason];
  if (reason === FailureReason.FAILURE_REASON_UNSPECIFIED || !name?.startsWith(REASON_PREFIX)) {
    return undefined;
  }
  return name.slice(REASON_PREFIX.length).toLowerCase();
}

/** A stored reason as the proto enum; UNSPECIFIED for none or a name this build does not know. */
export function reasonToProto(name: FailureReasonName | undefined): FailureReason {
  if (name === undefined) return FailureReason.FAILURE_REASON_UNSPECIFIED;
  const value = (FailureReason as unknown as Record<string, FailureReason | undefined>)[
    REASON_PREFIX + name.toUpperCase()
  ];
  return value ?? FailureReason.FAILURE_REASON_UNSPECIFIED;
}

export function sealPayload(
  keyring: Keyring,
  taskId: string,
  payload: Record<string, unknown> | undefined,
): string | null {
  if (!payload || Object.keys(payload).length === 0) return null;
  return keyring.sealJson(payload, payloadAad(taskId)).toString('base64');
}

export function openPayload(
  keyring: Keyring,
  record: TaskRecord,
): Record<string, unknown> | undefined {
  if (record.payload === null) return undefined;
  return keyring.openJson<Record<string, unknown>>(
    Buffer.from(record.payload, 'base64'),
    payloadAad(record.id),
  );
}

// --- to proto ------------------------------------------------------------------------------

const date = (ms: number | null): Date | undefined => (ms === null ? undefined : new Date(ms));

function retryToProto(r: RetrySpec): RetryPolicy {
  return {
    maxAttempts: r.maxAttempts,
    initialBackoff: durationToProto(r.initialBackoffMs),
    maxBackoff: durationToProto(r.maxBackoffMs),
    backoffMultiplier: r.multiplier,
    jitter: r.jitter,
  };
}

/** The public view of a task; `modRevision` becomes its etag. */
export function taskToProto(keyring: Keyring, record: TaskRecord, modRevision: number): Task {
  const s = record.schedule;
  return {
    id: record.id,
    type: record.type,
    payload: openPayload(keyring, record),
    schedule:
      s.kind === 'once'
        ? { $case: 'oneTime', value: { runAt: new Date(s.runAtMs) } }
        : {
            $case: 'cron',
            value: {
              expression: s.expression,
              timeZone: s.timeZone,
              overlapPolicy: OVERLAP_TO_PROTO[s.overlap],
              missedRunPolicy:
                s.missed === 'catch_up_once'
                  ? MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE
                  : MissedRunPolicy.MISSED_RUN_POLICY_SKIP,
              catchUpWindow: durationToProto(s.catchUpWindowMs),
            },
          },
    priority: priorityToProto(record.priority),
    timeout: durationToProto(record.timeoutMs),
    retryPolicy: retryToProto(record.retry),
    idempotencyKey: record.idempotencyKey,
    labels: { ...record.labels },
    owner: record.owner,
    enabled: record.enabled,
    createTime: new Date(record.createdAt),
    updateTime: new Date(record.updatedAt),
    nextRunTime: date(record.nextRunAt),
    lastRunTime: date(record.lastRunAt),
    etag: String(modRevision),
  };
}

function resultToProto(keyring: Keyring, id: string, r: ResultRecord): ExecutionResult {
  let text: ReportedText = { message: r.message, detail: '' };
  if (typeof r.text === 'string') {
    text = keyring.openJson<ReportedText>(Buffer.from(r.text, 'base64'), textAad(id));
  }
  let stdout = Buffer.alloc(0);
  let stderr = Buffer.alloc(0);
  if (r.output !== null) {
    const o = keyring.openJson<{ stdout: string; stderr: string }>(
      Buffer.from(r.output, 'base64'),
      outputAad(id),
    );
    stdout = Buffer.from(o.stdout, 'base64');
    stderr = Buffer.from(o.stderr, 'base64');
  }
  return {
    exitCode: r.exitCode,
    stdout,
    stdoutTruncated: r.stdoutTruncated,
    stderr,
    stderrTruncated: r.stderrTruncated,
    oomKilled: r.oomKilled,
    timedOut: r.timedOut,
    message: text.message,
    durationMs: r.durationMs,
    reason: reasonToProto(r.reason),
    detail: text.detail,
  };
}

export function executionToProto(keyring: Keyring, e: ExecutionRecord): Execution {
  return {
    id: e.id,
    taskId: e.taskId,
    run: e.run,
    attempt: e.attempt,
    state: stateToProto(e.state),
    fencingToken: e.fencingToken,
    workerId: e.workerId,
    trigger: TRIGGER_TO_PROTO[e.trigger],
    priority: priorityToProto(e.priority),
    scheduledTime: new Date(e.scheduledAt),
    createTime: new Date(e.createdAt),
    assignTime: date(e.assignedAt),
    startTime: date(e.startedAt),
    endTime: date(e.endedAt),
    result: e.result === null ? undefined : resultToProto(keyring, e.id, e.result),
  };
}
