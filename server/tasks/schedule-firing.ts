/**
 * When a task's schedule fires: its first run from a given time, and what a leader fires for a
 * due task (a one-time run, or the cron firings left by the missed-run and REPLACE overlap
 * policies). Pure functions; the rules are in docs/architecture.md.
 */
import { nextFiring, planCronFirings, type DuePlan } from './cron.js';
import type { Schedule } from './records.js';

/** When a schedule first fires, from `now`. */
export function firstRunAt(schedule: Schedule, now: number): number | null {
  if (schedule.kind === 'once') return Math.max(schedule.runAtMs, 0);
  return nextFiring(schedule.expression, schedule.timeZone, now);
}

/**
 * The firings to create for a schedule whose `nextRunAt` is due at `now`, the due firings
 * dropped, and the schedule's next run (none after a one-time firing).
 */
export function planDueFirings(
  schedule: Schedule,
  nextRunAt: number,
  now: number,
  missedRunThresholdMs: number,
): DuePlan {
  if (schedule.kind === 'once') return { fire: [nextRunAt], skipped: 0, nextRunAt: null };
  const plan = planCronFirings({
    expression: schedule.expression,
    timeZone: schedule.timeZone,
    nextRunAt,
    now,
    thresholdMs: missedRunThresholdMs,
    missed: schedule.missed,
    catchUpWindowMs: schedule.catchUpWindowMs,
  });
  if (schedule.overlap === 'replace' && plan.fire.length > 1) {
    // Each firing would cancel the one before it: only the latest of a batch is created.
    return { ...plan, fire: plan.fire.slice(-1), skipped: plan.skipped + plan.fire.length - 1 };
  }
  return plan;
}
