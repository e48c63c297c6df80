/**
 * TaskService against a real etcd and a real TLS server: CRUD, pagination, validation errors,
 * idempotency, pause / resume / run / cancel / delete, the watch stream, authentication,
 * health, reflection and encryption at rest.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import {
  credentials,
  loadPackageDefinition,
  Metadata,
  status,
  type ServiceError,
} from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { ExecutionState, ExecutionTrigger } from '../../gen/citadel/v1/execution.js';
import { OverlapPolicy, Priority, type Task } from '../../gen/citadel/v1/task.js';
import {
  CreateTaskRequest,
  ListExecutionsRequest,
  ListTasksRequest,
  UpdateTaskRequest,
  type CreateTaskResponse,
  type TaskServiceClient,
  type WatchExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import { ConfigError } from '../../common/errors.js';
import { keys } from '../../server/store/keys.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { startTestServer, type TestServer } from '../helpers/server.js';

let etcd: TestEtcd;
let ts: TestServer;
let c: TaskServiceClient;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
  c = ts.client;
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
});

const hourAhead = () => new Date(Date.now() + 3600_000);

function create(task: Partial<Task>, key?: string): Promise<CreateTaskResponse> {
  return ts.call(c.createTask, CreateTaskRequest.fromPartial({ task }), key);
}

async function rejects(p: Promise<unknown>, code: status, detail?: RegExp): Promise<ServiceError> {
  try {
    await p;
  } catch (err) {
    const e = err as ServiceError;
    assert.equal(e.code, code, `expected ${status[code]}, got ${status[e.code]}: ${e.details}`);
    if (detail) assert.match(e.details, detail);
    return e;
  }
  assert.fail(`expected ${status[code]}, the call succeeded`);
}

const taskCount = async () => ts.server.store.count(keys.taskPrefix);

describe('tasks', () => {
  test('a one-time task due now is queued by its create, with a pending execution', async () => {
    const { task, created } = await create({
      type: 'container.run',
      payload: { argv: ['echo', 'hi'] },
      priority: Priority.PRIORITY_HIGH,
    });
    assert.ok(created, 'created');
    assert.match(task!.id, /^t_/);
    assert.equal(task!.owner, 'admin');
    assert.equal(task!.enabled, true);
    assert.equal(task!.nextRunTime, undefined, 'nothing more is scheduled');
    assert.ok(task!.lastRunTime, 'task!.lastRunTime');
    assert.deepEqual(task!.payload, { argv: ['echo', 'hi'] });

    const { executions } = await ts.call(
      c.listExecutions,
      ListExecutionsRequest.fromPartial({ taskId: task!.id }),
    );
    assert.equal(executions.length, 1);
    const e = executions[0]!;
    assert.equal(e.state, ExecutionState.EXECUTION_STATE_PENDING);
    assert.equal(e.trigger, ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE);
    assert.equal(e.attempt, 1);
    assert.equal(e.priority, Priority.PRIORITY_HIGH);
    const queue = await ts.server.store.rangeAll(keys.queuePrefix);
    assert.ok(
      queue.items.some((q) => q.key.startsWith('queue/1/') && q.key.endsWith(e.id)),
      "queue.items.some((q) => q.key.startsWith('queue/1/') && q.key.endsWith(e.id))",
    );
  });

  test('the dispatch queue reads in priority order, then due time', async () => {
    const type = `queue.${Date.now()}`;
    const made: { id: string; priority: Priority }[] = [];
    for (const priority of [
      Priority.PRIORITY_LOW,
      Priority.PRIORITY_HIGH,
      Priority.PRIORITY_MEDIUM,
      Priority.PRIORITY_HIGH,
    ]) {
      const { task } = await create({ type, priority });
      made.push({ id: task!.id, priority });
    }
    const ids = new Set(made.map((m) => m.id));
    const queue = (await ts.server.store.rangeAll(keys.queuePrefix)).items
      .map((q) => q.key.split('/'))
      .filter((parts) => ids.has(parts[3]!.slice(0, 18)));
    const order = queue.map((parts) => made.find((m) => parts[3]!.startsWith(m.id))!);
    assert.deepEqual(
      order.map((m) => m.id),
      [made[1]!.id, made[3]!.id, made[2]!.id, made[0]!.id],
      'high (oldest first), then medium, then low',
    );
    const dues = queue.map((parts) => Number(parts[2]));
    assert.ok(dues[0]! <= dues[1]!, 'within a priority, earlier due first');
  });

  test('a one-time task in the future is fired by the leader at its time', async () => {
    const runAt = new Date(Date.now() + 400);
    const { task } = await create({
      type: 'report',
      schedule: { $case: 'oneTime', value: { runAt } },
    });
    assert.equal(task!.nextRunTime?.getTime(), runAt.getTime());
    const exec = await eventually(async () => {
      const { executions } = await ts.call(
        c.listExecutions,
        ListExecutionsRequest.fromPartial({ taskId: task!.id }),
      );
      assert.equal(executions.length, 1);
      return executions[0]!;
    });
    assert.equal(exec.scheduledTime?.getTime(), runAt.getTime());
    const { task: after } = await ts.call(c.getTask, { id: task!.id });
    assert.equal(after!.nextRunTime, undefined);
  });

  test('a cron task gets its next run time in its time zone', async () => {
    const { task } = await create({
      type: 'backup',
      schedule: {
        $case: 'cron',
        value: {
          expression: '30 2 * * *',
          timeZone: 'Europe/Berlin',
          overlapPolicy: 0,
          missedRunPolicy: 0,
          catchUpWindow: undefined,
        },
      },
    });
    const next = task!.nextRunTime!;
    const local = new Intl.DateTimeFormat('en-GB', {
      timeZone: 'Europe/Berlin',
      hour: '2-digit',
      minute: '2-digit',
      hour12: false,
    }).format(next);
    assert.equal(local, '02:30');
    assert.ok(next.getTime() > Date.now(), 'next.getTime() > Date.now()');
    const cron = task!.schedule?.$case === 'cron' ? task!.schedule.value : undefined;
    assert.equal(cron?.overlapPolicy, OverlapPolicy.OVERLAP_POLICY_ALLOW);
  });

  test('list paginates in id order and filters by type, label and enabled', async () => {
    const type = `page.${Date.now()}`;
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const { task } = await create({
        type,
        labels: { n: String(i), team: i % 2 ? 'odd' : 'even' },
        schedule: { $case: 'oneTime', value: { runAt: hourAhead() } },
      });
      ids.push(task!.id);
    }
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const res = await ts.call(
        c.listTasks,
        ListTasksRequest.fromPartial({ type, pageSize: 2, pageToken: token }),
      );
      assert.ok(res.tasks.length <= 2, 'res.tasks.length <= 2');
      seen.push(...res.tasks.map((t) => t.id));
      token = res.nextPageToken;
      pages++;
    } while (token !== '');
    assert.equal(pages, 3);
    assert.deepEqual(seen, [...ids].sort());

    const odd = await ts.call(
      c.listTasks,
      ListTasksRequest.fromPartial({ type, labels: { team: 'odd' } }),
    );
    assert.deepEqual(odd.tasks.map((t) => t.labels.n).sort(), ['1', '3']);

    await ts.call(c.pauseTask, { id: ids[0]! });
    const paused = await ts.call(
      c.listTasks,
      ListTasksRequest.fromPartial({ type, enabled: false }),
    );
    assert.deepEqual(
      paused.tasks.map((t) => t.id),
      [ids[0]],
    );

    await rejects(
      ts.call(c.listTasks, ListTasksRequest.fromPartial({ pageToken: 'garbage!' })),
      status.INVALID_ARGUMENT,
      /page_token/,
    );
    await rejects(
      ts.call(c.listTasks, ListTasksRequest.fromPartial({ pageSize: 5000 })),
      status.INVALID_ARGUMENT,
      /page_size/,
    );
  });

  test('each bad field is refused with INVALID_ARGUMENT naming it, and nothing is stored', async () => {
    const later = { $case: 'oneTime' as const, value: { runAt: hourAhead() } };
    const cron = (expression: string, timeZone = 'UTC') => ({
      $case: 'cron' as const,
      value: {
        expression,
        timeZone,
        overlapPolicy: 0,
        missedRunPolicy: 0,
        catchUpWindow: undefined,
      },
    });
    const cases: [string, Partial<Task>, RegExp][] = [
      ['missing type', { schedule: later }, /^task\.type: is required/],
      ['bad type', { type: 'Bad Type!', schedule: later }, /^task\.type:/],
      [
        'bad cron',
        { type: 'x', schedule: cron('61 * * * *') },
        /^task\.cron\.expression: is not a valid cron expression/,
      ],
      [
        '7 cron fields',
        { type: 'x', schedule: cron('* * * * * * *') },
        /^task\.cron\.expression: has 7 fields/,
      ],
      [
        'bad zone',
        { type: 'x', schedule: cron('* * * * *', 'Mars/Olympus') },
        /^task\.cron\.time_zone:/,
      ],
      [
        'huge payload',
        { type: 'x', schedule: later, payload: { blob: 'a'.repeat(1024 * 1024 + 1) } },
        /^task\.payload: is \d+ bytes/,
      ],
      [
        'short timeout',
        { type: 'x', schedule: later, timeout: { seconds: 0, nanos: 500_000_000 } },
        /^task\.timeout:/,
      ],
      [
        'too many attempts',
        {
          type: 'x',
          schedule: later,
          retryPolicy: {
            maxAttempts: 101,
            initialBackoff: undefined,
            maxBackoff: undefined,
            backoffMultiplier: 0,
            jitter: 0,
          },
        },
        /^task\.retry_policy\.max_attempts:/,
      ],
      [
        'bad jitter',
        {
          type: 'x',
          schedule: later,
          retryPolicy: {
            maxAttempts: 3,
            initialBackoff: undefined,
            maxBackoff: undefined,
            backoffMultiplier: 0,
            jitter: 2,
          },
        },
        /^task\.retry_policy\.jitter:/,
      ],
      [
        'bad label',
        { type: 'x', schedule: later, labels: { 'bad key': 'v' } },
        /^task\.labels\["bad key"\]:/,
      ],
      [
        'bad idempotency key',
        { type: 'x', schedule: later, idempotencyKey: 'has space' },
        /^task\.idempotency_key:/,
      ],
      ['bad priority', { type: 'x', schedule: later, priority: 9 as Priority }, /^task\.priority:/],
    ];
    const before = await taskCount();
    for (const [name, task, detail] of cases) {
      const err = await rejects(create(task), status.INVALID_ARGUMENT, detail).catch(
        (e: unknown) => {
          throw new Error(`${name}: ${(e as Error).message}`);
        },
      );
      assert.ok(!err.details.includes('a'.repeat(100)), `${name}: the error echoes no payload`);
    }
    assert.equal(await taskCount(), before, 'no refused create stored anything');
  });

  test('unknown ids are NOT_FOUND, malformed ids INVALID_ARGUMENT', async () => {
    await rejects(ts.call(c.getTask, { id: 't_0000000000000000' }), status.NOT_FOUND);
    await rejects(ts.call(c.getTask, { id: 'nope' }), status.INVALID_ARGUMENT, /^id:/);
    await rejects(
      ts.call(c.getExecution, { id: 't_0000000000000000-00000001-01' }),
      status.NOT_FOUND,
    );
    await rejects(ts.call(c.getExecution, { id: 'x' }), status.INVALID_ARGUMENT, /^id:/);
  });

  test('idempotency: the same key and request return the first task; another request is ALREADY_EXISTS', async () => {
    const task = {
      type: 'email',
      idempotencyKey: `k-${Date.now()}`,
      payload: { to: 'token:email:abc' },
      schedule: { $case: 'oneTime' as const, value: { runAt: hourAhead() } },
    };
    const first = await create(task);
    const second = await create(task);
    assert.equal(first.created, true);
    assert.equal(second.created, false);
    assert.equal(second.task!.id, first.task!.id);
    const before = await taskCount();
    await rejects(
      create({ ...task, payload: { to: 'token:email:other' } }),
      status.ALREADY_EXISTS,
      /idempotency_key/,
    );
    assert.equal(await taskCount(), before);
    // Concurrent retries of one request still make one task.
    const racing = { ...task, idempotencyKey: `race-${Date.now()}` };
    const results = await Promise.all(Array.from({ length: 8 }, () => create(racing)));
    assert.equal(new Set(results.map((r) => r.task!.id)).size, 1);
    assert.equal(results.filter((r) => r.created).length, 1);
  });

  test('update changes exactly the masked fields, checks the etag, and refuses bad masks', async () => {
    const { task } = await create({
      type: 'sync',
      priority: Priority.PRIORITY_LOW,
      labels: { a: '1' },
      schedule: { $case: 'oneTime', value: { runAt: hourAhead() } },
    });
    const res = await ts.call(
      c.updateTask,
      UpdateTaskRequest.fromPartial({
        task: {
          id: task!.id,
          priority: Priority.PRIORITY_HIGH,
          labels: { b: '2' },
          type: 'ignored',
        },
        updateMask: ['priority'],
        etag: task!.etag,
      }),
    );
    assert.equal(res.task!.priority, Priority.PRIORITY_HIGH);
    assert.deepEqual(res.task!.labels, { a: '1' }, 'labels were not in the mask');
    assert.equal(res.task!.type, 'sync');
    assert.notEqual(res.task!.etag, task!.etag);
    await rejects(
      ts.call(
        c.updateTask,
        UpdateTaskRequest.fromPartial({
          task: { id: task!.id, labels: {} },
          updateMask: ['labels'],
          etag: task!.etag,
        }),
      ),
      status.ABORTED,
      /etag/,
    );
    await rejects(
      ts.call(
        c.updateTask,
        UpdateTaskRequest.fromPartial({ task: { id: task!.id }, updateMask: [] }),
      ),
      status.INVALID_ARGUMENT,
      /^update_mask:/,
    );
    await rejects(
      ts.call(
        c.updateTask,
        UpdateTaskRequest.fromPartial({ task: { id: task!.id }, updateMask: ['owner'] }),
      ),
      status.INVALID_ARGUMENT,
      /"owner" cannot be updated/,
    );
    await rejects(
      ts.call(
        c.updateTask,
        UpdateTaskRequest.fromPartial({
          task: { id: task!.id, type: 'BAD' },
          updateMask: ['type'],
        }),
      ),
      status.INVALID_ARGUMENT,
      /^task\.type:/,
    );
    const { task: now } = await ts.call(c.getTask, { id: task!.id });
    assert.equal(now!.etag, res.task!.etag, 'refused updates changed nothing');
  });

  test('pause clears the next run; resume recomputes it', async () => {
    const { task } = await create({
      type: 'r',
      schedule: {
        $case: 'cron',
        value: {
          expression: '0 * * * *',
          timeZone: 'UTC',
          overlapPolicy: 0,
          missedRunPolicy: 0,
          catchUpWindow: undefined,
        },
      },
    });
    const paused = await ts.call(c.pauseTask, { id: task!.id });
    assert.equal(paused.task!.enabled, false);
    assert.equal(paused.task!.nextRunTime, undefined);
    const again = await ts.call(c.pauseTask, { id: task!.id });
    assert.equal(again.task!.etag, paused.task!.etag, 'pause is idempotent');
    const resumed = await ts.call(c.resumeTask, { id: task!.id });
    assert.equal(resumed.task!.enabled, true);
    assert.equal(resumed.task!.nextRunTime?.getUTCMinutes(), 0);
  });

  test('a manual run does not use up a one-time schedule across pause and resume', async () => {
    const runAt = hourAhead();
    const { task } = await create({ type: 'o', schedule: { $case: 'oneTime', value: { runAt } } });
    await ts.call(c.runTask, { id: task!.id });
    await ts.call(c.pauseTask, { id: task!.id });
    const resumed = await ts.call(c.resumeTask, { id: task!.id });
    assert.equal(resumed.task!.nextRunTime?.getTime(), runAt.getTime());
  });

  test('run now obeys FORBID and REPLACE; cancel and delete end active executions', async () => {
    const cron = (overlapPolicy: OverlapPolicy) => ({
      $case: 'cron' as const,
      value: {
        expression: '0 0 1 1 *',
        timeZone: 'UTC',
        overlapPolicy,
        missedRunPolicy: 0,
        catchUpWindow: undefined,
      },
    });
    const forbid = (
      await create({ type: 'f', schedule: cron(OverlapPolicy.OVERLAP_POLICY_FORBID) })
    ).task!;
    const first = await ts.call(c.runTask, { id: forbid.id });
    assert.equal(first.execution!.trigger, ExecutionTrigger.EXECUTION_TRIGGER_MANUAL);
    await rejects(ts.call(c.runTask, { id: forbid.id }), status.FAILED_PRECONDITION, /FORBID/);
    const cancelled = await ts.call(c.cancelExecution, { id: first.execution!.id });
    assert.equal(cancelled.execution!.state, ExecutionState.EXECUTION_STATE_CANCELLED);
    await rejects(
      ts.call(c.cancelExecution, { id: first.execution!.id }),
      status.FAILED_PRECONDITION,
      /already cancelled/,
    );
    const queue = await ts.server.store.rangeAll(keys.queuePrefix);
    assert.ok(
      !queue.items.some((q) => q.key.endsWith(first.execution!.id)),
      'cancelled execution left the queue',
    );
    await ts.call(c.runTask, { id: forbid.id });

    const replace = (
      await create({ type: 'r', schedule: cron(OverlapPolicy.OVERLAP_POLICY_REPLACE) })
    ).task!;
    const a = await ts.call(c.runTask, { id: replace.id });
    const b = await ts.call(c.runTask, { id: replace.id });
    const { execution: oldOne } = await ts.call(c.getExecution, { id: a.execution!.id });
    assert.equal(oldOne!.state, ExecutionState.EXECUTION_STATE_CANCELLED);
    assert.equal(oldOne!.result?.message, 'replaced by a newer run');
    assert.equal(b.execution!.state, ExecutionState.EXECUTION_STATE_PENDING);

    const del = await ts.call(c.deleteTask, { id: replace.id });
    assert.equal(del.cancelledExecutions, 1);
    await rejects(ts.call(c.getTask, { id: replace.id }), status.NOT_FOUND);
    const { execution: kept } = await ts.call(c.getExecution, { id: b.execution!.id });
    assert.equal(
      kept!.state,
      ExecutionState.EXECUTION_STATE_CANCELLED,
      'history is kept, cancelled',
    );
    await rejects(ts.call(c.deleteTask, { id: replace.id }), status.NOT_FOUND);
  });

  test('the watch stream delivers execution changes as they commit', async () => {
    const { task } = await create({
      type: 'w',
      schedule: { $case: 'oneTime', value: { runAt: hourAhead() } },
    });
    const md = new Metadata();
    md.set('authorization', `Bearer ${ts.adminKey}`);
    // Resuming after the create's revision means no change after it can be missed.
    const stream = c.watchExecutions({ taskId: task!.id, afterRevision: Number(task!.etag) }, md);
    const events: WatchExecutionsResponse[] = [];
    stream.on('data', (e: WatchExecutionsResponse) => events.push(e));
    stream.on('error', () => undefined);
    const run = await ts.call(c.runTask, { id: task!.id });
    await ts.call(c.cancelExecution, { id: run.execution!.id });
    await eventually(() => events.length >= 2, { message: 'pending and cancelled events' });
    assert.deepEqual(
      events.map((e) => [e.execution!.id, e.execution!.state]),
      [
        [run.execution!.id, ExecutionState.EXECUTION_STATE_PENDING],
        [run.execution!.id, ExecutionState.EXECUTION_STATE_CANCELLED],
      ],
    );
    assert.ok(
      events[0]!.revision < events[1]!.revision,
      'events[0]!.revision < events[1]!.revision',
    );
    assert.ok(
      events.every((e) => e.revisionComplete),
      'one change per revision so far',
    );
    stream.cancel();

    // One transaction changing two executions: only the last change of its revision is marked.
    const replace = (
      await create({
        type: 'w',
        schedule: {
          $case: 'cron',
          value: {
            expression: '0 0 1 1 *',
            timeZone: 'UTC',
            overlapPolicy: OverlapPolicy.OVERLAP_POLICY_REPLACE,
            missedRunPolicy: 0,
            catchUpWindow: undefined,
          },
        },
      })
    ).task!;
    const first = await ts.call(c.runTask, { id: replace.id });
    const grouped: WatchExecutionsResponse[] = [];
    const s2 = c.watchExecutions({ taskId: replace.id, afterRevision: Number(replace.etag) }, md);
    s2.on('data', (e: WatchExecutionsResponse) => grouped.push(e));
    s2.on('error', () => undefined);
    const second = await ts.call(c.runTask, { id: replace.id });
    await eventually(() => grouped.length >= 3, { message: 'three changes' });
    s2.cancel();
    assert.deepEqual(
      grouped.map((e) => [e.execution!.id, e.execution!.state, e.revisionComplete]),
      [
        [first.execution!.id, ExecutionState.EXECUTION_STATE_PENDING, true],
        [first.execution!.id, ExecutionState.EXECUTION_STATE_CANCELLED, false],
        [second.execution!.id, ExecutionState.EXECUTION_STATE_PENDING, true],
      ],
    );
    assert.equal(grouped[1]!.revision, grouped[2]!.revision);
    await rejects(
      new Promise((resolve, reject) => {
        const s = c.watchExecutions({ taskId: '', afterRevision: 1e12 }, md);
        s.on('data', resolve);
        s.on('error', reject);
      }),
      status.OUT_OF_RANGE,
      /after_revision/,
    );
  });

  test('payloads are sealed at rest: etcd holds no plaintext', async () => {
    const marker = `alice-${Date.now()}@example.com`;
    const { task } = await create({
      type: 'mail',
      payload: { to: marker },
      schedule: { $case: 'oneTime', value: { runAt: hourAhead() } },
    });
    const raw = await ts.server.store.get(keys.task(task!.id));
    assert.ok(raw, 'raw');
    assert.ok(!raw.value.toString().includes(marker), '!raw.value.toString().includes(marker)');
    const audit = await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix);
    assert.ok(
      audit.items.some(
        (a) => a.value.event_type === 'task_created' && a.value.task_id === task!.id,
      ),
      "audit.items.some( (a) => a.value.event_type === 'task_created' && a.value.task_id === t...",
    );
    assert.ok(
      !JSON.stringify(audit.items).includes(marker),
      '!JSON.stringify(audit.items).includes(marker)',
    );
  });
});

describe('start-up', () => {
  test('the bootstrap admin key is saved 0600, with nothing staged left behind', async () => {
    const dir = ts.server.options.dataDir;
    const stat = await fs.stat(path.join(dir, 'admin.key'));
    assert.equal(stat.mode & 0o777, 0o600);
    assert.equal((await fs.readFile(path.join(dir, 'admin.key'), 'utf8')).trim(), ts.adminKey);
    assert.deepEqual(
      (await fs.readdir(dir)).filter((f) => f.includes('pending')),
      [],
    );
  });

  test('a replica of an external etcd without the master key refuses to start', async () => {
    await assert.rejects(
      startTestServer(etcd.endpoint, { masterKeyEnv: undefined }),
      (err: unknown) => err instanceof ConfigError && /CITADEL_MASTER_KEY/.test(err.message),
    );
  });
});

describe('shutdown', () => {
  test('stopping a replica ends open watch streams cleanly instead of cutting them', async () => {
    const other = await startTestServer(etcd.endpoint, { shutdownGraceMs: 60_000 });
    const md = new Metadata();
    md.set('authorization', `Bearer ${other.adminKey}`);
    const stream = other.client.watchExecutions({ taskId: '', afterRevision: 0 }, md);
    stream.on('data', () => undefined);
    const ended = new Promise<number>((resolve) => {
      stream.on('status', (s: { code: number }) => resolve(s.code));
      stream.on('error', () => undefined);
    });
    // The stream is open once the server has answered anything on the same channel.
    await other.call(other.client.getTask, { id: 't_0000000000000000' }).catch(() => undefined);
    await other.stop();
    assert.equal(await ended, status.OK, 'ended by the server with OK, not force-cancelled');
  });
});

describe('authentication, health and reflection', () => {
  test('missing, malformed and wrong API keys are UNAUTHENTICATED', async () => {
    const noAuth = new Promise((resolve, reject) =>
      c.getTask({ id: 't_0000000000000000' }, new Metadata(), (err, res) =>
        err ? reject(err) : resolve(res),
      ),
    );
    await rejects(noAuth, status.UNAUTHENTICATED, /missing credentials/);
    await rejects(
      ts.call(c.getTask, { id: 't_0000000000000000' }, 'sk_live_wrong'),
      status.UNAUTHENTICATED,
      /invalid, revoked or expired/,
    );
    const before = await taskCount();
    await rejects(create({ type: 'x' }, 'not-a-key'), status.UNAUTHENTICATED);
    assert.equal(await taskCount(), before);

    // Each refusal is audited with the peer and the reason, never the credential.
    const audit = await eventually(async () => {
      const items = (
        await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix)
      ).items
        .map((a) => a.value)
        .filter((a) => a.event_type === 'authentication_attempt');
      assert.ok(items.length >= 3, 'items.length >= 3');
      return items;
    });
    const reasons = audit.map((a) => (a.details as Record<string, string>).reason);
    for (const reason of ['missing_credentials', 'unknown_credential']) {
      assert.ok(reasons.includes(reason), reason);
    }
    assert.ok(
      audit.every((a) => a.result === 'failure' && a.ip_address === '127.0.0.1'),
      "audit.every((a) => a.result === 'failure' && a.ip_address === '127.0.0.1')",
    );
    const text = JSON.stringify(audit);
    assert.ok(!text.includes('sk_live_wrong') && !text.includes('not-a-key'), 'no credential');
  });

  test('repeated failures from one peer are throttled; valid keys still work', async () => {
    const other = await startTestServer(etcd.endpoint, { authFailureLimit: 3 });
    try {
      for (let i = 0; i < 3; i++) {
        await rejects(
          other.call(other.client.getTask, { id: 't_0000000000000000' }, `sk_live_guess${i}`),
          status.UNAUTHENTICATED,
        );
      }
      const err = await rejects(
        other.call(other.client.getTask, { id: 't_0000000000000000' }, 'sk_live_guess9'),
        status.RESOURCE_EXHAUSTED,
        /too many failed authentication attempts; retry after \d+ s/,
      );
      assert.ok(Number(err.metadata.get('retry-after-ms')[0]) > 0, 'a retry hint');
      await rejects(
        other.call(other.client.getTask, { id: 't_0000000000000000' }),
        status.NOT_FOUND,
      );
      const audited = await eventually(async () => {
        const n = (
          await other.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix)
        ).items.filter((a) => a.value.event_type === 'authentication_attempt').length;
        assert.equal(n, 3);
        return n;
      });
      assert.equal(audited, 3, 'throttled attempts are not audited one by one');
    } finally {
      await other.stop();
    }
  });

  test('health answers without credentials', async () => {
    const require = createRequire(import.meta.url);
    const def = loadSync(
      path.join(
        path.dirname(require.resolve('grpc-health-check/package.json')),
        'proto/health/v1/health.proto',
      ),
      { enums: String },
    );
    const pkg = loadPackageDefinition(def) as unknown as {
      grpc: {
        health: {
          v1: {
            Health: new (
              a: string,
              c: ReturnType<typeof credentials.createSsl>,
            ) => {
              check: (
                r: object,
                cb: (e: ServiceError | null, r: { status: string }) => void,
              ) => void;
              close(): void;
            };
          };
        };
      };
    };
    const health = new pkg.grpc.health.v1.Health(
      `localhost:${ts.server.port}`,
      credentials.createSsl(Buffer.from(ts.server.caPem)),
    );
    const res = await new Promise<{ status: string }>((resolve, reject) =>
      health.check({ service: '' }, (e, r) => (e ? reject(e) : resolve(r))),
    );
    assert.equal(res.status, 'SERVING');
    health.close();
  });

  test('reflection lists the services', async () => {
    const require = createRequire(import.meta.url);
    const def = loadSync(
      path.join(
        path.dirname(require.resolve('@grpc/reflection/package.json')),
        'build/proto/grpc/reflection/v1/reflection.proto',
      ),
    );
    type Stream = {
      write(m: object): void;
      end(): void;
      on(e: string, f: (x: never) => void): void;
    };
    const pkg = loadPackageDefinition(def) as unknown as {
      grpc: {
        reflection: {
          v1: {
            ServerReflection: new (
              a: string,
              c: ReturnType<typeof credentials.createSsl>,
            ) => { serverReflectionInfo(): Stream; close(): void };
          };
        };
      };
    };
    const client = new pkg.grpc.reflection.v1.ServerReflection(
      `localhost:${ts.server.port}`,
      credentials.createSsl(Buffer.from(ts.server.caPem)),
    );
    const names = await new Promise<string[]>((resolve, reject) => {
      const s = client.serverReflectionInfo();
      s.on('data', (r: { listServicesResponse?: { service: { name: string }[] } }) =>
        resolve(r.listServicesResponse!.service.map((x) => x.name)),
      );
      s.on('error', reject);
      s.write({ listServices: '' });
      s.end();
    });
    client.close();
    assert.ok(names.includes('citadel.v1.TaskService'), names.join(','));
    assert.ok(names.includes('grpc.health.v1.Health'), names.join(','));
  });
});
