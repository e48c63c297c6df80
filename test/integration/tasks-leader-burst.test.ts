/**
 * Leader failover under load (docs/dispatch.md, "Failure cases"; docs/architecture.md, "Leader
 * election and fencing"): one etcd, two replica processes, two agent processes running real
 * containers. 200 one-time container tasks are created through the replica that survives; while
 * their executions are being dispatched and run, the leader is SIGKILLed. The other replica
 * takes over and dispatches the rest. Every task must end with all its executions in one
 * terminal state each and its last attempt succeeded, no two attempts of a task may overlap
 * (neither in the records nor by the containers' own start and end marks on the host's uptime
 * clock), and no fencing token may be handed out twice.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { credentials } from '@grpc/grpc-js';
import {
  AdminServiceClient,
  CreateBootstrapTokenRequest,
  type CreateBootstrapTokenResponse,
} from '../../gen/citadel/v1/admin_service.js';
import { ExecutionState, type Execution } from '../../gen/citadel/v1/execution.js';
import {
  CreateTaskRequest,
  TaskServiceClient,
  type CreateTaskResponse,
} from '../../gen/citadel/v1/task_service.js';
import { cleanupStack, listAllExecutions, rpc } from '../helpers/cluster.js';
import { startTestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { bearer, freshPrefix, REPO_ROOT, spawnServer } from '../helpers/server.js';
import { agentJoinProcess, spawnAgent, type AgentProcess } from '../helpers/worker.js';
import { TERMINAL } from '../helpers/execution-states.js';

const run = promisify(execFile);

const TASKS = 200;
/** CreateTask calls in flight at once. */
const CREATE_CONCURRENCY = 16;
const SLOTS_PER_AGENT = 8;
/** Executions the agents have started before the leader is killed. */
const STARTED_BEFORE_KILL = 12;
/** Each container prints the host's uptime (one clock for every container) at start and end. */
const ARGV = ['sh', '-c', 'cat /proc/uptime; sleep 0.2; cat /proc/uptime'];

const stateName = (s: ExecutionState): string =>
  (ExecutionState[s] ?? String(s)).replace('EXECUTION_STATE_', '').toLowerCase();

void test(
  'SIGKILL of the leader during a burst of 200 tasks: each ends once, no attempt overlaps another',
  { timeout: 240_000 },
  async (t) => {
    const defer = cleanupStack(t);
    await run('bash', [path.join(REPO_ROOT, 'scripts/build-task-image.sh')]);
    const etcd = await startTestEtcd();
    defer(() => etcd.stop());
    const root = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-burst-'));
    defer(() => fs.rm(root, { recursive: true, force: true }));

    // Replica A bootstraps the cluster and leads; replica B joins it and follows.
    const prefix = freshPrefix();
    const masterKey = randomBytes(32).toString('base64');
    const spawnReplica = async (name: string) => {
      const server = await spawnServer({
        etcdEndpoint: etcd.endpoint,
        prefix,
        masterKey,
        dataDir: path.join(root, name),
        extraArgs: ['--heartbeat-interval', '1s', '--worker-lease-ttl', '6'],
      });
      // SIGKILL also ends a stopped process; a no-op for one already dead.
      defer(() => server.kill('SIGKILL'));
      return server;
    };
    const a = await spawnReplica('a');
    await a.waitForLog((l) => l.msg === 'became leader');
    const b = await spawnReplica('b');

    const adminKey = (await fs.readFile(path.join(root, 'a', 'admin.key'), 'utf8')).trim();
    const caPem = await fs.readFile(path.join(root, 'a', 'ca.crt'));
    const md = bearer(adminKey);
    const client = new TaskServiceClient(`localhost:${b.port}`, credentials.createSsl(caPem));
    defer(() => client.close());

    // Two agents, joined through B, each given both replicas' worker endpoints (A first).
    const admin = new AdminServiceClient(`localhost:${b.port}`, credentials.createSsl(caPem));
    const issued = await rpc<CreateBootstrapTokenResponse>((cb) =>
      admin.createBootstrapToken(
        CreateBootstrapTokenRequest.fromPartial({
          bootstrapToken: { maxUses: 2, expireTime: new Date(Date.now() + 600_000) },
        }),
        md,
        cb,
      ),
    );
    admin.close();
    const agents = await Promise.all(
      ['agent-1', 'agent-2'].map(async (name): Promise<AgentProcess> => {
        const dataDir = path.join(root, name);
        await agentJoinProcess(`localhost:${b.port}`, issued, dataDir);
        const agent = spawnAgent([
          'run',
          '--data-dir',
          dataDir,
          '--server',
          `localhost:${a.workerPort},localhost:${b.workerPort}`,
          '--slots',
          String(SLOTS_PER_AGENT),
        ]);
        // Registered last, so it runs before the servers and etcd are stopped.
        defer(() => agent.kill('SIGTERM'));
        await agent.waitForLog((l) => l.msg === 'heartbeat accepted');
        return agent;
      }),
    );
    /** What the agents logged above info about these executions, for failure messages. */
    const agentWarnings = (es: Execution[]): string => {
      const lines = agents.flatMap((ag, i) =>
        ag.logs
          .filter((l) => Number(l.level) > 30 && es.some((e) => e.id === l.executionId))
          .map((l) => {
            const { msg, executionId, what, details } = l;
            return `agent-${i + 1}: ${JSON.stringify({ msg, executionId, what, details })}`;
          }),
      );
      return lines.length > 0 ? ` (${lines.join('; ')})` : '';
    };
    const started = () =>
      agents.reduce((n, ag) => n + ag.logs.filter((l) => l.msg === 'execution started').length, 0);

    // The burst, through B, at most CREATE_CONCURRENCY calls at once.
    const taskIds: string[] = [];
    const createOne = async (): Promise<void> => {
      const res = await rpc<CreateTaskResponse>((cb) =>
        client.createTask(
          CreateTaskRequest.fromPartial({
            task: {
              type: 'container',
              payload: { argv: ARGV },
              retryPolicy: { maxAttempts: 3, initialBackoff: { seconds: 0, nanos: 200_000_000 } },
            },
          }),
          md,
          cb,
        ),
      );
      assert.ok(res.task?.id, 'a created task has an id');
      taskIds.push(res.task.id);
    };
    let next = 0;
    const burstStart = Date.now();
    const burst = Promise.all(
      Array.from({ length: CREATE_CONCURRENCY }, async () => {
        while (next < TASKS) {
          next++;
          await createOne();
        }
      }),
    );
    // Rejections are awaited below; until then, do not let one go unhandled.
    burst.catch(() => {});

    // Kill the leader once containers are running (and more are being assigned).
    await eventually(() => started() >= STARTED_BEFORE_KILL, {
      timeoutMs: 60_000,
      intervalMs: 20,
      message: `the agents start ${STARTED_BEFORE_KILL} executions`,
    });
    assert.ok(
      !b.logs.some((l) => l.msg === 'became leader'),
      'replica B does not lead while A is alive',
    );
    const createdAtKill = taskIds.length;
    const startedAtKill = started();
    const killedAt = Date.now();
    await a.kill('SIGKILL');
    const took = await b.waitForLog((l) => l.msg === 'became leader', 15_000);
    // How fast is for the benchmarks; here it is only reported.
    const failoverMs = Number(took.receivedAt) - killedAt;
    await burst;
    assert.equal(taskIds.length, TASKS, 'every CreateTask call succeeded');
    assert.equal(new Set(taskIds).size, TASKS, 'every created task has its own id');

    // Settled: every task has executions and all of them are terminal. A retry is created in
    // the transaction that ends the attempt before it, so this state is final.
    const wanted = new Set(taskIds);
    const executions = await eventually(
      async () => {
        const all = await listAllExecutions(client, md, '');
        const byTask = groupByTask(all.filter((e) => wanted.has(e.taskId)));
        const unsettled = taskIds.filter(
          (id) => !byTask.get(id)?.every((e) => TERMINAL.has(e.state)),
        );
        if (unsettled.length > 0) {
          const sample = unsettled.slice(0, 5).map((id) => {
            const es = byTask.get(id) ?? [];
            const attempts = es.map((e) => `${e.attempt} ${stateName(e.state)} on ${e.workerId}`);
            return `${id}: [${attempts.join(', ')}]${agentWarnings(es)}`;
          });
          throw new Error(`${unsettled.length} task(s) not settled, e.g. ${sample.join('; ')}`);
        }
        return all;
      },
      { timeoutMs: 180_000, intervalMs: 500, message: 'every task settles' },
    );
    const elapsedMs = Date.now() - burstStart;

    // The records.
    const ids = executions.map((e) => e.id);
    assert.equal(new Set(ids).size, ids.length, 'no execution is listed twice');
    const foreign = executions.filter((e) => !wanted.has(e.taskId)).map((e) => e.id);
    assert.deepEqual(foreign, [], 'no execution of a task this test did not create');
    const tokens = executions.filter((e) => e.fencingToken > 0).map((e) => e.fencingToken);
    const repeated = tokens.filter((tk, i) => tokens.indexOf(tk) !== i);
    assert.deepEqual(repeated, [], 'no fencing token is handed out twice');

    const byTask = groupByTask(executions);
    let retried = 0;
    let marked = 0;
    for (const id of taskIds) {
      const es = byTask.get(id) ?? [];
      assert.ok(es.length >= 1 && es.length <= 3, `${id}: 1 to 3 executions, got ${es.length}`);
      assert.deepEqual(
        es.map((e) => [e.run, e.attempt]),
        es.map((_, i) => [1, i + 1]),
        `${id}: one run, attempts 1..${es.length} without gaps or duplicates`,
      );
      if (es.length > 1) retried++;
      for (const e of es) {
        assert.ok(TERMINAL.has(e.state), `${e.id}: terminal, is ${stateName(e.state)}`);
        assert.ok(e.endTime, `${e.id}: terminal (${stateName(e.state)}) with an end time`);
        const start = e.assignTime ?? e.startTime;
        if (start) {
          assert.ok(
            start.getTime() <= e.endTime.getTime(),
            `${e.id}: starts (${start.toISOString()}) before it ends (${e.endTime.toISOString()})`,
          );
        }
      }
      const succeeded = es.filter((e) => e.state === ExecutionState.EXECUTION_STATE_SUCCEEDED);
      assert.equal(succeeded.length, 1, `${id}: exactly one execution succeeded`);
      const last = es[es.length - 1]!;
      assert.equal(
        last.state,
        ExecutionState.EXECUTION_STATE_SUCCEEDED,
        `${id}: the last attempt succeeded; attempts: ${es
          .map((e) => `${e.attempt} ${stateName(e.state)} ${e.result?.message ?? ''}`)
          .join('; ')}`,
      );
      for (let i = 1; i < es.length; i++) {
        const prev = es[i - 1]!;
        const cur = es[i]!;
        const curStart = cur.assignTime ?? cur.startTime;
        if (!curStart) continue; // never reached a worker
        assert.ok(
          curStart.getTime() >= prev.endTime!.getTime(),
          `${cur.id} starts (${curStart.toISOString()}) before ${prev.id} ends ` +
            `(${prev.endTime!.toISOString()}) in the records`,
        );
        assert.ok(
          cur.fencingToken > prev.fencingToken,
          `${cur.id}: token ${cur.fencingToken} above ${prev.id}'s ${prev.fencingToken}`,
        );
      }

      // The containers' own marks: [first uptime, last uptime] of every execution that printed.
      const intervals: { id: string; from: number; to: number }[] = [];
      for (const e of es) {
        const out = Buffer.from(e.result?.stdout ?? new Uint8Array()).toString();
        if (out === '') continue;
        const marks = [...out.matchAll(/^(\d+\.\d+) \d+\.\d+$/gm)].map((m) => Number(m[1]));
        if (e.state === ExecutionState.EXECUTION_STATE_SUCCEEDED) {
          assert.equal(marks.length, 2, `${e.id}: two uptime marks in its stdout ${out}`);
        }
        if (marks.length === 0) continue;
        intervals.push({ id: e.id, from: marks[0]!, to: marks[marks.length - 1]! });
        marked++;
      }
      intervals.sort((x, y) => x.from - y.from);
      for (let i = 1; i < intervals.length; i++) {
        const prev = intervals[i - 1]!;
        const cur = intervals[i]!;
        assert.ok(
          cur.from >= prev.to,
          `${cur.id}'s container started (uptime ${cur.from}) before ${prev.id}'s ended ` +
            `(uptime ${prev.to})`,
        );
      }
    }
    assert.ok(marked >= TASKS, `every succeeded container left its marks (${marked})`);

    const states = new Map<string, number>();
    for (const e of executions) {
      states.set(stateName(e.state), (states.get(stateName(e.state)) ?? 0) + 1);
    }
    console.log(
      `leader-burst: A killed after ${createdAtKill}/${TASKS} tasks created and ` +
        `${startedAtKill} started; B led ${failoverMs} ms later; ${executions.length} executions ` +
        `(${[...states].map(([s, n]) => `${n} ${s}`).join(', ')}), ${retried} task(s) retried; ` +
        `all settled ${elapsedMs} ms after the burst began`,
    );
  },
);

/** Executions by task id, each task's in attempt order. */
function groupByTask(executions: Execution[]): Map<string, Execution[]> {
  const byTask = new Map<string, Execution[]>();
  for (const e of executions) {
    const list = byTask.get(e.taskId) ?? [];
    list.push(e);
    byTask.set(e.taskId, list);
  }
  for (const list of byTask.values()) list.sort((x, y) => x.run - y.run || x.attempt - y.attempt);
  return byTask;
}
