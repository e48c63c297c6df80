import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  estimatedIssuedAtMs,
  renewalDelayMs,
  renewalRetryDelayMs,
  SERVER_BACKDATE_MS,
} from '../../agent/renewal.js';

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

/** A certificate as the server issues it at `issuedMs`: notBefore back-dated by 5 minutes. */
function issued(issuedMs: number, ttlMs: number) {
  return {
    notBefore: new Date(issuedMs - SERVER_BACKDATE_MS),
    notAfter: new Date(issuedMs + ttlMs),
  };
}

void describe('renewalDelayMs', () => {
  const now = Date.parse('2025-06-01T12:00:00Z');

  void it('renews a fresh 1 h certificate 40-50 % into its real lifetime', () => {
    const cert = issued(now, HOUR);
    assert.equal(
      renewalDelayMs(cert, now, () => 0),
      0.4 * HOUR,
    );
    assert.equal(
      renewalDelayMs(cert, now, () => 0.5),
      0.45 * HOUR,
    );
    for (let i = 0; i < 50; i++) {
      const d = renewalDelayMs(cert, now);
      assert.ok(d >= 0.4 * HOUR && d <= 0.5 * HOUR, String(d));
    }
  });

  void it('handles lifetimes shorter than the back-dating (tests use 30 s certificates)', () => {
    const cert = issued(now, 30_000);
    const d = renewalDelayMs(cert, now, () => 0.5);
    assert.equal(d, 13_500);
  });

  void it('counts from notBefore when the certificate is not back-dated', () => {
    const cert = { notBefore: new Date(now), notAfter: new Date(now + 2 * MINUTE) };
    assert.equal(
      renewalDelayMs(cert, now, () => 0),
      0.4 * 2 * MINUTE,
    );
  });

  void it('renews at once when the agent starts late in the lifetime', () => {
    const cert = issued(now - 40 * MINUTE, HOUR);
    assert.equal(
      renewalDelayMs(cert, now, () => 0.5),
      0,
    );
  });

  void it('does not push renewal out when the local clock is behind the server', () => {
    const cert = issued(now + 2 * MINUTE, HOUR); // the server's clock is 2 minutes ahead
    assert.equal(estimatedIssuedAtMs(cert, now), now);
    assert.ok(
      renewalDelayMs(cert, now, () => 1) <= 0.5 * (HOUR + 2 * MINUTE),
      'renewalDelayMs(cert, now, () => 1) <= 0.5 * (HOUR + 2 * MINUTE)',
    );
  });
});

void describe('renewalRetryDelayMs', () => {
  const now = 1_000_000;

  void it('doubles from 1 s up to 30 s while plenty of time is left', () => {
    const notAfter = now + HOUR;
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 10].map((a) => renewalRetryDelayMs(a, notAfter, now)),
      [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000],
    );
  });

  void it('keeps several tries before expiry, and a floor of 500 ms', () => {
    assert.equal(renewalRetryDelayMs(10, now + 60_000, now), 6_000);
    assert.equal(renewalRetryDelayMs(10, now + 1_000, now), 500);
    assert.equal(renewalRetryDelayMs(10, now - 1_000, now), 500);
  });
});
