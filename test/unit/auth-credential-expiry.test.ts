/**
 * The expiry timer of an open stream's credential: fires once the clock reaches the deadline,
 * re-arming when a timer runs early or the deadline is beyond setTimeout's limit. A fake clock
 * decides exactly when each timer runs and what the wall clock then says.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MAX_TIMER_DELAY_MS,
  whenExpired,
  type ExpiryClock,
} from '../../server/auth/credential-expiry.js';

/** A clock whose time moves only when told, and whose armed timers a test runs by hand. */
class FakeClock implements ExpiryClock {
  time = 1_000_000;
  /** Timers armed and not yet run or cleared, with the delay each was armed for. */
  armed: { fire: () => void; delayMs: number }[] = [];
  cleared = 0;

  now(): number {
    return this.time;
  }

  setTimeout(fire: () => void, delayMs: number): unknown {
    const timer = { fire, delayMs };
    this.armed.push(timer);
    return timer;
  }

  clearTimeout(handle: unknown): void {
    const i = this.armed.indexOf(handle as FakeClock['armed'][number]);
    if (i >= 0) {
      this.armed.splice(i, 1);
      this.cleared++;
    }
  }

  /** Runs the one armed timer with the wall clock at `time`. */
  runAt(time: number): void {
    assert.equal(this.armed.length, 1, 'exactly one timer armed');
    this.time = time;
    this.armed.shift()!.fire();
  }
}

void describe('credential expiry timer', () => {
  void test('a timer run before the wall clock reaches the deadline re-arms for the rest', () => {
    const clock = new FakeClock();
    const deadline = clock.time + 5000;
    let expired = 0;
    whenExpired(deadline, () => expired++, clock);
    assert.equal(clock.armed[0]!.delayMs, 5000);
    // Node ran the timer 3 ms early, as it may when its loop time lags Date.now().
    clock.runAt(deadline - 3);
    assert.equal(expired, 0, 'not expired while the credential still holds');
    assert.equal(clock.armed[0]?.delayMs, 3, 're-armed for the 3 ms left');
    clock.runAt(deadline - 1);
    assert.equal(expired, 0, 'still not expired 1 ms before the deadline');
    clock.runAt(deadline);
    assert.equal(expired, 1, 'expired at the deadline');
    assert.equal(clock.armed.length, 0, 'nothing left armed');
  });

  void test('a deadline beyond setTimeout’s limit waits in steps and fires at the deadline', () => {
    const clock = new FakeClock();
    const deadline = clock.time + 90 * 86_400_000; // a 90-day service certificate
    let expired = 0;
    whenExpired(deadline, () => expired++, clock);
    assert.equal(clock.armed[0]!.delayMs, MAX_TIMER_DELAY_MS);
    clock.runAt(clock.time + MAX_TIMER_DELAY_MS);
    assert.equal(expired, 0, 'not expired after the first 24.8 days');
    clock.runAt(clock.time + MAX_TIMER_DELAY_MS);
    clock.runAt(clock.time + MAX_TIMER_DELAY_MS);
    assert.equal(clock.armed[0]!.delayMs, deadline - clock.time, 'the rest, under the limit');
    clock.runAt(deadline);
    assert.equal(expired, 1, 'expired at the deadline');
  });

  void test('a deadline already past fires on the next timer, not during the call', () => {
    const clock = new FakeClock();
    let expired = 0;
    whenExpired(clock.time - 10, () => expired++, clock);
    assert.equal(expired, 0, 'not called synchronously');
    assert.equal(clock.armed[0]!.delayMs, 0);
    clock.runAt(clock.time);
    assert.equal(expired, 1, 'expired on the timer');
  });

  void test('disarming clears the armed timer, also after a re-arm, and is idempotent', () => {
    const clock = new FakeClock();
    const deadline = clock.time + 100;
    let expired = 0;
    const disarm = whenExpired(deadline, () => expired++, clock);
    clock.runAt(deadline - 1);
    disarm();
    disarm();
    assert.equal(clock.armed.length, 0, 'the re-armed timer is cleared');
    assert.equal(clock.cleared, 1, 'cleared once');
    assert.equal(expired, 0, 'never expired');
  });

  void test('no deadline arms nothing', () => {
    const clock = new FakeClock();
    whenExpired(undefined, () => assert.fail('no deadline never expires'), clock)();
    assert.equal(clock.armed.length, 0, 'no timer');
  });

  void test('with Node’s own timers, none fires before Date.now() reaches its deadline', async () => {
    const start = Date.now();
    const fired = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) =>
          new Promise<{ deadline: number; at: number }>((resolve) => {
            const deadline = start + 20 + (i % 50);
            whenExpired(deadline, () => resolve({ deadline, at: Date.now() }));
          }),
      ),
    );
    const early = fired.filter((f) => f.at < f.deadline);
    assert.deepEqual(early, [], 'no timer fired early');
  });
});
