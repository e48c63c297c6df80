/**
 * Cron schedules: parsing and next-firing computation (croner; Vixie-cron DST behaviour, see
 * CronSchedule in the proto), and the missed-run decision for a due task. Pure functions.
 */
import { Cron } from 'croner';
import { InvalidArgumentError } from '../../common/errors.js';

const compiled = new Map<string, Cron>();

/** A compiled expression, cached (tasks share few distinct expressions). */
function cronFor(expression: string, timeZone: string): Cron {
  const cacheKey = `${timeZone}\0${expression}`;
  let cron = compiled.get(cacheKey);
  if (!cron) {
    cron = new Cron(expression, { timezone: timeZone, paused: true, mode: 'auto' });
    if (compiled.size > 10_000) compiled.clear();
    compiled.set(cacheKey, cron);
  }
  return cron;
}

/** True if `zone` is an IANA time zone this runtime knows. */
export function isValidTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return zone.length > 0;
  } catch {
    return false;
  }
}

/**
 * Validates a cron expression: 5 fields, 6 with a leading seconds field, or an @nickname.
 * @throws InvalidArgumentError naming `field`.
 */
export function validateCron(expression: string, timeZone: string, field: string): void {
  const trimmed = expression.trim();
  if (trimmed === '') throw new InvalidArgumentError(`${field}.expression`, 'is required');
  if (!trimmed.startsWith('@')) {
    const n = trimmed.split(/\s+/).length;
    if (n !== 5 && n !== 6) {
      throw new InvalidArgumentError(
        `${field}.expression`,
        `has ${n} fields; use 5 ("min hour dom month dow") or 6 with a leading seconds field`,
      );
    }
  }
  if (!isValidTimeZone(timeZone)) {
    throw new InvalidArgumentError(
      `${field}.time_zone`,
      `${JSON.stringify(timeZone)} is not an IANA time zone (for example "Europe/Berlin")`,
    );
  }
  let cron: Cron;
  try {
    cron = cronFor(trimmed, timeZone);
  } catch (err) {
    const reason = err instanceof Error ? err.message.replace(/^CronPattern: /, '') : 'invalid';
    throw new InvalidArgumentError(
      `${field}.expression`,
      `is not a valid cron expression: ${reason}`,
    );
  }
  if (cron.nextRun(new Date()) === null) {
    throw new InvalidArgumentError(`${field}.expression`, 'never fires');
  }
}

/** The first firing strictly after `afterMs`, or null if the expression never fires again. */
export function nextFiring(expression: string, timeZone: string, afterMs: number): number | null {
  const next = cronFor(expression.trim(), timeZone).nextRun(new Date(afterMs));
  return next ? next.getTime() : null;
}

export interface DuePlan {
  /** Firing times to create executions for, oldest first. */
  fire: number[];
  /** How many due firings were dropped as missed (counted up to 10,000). */
  skipped: number;
  /** The task's new nextRunAt: the first firing after `now`, or null. */
  nextRunAt: number | null;
}

/**
 * Decides what a leader does with a cron task whose `nextRunAt` is due at `now`: firings no
 * more than `thresholdMs` late are all created; older ones are missed and follow the policy
 * (`skip`, or `catch_up_once` within `catchUpWindowMs`). See docs/architecture.md.
 */
export function planCronFirings(args: {
  expression: string;
  timeZone: string;
  nextRunAt: number;
  now: number;
  thresholdMs: number;
  missed: 'skip' | 'catch_up_once';
  catchUpWindowMs: number;
  /**
   * Most firings to create in one go (one etcd transaction). Past it, `nextRunAt` stays at the
   * first firing not created, which is still due, so the caller simply fires again. @default 30
   */
  maxFirings?: number;
}): DuePlan {
  const { expression, timeZone, now, thresholdMs } = args;
  const maxFirings = args.maxFirings ?? 30;
  const horizon = Math.max(thresholdMs, args.missed === 'catch_up_once' ? args.catchUpWindowMs : 0);
  let skipped = 0;
  let t: number | null = args.nextRunAt;
  // Firings older than the horizon can neither run nor be caught up: count them (up to a
  // bound) and jump past them.
  if (t < now - horizon) {
    let counted = 0;
    while (t !== null && t < now - horizon && counted < 10_000) {
      counted++;
      t = nextFiring(expression, timeZone, t);
    }
    skipped += counted;
    if (t !== null && t < now - horizon) t = nextFiring(expression, timeZone, now - horizon - 1);
  }
  const fire: number[] = [];
  let latestMissed: number | null = null;
  while (t !== null && t <= now) {
    if (now - t > thresholdMs) {
      if (latestMissed !== null) skipped++;
      latestMissed = t;
    } else if (fire.length < maxFirings) {
      fire.push(t);
    } else {
      break; // the rest of the backlog goes in the next transaction
    }
    t = nextFiring(expression, timeZone, t);
  }
  if (latestMissed !== null) {
    if (args.missed === 'catch_up_once' && now - latestMissed <= args.catchUpWindowMs) {
      fire.unshift(latestMissed);
    } else {
      skipped++;
    }
  }
  return { fire, skipped, nextRunAt: t };
}
