/**
 * Validation of task definitions from the API. Turns a proto Task into a checked definition
 * with defaults applied, or throws InvalidArgumentError naming the first bad field. Pure.
 */
import { CONTAINER_TASK_TYPE, containerSpec } from './container-task.js';
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../../common/errors.js';
import { TASK_ID_PATTERN } from '../../common/ids.js';
import { durationFromProto } from '../../common/duration.js';
import { validateLabels } from '../../common/labels.js';
import {
  MissedRunPolicy,
  OverlapPolicy,
  Priority,
  Task,
  type RetryPolicy,
} from '../../gen/citadel/v1/task.js';
import { validateCron } from './cron.js';
import {
  missedFromProto,
  overlapFromProto,
  priorityFromProto,
  type PriorityRank,
  type RetrySpec,
  type Schedule,
} from './records.js';

/** Payloads larger than this, serialised as JSON, are refused. */
export const MAX_PAYLOAD_BYTES = 1024 * 1024;

const SECOND = 1000;
const DAY = 86_400_000;
const TYPE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
const IDEMPOTENCY_PATTERN = /^[\x21-\x7e]{1,128}$/;

export const DEFAULT_TIMEOUT_MS = 3600 * SECOND;
export const DEFAULT_CATCH_UP_WINDOW_MS = 3600 * SECOND;
export const NO_RETRY: RetrySpec = {
  maxAttempts: 1,
  initialBackoffMs: SECOND,
  maxBackoffMs: 300 * SECOND,
  multiplier: 2,
  jitter: 0,
};

/** A validated task definition: everything a user may set, defaults applied. */
export interface TaskDefinition {
  type: string;
  payload: Record<string, unknown> | undefined;
  schedule: Schedule;
  priority: PriorityRank;
  timeoutMs: number;
  retry: RetrySpec;
  labels: Record<string, string>;
}

export function validateType(type: string, field = 'task.type'): string {
  if (!TYPE_PATTERN.test(type)) {
    throw new InvalidArgumentError(
      field,
      type === ''
        ? 'is required'
        : 'must be 1-63 lowercase letters, digits, ".", "_" or "-", starting with a letter or digit',
    );
  }
  return type;
}

export function validatePayload(
  payload: Record<string, unknown> | undefined,
  field = 'task.payload',
): Record<string, unknown> | undefined {
  if (payload === undefined) return undefined;
  const size = Buffer.byteLength(JSON.stringify(payload));
  if (size > MAX_PAYLOAD_BYTES) {
    throw new InvalidArgumentError(
      field,
      `is ${size} bytes as JSON; the limit is ${MAX_PAYLOAD_BYTES} bytes (1 MiB). Store large data elsewhere and pass a reference`,
    );
  }
  return payload;
}

export function validatePriority(p: Priority, field = 'task.priority'): PriorityRank {
  if (!Object.values(Priority).includes(p) || p === Priority.UNRECOGNIZED) {
    throw new InvalidArgumentError(
      field,
      `${String(p)} is not a priority (use HIGH, MEDIUM or LOW)`,
    );
  }
  return priorityFromProto(p);
}

function durationMs(
  d: { seconds: number; nanos: number } | undefined,
  field: string,
  min: number,
  max: number,
  fallback: number,
): number {
  if (d === undefined) return fallback;
  const ms = durationFromProto(d) ?? fallback;
  if (!Number.isFinite(ms) || ms < min || ms > max) {
    throw new InvalidArgumentError(field, `must be between ${min / 1000}s and ${max / 1000}s`);
  }
  return ms;
}

export function validateTimeout(
  d: { seconds: number; nanos: number } | undefined,
  field = 'task.timeout',
): number {
  return durationMs(d, field, SECOND, 7 * DAY, DEFAULT_TIMEOUT_MS);
}

export function validateRetry(r: RetryPolicy | undefined, field = 'task.retry_policy'): RetrySpec {
  if (r === undefined) return { ...NO_RETRY };
  const maxAttempts = r.maxAttempts === 0 ? 1 : r.maxAttempts;
  // Attempt numbers are two digits in execution ids.
  if (maxAttempts < 1 || maxAttempts > 99) {
    throw new InvalidArgumentError(`${field}.max_attempts`, 'must be between 1 and 99');
  }
  const initialBackoffMs = durationMs(
    r.initialBackoff,
    `${field}.initial_backoff`,
    100,
    DAY,
    SECOND,
  );
  const maxBackoffMs = durationMs(r.maxBackoff, `${field}.max_backoff`, 100, DAY, 300 * SECOND);
  if (maxBackoffMs < initialBackoffMs) {
    throw new InvalidArgumentError(`${field}.max_backoff`, 'must be at least initial_backoff');
  }
  const multiplier = r.backoffMultiplier === 0 ? 2 : r.backoffMultiplier;
  if (!(multiplier >= 1 && multiplier <= 10)) {
    throw new InvalidArgumentError(`${field}.backoff_multiplier`, 'must be between 1 and 10');
  }
  if (!(r.jitter >= 0 && r.jitter <= 1)) {
    throw new InvalidArgumentError(`${field}.jitter`, 'must be between 0 and 1');
  }
  return { maxAttempts, initialBackoffMs, maxBackoffMs, multiplier, jitter: r.jitter };
}

export function validateSchedule(task: Task, now: number, field = 'task'): Schedule {
  const s = task.schedule;
  if (s === undefined || s.$case === 'oneTime') {
    const runAt = s?.value.runAt?.getTime() ?? now;
    if (!Number.isFinite(runAt))
      throw new InvalidArgumentError(`${field}.one_time.run_at`, 'is invalid');
    if (runAt > now + 3650 * DAY) {
      throw new InvalidArgumentError(`${field}.one_time.run_at`, 'is more than 10 years ahead');
    }
    return { kind: 'once', runAtMs: Math.max(runAt, 0) };
  }
  const c = s.value;
  const timeZone = c.timeZone === '' ? 'UTC' : c.timeZone;
  validateCron(c.expression, timeZone, `${field}.cron`);
  if (
    !Object.values(OverlapPolicy).includes(c.overlapPolicy) ||
    c.overlapPolicy === OverlapPolicy.UNRECOGNIZED
  ) {
    throw new InvalidArgumentError(`${field}.cron.overlap_policy`, 'use ALLOW, FORBID or REPLACE');
  }
  if (
    !Object.values(MissedRunPolicy).includes(c.missedRunPolicy) ||
    c.missedRunPolicy === MissedRunPolicy.UNRECOGNIZED
  ) {
    throw new InvalidArgumentError(`${field}.cron.missed_run_policy`, 'use SKIP or CATCH_UP_ONCE');
  }
  return {
    kind: 'cron',
    expression: c.expression.trim(),
    timeZone,
    overlap: overlapFromProto(c.overlapPolicy),
    missed: missedFromProto(c.missedRunPolicy),
    catchUpWindowMs: durationMs(
      c.catchUpWindow,
      `${field}.cron.catch_up_window`,
      SECOND,
      7 * DAY,
      DEFAULT_CATCH_UP_WINDOW_MS,
    ),
  };
}

/**
 * A task id from a request.
 * @throws InvalidArgumentError naming `field` if it is empty or not a task id.
 */
export function validateTaskId(id: string, field = 'id'): string {
  if (!TASK_ID_PATTERN.test(id)) {
    throw new InvalidArgumentError(
      field,
      id === '' ? 'is required' : 'is not a task id (t_ + 16 characters)',
    );
  }
  return id;
}

export function validateIdempotencyKey(key: string, field = 'task.idempotency_key'): string {
  if (key !== '' && !IDEMPOTENCY_PATTERN.test(key)) {
    throw new InvalidArgumentError(
      field,
      'must be 1-128 printable ASCII characters without spaces',
    );
  }
  return key;
}

/** Validates a whole task for CreateTask. */
export function validateNewTask(task: Task | undefined, now: number): TaskDefinition {
  if (task === undefined) throw new InvalidArgumentError('task', 'is required');
  const definition: TaskDefinition = {
    type: validateType(task.type),
    payload: validatePayload(task.payload),
    schedule: validateSchedule(task, now),
    priority: validatePriority(task.priority),
    timeoutMs: validateTimeout(task.timeout),
    retry: validateRetry(task.retryPolicy),
    labels: validateLabels(task.labels),
  };
  if (definition.type === CONTAINER_TASK_TYPE) containerSpec(definition.payload);
  return definition;
}

/** Paths UpdateTask accepts in its field mask. */
export const UPDATABLE_PATHS = [
  'type',
  'payload',
  'one_time',
  'cron',
  'schedule',
  'priority',
  'timeout',
  'retry_policy',
  'labels',
] as const;

/**
 * Applies the fields named in `paths` from `patch` onto `current`, validating each.
 * @throws InvalidArgumentError for an empty mask, an unknown path or a bad value.
 */
export function applyUpdate(
  current: TaskDefinition,
  patch: Task,
  paths: string[],
  now: number,
): { definition: TaskDefinition; scheduleChanged: boolean } {
  if (paths.length === 0) {
    throw new InvalidArgumentError(
      'update_mask',
      `is required: name the fields to change (${UPDATABLE_PATHS.join(', ')})`,
    );
  }
  const next: TaskDefinition = { ...current };
  let scheduleChanged = false;
  for (const path of paths) {
    switch (path) {
      case 'type':
        next.type = validateType(patch.type);
        break;
      case 'payload':
        next.payload = validatePayload(patch.payload);
        break;
      case 'one_time':
      case 'cron':
      case 'schedule': {
        const wanted =
          path === 'one_time' ? 'oneTime' : path === 'cron' ? 'cron' : patch.schedule?.$case;
        if (patch.schedule === undefined || patch.schedule.$case !== wanted) {
          throw new InvalidArgumentError(`task.${path}`, 'is named in update_mask but not set');
        }
        next.schedule = validateSchedule(patch, now);
        scheduleChanged = true;
        break;
      }
      case 'priority':
        next.priority = validatePriority(patch.priority);
        break;
      case 'timeout':
        next.timeoutMs = validateTimeout(patch.timeout);
        break;
      case 'retry_policy':
        next.retry = validateRetry(patch.retryPolicy);
        break;
      case 'labels':
        next.labels = validateLabels(patch.labels);
        break;
      default:
        throw new InvalidArgumentError(
          'update_mask',
          `${JSON.stringify(path)} cannot be updated (updatable: ${UPDATABLE_PATHS.join(', ')})`,
        );
    }
  }
  if (next.type === CONTAINER_TASK_TYPE) containerSpec(next.payload);
  return { definition: next, scheduleChanged };
}

/**
 * The canonical form of a CreateTask request's task (sorted-key JSON, output-only fields
 * cleared), to tell an idempotent retry from a different request. It holds the plaintext
 * payload: never store it, nor a plain hash of it (see the task engine's fingerprint).
 */
export function canonicalCreateRequest(task: Task): string {
  // Output-only fields do not make two requests different.
  return canonicalJson(
    Task.toJSON({
      ...task,
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
}

/**
 * The unsalted SHA-256 (hex) of a canonical request: what idempotency records written before
 * they were keyed hold. Only compared against those, never written again.
 */
export function legacyRequestHash(canonical: string): string {
  return createHash('sha256').update(canonical).digest('hex');
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}
