import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { InvalidArgumentError } from '../../common/errors.js';
import { ExecutionState } from '../../gen/citadel/v1/execution.js';
import { MissedRunPolicy, OverlapPolicy, Priority, Task } from '../../gen/citadel/v1/task.js';
import {
  buildListExecutionsRequest,
  buildWatchExecutionsRequest,
} from '../../cli/commands/execution.js';
import {
  buildCreateTaskRequest,
  buildListTasksRequest,
  buildUpdateTaskRequest,
  parseTaskUpdate,
  updateNeedsCurrentTask,
} from '../../cli/commands/task.js';
import { parseLabels } from '../../cli/flags.js';

/** Asserts that `fn` throws InvalidArgumentError for `field`. */
function throwsFor(fn: () => unknown, field: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      err instanceof InvalidArgumentError,
      `expected InvalidArgumentError, got ${String(err)}`,
    );
    assert.equal(err.field, field);
    if (message) assert.match(err.message, message);
    return true;
  });
}

void describe('buildCreateTaskRequest', () => {
  void it('without --run-at or --cron runs once, now (run_at unset)', () => {
    const { task } = buildCreateTaskRequest({ type: 'container.run' });
    assert.deepEqual(task?.schedule, { $case: 'oneTime', value: { runAt: undefined } });
    assert.equal(task?.type, 'container.run');
    assert.equal(task?.retryPolicy, undefined);
    assert.equal(task?.timeout, undefined);
    assert.equal(task?.payload, undefined);
  });

  void it('reads --run-at as an instant and "now" as unset', () => {
    const at = buildCreateTaskRequest({ type: 't', runAt: '2026-11-24T11:00:00+01:00' });
    assert.deepEqual(at.task?.schedule, {
      $case: 'oneTime',
      value: { runAt: new Date('2026-11-24T10:00:00Z') },
    });
    const now = buildCreateTaskRequest({ type: 't', runAt: 'now' });
    assert.deepEqual(now.task?.schedule, { $case: 'oneTime', value: { runAt: undefined } });
  });

  void it('builds a cron schedule with its details', () => {
    const { task } = buildCreateTaskRequest({
      type: 't',
      cron: '*/5 * * * *',
      tz: 'Europe/Berlin',
      overlap: 'forbid',
      missed: 'catch-up',
      catchUpWindow: '30m',
    });
    assert.deepEqual(task?.schedule, {
      $case: 'cron',
      value: {
        expression: '*/5 * * * *',
        timeZone: 'Europe/Berlin',
        overlapPolicy: OverlapPolicy.OVERLAP_POLICY_FORBID,
        missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE,
        catchUpWindow: { seconds: 1800, nanos: 0 },
      },
    });
  });

  void it('sets every other field from its flag', () => {
    const { task } = buildCreateTaskRequest({
      type: 't',
      payload: '{"image":"alpine","args":["-c","true"]}',
      priority: 'high',
      timeout: '1h30m',
      maxAttempts: '3',
      backoff: '500ms',
      maxBackoff: '1m',
      backoffMultiplier: '1.5',
      jitter: '0.2',
      idempotencyKey: 'k-1',
      label: ['team=billing', 'env=prod'],
    });
    assert.deepEqual(task?.payload, { image: 'alpine', args: ['-c', 'true'] });
    assert.equal(task?.priority, Priority.PRIORITY_HIGH);
    assert.deepEqual(task?.timeout, { seconds: 5400, nanos: 0 });
    assert.deepEqual(task?.retryPolicy, {
      maxAttempts: 3,
      initialBackoff: { seconds: 0, nanos: 500_000_000 },
      maxBackoff: { seconds: 60, nanos: 0 },
      backoffMultiplier: 1.5,
      jitter: 0.2,
    });
    assert.equal(task?.idempotencyKey, 'k-1');
    assert.deepEqual(task?.labels, { team: 'billing', env: 'prod' });
  });

  void it('reads the payload from --payload-file', () => {
    const dir = mkdtempSync(join(tmpdir(), 'citadelctl-'));
    try {
      const file = join(dir, 'payload.json');
      writeFileSync(file, '{"n": 1}\n');
      assert.deepEqual(buildCreateTaskRequest({ type: 't', payloadFile: file }).task?.payload, {
        n: 1,
      });
      throwsFor(
        () => buildCreateTaskRequest({ type: 't', payloadFile: join(dir, 'missing.json') }),
        '--payload-file',
        /ENOENT/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('refuses bad flags, naming each', () => {
    throwsFor(() => buildCreateTaskRequest({}), '--type');
    throwsFor(() => buildCreateTaskRequest({ type: 't', priority: 'urgent' }), '--priority');
    throwsFor(() => buildCreateTaskRequest({ type: 't', timeout: '30' }), '--timeout', /no unit/);
    throwsFor(() => buildCreateTaskRequest({ type: 't', timeout: '0s' }), '--timeout');
    throwsFor(() => buildCreateTaskRequest({ type: 't', payload: '{nope' }), '--payload', /JSON/);
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', payload: '[1,2]' }),
      '--payload',
      /JSON object, got an array/,
    );
    throwsFor(() => buildCreateTaskRequest({ type: 't', payload: 'null' }), '--payload');
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', payload: '{}', payloadFile: 'x' }),
      '--payload-file',
    );
    throwsFor(() => buildCreateTaskRequest({ type: 't', label: ['team'] }), '--label');
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', runAt: '2026-11-24T10:00:00' }),
      '--run-at',
      /zone/,
    );
    throwsFor(() => buildCreateTaskRequest({ type: 't', runAt: 'tomorrow' }), '--run-at');
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', runAt: 'now', cron: '@hourly' }),
      '--run-at',
    );
    throwsFor(() => buildCreateTaskRequest({ type: 't', tz: 'UTC' }), '--tz', /--cron/);
    throwsFor(() => buildCreateTaskRequest({ type: 't', cron: '@daily', tz: 'Mars/Base' }), '--tz');
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', cron: '@daily', overlap: 'x' }),
      '--overlap',
    );
    throwsFor(() => buildCreateTaskRequest({ type: 't', cron: '@daily', missed: 'x' }), '--missed');
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', cron: '@daily', catchUpWindow: '1h' }),
      '--catch-up-window',
      /--missed catch-up/,
    );
    throwsFor(() => buildCreateTaskRequest({ type: 't', maxAttempts: '0' }), '--max-attempts');
    throwsFor(() => buildCreateTaskRequest({ type: 't', maxAttempts: '2.5' }), '--max-attempts');
    throwsFor(() => buildCreateTaskRequest({ type: 't', jitter: '1.5' }), '--jitter');
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', backoffMultiplier: 'x' }),
      '--backoff-multiplier',
    );
    throwsFor(
      () => buildCreateTaskRequest({ type: 't', backoff: '10s', maxBackoff: '1s' }),
      '--max-backoff',
    );
  });
});

void describe('buildUpdateTaskRequest', () => {
  const stored = Task.fromPartial({
    id: 't_1',
    schedule: {
      $case: 'cron',
      value: {
        expression: '0 * * * *',
        timeZone: 'Europe/Berlin',
        overlapPolicy: OverlapPolicy.OVERLAP_POLICY_FORBID,
      },
    },
    retryPolicy: { maxAttempts: 3, initialBackoff: { seconds: 2, nanos: 0 }, jitter: 0.5 },
    etag: 'etag-7',
  });

  void it('masks exactly the fields given', () => {
    const cases: [Parameters<typeof buildUpdateTaskRequest>[1], string[]][] = [
      [{ priority: 'low' }, ['priority']],
      [{ type: 'x' }, ['type']],
      [{ payload: '{}' }, ['payload']],
      [{ timeout: '5m' }, ['timeout']],
      [{ label: ['a=b'] }, ['labels']],
      [{ runAt: 'now' }, ['one_time']],
      [{ cron: '@hourly' }, ['cron']],
      [{ jitter: '0.1' }, ['retry_policy']],
      [
        {
          label: ['a=b'],
          priority: 'high',
          cron: '@daily',
          tz: 'UTC',
          maxAttempts: '2',
          type: 'y',
        },
        ['type', 'cron', 'priority', 'retry_policy', 'labels'],
      ],
    ];
    for (const [flags, mask] of cases) {
      assert.deepEqual(buildUpdateTaskRequest('t_1', flags, stored).updateMask, mask);
    }
  });

  void it('sends only the given values, with the task id', () => {
    const request = buildUpdateTaskRequest('t_1', { priority: 'high' });
    assert.equal(request.task?.id, 't_1');
    assert.equal(request.task?.priority, Priority.PRIORITY_HIGH);
    assert.equal(request.task?.schedule, undefined);
    assert.equal(request.etag, '');
    assert.equal(updateNeedsCurrentTask(parseTaskUpdate('t_1', { priority: 'high' })), false);
  });

  void it('--cron, --tz, --overlap, --missed and --catch-up-window make one "cron" path', () => {
    const request = buildUpdateTaskRequest('t_1', {
      cron: '*/5 * * * *',
      tz: 'UTC',
      overlap: 'replace',
      missed: 'catch-up',
      catchUpWindow: '2h',
    });
    assert.deepEqual(request.updateMask, ['cron']);
    assert.deepEqual(request.task?.schedule, {
      $case: 'cron',
      value: {
        expression: '*/5 * * * *',
        timeZone: 'UTC',
        overlapPolicy: OverlapPolicy.OVERLAP_POLICY_REPLACE,
        missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE,
        catchUpWindow: { seconds: 7200, nanos: 0 },
      },
    });
  });

  void it('keeps cron and retry settings not given from the stored task, guarded by its etag', () => {
    const update = parseTaskUpdate('t_1', { tz: 'UTC', maxAttempts: '5' });
    assert.equal(updateNeedsCurrentTask(update), true);
    const request = buildUpdateTaskRequest('t_1', { tz: 'UTC', maxAttempts: '5' }, stored);
    assert.deepEqual(request.task?.schedule, {
      $case: 'cron',
      value: {
        expression: '0 * * * *',
        timeZone: 'UTC',
        overlapPolicy: OverlapPolicy.OVERLAP_POLICY_FORBID,
        missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_UNSPECIFIED,
        catchUpWindow: undefined,
      },
    });
    assert.deepEqual(request.task?.retryPolicy, {
      maxAttempts: 5,
      initialBackoff: { seconds: 2, nanos: 0 },
      maxBackoff: undefined,
      backoffMultiplier: 0,
      jitter: 0.5,
    });
    assert.equal(request.etag, 'etag-7');
  });

  void it('prefers --etag over the stored etag', () => {
    assert.equal(buildUpdateTaskRequest('t_1', { tz: 'UTC', etag: 'mine' }, stored).etag, 'mine');
    assert.equal(buildUpdateTaskRequest('t_1', { priority: 'low', etag: 'e' }).etag, 'e');
  });

  void it('refuses bad combinations and values, naming the flag', () => {
    throwsFor(() => buildUpdateTaskRequest('t_1', {}), 'task update', /nothing to change/);
    throwsFor(() => buildUpdateTaskRequest('t_1', { etag: 'e' }), 'task update');
    throwsFor(() => buildUpdateTaskRequest('', { priority: 'low' }), 'ID');
    throwsFor(() => buildUpdateTaskRequest('t_1', { runAt: 'now', tz: 'UTC' }), '--run-at', /--tz/);
    throwsFor(() => buildUpdateTaskRequest('t_1', { priority: 'urgent' }), '--priority');
    throwsFor(() => buildUpdateTaskRequest('t_1', { backoff: '5' }), '--backoff');
    throwsFor(() => buildUpdateTaskRequest('t_1', { label: ['=x'] }), '--label');
    // Cron details for a task without a cron schedule need the expression too.
    throwsFor(() => buildUpdateTaskRequest('t_1', { tz: 'UTC' }), '--cron');
    const oneTime = Task.fromPartial({ id: 't_1', schedule: { $case: 'oneTime', value: {} } });
    throwsFor(() => buildUpdateTaskRequest('t_1', { overlap: 'allow' }, oneTime), '--cron');
  });
});

void describe('parseLabels', () => {
  void it('splits at the first "=" and allows an empty value', () => {
    assert.deepEqual(parseLabels(['team=billing', 'expr=a=b', 'empty=', 'k8s.io/app=web']), {
      team: 'billing',
      expr: 'a=b',
      empty: '',
      'k8s.io/app': 'web',
    });
  });

  void it('refuses a missing "=", a bad key and a repeated key', () => {
    throwsFor(() => parseLabels(['team']), '--label', /key=value/);
    throwsFor(() => parseLabels(['=v']), '--label');
    throwsFor(() => parseLabels(['bad key=v']), '--label');
    throwsFor(() => parseLabels([`${'k'.repeat(64)}=v`]), '--label');
    throwsFor(() => parseLabels(['a=1', 'a=2']), '--label', /twice/);
  });
});

void describe('list and watch requests', () => {
  void it('buildListTasksRequest maps filters and paging', () => {
    const request = buildListTasksRequest({
      type: 'container.run',
      label: ['team=billing'],
      paused: true,
      owner: 'alice',
      pageSize: '50',
      pageToken: 'p2',
    });
    assert.deepEqual(request, {
      type: 'container.run',
      labels: { team: 'billing' },
      enabled: false,
      owner: 'alice',
      pageSize: 50,
      pageToken: 'p2',
    });
    assert.equal(buildListTasksRequest({ enabled: true }).enabled, true);
    assert.equal(buildListTasksRequest({}).enabled, undefined);
    throwsFor(() => buildListTasksRequest({ enabled: true, paused: true }), '--paused');
    throwsFor(() => buildListTasksRequest({ pageSize: '0' }), '--page-size');
    throwsFor(() => buildListTasksRequest({ pageSize: '1001' }), '--page-size');
  });

  void it('buildListExecutionsRequest reads repeated and comma-separated states', () => {
    const request = buildListExecutionsRequest({
      task: 't_1',
      state: ['running,timed-out', 'EXECUTION_STATE_PENDING', 'running'],
    });
    assert.deepEqual(request.states, [
      ExecutionState.EXECUTION_STATE_RUNNING,
      ExecutionState.EXECUTION_STATE_TIMED_OUT,
      ExecutionState.EXECUTION_STATE_PENDING,
    ]);
    assert.equal(request.taskId, 't_1');
    throwsFor(() => buildListExecutionsRequest({ state: ['done'] }), '--state');
  });

  void it('buildWatchExecutionsRequest reads --after-revision', () => {
    assert.deepEqual(buildWatchExecutionsRequest({ task: 't_1', afterRevision: '42' }), {
      taskId: 't_1',
      afterRevision: 42,
    });
    assert.equal(buildWatchExecutionsRequest({}).afterRevision, 0);
    throwsFor(() => buildWatchExecutionsRequest({ afterRevision: '-1' }), '--after-revision');
  });
});
