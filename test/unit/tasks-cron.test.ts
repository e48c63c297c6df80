/** Cron next-fire times across time zones and DST, the missed-run plan, and retry backoff. */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../common/errors.js';
import { retryDelayMs } from '../../server/tasks/backoff.js';
import { nextFiring, planCronFirings, validateCron } from '../../server/tasks/cron.js';

const at = (iso: string) => Date.parse(iso);
const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

/** The next `n` firings after `fromIso`, as UTC ISO strings. */
function next(expr: string, zone: string, fromIso: string, n: number): (string | null)[] {
  const out: (string | null)[] = [];
  let t: number | null = at(fromIso);
  for (let i = 0; i < n && t !== null; i++) {
    t = nextFiring(expr, zone, t);
    out.push(iso(t));
  }
  return out;
}

void describe('next firing', () => {
  void test('evaluates in the task time zone', () => {
    assert.deepEqual(next('30 9 * * *', 'UTC', '2026-06-01T00:00:00Z', 1), [
      '2026-06-01T09:30:00.000Z',
    ]);
    assert.deepEqual(next('30 9 * * *', 'Asia/Tokyo', '2026-06-01T00:00:00Z', 1), [
      '2026-06-01T00:30:00.000Z',
    ]);
    assert.deepEqual(next('30 9 * * *', 'America/New_York', '2026-06-01T00:00:00Z', 1), [
      '2026-06-01T13:30:00.000Z',
    ]);
    assert.deepEqual(next('0 0 * * 1', 'Europe/Berlin', '2026-06-01T00:00:00Z', 1), [
      '2026-06-07T22:00:00.000Z',
    ]);
  });

  void test('a seconds field fires every matching second', () => {
    assert.deepEqual(next('*/20 * * * * *', 'UTC', '2026-03-29T00:00:00Z', 3), [
      '2026-03-29T00:00:20.000Z',
      '2026-03-29T00:00:40.000Z',
      '2026-03-29T00:01:00.000Z',
    ]);
  });

  void test('spring forward: a fixed-time job in the gap runs right after it; interval jobs skip the gap', () => {
    // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT.
    assert.deepEqual(next('30 2 * * *', 'America/New_York', '2026-03-07T12:00:00Z', 2), [
      '2026-03-08T07:00:00.000Z', // 03:00 EDT, the first valid time after the gap
      '2026-03-09T06:30:00.000Z', // 02:30 EDT the next day
    ]);
    assert.deepEqual(next('*/30 * * * *', 'America/New_York', '2026-03-08T06:00:00Z', 3), [
      '2026-03-08T06:30:00.000Z', // 01:30 EST
      '2026-03-08T07:00:00.000Z', // 03:00 EDT: 02:00 and 02:30 do not exist
      '2026-03-08T07:30:00.000Z',
    ]);
  });

  void test('fall back: a fixed-time job runs once; interval jobs run in both passes', () => {
    // New York, 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:xx happens twice.
    assert.deepEqual(next('30 1 * * *', 'America/New_York', '2026-10-31T12:00:00Z', 2), [
      '2026-11-01T05:30:00.000Z', // 01:30 EDT, first occurrence only
      '2026-11-02T06:30:00.000Z',
    ]);
    assert.deepEqual(next('*/30 * * * *', 'America/New_York', '2026-11-01T04:50:00Z', 5), [
      '2026-11-01T05:00:00.000Z', // 01:00 EDT
      '2026-11-01T05:30:00.000Z', // 01:30 EDT
      '2026-11-01T06:00:00.000Z', // 01:00 EST
      '2026-11-01T06:30:00.000Z', // 01:30 EST
      '2026-11-01T07:00:00.000Z', // 02:00 EST
    ]);
  });

  void test('Europe: hourly jobs skip the missing hour', () => {
    assert.deepEqual(next('0 0 * * * *', 'Europe/Berlin', '2026-03-29T00:00:00Z', 2), [
      '2026-03-29T01:00:00.000Z', // 03:00 CEST; 02:00 does not exist
      '2026-03-29T02:00:00.000Z',
    ]);
  });

  void test('bad expressions and zones are refused naming the field', () => {
    const bad: [string, string, RegExp][] = [
      ['61 * * * *', 'UTC', /^task\.cron\.expression: is not a valid cron expression/],
      ['* * * *', 'UTC', /^task\.cron\.expression: has 4 fields/],
      ['', 'UTC', /^task\.cron\.expression: is required/],
      ['* * * * *', 'Mars/Olympus', /^task\.cron\.time_zone:/],
      ['0 0 30 2 *', 'UTC', /^task\.cron\.expression: /],
    ];
    for (const [expr, zone, re] of bad) {
      assert.throws(
        () => validateCron(expr, zone, 'task.cron'),
        (err: unknown) => err instanceof InvalidArgumentError && re.test(err.message),
        `${expr} ${zone}`,
      );
    }
    validateCron('@hourly', 'UTC', 'task.cron');
  });
});

void describe('missed-run plan', () => {
  const base = {
    expression: '0 * * * *',
    timeZone: 'UTC',
    thresholdMs: 15_000,
    catchUpWindowMs: 3 * 3600_000,
  };
  const now = at('2026-05-10T10:20:00Z');

  void test('firings within the threshold are all created (a leader failover loses none)', () => {
    const plan = planCronFirings({
      ...base,
      expression: '* * * * * *',
      nextRunAt: now - 4000,
      now,
      missed: 'skip',
    });
    assert.equal(plan.fire.length, 5);
    assert.equal(plan.skipped, 0);
    assert.equal(plan.nextRunAt, now + 1000);
  });

  void test('SKIP drops missed firings and resumes in the future', () => {
    const plan = planCronFirings({
      ...base,
      nextRunAt: at('2026-05-10T07:00:00Z'),
      now,
      missed: 'skip',
    });
    assert.deepEqual(plan.fire, []);
    assert.equal(plan.skipped, 4);
    assert.equal(iso(plan.nextRunAt), '2026-05-10T11:00:00.000Z');
  });

  void test('CATCH_UP_ONCE runs only the latest missed firing inside the window', () => {
    const plan = planCronFirings({
      ...base,
      nextRunAt: at('2026-05-10T07:00:00Z'),
      now,
      missed: 'catch_up_once',
    });
    assert.deepEqual(plan.fire.map(iso), ['2026-05-10T10:00:00.000Z']);
    assert.equal(plan.skipped, 3);
    const narrow = planCronFirings({
      ...base,
      catchUpWindowMs: 10 * 60_000,
      nextRunAt: at('2026-05-10T07:00:00Z'),
      now,
      missed: 'catch_up_once',
    });
    assert.deepEqual(
      narrow.fire,
      [],
      'the latest missed firing is 20 minutes old, outside a 10 minute window',
    );
  });

  void test('a backlog larger than one transaction is created in batches', () => {
    const plan = planCronFirings({
      ...base,
      expression: '* * * * * *',
      thresholdMs: 60_000,
      nextRunAt: now - 45_000,
      now,
      missed: 'skip',
    });
    assert.equal(plan.fire.length, 30);
    assert.equal(plan.skipped, 0);
    assert.equal(plan.nextRunAt, now - 15_000, 'the rest stays due for the next transaction');
  });

  void test('a very old backlog is not enumerated firing by firing', () => {
    const plan = planCronFirings({
      ...base,
      expression: '* * * * * *',
      nextRunAt: now - 30 * 86_400_000,
      now,
      missed: 'skip',
    });
    assert.deepEqual(plan.fire.length, 16, 'the firings inside the 15 s threshold still run');
    assert.equal(plan.nextRunAt, now + 1000);
  });
});

void describe('retry backoff', () => {
  const policy = {
    maxAttempts: 5,
    initialBackoffMs: 1000,
    maxBackoffMs: 5000,
    multiplier: 2,
    jitter: 0,
  };
  void test('grows exponentially up to the cap', () => {
    assert.deepEqual(
      [1, 2, 3, 4, 5].map((a) => retryDelayMs(policy, a)),
      [1000, 2000, 4000, 5000, 5000],
    );
  });
  void test('jitter takes away up to its fraction', () => {
    const jittery = { ...policy, jitter: 0.5 };
    assert.equal(
      retryDelayMs(jittery, 2, () => 0),
      2000,
    );
    assert.equal(
      retryDelayMs(jittery, 2, () => 0.999),
      1001,
    );
    for (let i = 0; i < 100; i++) {
      const d = retryDelayMs(jittery, 3);
      assert.ok(d >= 2000 && d <= 4000, String(d));
    }
  });
});
