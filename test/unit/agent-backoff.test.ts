import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  Backoff,
  fullJitterDelayMs,
  RECONNECT_BACKOFF,
  slowRetryDelayMs,
} from '../../agent/backoff.js';

const almostOne = () => 0.999999;

void describe('fullJitterDelayMs', () => {
  void it('draws below a ceiling that doubles from 100 ms and stops at 5 s', () => {
    const ceilings = [0, 1, 2, 3, 4, 5, 6, 7, 20].map((a) =>
      fullJitterDelayMs(a, RECONNECT_BACKOFF, almostOne),
    );
    assert.deepEqual(ceilings, [99, 199, 399, 799, 1599, 3199, 4999, 4999, 4999]);
  });

  void it('can be zero (full jitter) and never goes negative or above the cap', () => {
    assert.equal(
      fullJitterDelayMs(3, RECONNECT_BACKOFF, () => 0),
      0,
    );
    for (let attempt = 0; attempt < 2000; attempt += 7) {
      const d = fullJitterDelayMs(attempt, RECONNECT_BACKOFF);
      assert.ok(d >= 0 && d < RECONNECT_BACKOFF.maxMs, `attempt ${attempt}: ${d}`);
    }
  });
});

void describe('Backoff', () => {
  void it('grows with each failure and starts again after reset()', () => {
    const backoff = new Backoff({ initialMs: 100, maxMs: 5_000 }, () => 0.5);
    assert.deepEqual(
      Array.from({ length: 8 }, () => backoff.next()),
      [50, 100, 200, 400, 800, 1600, 2500, 2500],
    );
    assert.equal(backoff.attempts, 8);
    backoff.reset();
    assert.equal(backoff.attempts, 0);
    assert.equal(backoff.next(), 50);
  });
});

void describe('slowRetryDelayMs', () => {
  void it('stays between half the base and the base', () => {
    assert.equal(
      slowRetryDelayMs(30_000, () => 0),
      15_000,
    );
    assert.equal(slowRetryDelayMs(30_000, almostOne), 29_999);
    for (let i = 0; i < 100; i++) {
      const d = slowRetryDelayMs(30_000);
      assert.ok(d >= 15_000 && d <= 30_000, 'd >= 15_000 && d <= 30_000');
    }
  });
});
