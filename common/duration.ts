/**
 * Human-readable durations ("30s", "2h30m", "1d") for flags and config, and their conversion to
 * and from google.protobuf.Duration. All in-process durations are whole milliseconds.
 */

import { InvalidArgumentError } from './errors.js';

const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const;
type Unit = keyof typeof UNIT_MS;

/** Units from largest to smallest; a duration names each at most once, in this order. */
const UNIT_ORDER: readonly Unit[] = ['d', 'h', 'm', 's', 'ms'];

// "ms" must be tried before "m" so that "500ms" is not read as 500 minutes and a stray "s".
const COMPONENT = /(\d+(?:\.\d+)?)(ms|d|h|m|s)/y;

const EXAMPLES = 'for example "500ms", "30s", "5m", "2h30m" or "1d"';

/**
 * Parses a duration such as `500ms`, `30s`, `5m`, `1h`, `2h30m` or `1d` into milliseconds.
 * Components may carry a decimal fraction (`1.5h`) and must come largest unit first, each unit
 * at most once. The result is rounded to whole milliseconds.
 *
 * @param text the duration as written by the user; surrounding whitespace is ignored.
 * @param field the flag or config key the text came from, named in the error.
 * @throws InvalidArgumentError naming `field` when the text is empty, lacks a unit (a bare
 *   number is ambiguous), uses an unknown unit, or repeats or misorders units.
 */
export function parseDuration(text: string, field: string): number {
  const input = text.trim();
  if (input === '') {
    throw new InvalidArgumentError(field, `empty duration; write one ${EXAMPLES}`);
  }
  if (/^\d+(\.\d+)?$/.test(input)) {
    throw new InvalidArgumentError(
      field,
      `"${input}" has no unit; write ${input}s, ${input}m or ${input}h (units: ms, s, m, h, d)`,
    );
  }
  let total = 0;
  let lastRank = -1;
  COMPONENT.lastIndex = 0;
  while (COMPONENT.lastIndex < input.length) {
    const match = COMPONENT.exec(input);
    if (match === null) {
      throw new InvalidArgumentError(
        field,
        `invalid duration "${input}"; write one ${EXAMPLES} (units: ms, s, m, h, d)`,
      );
    }
    const unit = match[2] as Unit;
    const rank = UNIT_ORDER.indexOf(unit);
    if (rank <= lastRank) {
      throw new InvalidArgumentError(
        field,
        `invalid duration "${input}": units must go from largest to smallest, each once (e.g. "1h30m")`,
      );
    }
    lastRank = rank;
    total += Number(match[1]) * UNIT_MS[unit];
  }
  const ms = Math.round(total);
  if (!Number.isSafeInteger(ms)) {
    throw new InvalidArgumentError(field, `duration "${input}" is too large`);
  }
  return ms;
}

/**
 * Formats milliseconds as the shortest duration `parseDuration` reads back, largest unit first:
 * `1h30m`, `45s`, `250ms`, `1d2h`, `0s`. Fractions of a millisecond are rounded.
 */
export function formatDuration(ms: number): string {
  let rest = Math.round(Math.abs(ms));
  if (rest === 0) return '0s';
  let out = ms < 0 ? '-' : '';
  for (const unit of UNIT_ORDER) {
    const size = UNIT_MS[unit];
    const count = Math.floor(rest / size);
    if (count > 0) {
      out += `${count}${unit}`;
      rest -= count * size;
    }
  }
  return out;
}

/** A google.protobuf.Duration as the generated code represents it. */
export interface ProtoDuration {
  seconds: number;
  nanos: number;
}

/** Converts milliseconds to a google.protobuf.Duration (seconds and nanos share one sign). */
export function durationToProto(ms: number): ProtoDuration {
  const whole = Math.round(ms);
  const seconds = Math.trunc(whole / 1000);
  // `%` keeps the dividend's sign, as the Duration spec requires of nanos; `+ 0` turns -0 into 0.
  return { seconds: seconds + 0, nanos: (whole % 1000) * 1_000_000 + 0 };
}

/** Converts a google.protobuf.Duration to milliseconds; an unset duration stays undefined. */
export function durationFromProto(d?: ProtoDuration): number | undefined {
  if (d === undefined) return undefined;
  return d.seconds * 1000 + Math.round(d.nanos / 1_000_000);
}
