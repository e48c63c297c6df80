// Dispatch end to end on a real etcd, a real server and a real agent process running real
// containers: a task's output comes back; a failing exit code is retried per policy; a task's
// resource limits reach its container, unless they exceed the worker's; an OOM kill and
// truncated output are reported as such; a timeout ends timed_out; a stale token is refused;
// StartExecution can be repeated; an agent killed mid-run loses its execution to a retry
// elsewhere and removes its orphan when it restarts; an agent stopped mid-run withdraws its
// slots and reports its execution lost; a user's max_concurrent_executions holds; a task that
// cannot start leaves nothing of its payload in etcd (its keys, values and files), while its
// reader still gets the reason and the engine's words. docs/dispatch.md.
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Role } from '../../gen/citadel/v1/admin.js';
import { CreateApiKeyRequest, CreateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { ExecutionState, FailureReason, type Execution } from '../../gen/citadel/v1/execution.js';
import { CreateTaskRequest, ListExecutionsRequest } from '../../gen/citadel/v1/task_service.js';
import { prefixEnd } from '../../server/store/store.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { REPO_ROOT, startTestServer, type TestServer } from '../helpers/server.js';
import {
  adminClient,
  agentJoinProcess,
  createToken,
  spawnAgent,
  workerClient,
  type AgentProcess,
} from '../helpers/worker.js';
import { loadIdentity } from '../../agent/identity.js';
import { dataPaths } from '../../agent/state.js';
import { Outcome, ReportResultRequest } from '../../gen/citadel/v1/worker_service.js';
import { status, type ServiceError } from '@grpc/grpc-js';
import { TERMINAL } from '../helpers/execution-states.js';

const run = promisify(execFile);

let etcd: TestEtcd;
let ts: TestServer;
let agent: AgentProcess;
let dataDir: string;

before(async () => {
  await run('bash', [path.join(REPO_ROOT, 'scripts/build-task-image.sh')]);
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint, {
    heartbeatIntervalMs: 500,
    workerLeaseTtlSeconds: 3,
  });
  dataDir = await joinAgent();
  agent = spawnAgent(['run', '--data-dir', dataDir, '--slots', '12']);
  await agent.waitForLog((l) => l.msg === 'heartbeat accepted');
});

/** Joins a new worker from the command line; returns its data folder. */
async function joinAgent(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-agent-'));
  await agentJoinProcess(`localhost:${ts.server.port}`, await createToken(ts), dir);
  return dir;
}

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

/** The task's first execution, once it is terminal. */
async function firstEnded(taskId: string, timeoutMs = 30_000): Promise<Execution> {
  return eventually(
    async () => {
      const [e] = await executionsOf(taskId);
      assert.ok(e && TERMINAL.has(e.state), `state ${e?.state}`);
      return e;
    },
    { timeoutMs, message: 'the execution ends' },
  );
}

/** The worker id an agent's data folder holds. */
async function workerIdOf(dir: string): Promise<string> {
  const state = JSON.parse(await fs.readFile(path.join(dir, 'state.json'), 'utf8')) as {
    workerId: string;
  };
  return state.workerId;
}

async function executionsOf(taskId: string): Promise<Execution[]> {
  const res = await ts.call(
    ts.client.listExecutions,
    ListExecutionsRequest.fromPartial({ taskId, pageSize: 100 }),
  );
  return res.executions;
}

describe('dispatch', () => {
  test('a one-time container task runs on the agent and its output comes back', async () => {
    const taskId = await createContainerTask({ argv: ['echo', 'hello from a container'] });
    const done = await firstEnded(taskId);
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_SUCCEEDED, done.result?.message);
    assert.equal(done.result?.exitCode, 0);
    assert.equal(Buffer.from(done.result.stdout).toString(), 'hello from a container\n');
    assert.ok(done.fencingToken > 0, 'done.fencingToken > 0');
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
        assert.ok(
          es.every((e) => TERMINAL.has(e.state)),
          'es.every((e) => TERMINAL.has(e.state))',
        );
        return es;
      },
      { timeoutMs: 30_000, message: 'both attempts end' },
    );
    for (const e of all) {
      assert.equal(e.state, ExecutionState.EXECUTION_STATE_FAILED);
      assert.equal(e.result?.exitCode, 3);
      assert.equal(Buffer.from(e.result.stderr).toString(), 'oops\n');
    }
    assert.ok(
      all[1]!.fencingToken > all[0]!.fencingToken,
      'all[1]!.fencingToken > all[0]!.fencingToken',
    );
  });

  test("a task's own resource limits reach its container", async () => {
    // cgroup v1 or v2, whichever the host has.
    const script = [
      'cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max',
      'cat /sys/fs/cgroup/pids/pids.max 2>/dev/null || cat /sys/fs/cgroup/pids.max',
    ].join('; ');
    const taskId = await createContainerTask({
      argv: ['sh', '-c', script],
      resources: { memoryMb: 96, pids: 12 },
    });
    const done = await firstEnded(taskId);
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_SUCCEEDED, done.result?.message);
    assert.equal(Buffer.from(done.result!.stdout).toString(), `${96 * 1024 * 1024}\n12\n`);
  });

  test("a task asking for more than the worker allows fails without running, naming the agent's flag", async () => {
    const taskId = await createContainerTask({
      argv: ['true'],
      resources: { memoryMb: 8192 },
    });
    const done = await firstEnded(taskId);
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_FAILED);
    assert.equal(
      done.result?.message,
      'the task asks for more memory, CPU or processes than this worker allows',
    );
    assert.equal(done.result.reason, FailureReason.FAILURE_REASON_RESOURCES_EXCEEDED);
    assert.equal(
      done.result.detail,
      'the task asks for 8192 MiB of memory; this worker allows at most 4096 (--max-task-memory-mb)',
    );
    assert.equal(await containersOf(done.id), '');
  });

  test('an OOM kill is reported as such, through the whole path', async () => {
    // The shell holds 80 MB of command substitution in memory, against the task's 16 MiB.
    const taskId = await createContainerTask({
      argv: ['sh', '-c', 'x=$(head -c 80000000 /dev/zero | tr "\\0" a); echo ${#x}'],
      resources: { memoryMb: 16 },
    });
    const done = await firstEnded(taskId);
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_FAILED);
    assert.equal(done.result?.oomKilled, true, done.result?.message);
    assert.match(done.result.message, /out of memory/);
  });

  test('output past the cap is truncated and flagged, through the whole path', async () => {
    const taskId = await createContainerTask({
      argv: ['sh', '-c', 'head -c 100000 /dev/zero | tr "\\0" a; echo short >&2'],
    });
    const done = await firstEnded(taskId);
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_SUCCEEDED, done.result?.message);
    assert.equal(done.result?.stdout.length, 64 * 1024);
    assert.equal(done.result.stdoutTruncated, true);
    assert.equal(Buffer.from(done.result.stderr).toString(), 'short\n');
    assert.equal(done.result.stderrTruncated, false);
  });

  test('a timeout ends timed_out with the container gone', async () => {
    const taskId = await createContainerTask(
      { argv: ['sleep', '30'] },
      { timeout: { seconds: 1 } },
    );
    const done = await firstEnded(taskId, 20_000);
    assert.equal(done.state, ExecutionState.EXECUTION_STATE_TIMED_OUT);
    assert.equal(done.result?.timedOut, true);
    assert.equal(await containersOf(done.id), '');
  });

  test('a report with a stale fencing token is refused over the worker API', async () => {
    const taskId = await createContainerTask({ argv: ['true'] });
    const [e] = await eventually(async () => {
      const es = await executionsOf(taskId);
      assert.equal(es[0]?.state, ExecutionState.EXECUTION_STATE_SUCCEEDED);
      return es;
    });
    const identity = await loadIdentity(dataPaths(dataDir));
    const c = workerClient(ts.server.workerPort, identity);
    try {
      const err = await new Promise<ServiceError | null>((resolve) =>
        c.client.reportResult(
          ReportResultRequest.fromPartial({
            executionId: e!.id,
            fencingToken: e!.fencingToken - 1,
            outcome: Outcome.OUTCOME_FAILED,
          }),
          (error) => resolve(error),
        ),
      );
      assert.equal(err?.code, status.FAILED_PRECONDITION);
      assert.match(err.details, /stale fencing token/);
      const [after] = await executionsOf(taskId);
      assert.equal(after!.state, ExecutionState.EXECUTION_STATE_SUCCEEDED);
    } finally {
      c.close();
    }
  });

  test('StartExecution repeated by the worker running it succeeds (an answer lost with a replica)', async () => {
    const taskId = await createContainerTask({ argv: ['sleep', '2'] });
    const running = await eventually(
      async () => {
        const [e] = await executionsOf(taskId);
        assert.equal(e?.state, ExecutionState.EXECUTION_STATE_RUNNING);
        return e;
      },
      { timeoutMs: 20_000, message: 'it runs' },
    );
    const c = workerClient(ts.server.workerPort, await loadIdentity(dataPaths(dataDir)));
    const start = (fencingToken: number) =>
      new Promise<ServiceError | null>((resolve) =>
        c.client.startExecution({ executionId: running.id, fencingToken }, (error) =>
          resolve(error),
        ),
      );
    try {
      assert.equal(await start(running.fencingToken), null);
      assert.equal((await start(running.fencingToken - 1))?.code, status.FAILED_PRECONDITION);
      const [again] = await executionsOf(taskId);
      assert.equal(again!.startTime!.getTime(), running.startTime!.getTime());
    } finally {
      c.close();
    }
  });

  test('SIGKILL of the agent mid-run: the execution is lost, retried on another agent, and the orphan removed at restart', async () => {
    const secondDir = await joinAgent();
    const second = spawnAgent(['run', '--data-dir', secondDir, '--slots', '12']);
    let restarted: AgentProcess | undefined;
    try {
      await second.waitForLog((l) => l.msg === 'heartbeat accepted');
      const taskId = await createContainerTask(
        { argv: ['sleep', '4'] },
        { retryPolicy: { maxAttempts: 2, initialBackoff: { seconds: 0, nanos: 100_000_000 } } },
      );
      const first = await eventually(
        async () => {
          const [e] = await executionsOf(taskId);
          assert.equal(e?.state, ExecutionState.EXECUTION_STATE_RUNNING);
          return e;
        },
        { timeoutMs: 20_000, message: 'attempt 1 runs' },
      );
      const [victim, victimDir] =
        first.workerId === (await workerIdOf(dataDir)) ? [agent, dataDir] : [second, secondDir];
      await victim.kill('SIGKILL');
      const all = await eventually(
        async () => {
          const es = await executionsOf(taskId);
          assert.equal(es.length, 2);
          assert.equal(es[0]!.state, ExecutionState.EXECUTION_STATE_LOST);
          assert.equal(es[1]!.state, ExecutionState.EXECUTION_STATE_SUCCEEDED);
          return es;
        },
        { timeoutMs: 30_000, intervalMs: 200, message: 'lost, then retried elsewhere' },
      );
      assert.notEqual(all[1]!.workerId, first.workerId);
      // The killed agent's container outlived it; the agent removes it when it starts again.
      assert.notEqual(await containersOf(first.id), '');
      restarted = spawnAgent(['run', '--data-dir', victimDir, '--slots', '12']);
      await restarted.waitForLog((l) => l.msg === 'removed orphaned containers');
      assert.equal(await containersOf(first.id), '');
      if (victim === agent) {
        // The restarted agent takes the first one's place; `after` stops it.
        agent = restarted;
        restarted = undefined;
      }
    } finally {
      await second.kill('SIGTERM');
      await restarted?.kill('SIGTERM');
      await fs.rm(secondDir, { recursive: true, force: true });
    }
  });

  test('SIGTERM of an agent mid-run: its slots are withdrawn at once and its execution reported lost and retried elsewhere', async () => {
    const secondDir = await joinAgent();
    const second = spawnAgent(['run', '--data-dir', secondDir, '--slots', '12']);
    try {
      await second.waitForLog((l) => l.msg === 'heartbeat accepted');
      const secondId = await workerIdOf(secondDir);
      // Both agents have all their slots free: the first assignment goes to the lower id.
      const firstId = await workerIdOf(dataDir);
      const [victim, survivorId] = secondId < firstId ? [second, firstId] : [agent, secondId];
      const taskId = await createContainerTask(
        { argv: ['sleep', '30'] },
        { retryPolicy: { maxAttempts: 2, initialBackoff: { seconds: 0, nanos: 100_000_000 } } },
      );
      await eventually(
        async () => {
          const [e] = await executionsOf(taskId);
          assert.equal(e?.state, ExecutionState.EXECUTION_STATE_RUNNING);
        },
        { timeoutMs: 20_000, message: 'attempt 1 runs' },
      );
      await victim.kill('SIGTERM');
      const [lost] = await executionsOf(taskId);
      // Reported by the agent as it stopped, not found lost when its lease lapsed.
      assert.equal(lost!.state, ExecutionState.EXECUTION_STATE_LOST);
      assert.equal(lost!.result?.message, 'the agent stopped while running it');
      // The stopped worker's lease has not lapsed yet, but it offers no slots: all runs elsewhere.
      const ids = await Promise.all(
        Array.from({ length: 4 }, () => createContainerTask({ argv: ['true'] })),
      );
      const placed = await eventually(
        async () => {
          const es = (await Promise.all([taskId, ...ids].map(executionsOf))).flat();
          const retry = es.filter((e) => e.taskId !== taskId || e.attempt === 2);
          assert.equal(retry.length, 5);
          assert.ok(
            retry.every((e) => e.workerId !== ''),
            "retry.every((e) => e.workerId !== '')",
          );
          return retry;
        },
        { timeoutMs: 20_000, message: 'the retry and four new tasks are assigned' },
      );
      assert.deepEqual(new Set(placed.map((e) => e.workerId)), new Set([survivorId]));
      if (victim === agent) {
        agent = second; // `after` stops it
        dataDir = secondDir;
      }
    } finally {
      if (agent !== second) await second.kill('SIGTERM');
      if (dataDir !== secondDir) await fs.rm(secondDir, { recursive: true, force: true });
    }
  });

  test("a task that cannot start leaves nothing of its payload in etcd's keys, values or files; its reader gets the words", async () => {
    // One marker in the image name, argv and an environment variable's name and value: Docker's
    // errors echo the image and argv[0], and used to reach etcd as the execution's message.
    const marker = `leak${randomBytes(8).toString('hex')}`;
    const env = { [`${marker}_name`]: `${marker}-value` };
    const noImageTask = await createContainerTask({
      image: `citadel-missing/${marker}:latest`,
      argv: [`/bin/${marker}`, marker],
      env,
    });
    const noProgramTask = await createContainerTask({ argv: [`/bin/${marker}`, marker], env });
    const [noImage, noProgram] = await Promise.all([
      firstEnded(noImageTask),
      firstEnded(noProgramTask),
    ]);
    assert.equal(noImage.state, ExecutionState.EXECUTION_STATE_FAILED, noImage.result?.message);
    assert.equal(noProgram.state, ExecutionState.EXECUTION_STATE_FAILED, noProgram.result?.message);

    // Every key and value under the cluster prefix, read from etcd directly.
    const { store } = ts.server;
    const prefix = Buffer.from(store.prefix);
    const all = await store.client.kv.range({ key: prefix, range_end: prefixEnd(prefix) });
    assert.ok(all.kvs.length > 0, 'the prefix holds keys');
    for (const kv of all.kvs) {
      assert.ok(!kv.key.includes(marker), `key ${kv.key.toString()} holds the payload marker`);
      assert.ok(
        !kv.value.includes(marker),
        `the value of ${kv.key.toString()} holds the payload marker: ${kv.value.toString()}`,
      );
    }
    // And etcd's files (WAL, snapshots, db), which keep every value ever written.
    const files = await filesUnder(etcd.dataDir);
    assert.ok(files.length > 0, `etcd has files under ${etcd.dataDir}`);
    for (const file of files) {
      const bytes = await fs.readFile(file).catch(() => Buffer.alloc(0)); // gone: rotated
      assert.ok(!bytes.includes(marker), `etcd's file ${file} holds the payload marker`);
    }
    // Nor does the agent log it.
    const logged = agent.logs.filter((l) => JSON.stringify(l).includes(marker));
    assert.deepEqual(logged, [], 'agent log lines holding the payload marker');

    // A reader of the execution gets fixed words, the reason, and the engine's text unsealed.
    const got = async (id: string) =>
      (await ts.call(ts.client.getExecution, { id })).execution!.result!;
    const image = await got(noImage.id);
    assert.equal(image.reason, FailureReason.FAILURE_REASON_IMAGE_MISSING);
    assert.equal(image.message, "the task's image is not present on this worker; build or load it");
    assert.match(image.detail, new RegExp(`citadel-missing/${marker}:latest`));
    const program = await got(noProgram.id);
    assert.equal(program.reason, FailureReason.FAILURE_REASON_START_REFUSED);
    assert.match(program.message, /refused to start the task's program/);
    assert.doesNotMatch(program.message, new RegExp(marker));
    assert.match(program.detail, new RegExp(`/bin/${marker}`));
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
          assert.ok(
            es.every((e) => e.state === ExecutionState.EXECUTION_STATE_SUCCEEDED),
            `states ${es.map((e) => `${e.state}@${e.workerId}`).join(',')}`,
          );
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

/** Every file under `dir`, at any depth. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await fs.readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

/** Ids of containers (running or not) labelled with `executionId`. */
async function containersOf(executionId: string): Promise<string> {
  const { stdout } = await run('docker', [
    'ps',
    '-aq',
    '--filter',
    `label=org.citadel.execution=${executionId}`,
  ]);
  return stdout.trim();
}
