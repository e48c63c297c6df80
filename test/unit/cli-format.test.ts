import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { protoDurations } from '../../cli/session.js';
import {
  Execution,
  ExecutionState,
  ExecutionTrigger,
  FailureReason,
} from '../../gen/citadel/v1/execution.js';
import { Priority, Task } from '../../gen/citadel/v1/task.js';
import {
  executionDetails,
  executionsTable,
  formatSchedule,
  formatTimestamp,
  renderTable,
  sanitize,
  stateName,
  taskDetails,
  tasksTable,
  watchEventLine,
} from '../../cli/format.js';

void describe('renderTable', () => {
  void it('aligns each column to its widest cell, header first, no trailing blanks', () => {
    const out = renderTable(
      ['ID', 'NAME', 'X'],
      [
        ['a', 'longer-name', '1'],
        ['bbbb', 'n', ''],
      ],
    );
    assert.equal(out, ['ID     NAME          X', 'a      longer-name   1', 'bbbb   n'].join('\n'));
  });

  void it('prints just the header for no rows', () => {
    assert.equal(renderTable(['ID', 'STATE'], []), 'ID   STATE');
  });

  void it('starts every column at the same offset on every line', () => {
    const lines = tasksTable([
      Task.fromPartial({ id: 't_1', type: 'a', schedule: { $case: 'oneTime', value: {} } }),
      Task.fromPartial({ id: 't_long_id', type: 'container.run', labels: { b: '2', a: '1' } }),
    ]).split('\n');
    const header = lines[0] ?? '';
    const offset = header.indexOf('TYPE');
    assert.equal(lines[1]?.indexOf('a '), offset);
    assert.equal(lines[2]?.indexOf('container.run'), offset);
    assert.match(lines[2] ?? '', /a=1,b=2$/);
    assert.equal(header, header.trimEnd());
  });
});

void describe('formatSchedule', () => {
  void it('renders one-time schedules in UTC without zero milliseconds', () => {
    const task = Task.fromPartial({
      schedule: { $case: 'oneTime', value: { runAt: new Date('2026-11-24T11:00:00+01:00') } },
    });
    assert.equal(formatSchedule(task), 'once 2026-11-24T10:00:00Z');
    assert.equal(
      formatSchedule({ schedule: { $case: 'oneTime', value: { runAt: undefined } } }),
      'once now',
    );
  });

  void it('renders cron schedules with the expression quoted and the zone, UTC by default', () => {
    const cron = (timeZone: string): Pick<Task, 'schedule'> =>
      Task.fromPartial({
        schedule: { $case: 'cron', value: { expression: '*/5 * * * *', timeZone } },
      });
    assert.equal(formatSchedule(cron('Europe/Berlin')), 'cron "*/5 * * * *" Europe/Berlin');
    assert.equal(formatSchedule(cron('')), 'cron "*/5 * * * *" UTC');
  });

  void it('renders a missing schedule as "-"', () => {
    assert.equal(formatSchedule({ schedule: undefined }), '-');
  });
});

void describe('timestamps and enums', () => {
  void it('formats timestamps as ISO UTC, keeping non-zero milliseconds', () => {
    assert.equal(formatTimestamp(new Date('2026-01-01T00:00:00Z')), '2026-01-01T00:00:00Z');
    assert.equal(formatTimestamp(new Date('2026-01-01T00:00:00.250Z')), '2026-01-01T00:00:00.250Z');
    assert.equal(formatTimestamp(undefined), '-');
  });

  void it('lower-cases states without their prefix', () => {
    assert.equal(stateName(ExecutionState.EXECUTION_STATE_TIMED_OUT), 'timed_out');
    assert.equal(stateName(ExecutionState.EXECUTION_STATE_PENDING), 'pending');
    assert.equal(stateName(ExecutionState.UNRECOGNIZED), 'unknown');
  });
});

void describe('task and execution output', () => {
  const task = Task.fromPartial({
    id: 't_1',
    type: 'container.run',
    schedule: { $case: 'cron', value: { expression: '@hourly', timeZone: 'UTC' } },
    priority: Priority.PRIORITY_LOW,
    enabled: true,
    nextRunTime: new Date('2026-11-24T10:00:00Z'),
    labels: { team: 'billing' },
  });

  void it('fills the task table columns', () => {
    const [header, row] = tasksTable([task]).split('\n');
    assert.deepEqual(header?.split(/\s{2,}/), [
      'ID',
      'TYPE',
      'SCHEDULE',
      'PRIORITY',
      'ENABLED',
      'NEXT RUN',
      'LABELS',
    ]);
    assert.deepEqual(row?.split(/\s{2,}/), [
      't_1',
      'container.run',
      'cron "@hourly" UTC',
      'low',
      'true',
      '2026-11-24T10:00:00Z',
      'team=billing',
    ]);
  });

  const execution = Execution.fromPartial({
    id: 't_1-00000001-02',
    taskId: 't_1',
    attempt: 2,
    state: ExecutionState.EXECUTION_STATE_FAILED,
    trigger: ExecutionTrigger.EXECUTION_TRIGGER_RETRY,
    workerId: 'w-1',
    scheduledTime: new Date('2026-11-24T10:00:00Z'),
    startTime: new Date('2026-11-24T10:00:01Z'),
    endTime: new Date('2026-11-24T10:00:03Z'),
    result: {
      exitCode: 2,
      stdout: Buffer.from('line one\r\nline \x1b[2Jtwo\n'),
      stdoutTruncated: true,
      durationMs: 2000,
      reason: FailureReason.FAILURE_REASON_START_REFUSED,
      message: "the container engine refused to start the task's program",
      detail: 'exec: "/bin/nope\x1b[2J": no such file',
    },
  });

  void it('fills the execution table columns, "-" for what is unset', () => {
    const pending = Execution.fromPartial({
      id: 'e2',
      state: ExecutionState.EXECUTION_STATE_PENDING,
      attempt: 1,
    });
    const [header, row, row2] = executionsTable([execution, pending]).split('\n');
    assert.deepEqual(header?.split(/\s{2,}/), [
      'ID',
      'STATE',
      'ATTEMPT',
      'TRIGGER',
      'WORKER',
      'SCHEDULED',
      'STARTED',
      'ENDED',
      'EXIT',
    ]);
    assert.deepEqual(row?.split(/\s{2,}/), [
      't_1-00000001-02',
      'failed',
      '2',
      'retry',
      'w-1',
      '2026-11-24T10:00:00Z',
      '2026-11-24T10:00:01Z',
      '2026-11-24T10:00:03Z',
      '2',
    ]);
    assert.deepEqual(row2?.split(/\s{2,}/), [
      'e2',
      'pending',
      '1',
      'unspecified',
      '-',
      '-',
      '-',
      '-',
      '-',
    ]);
  });

  void it('prints a key: value block with captured output, control characters made visible', () => {
    const out = executionDetails(execution);
    assert.match(out, /^id: +t_1-00000001-02$/m);
    assert.match(out, /^state: +failed$/m);
    assert.match(out, /^exit code: +2$/m);
    assert.match(out, /^duration: +2s$/m);
    assert.match(out, /^reason: +start_refused$/m);
    assert.match(out, /^message: +the container engine refused to start the task's program$/m);
    assert.match(out, /^detail: +exec: "\/bin\/nope\\x1b\[2J": no such file$/m);
    assert.ok(
      out.includes('stdout:\n  line one\n  line \\x1b[2Jtwo\n  [truncated]'),
      "out.includes('stdout:\\n line one\\n line \\\\x1b[2Jtwo\\n [truncated]')",
    );
    assert.ok(!out.includes('\x1b'), "!out.includes('\\x1b')");
    const block = taskDetails(task);
    assert.match(block, /^schedule: +cron "@hourly" UTC$/m);
    assert.match(block, /^next run: +2026-11-24T10:00:00Z$/m);
    assert.match(block, /^retries: +none$/m);
  });

  void it('prints one watch line: time, id, state, worker', () => {
    assert.equal(
      watchEventLine({ execution, revision: 9, revisionComplete: true }),
      '2026-11-24T10:00:03Z  t_1-00000001-02  failed     w-1',
    );
  });

  void it('sanitize escapes control characters', () => {
    assert.equal(sanitize('a\x1b[31mb\nc'), 'a\\x1b[31mb\\x0ac');
    assert.equal(sanitize('a\nb\tc', true), 'a\nb\tc');
  });
});

void describe('JSON output', () => {
  void it('prints Durations as proto3 JSON strings', () => {
    const json = JSON.stringify(
      {
        task: {
          timeout: { seconds: 90, nanos: 0 },
          retryPolicy: { initialBackoff: { seconds: 0, nanos: 250_000_000 } },
        },
      },
      protoDurations,
    );
    assert.equal(json, '{"task":{"timeout":"90s","retryPolicy":{"initialBackoff":"0.25s"}}}');
  });
});
