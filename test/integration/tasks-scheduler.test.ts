/**
 * The leader's scheduler and the execution state machine on a real etcd: a seconds-field cron
 * over a window, missed-run and overlap policies, timeouts with retries, and fencing tokens.
 * Agents arrive in a later issue; here the tests move executions through the engine's own
 * transitions (the ones dispatch and agent reports will call).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { FailedPreconditionError } from '../../common/errors.js';
import {
  ExecutionState,
  ExecutionTrigger,
  type Execution,
} from '../../gen/citadel/v1/execution.js';
import { MissedRunPolicy, OverlapPolicy, type Task } from '../../gen/citadel/v1/task.js';
import { CreateTaskRequest, ListExecutionsRequest } from '../../gen/citadel/v1/task_service.js';
import { keys } from '../../server/store/keys.js';
import type { TaskRecord } from '../../server/tasks/records.js';
import { Tx } from '../../server/store/store.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let etcd: TestEtcd;
let ts: TestServer;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint, { timeoutGraceMs: 0 });
  await eventually(() => ts.server.election.isLeader, { message: 'the only replica leads' });
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
});

async function create(task: Partial<Task>): Promise<Task> {
  const res = await ts.call(ts.client.createTask, CreateTaskRequest.fromPartial({ task }));
  return res.task!;
}

async function executions(taskId: string): Promise<Execution[]> {
  const res = await ts.call(
    ts.client.listExecutions,
    ListExecutionsRequest.fromPartial({ taskId, pageSize: 1000 }),
  );
  return res.executions;
}

function cron(expression: string, extra: Record<string, unknown> = {}) {
  return {
    $case: 'cron' as const,
    value: {
      expression,
      timeZone: 'UTC',
      overlapPolicy: OverlapPolicy.OVERLAP_POLICY_ALLOW,
      missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_SKIP,
      catchUpWindow: undefined,
      ...extra,
    },
  };
}

void describe('cron firing', () => {
  void test('a seconds-field cron creates exactly the expected executions over a window', async () => {
    const task = await create({ type: 'tick', schedule: cron('*/2 * * * * *') });
    const created = task.createTime!.getTime();
    await eventually(async () => (await executions(task.id)).length >= 3, { message: '3 firings' });
    const paused = await ts.call(ts.client.pauseTask, { id: task.id });
    const pausedAt = paused.task!.updateTime!.getTime();
    const times = (await executions(task.id)).map((e) => e.scheduledTime!.getTime());
    // Every even second after the create, in order, once each, none after the pause.
    const first = Math.floor(created / 2000) * 2000 + 2000;
    assert.equal(times[0], first);
    times.forEach((t, i) => assert.equal(t, first + 2000 * i, `firing ${i}`));
    assert.ok(times[times.length - 1]! <= pausedAt, 'times[times.length - 1]! <= pausedAt');
    assert.ok(
      pausedAt - times[times.length - 1]! < 2000 + 1000,
      'no firing before the pause was dropped',
    );
    const runs = (await executions(task.id)).map((e) => e.run);
    assert.deepEqual(
      runs,
      runs.map((_, i) => i + 1),
    );
  });

  void test('missed firings follow SKIP and CATCH_UP_ONCE when the leader finds them late', async () => {
    // A daily job whose time was two hours ago; we pretend the cluster was down for a day.
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    const expr = `${twoHoursAgo.getUTCMinutes()} ${twoHoursAgo.getUTCHours()} * * *`;
    const latestMissed = Date.UTC(
      twoHoursAgo.getUTCFullYear(),
      twoHoursAgo.getUTCMonth(),
      twoHoursAgo.getUTCDate(),
      twoHoursAgo.getUTCHours(),
      twoHoursAgo.getUTCMinutes(),
    );
    const outage = async (t: Task) => {
      const stored = await ts.server.store.getJson<TaskRecord>(keys.task(t.id));
      const record = { ...stored!.value, nextRunAt: latestMissed - 86_400_000 };
      await ts.server.store.commit(
        new Tx().expect(stored!.key, stored!.modRevision).putJson(stored!.key, record),
      );
    };
    const skip = await create({ type: 'daily', schedule: cron(expr) });
    const wide = await create({
      type: 'daily',
      schedule: cron(expr, {
        missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE,
        catchUpWindow: { seconds: 3 * 3600, nanos: 0 },
      }),
    });
    const narrow = await create({
      type: 'daily',
      schedule: cron(expr, {
        missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_CATCH_UP_ONCE,
        catchUpWindow: { seconds: 3600, nanos: 0 },
      }),
    });
    for (const t of [skip, wide, narrow]) await outage(t);
    // The leader handles each due task by advancing its next run past now.
    for (const t of [skip, wide, narrow]) {
      await eventually(
        async () => {
          const { task } = await ts.call(ts.client.getTask, { id: t.id });
          return task!.nextRunTime!.getTime() > Date.now();
        },
        { message: `leader handled ${t.id}` },
      );
    }
    assert.equal((await executions(skip.id)).length, 0, 'SKIP runs nothing');
    const caught = await executions(wide.id);
    assert.equal(caught.length, 1, 'CATCH_UP_ONCE runs once');
    assert.equal(caught[0]!.scheduledTime!.getTime(), latestMissed, 'for the latest missed firing');
    assert.equal((await executions(narrow.id)).length, 0, 'nothing inside a 1 h window');
    const audit = await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix);
    const skipped = audit.items.find(
      (a) => a.value.event_type === 'execution_skipped' && a.value.task_id === skip.id,
    );
    assert.deepEqual((skipped?.value.details as Record<string, number>).missed, 2);
  });

  void test('FORBID skips firings while an execution is active; REPLACE cancels the older one', async () => {
    const forbid = await create({
      type: 'f',
      schedule: cron('* * * * * *', { overlapPolicy: OverlapPolicy.OVERLAP_POLICY_FORBID }),
    });
    const replace = await create({
      type: 'r',
      schedule: cron('* * * * * *', { overlapPolicy: OverlapPolicy.OVERLAP_POLICY_REPLACE }),
    });
    await eventually(async () => (await executions(replace.id)).length >= 3, {
      message: '3 firings of REPLACE',
    });
    await ts.call(ts.client.pauseTask, { id: forbid.id });
    await ts.call(ts.client.pauseTask, { id: replace.id });

    const f = await executions(forbid.id);
    assert.equal(
      f.length,
      1,
      'FORBID: the first execution is still pending, so later firings were skipped',
    );
    const audit = await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix);
    assert.ok(
      audit.items.some(
        (a) => a.value.event_type === 'execution_skipped' && a.value.task_id === forbid.id,
      ),
      "audit.items.some( (a) => a.value.event_type === 'execution_skipped' && a.value.task_id ...",
    );

    const r = await executions(replace.id);
    const active = r.filter((e) => e.state === ExecutionState.EXECUTION_STATE_PENDING);
    assert.equal(active.length, 1, 'REPLACE: one active execution');
    assert.equal(active[0]!.run, Math.max(...r.map((e) => e.run)), 'the newest');
    for (const e of r.filter((x) => x !== active[0])) {
      assert.equal(e.state, ExecutionState.EXECUTION_STATE_CANCELLED);
      assert.equal(e.result?.message, 'replaced by a newer run');
    }
  });
});

void describe('execution state machine', () => {
  void test('an execution with no report by its timeout ends timed_out and is retried with backoff', async () => {
    const task = await create({
      type: 'slow',
      timeout: { seconds: 1, nanos: 0 },
      retryPolicy: {
        maxAttempts: 2,
        initialBackoff: { seconds: 0, nanos: 200_000_000 },
        maxBackoff: undefined,
        backoffMultiplier: 0,
        jitter: 0,
      },
    });
    const [first] = await executions(task.id);
    const a1 = await ts.server.executions.assignExecution(first!.id, 'worker-a');
    await ts.server.executions.startExecution(first!.id, a1.fencingToken);

    const timedOut = await eventually(
      async () => {
        const { execution } = await ts.call(ts.client.getExecution, { id: first!.id });
        assert.equal(execution!.state, ExecutionState.EXECUTION_STATE_TIMED_OUT);
        return execution!;
      },
      { message: 'timed out by the leader' },
    );
    assert.equal(timedOut.result?.timedOut, true);
    assert.ok(timedOut.result.durationMs >= 1000, 'timedOut.result.durationMs >= 1000');
    assert.equal(
      (await ts.server.store.rangeAll(keys.inflightPrefix)).items.length,
      0,
      'no longer in flight',
    );

    const all = await executions(task.id);
    assert.equal(all.length, 2);
    const retry = all[1]!;
    assert.equal(retry.attempt, 2);
    assert.equal(retry.run, first!.run);
    assert.equal(retry.trigger, ExecutionTrigger.EXECUTION_TRIGGER_RETRY);
    assert.equal(retry.state, ExecutionState.EXECUTION_STATE_PENDING);
    assert.ok(
      retry.scheduledTime!.getTime() - timedOut.endTime!.getTime() >= 200,
      'due after the backoff',
    );

    // The last attempt succeeding ends the run: no third attempt.
    const a2 = await ts.server.executions.assignExecution(retry.id, 'worker-b');
    assert.ok(a2.fencingToken > a1.fencingToken, 'fencing tokens only grow');
    await ts.server.executions.startExecution(retry.id, a2.fencingToken);
    await ts.server.executions.finishExecution(
      retry.id,
      'succeeded',
      {
        exitCode: 0,
        output: null,
        stdoutTruncated: false,
        stderrTruncated: false,
        oomKilled: false,
        timedOut: false,
        message: '',
      },
      { fencingToken: a2.fencingToken },
    );
    assert.equal((await executions(task.id)).length, 2);
    const { task: done } = await ts.call(ts.client.getTask, { id: task.id });
    const stored = await ts.server.store.getJson<TaskRecord>(keys.task(done!.id));
    assert.deepEqual(stored!.value.active, []);
  });

  void test('failed attempts retry until max_attempts, then stop', async () => {
    const task = await create({
      type: 'flaky',
      retryPolicy: {
        maxAttempts: 2,
        initialBackoff: { seconds: 1, nanos: 0 },
        maxBackoff: undefined,
        backoffMultiplier: 0,
        jitter: 0,
      },
    });
    const fail = async (id: string) => {
      const { fencingToken } = await ts.server.executions.assignExecution(id, 'w');
      return ts.server.executions.finishExecution(
        id,
        'failed',
        {
          exitCode: 3,
          output: null,
          stdoutTruncated: false,
          stderrTruncated: false,
          oomKilled: false,
          timedOut: false,
          message: 'exit 3',
        },
        { fencingToken },
      );
    };
    const [first] = await executions(task.id);
    const r1 = await fail(first!.id);
    assert.ok(r1.retry, 'attempt 2 was created');
    assert.equal(r1.retry.scheduledAt - r1.execution.value.endedAt!, 1000);
    const r2 = await fail(r1.retry.id);
    assert.equal(r2.retry, undefined, 'no attempt 3');
    const states = (await executions(task.id)).map((e) => [e.attempt, e.state, e.result?.exitCode]);
    assert.deepEqual(states, [
      [1, ExecutionState.EXECUTION_STATE_FAILED, 3],
      [2, ExecutionState.EXECUTION_STATE_FAILED, 3],
    ]);
  });

  void test('deleting a task with more active executions than one transaction holds', async () => {
    const task = await create({
      type: 'busy',
      schedule: { $case: 'oneTime', value: { runAt: new Date(Date.now() + 3600_000) } },
    });
    for (let i = 0; i < 45; i++) await ts.call(ts.client.runTask, { id: task.id });
    const res = await ts.call(ts.client.deleteTask, { id: task.id });
    assert.equal(res.cancelledExecutions, 45);
    const states = new Set((await executions(task.id)).map((e) => e.state));
    assert.deepEqual([...states], [ExecutionState.EXECUTION_STATE_CANCELLED]);
    assert.equal(await ts.server.store.count(keys.task(task.id)), 0);
  });

  void test('a report with a stale fencing token is refused and changes nothing', async () => {
    const task = await create({ type: 'fenced' });
    const [exec] = await executions(task.id);
    const { fencingToken } = await ts.server.executions.assignExecution(exec!.id, 'w');
    const before = await ts.server.store.get(keys.execution(exec!.id));
    await assert.rejects(
      ts.server.executions.startExecution(exec!.id, fencingToken - 1),
      FailedPreconditionError,
    );
    await assert.rejects(
      ts.server.executions.finishExecution(
        exec!.id,
        'succeeded',
        {
          output: null,
          stdoutTruncated: false,
          stderrTruncated: false,
          oomKilled: false,
          timedOut: false,
          message: '',
        },
        { fencingToken: fencingToken - 1 },
      ),
      /stale fencing token/,
    );
    const afterward = await ts.server.store.get(keys.execution(exec!.id));
    assert.equal(afterward!.modRevision, before!.modRevision);
    // A terminal execution cannot move again, whatever the token.
    await ts.call(ts.client.cancelExecution, { id: exec!.id });
    await assert.rejects(
      ts.server.executions.startExecution(exec!.id, fencingToken),
      FailedPreconditionError,
    );
  });
});
