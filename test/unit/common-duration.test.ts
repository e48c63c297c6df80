import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  durationFromProto,
  durationToProto,
  formatDuration,
  parseDuration,
} from '../../common/duration.js';
import { InvalidArgumentError } from '../../common/errors.js';

void describe('parseDuration', () => {
  void it('reads every unit and combinations, largest first', () => {
    assert.equal(parseDuration('500ms', 'f'), 500);
    assert.equal(parseDuration('30s', 'f'), 30_000);
    assert.equal(parseDuration('5m', 'f'), 300_000);
    assert.equal(parseDuration('1h', 'f'), 3_600_000);
    assert.equal(parseDuration('2h30m', 'f'), 9_000_000);
    assert.equal(parseDuration('1d', 'f'), 86_400_000);
    assert.equal(parseDuration('1m30s250ms', 'f'), 90_250);
    assert.equal(parseDuration('0s', 'f'), 0);
  });

  void it('accepts fractions and surrounding blanks', () => {
    assert.equal(parseDuration('1.5h', 'f'), 5_400_000);
    assert.equal(parseDuration(' 1.1s ', 'f'), 1_100);
  });

  void it('refuses a bare number, naming the field and suggesting a unit', () => {
    assert.throws(
      () => parseDuration('30', '--timeout'),
      (err: unknown) =>
        err instanceof InvalidArgumentError &&
        err.field === '--timeout' &&
        /no unit/.test(err.message) &&
        err.message.includes('30s'),
    );
  });

  for (const bad of ['', '  ', '5x', '1h 30m', '30m1h', '1h1h', '-5s', '5S', 'h', '1.s', 's5']) {
    void it(`refuses ${JSON.stringify(bad)}`, () => {
      assert.throws(
        () => parseDuration(bad, '--backoff'),
        (err: unknown) => err instanceof InvalidArgumentError && err.field === '--backoff',
      );
    });
  }
});

void describe('formatDuration', () => {
  void it('uses the largest units and omits zero parts', () => {
    assert.equal(formatDuration(5_400_000), '1h30m');
    assert.equal(formatDuration(45_000), '45s');
    assert.equal(formatDuration(250), '250ms');
    assert.equal(formatDuration(93_600_000), '1d2h');
    assert.equal(formatDuration(1_500), '1s500ms');
    assert.equal(formatDuration(0), '0s');
    assert.equal(formatDuration(-30_000), '-30s');
  });

  void it('round-trips through parseDuration', () => {
    for (const ms of [1, 999, 1_000, 61_001, 3_600_000, 90_061_001]) {
      assert.equal(parseDuration(formatDuration(ms), 'f'), ms);
    }
  });
});

void describe('durationToProto / durationFromProto', () => {
  void it('splits milliseconds into seconds and nanos', () => {
    assert.deepEqual(durationToProto(1_500), { seconds: 1, nanos: 500_000_000 });
    assert.deepEqual(durationToProto(30_000), { seconds: 30, nanos: 0 });
    assert.deepEqual(durationToProto(250), { seconds: 0, nanos: 250_000_000 });
  });

  void it('gives seconds and nanos the same sign', () => {
    assert.deepEqual(durationToProto(-1_500), { seconds: -1, nanos: -500_000_000 });
    assert.deepEqual(durationToProto(-500), { seconds: 0, nanos: -500_000_000 });
  });

  void it('converts back, leaving an unset duration unset', () => {
    assert.equal(durationFromProto({ seconds: 1, nanos: 500_000_000 }), 1_500);
    assert.equal(durationFromProto({ seconds: 0, nanos: 1_400_000 }), 1);
    assert.equal(durationFromProto(undefined), undefined);
    assert.equal(durationFromProto(durationToProto(123_456)), 123_456);
  });
});
