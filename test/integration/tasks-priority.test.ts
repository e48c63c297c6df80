/**
 * Priority under contention, end to end on a real etcd, server, agent process and Docker: with
 * no worker yet, low-priority tasks are queued first, then a medium and a high one; when a
 * worker with one slot joins, the high one is assigned first, then the medium one, then the
 * low ones in the order they fell due (docs/dispatch.md, "The dispatcher"). The order is read
 * from the fencing tokens, which the leader hands out in assignment order.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ExecutionState, type Execution } from '../../gen/citadel/v1/execution.js';
import { Priority } from '../../gen/citadel/v1/task.js';
import { CreateTaskRequest, ListExecutionsRequest } from '../../gen/citadel/v1/task_service.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { REPO_ROOT, startTestServer, type TestServer } from '../helpers/server.js';
import { agentJoinProcess, createToken, spawnAgent, type AgentProcess } from '../helpers/worker.js';

const run = promisify(execFile);

let etcd: TestEtcd;
let ts: TestServer;
let agent: AgentProcess | undefined;
let dataDir: string | undefined;

before(async () => {
  await run('bash', [path.join(REPO_ROOT, 'scripts/build-task-image.sh')]);
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint, {
    heartbeatIntervalMs: 500,
    workerLeaseTtlSeconds: 3,
  });
});

after(async () => {
  await agent?.kill('SIGTERM');
  await ts?.stop();
  await etcd?.stop();
  if (dataDir) await fs.rm(dataDir, { recursive: true, force: true });
});

async function createTask(priority: Priority): Promise<string> {
  const res = await ts.call(
    ts.client.createTask,
    CreateTaskRequest.fromPartial({
      task: { type: 'container', payload: { argv: ['true'] }, priority },
    }),
  );
  return res.task!.id;
}

async function onlyExecution(taskId: string): Promise<Execution> {
  const res = await ts.call(
    ts.client.listExecutions,
    ListExecutionsRequest.fromPartial({ taskId, pageSize: 10 }),
  );
  assert.equal(res.executions.length, 1, `executions of ${taskId}`);
  return res.executions[0]!;
}

describe('priority', () => {
  test('under contention for one slot, high is assigned before medium, and medium before every low that fell due earlier', async () => {
    // No worker yet: everything waits in the queue, the low ones due first.
    const low: string[] = [];
    for (let i = 0; i < 4; i++) low.push(await createTask(Priority.PRIORITY_LOW));
    const medium = await createTask(Priority.PRIORITY_MEDIUM);
    const high = await createTask(Priority.PRIORITY_HIGH);
    const queued = await Promise.all([...low, medium, high].map(onlyExecution));
    assert.ok(
      queued.every((e) => e.state === ExecutionState.EXECUTION_STATE_PENDING),
      `all pending before a worker joins: ${queued.map((e) => e.state).join(',')}`,
    );

    // One worker with one slot: each assignment waits for the previous run to end.
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-agent-'));
    await agentJoinProcess(`localhost:${ts.server.port}`, await createToken(ts), dataDir);
    agent = spawnAgent(['run', '--data-dir', dataDir, '--slots', '1']);

    const ended = await eventually(
      async () => {
        const es = await Promise.all([...low, medium, high].map(onlyExecution));
        assert.ok(
          es.every((e) => e.state === ExecutionState.EXECUTION_STATE_SUCCEEDED),
          `states ${es.map((e) => e.state).join(',')}`,
        );
        return es;
      },
      { timeoutMs: 60_000, intervalMs: 200, message: 'all six succeed' },
    );
    const byId = new Map(ended.map((e) => [e.taskId, e]));
    const order = [...ended].sort((a, b) => a.fencingToken - b.fencingToken).map((e) => e.taskId);
    const lowByDue = [...low].sort(
      (a, b) =>
        byId.get(a)!.scheduledTime!.getTime() - byId.get(b)!.scheduledTime!.getTime() ||
        (byId.get(a)!.id < byId.get(b)!.id ? -1 : 1),
    );
    assert.deepEqual(order, [high, medium, ...lowByDue], 'assignment order (by fencing token)');
    // Every low one was due no later than the high one, so it is priority, not due time.
    const highDue = byId.get(high)!.scheduledTime!.getTime();
    for (const id of low) {
      assert.ok(
        byId.get(id)!.scheduledTime!.getTime() <= highDue,
        `low ${id} fell due no later than the high task`,
      );
    }
    // One slot: the high run ended before any low one was even assigned.
    const highEnd = byId.get(high)!.endTime!.getTime();
    for (const id of low) {
      assert.ok(
        byId.get(id)!.assignTime!.getTime() >= highEnd,
        `low ${id} was assigned after the high run ended`,
      );
    }
  });
});
