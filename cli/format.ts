/**
 * Renders TaskService and AdminService responses for people: aligned tables, `key: value` blocks and one-line
 * watch events. JSON output is the generated proto3 JSON and lives with the commands.
 *
 * Text that comes from the server (labels, worker ids, captured output) is passed through
 * `sanitize` so a task cannot move the operator's cursor or rewrite their terminal.
 */

import { durationFromProto, formatDuration } from '../common/duration.js';
import {
  type ApiKey,
  type Role,
  TaskScope,
  type User,
  roleToJSON,
  taskScopeToJSON,
} from '../gen/citadel/v1/admin.js';
import {
  type Execution,
  type ExecutionState,
  type ExecutionTrigger,
  FailureReason,
  executionStateToJSON,
  executionTriggerToJSON,
  failureReasonToJSON,
} from '../gen/citadel/v1/execution.js';
import {
  MissedRunPolicy,
  OverlapPolicy,
  Priority,
  type Task,
  overlapPolicyToJSON,
  priorityToJSON,
} from '../gen/citadel/v1/task.js';
import type { WatchExecutionsResponse } from '../gen/citadel/v1/task_service.js';

const COLUMN_GAP = '   ';

/**
 * Lays out rows under a header, each column as wide as its widest cell, separated by three
 * spaces. The last column is not padded, so lines carry no trailing blanks.
 */
export function renderTable(
  header: readonly string[],
  rows: readonly (readonly string[])[],
): string {
  const all = [header, ...rows];
  const widths = header.map((_, col) => Math.max(...all.map((row) => width(row[col] ?? ''))));
  return all
    .map((row) =>
      header
        .map((_, col) => {
          const cell = row[col] ?? '';
          return col === header.length - 1 ? cell : cell + ' '.repeat(widths[col]! - width(cell));
        })
        .join(COLUMN_GAP)
        .trimEnd(),
    )
    .join('\n');
}

/** Renders `key: value` lines with the values aligned. Multi-line values go indented below. */
export function renderDetails(entries: readonly (readonly [string, string])[]): string {
  const keyWidth = Math.max(...entries.map(([k]) => k.length)) + 1;
  return entries
    .map(([key, value]) => {
      if (!value.includes('\n')) return `${`${key}:`.padEnd(keyWidth)} ${value}`.trimEnd();
      const body = value.replace(/\n$/, '').split('\n');
      return [`${key}:`, ...body.map((line) => `  ${line}`.trimEnd())].join('\n');
    })
    .join('\n');
}

/** ISO 8601 in UTC, without milliseconds when they are zero; `-` when unset. */
export function formatTimestamp(time: Date | undefined): string {
  if (time === undefined) return '-';
  return time.toISOString().replace('.000Z', 'Z');
}

/** `once 2026-11-24T10:00:00Z`, or `cron "*\/5 * * * *" Europe/Berlin`; `-` when unset. */
export function formatSchedule(task: Pick<Task, 'schedule'>): string {
  const schedule = task.schedule;
  if (schedule === undefined) return '-';
  if (schedule.$case === 'oneTime') {
    const runAt = schedule.value.runAt;
    return runAt === undefined ? 'once now' : `once ${formatTimestamp(runAt)}`;
  }
  const zone = schedule.value.timeZone === '' ? 'UTC' : schedule.value.timeZone;
  return `cron ${JSON.stringify(schedule.value.expression)} ${sanitize(zone)}`;
}

/** `k=v,k2=v2` sorted by key, or `-`. */
export function formatLabels(labels: Readonly<Record<string, string>>): string {
  const keys = Object.keys(labels).sort();
  if (keys.length === 0) return '-';
  return sanitize(keys.map((k) => `${k}=${labels[k]}`).join(','));
}

/** Lower-case name without the enum prefix: `timed_out`, `running`. */
export function stateName(state: ExecutionState): string {
  return enumName(executionStateToJSON(state), 'EXECUTION_STATE_');
}

/** Lower-case trigger: `schedule`, `manual`, `retry`. */
export function triggerName(trigger: ExecutionTrigger): string {
  return enumName(executionTriggerToJSON(trigger), 'EXECUTION_TRIGGER_');
}

/** `high`, `medium` or `low`; unspecified reads as `medium`, as the contract defines. */
export function priorityName(priority: Priority): string {
  const effective =
    priority === Priority.PRIORITY_UNSPECIFIED ? Priority.PRIORITY_MEDIUM : priority;
  return enumName(priorityToJSON(effective), 'PRIORITY_');
}

/** `allow`, `forbid` or `replace`; unspecified reads as `allow`, as the contract defines. */
export function overlapName(policy: OverlapPolicy): string {
  const effective =
    policy === OverlapPolicy.OVERLAP_POLICY_UNSPECIFIED
      ? OverlapPolicy.OVERLAP_POLICY_ALLOW
      : policy;
  return enumName(overlapPolicyToJSON(effective), 'OVERLAP_POLICY_');
}

/** `admin`, `scheduler`, `executor` or `viewer`. */
export function roleName(role: Role): string {
  return enumName(roleToJSON(role), 'ROLE_');
}

/** `own` or `all`; unspecified reads as `own`, as the contract defines. */
export function scopeName(scope: TaskScope): string {
  const effective = scope === TaskScope.TASK_SCOPE_UNSPECIFIED ? TaskScope.TASK_SCOPE_OWN : scope;
  return enumName(taskScopeToJSON(effective), 'TASK_SCOPE_');
}

function enumName(json: string, prefix: string): string {
  return json === 'UNRECOGNIZED' ? 'unknown' : json.replace(prefix, '').toLowerCase();
}

/** The task list table. */
export function tasksTable(tasks: readonly Task[]): string {
  return renderTable(
    ['ID', 'TYPE', 'SCHEDULE', 'PRIORITY', 'ENABLED', 'NEXT RUN', 'LABELS'],
    tasks.map((t) => [
      sanitize(t.id),
      sanitize(t.type),
      formatSchedule(t),
      priorityName(t.priority),
      String(t.enabled),
      formatTimestamp(t.nextRunTime),
      formatLabels(t.labels),
    ]),
  );
}

/** The execution list table. */
export function executionsTable(executions: readonly Execution[]): string {
  return renderTable(
    ['ID', 'STATE', 'ATTEMPT', 'TRIGGER', 'WORKER', 'SCHEDULED', 'STARTED', 'ENDED', 'EXIT'],
    executions.map((e) => [
      sanitize(e.id),
      stateName(e.state),
      String(e.attempt),
      triggerName(e.trigger),
      e.workerId === '' ? '-' : sanitize(e.workerId),
      formatTimestamp(e.scheduledTime),
      formatTimestamp(e.startTime),
      formatTimestamp(e.endTime),
      e.result?.exitCode === undefined ? '-' : String(e.result.exitCode),
    ]),
  );
}

/** `3/10`: tasks owned out of the most allowed; `3/-` when there is no limit. */
function taskQuota(user: User): string {
  return `${user.taskCount}/${user.maxTasks === 0 ? '-' : user.maxTasks}`;
}

/** The allowed task types, comma-separated; `any` when the list is empty, as it means. */
function allowedTypes(user: User): string {
  return user.allowedTaskTypes.length === 0 ? 'any' : sanitize(user.allowedTaskTypes.join(','));
}

/** The allowed priorities, lower-case and comma-separated; `any` when the list is empty. */
function allowedPriorities(user: User): string {
  return user.allowedPriorities.length === 0
    ? 'any'
    : user.allowedPriorities.map(priorityName).join(',');
}

/** The user list table. */
export function usersTable(users: readonly User[]): string {
  return renderTable(
    ['ID', 'ROLE', 'ENABLED', 'SCOPE', 'TASKS', 'TYPES', 'PRIORITIES'],
    users.map((u) => [
      sanitize(u.id),
      roleName(u.role),
      String(u.enabled),
      scopeName(u.taskScope),
      taskQuota(u),
      allowedTypes(u),
      allowedPriorities(u),
    ]),
  );
}

/** The block `user get`, `user create` and `user update` print. */
export function userDetails(user: User): string {
  return renderDetails([
    ['id', sanitize(user.id)],
    ['role', roleName(user.role)],
    ['enabled', String(user.enabled)],
    ['scope', scopeName(user.taskScope)],
    ['tasks', taskQuota(user)],
    [
      'max concurrent',
      user.maxConcurrentExecutions === 0 ? '-' : String(user.maxConcurrentExecutions),
    ],
    ['allowed types', allowedTypes(user)],
    ['allowed priorities', allowedPriorities(user)],
    ['created', formatTimestamp(user.createTime)],
    ['updated', formatTimestamp(user.updateTime)],
  ]);
}

/** The API key list table; an unset expiry or last use reads `never`. */
export function apiKeysTable(keys: readonly ApiKey[]): string {
  return renderTable(
    ['ID', 'USER', 'PREFIX', 'CREATED', 'EXPIRES', 'LAST USED', 'DESCRIPTION'],
    keys.map((k) => [
      sanitize(k.id),
      sanitize(k.userId),
      sanitize(k.prefix) || '-',
      formatTimestamp(k.createTime),
      k.expireTime === undefined ? 'never' : formatTimestamp(k.expireTime),
      k.lastUsedTime === undefined ? 'never' : formatTimestamp(k.lastUsedTime),
      sanitize(k.description) || '-',
    ]),
  );
}

/** The `task get` block. */
export function taskDetails(task: Task): string {
  const entries: [string, string][] = [
    ['id', sanitize(task.id)],
    ['type', sanitize(task.type)],
    ['schedule', formatSchedule(task)],
  ];
  if (task.schedule?.$case === 'cron') {
    const cron = task.schedule.value;
    const catchUp = cron.missedRunPolicy === MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE;
    entries.push(
      ['overlap', overlapName(cron.overlapPolicy)],
      ['missed runs', catchUp ? 'catch-up' : 'skip'],
    );
    if (catchUp) {
      entries.push(['catch-up window', formatOptionalDuration(cron.catchUpWindow, '1h (default)')]);
    }
  }
  entries.push(
    ['priority', priorityName(task.priority)],
    ['enabled', String(task.enabled)],
    ['timeout', formatOptionalDuration(task.timeout, '1h (default)')],
  );
  const retry = task.retryPolicy;
  if (retry === undefined) {
    entries.push(['retries', 'none']);
  } else {
    entries.push(
      ['max attempts', String(retry.maxAttempts || 1)],
      ['backoff', formatOptionalDuration(retry.initialBackoff, '1s (default)')],
      ['max backoff', formatOptionalDuration(retry.maxBackoff, '5m (default)')],
      ['backoff multiplier', String(retry.backoffMultiplier || 2)],
      ['jitter', String(retry.jitter)],
    );
  }
  entries.push(
    ['labels', formatLabels(task.labels)],
    ['owner', sanitize(task.owner) || '-'],
    ['idempotency key', sanitize(task.idempotencyKey) || '-'],
    ['payload', task.payload === undefined ? '-' : sanitize(JSON.stringify(task.payload))],
    ['created', formatTimestamp(task.createTime)],
    ['updated', formatTimestamp(task.updateTime)],
    ['next run', formatTimestamp(task.nextRunTime)],
    ['last run', formatTimestamp(task.lastRunTime)],
    ['etag', sanitize(task.etag) || '-'],
  );
  return renderDetails(entries);
}

/** The `execution get` block, with captured output as text. */
export function executionDetails(execution: Execution): string {
  const e = execution;
  const entries: [string, string][] = [
    ['id', sanitize(e.id)],
    ['task', sanitize(e.taskId)],
    ['run', String(e.run)],
    ['attempt', String(e.attempt)],
    ['state', stateName(e.state)],
    ['trigger', triggerName(e.trigger)],
    ['priority', priorityName(e.priority)],
    ['worker', sanitize(e.workerId) || '-'],
    ['fencing token', e.fencingToken === 0 ? '-' : String(e.fencingToken)],
    ['scheduled', formatTimestamp(e.scheduledTime)],
    ['created', formatTimestamp(e.createTime)],
    ['assigned', formatTimestamp(e.assignTime)],
    ['started', formatTimestamp(e.startTime)],
    ['ended', formatTimestamp(e.endTime)],
  ];
  const r = e.result;
  if (r !== undefined) {
    entries.push(
      ['exit code', r.exitCode === undefined ? '-' : String(r.exitCode)],
      ['duration', formatDuration(r.durationMs)],
    );
    if (r.oomKilled) entries.push(['oom killed', 'true']);
    if (r.timedOut) entries.push(['timed out', 'true']);
    if (r.reason !== FailureReason.FAILURE_REASON_UNSPECIFIED) {
      entries.push(['reason', enumName(failureReasonToJSON(r.reason), 'FAILURE_REASON_')]);
    }
    if (r.message !== '') entries.push(['message', sanitize(r.message)]);
    if (r.detail !== '') entries.push(['detail', sanitize(r.detail)]);
    if (r.stdout.length > 0) entries.push(['stdout', capturedText(r.stdout, r.stdoutTruncated)]);
    if (r.stderr.length > 0) entries.push(['stderr', capturedText(r.stderr, r.stderrTruncated)]);
  }
  return renderDetails(entries);
}

/** One `execution watch` line: time, id, state, worker. */
export function watchEventLine(event: WatchExecutionsResponse): string {
  const e = event.execution;
  if (e === undefined) return `${formatTimestamp(new Date())}  -`;
  return [
    formatTimestamp(stateTime(e) ?? new Date()),
    sanitize(e.id),
    stateName(e.state).padEnd('timed_out'.length),
    sanitize(e.workerId) || '-',
  ].join('  ');
}

/** When the execution entered its current state, as far as the record tells. */
function stateTime(e: Execution): Date | undefined {
  return e.endTime ?? e.startTime ?? e.assignTime ?? e.createTime;
}

function capturedText(bytes: Uint8Array, truncated: boolean): string {
  const text = sanitize(Buffer.from(bytes).toString('utf8').replaceAll('\r\n', '\n'), true);
  return truncated ? `${text.replace(/\n$/, '')}\n[truncated]` : text;
}

function formatOptionalDuration(
  d: { seconds: number; nanos: number } | undefined,
  unset: string,
): string {
  const ms = durationFromProto(d);
  return ms === undefined ? unset : formatDuration(ms);
}

/**
 * Makes control characters visible (`\x1b` for ESC) so server-supplied text cannot drive the
 * terminal. Newlines and tabs survive only in multi-line blocks.
 */
export function sanitize(text: string, multiline = false): string {
  const unsafe = multiline ? /[\x00-\x08\x0b-\x1f\x7f-\x9f]/g : /[\x00-\x1f\x7f-\x9f]/g;
  return text.replace(unsafe, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
}

function width(text: string): number {
  return [...text].length;
}
