/**
 * Pure builders that turn `citadelctl task ...` flags into TaskService requests. All flag
 * validation happens here, before any network call; each error names the flag to fix.
 */

import {
  durationFromProto,
  durationToProto,
  parseDuration,
  type ProtoDuration,
} from '../../common/duration.js';
import { InvalidArgumentError } from '../../common/errors.js';
import {
  CronSchedule,
  MissedRunPolicy,
  type OneTimeSchedule,
  type Priority,
  type RetryPolicy,
  type Task,
} from '../../gen/citadel/v1/task.js';
import {
  CreateTaskRequest,
  type DeepPartial,
  ListTasksRequest,
  UpdateTaskRequest,
} from '../../gen/citadel/v1/task_service.js';
import {
  parseInteger,
  parseLabels,
  parseMissedRunPolicy,
  parseNonEmpty,
  parseNumber,
  parseOverlapPolicy,
  parsePriority,
  parseRunAt,
  parseTimeZone,
  readPayload,
} from '../flags.js';

/** The cron schedule of a new task; --catch-up-window needs --missed catch-up. */
function createCron(flags: TaskFlags): DeepPartial<CronSchedule> {
  const cron = cronFields(flags);
  if (
    cron.catchUpWindow !== undefined &&
    cron.missedRunPolicy !== MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE
  ) {
    throw new InvalidArgumentError('--catch-up-window', 'only applies with --missed catch-up');
  }
  return cron;
}

/** Task flags of `task create` and `task update`, as commander hands them over. */
export interface TaskFlags {
  type?: string;
  /** JSON object text. */
  payload?: string;
  /** Path of a file holding the payload; `-` is standard input. */
  payloadFile?: string;
  /** ISO 8601 time with zone, or `now`. */
  runAt?: string;
  cron?: string;
  tz?: string;
  overlap?: string;
  missed?: string;
  catchUpWindow?: string;
  priority?: string;
  timeout?: string;
  maxAttempts?: string;
  backoff?: string;
  maxBackoff?: string;
  backoffMultiplier?: string;
  jitter?: string;
  /** Repeated `key=value`. */
  label?: string[];
}

/** Flags of `task create`. */
export interface CreateTaskFlags extends TaskFlags {
  idempotencyKey?: string;
}

/** Flags of `task update`. */
export interface UpdateTaskFlags extends TaskFlags {
  etag?: string;
}

/** Flags of `task list`. */
export interface ListTasksFlags {
  type?: string;
  label?: string[];
  enabled?: boolean;
  paused?: boolean;
  owner?: string;
  pageSize?: string;
  pageToken?: string;
}

type FlagList = readonly (readonly [keyof TaskFlags, string])[];

/** Flags that refine a cron schedule; with --cron they make up the "cron" path. */
const CRON_DETAIL_FLAGS: FlagList = [
  ['tz', '--tz'],
  ['overlap', '--overlap'],
  ['missed', '--missed'],
  ['catchUpWindow', '--catch-up-window'],
];

const RETRY_FLAGS: FlagList = [
  ['maxAttempts', '--max-attempts'],
  ['backoff', '--backoff'],
  ['maxBackoff', '--max-backoff'],
  ['backoffMultiplier', '--backoff-multiplier'],
  ['jitter', '--jitter'],
];

const given = (flags: TaskFlags, list: FlagList): string[] =>
  list.filter(([key]) => flags[key] !== undefined).map(([, flag]) => flag);

/**
 * Builds CreateTaskRequest. Without --run-at or --cron the task runs once, now.
 * @throws InvalidArgumentError naming the flag: a missing --type, --run-at with --cron, a cron
 *   detail without --cron, or any malformed value.
 */
export function buildCreateTaskRequest(flags: CreateTaskFlags): CreateTaskRequest {
  const type = parseNonEmpty(flags.type ?? '', '--type');
  if (flags.runAt !== undefined && flags.cron !== undefined) {
    throw new InvalidArgumentError('--run-at', 'cannot be combined with --cron');
  }
  const [detail] = given(flags, CRON_DETAIL_FLAGS);
  if (flags.cron === undefined && detail !== undefined) {
    throw new InvalidArgumentError(detail, 'only applies with --cron');
  }
  const payload = readPayload(flags);
  return CreateTaskRequest.fromPartial({
    task: {
      type,
      ...(payload !== undefined && { payload }),
      schedule:
        flags.cron !== undefined
          ? { $case: 'cron', value: createCron(flags) }
          : { $case: 'oneTime', value: { runAt: parseRunAt(flags.runAt ?? 'now') } },
      ...(flags.priority !== undefined && { priority: parsePriority(flags.priority) }),
      ...(flags.timeout !== undefined && { timeout: durationField(flags.timeout, '--timeout') }),
      ...(given(flags, RETRY_FLAGS).length > 0 && { retryPolicy: retryFields(flags) }),
      idempotencyKey: flags.idempotencyKey ?? '',
      labels: parseLabels(flags.label ?? []),
    },
  });
}

/** A validated `task update`: the flags' fields only, not yet merged with the stored task. */
export interface TaskUpdate {
  id: string;
  type?: string;
  payload?: Record<string, unknown>;
  /** From --run-at; the "one_time" path. */
  oneTime?: OneTimeSchedule;
  /** From --cron, --tz, --overlap, --missed, --catch-up-window; the "cron" path. */
  cron?: Partial<CronSchedule>;
  priority?: Priority;
  timeout?: ProtoDuration;
  /** From the retry flags; the "retry_policy" path. */
  retryPolicy?: Partial<RetryPolicy>;
  labels?: Record<string, string>;
  etag?: string;
}

/**
 * Validates the flags of `task update`, without any network call.
 * @throws InvalidArgumentError naming the flag: nothing to change, --run-at with a cron flag,
 *   or any malformed value.
 */
export function parseTaskUpdate(id: string, flags: UpdateTaskFlags): TaskUpdate {
  const update: TaskUpdate = { id: parseNonEmpty(id, 'ID') };
  const cronFlags = [
    ...(flags.cron !== undefined ? ['--cron'] : []),
    ...given(flags, CRON_DETAIL_FLAGS),
  ];
  if (flags.runAt !== undefined && cronFlags.length > 0) {
    throw new InvalidArgumentError('--run-at', `cannot be combined with ${cronFlags[0]}`);
  }
  if (flags.type !== undefined) update.type = parseNonEmpty(flags.type, '--type');
  const payload = readPayload(flags);
  if (payload !== undefined) update.payload = payload;
  if (flags.runAt !== undefined) update.oneTime = { runAt: parseRunAt(flags.runAt) };
  if (cronFlags.length > 0) update.cron = cronFields(flags);
  if (flags.priority !== undefined) update.priority = parsePriority(flags.priority);
  if (flags.timeout !== undefined) update.timeout = durationField(flags.timeout, '--timeout');
  if (given(flags, RETRY_FLAGS).length > 0) update.retryPolicy = retryFields(flags);
  if (flags.label !== undefined) update.labels = parseLabels(flags.label);
  if (flags.etag !== undefined) update.etag = flags.etag;
  if (Object.keys(update).every((key) => key === 'id' || key === 'etag')) {
    throw new InvalidArgumentError(
      'task update',
      'nothing to change; give at least one flag such as --priority or --cron',
    );
  }
  return update;
}

/**
 * Whether `toUpdateTaskRequest` needs the stored task: the server replaces the cron schedule
 * and the retry policy whole, so the settings not given are carried over from it.
 */
export function updateNeedsCurrentTask(update: TaskUpdate): boolean {
  return update.cron !== undefined || update.retryPolicy !== undefined;
}

/**
 * Builds UpdateTaskRequest. The update mask lists exactly the fields the flags touch, in
 * contract order: "type", "payload", "one_time" (--run-at) or "cron" (--cron, --tz, --overlap,
 * --missed, --catch-up-window), "priority", "timeout", "retry_policy" (--max-attempts,
 * --backoff, --max-backoff, --backoff-multiplier, --jitter), "labels" (--label replaces all).
 *
 * @param current the stored task, when `updateNeedsCurrentTask`: cron and retry settings not
 *   given are kept from it, and its etag guards this read-modify-write unless --etag is given.
 * @throws InvalidArgumentError naming --cron when cron details are given for a task that has
 *   no cron schedule and --cron is not.
 */
export function toUpdateTaskRequest(update: TaskUpdate, current?: Task): UpdateTaskRequest {
  const task: DeepPartial<Task> = { id: update.id };
  const mask: string[] = [];
  const set = <K extends keyof Task>(key: K, path: string, value: DeepPartial<Task>[K]): void => {
    task[key] = value;
    mask.push(path);
  };
  if (update.type !== undefined) set('type', 'type', update.type);
  if (update.payload !== undefined) set('payload', 'payload', update.payload);
  if (update.oneTime !== undefined) {
    set('schedule', 'one_time', { $case: 'oneTime', value: update.oneTime });
  }
  if (update.cron !== undefined) {
    const base = current?.schedule?.$case === 'cron' ? current.schedule.value : undefined;
    const cron = CronSchedule.fromPartial({ ...base, ...update.cron });
    if (cron.expression === '') {
      throw new InvalidArgumentError('--cron', 'required: the task has no cron schedule to change');
    }
    set('schedule', 'cron', { $case: 'cron', value: cron });
  }
  if (update.priority !== undefined) set('priority', 'priority', update.priority);
  if (update.timeout !== undefined) set('timeout', 'timeout', update.timeout);
  if (update.retryPolicy !== undefined) {
    set('retryPolicy', 'retry_policy', { ...current?.retryPolicy, ...update.retryPolicy });
  }
  if (update.labels !== undefined) set('labels', 'labels', update.labels);
  return UpdateTaskRequest.fromPartial({
    task,
    updateMask: mask,
    etag: update.etag ?? current?.etag ?? '',
  });
}

/** `parseTaskUpdate` then `toUpdateTaskRequest`, for callers that have the stored task. */
export function buildUpdateTaskRequest(
  id: string,
  flags: UpdateTaskFlags,
  current?: Task,
): UpdateTaskRequest {
  return toUpdateTaskRequest(parseTaskUpdate(id, flags), current);
}

/**
 * Builds ListTasksRequest.
 * @throws InvalidArgumentError for --enabled with --paused, a bad --label or --page-size.
 */
export function buildListTasksRequest(flags: ListTasksFlags): ListTasksRequest {
  if (flags.enabled === true && flags.paused === true) {
    throw new InvalidArgumentError('--paused', 'cannot be combined with --enabled');
  }
  const enabled = flags.enabled === true ? true : flags.paused === true ? false : undefined;
  return ListTasksRequest.fromPartial({
    type: flags.type ?? '',
    labels: parseLabels(flags.label ?? []),
    ...(enabled !== undefined && { enabled }),
    owner: flags.owner ?? '',
    pageSize:
      flags.pageSize === undefined ? 0 : parseInteger(flags.pageSize, '--page-size', 1, 1000),
    pageToken: flags.pageToken ?? '',
  });
}

/** The cron fields the flags give; only those keys are set. */
function cronFields(flags: TaskFlags): Partial<CronSchedule> {
  const cron: Partial<CronSchedule> = {};
  if (flags.cron !== undefined) cron.expression = parseNonEmpty(flags.cron, '--cron');
  if (flags.tz !== undefined) cron.timeZone = parseTimeZone(flags.tz);
  if (flags.overlap !== undefined) cron.overlapPolicy = parseOverlapPolicy(flags.overlap);
  if (flags.missed !== undefined) cron.missedRunPolicy = parseMissedRunPolicy(flags.missed);
  if (flags.catchUpWindow !== undefined) {
    cron.catchUpWindow = durationField(flags.catchUpWindow, '--catch-up-window');
    if (
      flags.missed !== undefined &&
      cron.missedRunPolicy !== MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE
    ) {
      throw new InvalidArgumentError('--catch-up-window', 'only applies with --missed catch-up');
    }
  }
  return cron;
}

/** The retry fields the flags give; only those keys are set. */
function retryFields(flags: TaskFlags): Partial<RetryPolicy> {
  const policy: Partial<RetryPolicy> = {};
  if (flags.maxAttempts !== undefined) {
    policy.maxAttempts = parseInteger(flags.maxAttempts, '--max-attempts', 1, 100);
  }
  if (flags.backoff !== undefined)
    policy.initialBackoff = durationField(flags.backoff, '--backoff');
  if (flags.maxBackoff !== undefined) {
    policy.maxBackoff = durationField(flags.maxBackoff, '--max-backoff');
  }
  if (flags.backoffMultiplier !== undefined) {
    policy.backoffMultiplier = parseNumber(flags.backoffMultiplier, '--backoff-multiplier', 1, 10);
  }
  if (flags.jitter !== undefined) policy.jitter = parseNumber(flags.jitter, '--jitter', 0, 1);
  const low = durationFromProto(policy.initialBackoff);
  const high = durationFromProto(policy.maxBackoff);
  if (low !== undefined && high !== undefined && high < low) {
    throw new InvalidArgumentError('--max-backoff', 'must be at least --backoff');
  }
  return policy;
}

function durationField(text: string, flag: string): ProtoDuration {
  const ms = parseDuration(text, flag);
  if (ms <= 0) throw new InvalidArgumentError(flag, 'must be longer than 0s');
  return durationToProto(ms);
}
