/**
 * Parsers for citadelctl flag values. Each one validates locally, before any network call, and
 * throws InvalidArgumentError naming the flag so the user sees which one to fix.
 */

import { readFileSync } from 'node:fs';

import { parseDuration } from '../common/duration.js';
import { InvalidArgumentError } from '../common/errors.js';
import { EXECUTION_STATE_BY_NAME } from '../common/execution-states.js';
import { Role, TaskScope } from '../gen/citadel/v1/admin.js';
import { ExecutionState } from '../gen/citadel/v1/execution.js';
import { MissedRunPolicy, OverlapPolicy, Priority } from '../gen/citadel/v1/task.js';

function oneOf<T>(flag: string, text: string, table: Readonly<Record<string, T>>): T {
  const value = table[text.trim().toLowerCase()];
  if (value === undefined) {
    const names = Object.keys(table).join(', ');
    throw new InvalidArgumentError(flag, `"${text}" is not one of ${names}`);
  }
  return value;
}

/** `--priority high|medium|low`. */
export function parsePriority(text: string, flag = '--priority'): Priority {
  return oneOf(flag, text, {
    high: Priority.PRIORITY_HIGH,
    medium: Priority.PRIORITY_MEDIUM,
    low: Priority.PRIORITY_LOW,
  });
}

/** `--overlap allow|forbid|replace`. */
export function parseOverlapPolicy(text: string, flag = '--overlap'): OverlapPolicy {
  return oneOf(flag, text, {
    allow: OverlapPolicy.OVERLAP_POLICY_ALLOW,
    forbid: OverlapPolicy.OVERLAP_POLICY_FORBID,
    replace: OverlapPolicy.OVERLAP_POLICY_REPLACE,
  });
}

/** `--missed skip|catch-up`. */
export function parseMissedRunPolicy(text: string, flag = '--missed'): MissedRunPolicy {
  return oneOf(flag, text, {
    skip: MissedRunPolicy.MISSED_RUN_POLICY_SKIP,
    'catch-up': MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE,
  });
}

/** `--role admin|scheduler|executor|viewer`. */
export function parseRole(text: string, flag = '--role'): Role {
  return oneOf(flag, text, {
    admin: Role.ROLE_ADMIN,
    scheduler: Role.ROLE_SCHEDULER,
    executor: Role.ROLE_EXECUTOR,
    viewer: Role.ROLE_VIEWER,
  });
}

/** `--scope own|all`. */
export function parseTaskScope(text: string, flag = '--scope'): TaskScope {
  return oneOf(flag, text, { own: TaskScope.TASK_SCOPE_OWN, all: TaskScope.TASK_SCOPE_ALL });
}

/**
 * A comma-separated list such as `--allowed-types a,b`. Blanks around entries are dropped, as
 * are repeats; an empty or blank value is the empty list. An empty entry (`a,,b`) is refused.
 */
export function parseList(text: string, flag: string): string[] {
  if (text.trim() === '') return [];
  const items = text.split(',').map((item) => item.trim());
  if (items.includes('')) {
    throw new InvalidArgumentError(flag, `"${text}" has an empty entry; separate names by commas`);
  }
  return [...new Set(items)];
}

/** `--allowed-priorities high,low`: a list of priorities; empty is the empty list. */
export function parsePriorityList(text: string, flag = '--allowed-priorities'): Priority[] {
  return [...new Set(parseList(text, flag).map((item) => parsePriority(item, flag)))];
}

const EXECUTION_STATES: Readonly<Record<string, ExecutionState>> = EXECUTION_STATE_BY_NAME;

/**
 * `--state S`, repeatable and comma-separated: `running`, `timed_out` (or `timed-out`), or the
 * full enum name `EXECUTION_STATE_RUNNING`. Duplicates are dropped.
 */
export function parseExecutionStates(
  values: readonly string[],
  flag = '--state',
): ExecutionState[] {
  const states = new Set<ExecutionState>();
  for (const item of values.flatMap((v) => v.split(','))) {
    const name = item
      .trim()
      .toLowerCase()
      .replace(/^execution_state_/, '')
      .replaceAll('-', '_');
    states.add(oneOf(flag, name, EXECUTION_STATES));
  }
  return [...states];
}

const LABEL_KEY = /^[A-Za-z0-9._/-]{1,63}$/;

/**
 * `--label k=v`, repeatable. The key is split at the first `=`; the value may be empty.
 * Keys follow the contract: 1 to 63 letters, digits, '.', '_', '/' and '-'.
 */
export function parseLabels(values: readonly string[], flag = '--label'): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const item of values) {
    const eq = item.indexOf('=');
    if (eq < 0) throw new InvalidArgumentError(flag, `"${item}" is not key=value`);
    const key = item.slice(0, eq);
    if (!LABEL_KEY.test(key)) {
      throw new InvalidArgumentError(
        flag,
        `key "${key}" must be 1 to 63 letters, digits, '.', '_', '/' or '-'`,
      );
    }
    if (Object.hasOwn(labels, key)) {
      throw new InvalidArgumentError(flag, `key "${key}" given twice`);
    }
    labels[key] = item.slice(eq + 1);
  }
  return labels;
}

/** A whole number in [min, max], e.g. `--max-attempts 3`. */
export function parseInteger(text: string, flag: string, min: number, max: number): number {
  const value = /^\s*\d+\s*$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new InvalidArgumentError(flag, `"${text}" is not a whole number from ${min} to ${max}`);
  }
  return value;
}

/** A decimal number in [min, max], e.g. `--jitter 0.2`. */
export function parseNumber(text: string, flag: string, min: number, max: number): number {
  const value = text.trim() === '' ? NaN : Number(text);
  if (!Number.isFinite(value) || value < min || value > max) {
    throw new InvalidArgumentError(flag, `"${text}" is not a number from ${min} to ${max}`);
  }
  return value;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/i;

/**
 * `--run-at`: `now` (returned as undefined: the contract reads an unset time as now) or an
 * ISO 8601 time with an explicit zone. A time without a zone is refused rather than read in
 * the local zone of whoever runs the command.
 */
export function parseRunAt(text: string, flag = '--run-at'): Date | undefined {
  const input = text.trim();
  if (input.toLowerCase() === 'now') return undefined;
  return parseInstant(text, flag, 'write "now" or a time such as "2026-11-24T10:00:00Z"');
}

/** An ISO 8601 time with an explicit zone; `otherwise` says what else the flag accepts. */
function parseInstant(text: string, flag: string, otherwise: string): Date {
  const input = text.trim();
  if (!ISO_8601.test(input)) {
    const hint = /^\d{4}-\d{2}-\d{2}T[\d:.]+$/.test(input)
      ? 'add a zone, "Z" or an offset such as "+01:00"'
      : otherwise;
    throw new InvalidArgumentError(flag, `"${text}" is not an ISO 8601 time; ${hint}`);
  }
  const date = new Date(input);
  if (Number.isNaN(date.getTime())) {
    throw new InvalidArgumentError(flag, `"${text}" is not a valid date`);
  }
  return date;
}

/**
 * `--expires`: a duration from `now` such as `90d` or `12h`, or an ISO 8601 time with zone
 * such as `2027-01-01T00:00:00Z`. Either must lie in the future; a duration's expiry is rounded
 * up to a whole second.
 */
export function parseExpiry(text: string, flag = '--expires', now: Date = new Date()): Date {
  const input = text.trim();
  let expires: Date;
  if (/^\d{4}-/.test(input)) {
    expires = parseInstant(text, flag, 'write a duration such as "90d" or a time with zone');
  } else {
    let ms: number;
    try {
      ms = parseDuration(input, flag);
    } catch {
      throw new InvalidArgumentError(
        flag,
        `"${text}" is neither a duration such as "90d" or "12h" nor an ISO 8601 time ` +
          'such as "2027-01-01T00:00:00Z"',
      );
    }
    if (ms <= 0) throw new InvalidArgumentError(flag, 'must be longer than 0s');
    // Whole seconds, rounded up, so the expiry prints cleanly.
    expires = new Date(Math.ceil((now.getTime() + ms) / 1000) * 1000);
  }
  if (expires.getTime() <= now.getTime()) {
    throw new InvalidArgumentError(flag, `${expires.toISOString()} is not in the future`);
  }
  return expires;
}

/** `--tz`: an IANA time zone the local ICU data knows, such as `Europe/Berlin` or `UTC`. */
export function parseTimeZone(text: string, flag = '--tz'): string {
  const zone = text.trim();
  try {
    if (zone === '') throw new RangeError('empty');
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
  } catch {
    throw new InvalidArgumentError(
      flag,
      `"${text}" is not an IANA time zone such as "Europe/Berlin"`,
    );
  }
  return zone;
}

/** The contract's user id: 1-63 lowercase letters, digits, '.', '_', '@' or '-'. */
const USER_ID = /^[a-z0-9._@-]{1,63}$/;

/** A user id, checked against the contract so a typo fails before the call. */
export function parseUserId(text: string, flag = 'ID'): string {
  const id = parseNonEmpty(text, flag);
  if (!USER_ID.test(id)) {
    throw new InvalidArgumentError(
      flag,
      `"${id}" must be 1 to 63 lowercase letters, digits, '.', '_', '@' or '-'`,
    );
  }
  return id;
}

/**
 * Optional free text such as `--description` or `--reason`, trimmed; unset is empty.
 * @param max most characters (code points) allowed. @default 200
 */
export function parseText(text: string | undefined, flag: string, max = 200): string {
  const value = text?.trim() ?? '';
  if ([...value].length > max) {
    throw new InvalidArgumentError(flag, `must be at most ${max} characters`);
  }
  return value;
}

/** A required non-empty value such as `--type` or an ID argument. */
export function parseNonEmpty(text: string, flag: string): string {
  const value = text.trim();
  if (value === '') throw new InvalidArgumentError(flag, 'must not be empty');
  return value;
}

/** Parses JSON text that must be an object, the only shape a google.protobuf.Struct holds. */
export function parseJsonObject(text: string, flag: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new InvalidArgumentError(flag, `not valid JSON: ${reason}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value;
    throw new InvalidArgumentError(flag, `must be a JSON object, got ${kind}`);
  }
  return value as Record<string, unknown>;
}

/**
 * Reads the JSON object of `--payload` or `--payload-file` (`-` reads standard input); at
 * most one may be given. Returns undefined when neither is.
 */
export function readPayload(opts: {
  payload?: string;
  payloadFile?: string;
}): Record<string, unknown> | undefined {
  if (opts.payload !== undefined && opts.payloadFile !== undefined) {
    throw new InvalidArgumentError('--payload-file', 'cannot be combined with --payload');
  }
  if (opts.payload !== undefined) return parseJsonObject(opts.payload, '--payload');
  if (opts.payloadFile === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(opts.payloadFile === '-' ? 0 : opts.payloadFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err);
    throw new InvalidArgumentError('--payload-file', `cannot read "${opts.payloadFile}": ${code}`);
  }
  return parseJsonObject(text, '--payload-file');
}
