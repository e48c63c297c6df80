/** What a leader fires for a due task: one-time schedules, and the REPLACE overlap policy's batch. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import type { Schedule } from '../../server/tasks/records.js';
import { firstRunAt, planDueFirings } from '../../server/tasks/schedule-firing.js';

const at = (iso: string) => Date.parse(iso);
const now = at('2026-05-10T10:20:00Z');
const everySecond = (overlap: 'allow' | 'forbid' | 'replace'): Schedule => ({
  kind: 'cron',
  expression: '* * * * * *',
  timeZone: 'UTC',
  overlap,
  missed: 'skip',
  catchUpWindowMs: 3600_000,
});

void describe('due firings of a schedule', () => {
  void test('a one-time schedule fires once at its time and then has no next run', () => {
    const schedule: Schedule = { kind: 'once', runAtMs: now - 60_000 };
    assert.deepEqual(planDueFirings(schedule, now - 60_000, now, 15_000), {
      fire: [now - 60_000],
      skipped: 0,
      nextRunAt: null,
    });
  });

  void test('ALLOW and FORBID keep every firing within the threshold', () => {
    for (const overlap of ['allow', 'forbid'] as const) {
      const plan = planDueFirings(everySecond(overlap), now - 4000, now, 15_000);
      assert.deepEqual(plan.fire, [now - 4000, now - 3000, now - 2000, now - 1000, now]);
      assert.equal(plan.skipped, 0);
      assert.equal(plan.nextRunAt, now + 1000);
    }
  });

  void test('REPLACE creates only the latest firing of a batch and counts the rest skipped', () => {
    const plan = planDueFirings(everySecond('replace'), now - 4000, now, 15_000);
    assert.deepEqual(plan, { fire: [now], skipped: 4, nextRunAt: now + 1000 });
  });

  void test('the first run: a one-time time as given, a cron schedule its next firing', () => {
    assert.equal(firstRunAt({ kind: 'once', runAtMs: now + 5000 }, now), now + 5000);
    assert.equal(firstRunAt(everySecond('allow'), now), now + 1000);
  });
});
