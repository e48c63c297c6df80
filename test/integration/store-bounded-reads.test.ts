/**
 * Bounded reads (docs/architecture.md, "Bounded reads"): legal records as large as the limits
 * allow never stop the cluster. Six cron tasks with ~900 KB payloads (7 MB sealed, more than
 * gRPC's default 4 MiB receive limit) must not keep a new leader from scheduling after the old
 * one is SIGKILLed, and ListExecutions over executions with full output pages by bytes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { MissedRunPolicy, OverlapPolicy } from '../../gen/citadel/v1/task.js';
import {
  CreateTaskRequest,
  ListExecutionsRequest,
  type CreateTaskResponse,
  type ListExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import { Keyring, unwrapDataKey } from '../../server/crypto/sealer.js';
import { keys } from '../../server/store/keys.js';
import { Store, Tx } from '../../server/store/store.js';
import { outputAad, type ExecutionRecord } from '../../server/tasks/records.js';
import {
  LEADER_TTL_MS,
  listAllExecutions,
  readExecutions,
  rpc,
  startCronCluster,
  type CronCluster,
} from '../helpers/cluster.js';
import { eventually } from '../helpers/eventually.js';

/** A cron task through the API; `payload` is any JSON object. */
async function createCron(
  c: CronCluster,
  type: string,
  payload?: Record<string, unknown>,
): Promise<string> {
  const request = CreateTaskRequest.fromPartial({
    task: {
      type,
      payload,
      schedule: {
        $case: 'cron',
        // Once a year: these tasks only need to exist.
        value: {
          expression: '0 0 0 1 1 *',
          overlapPolicy: OverlapPolicy.OVERLAP_POLICY_ALLOW,
          missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_SKIP,
        },
      },
    },
  });
  const { task } = await rpc<CreateTaskResponse>((cb) => c.client.createTask(request, c.md, cb));
  assert.ok(task?.id, 'created task has an id');
  return task.id;
}

/** The cluster's keyring, unwrapped from etcd with the master key as a replica does. */
async function clusterKeyring(store: Store, masterKey: string): Promise<Keyring> {
  const master = Buffer.from(masterKey, 'base64');
  const active = await store.get(keys.activeDataKey);
  assert.ok(active, 'the cluster has an active data key');
  const dataKeys = new Map<string, Buffer>();
  // A handful of small keys: one unpaged read is fine here.
  const wrapped = await store.client
    .getAll()
    .prefix(store.prefix + keys.dataKeyPrefix)
    .buffers();
  for (const [fullKey, value] of Object.entries(wrapped)) {
    const kid = fullKey.slice((store.prefix + keys.dataKeyPrefix).length);
    dataKeys.set(kid, unwrapDataKey(master, kid, Buffer.from(value.toString(), 'base64')));
  }
  return new Keyring(dataKeys, active.value.toString());
}

void test(
  'six ~900 KB cron payloads do not stop a new leader scheduling; ListExecutions pages by bytes',
  { timeout: 120_000 },
  async (t) => {
    const c = await startCronCluster(t, 'test.bounded');
    for (let i = 0; i < 6; i++) {
      // 900,000 characters of incompressible JSON: under the 1 MiB payload limit.
      await createCron(c, 'test.bounded.big', { blob: randomBytes(675_000).toString('base64') });
    }

    await t.test('the successor of a SIGKILLed leader schedules', async () => {
      const killedAt = Date.now();
      await c.leader.kill('SIGKILL');
      const took = await c.follower.waitForLog((l) => l.msg === 'became leader', 10_000);
      const tookAt = Number(took.receivedAt);
      // A firing after the handover can only come from the new leader's scheduler.
      await eventually(
        async () =>
          (await readExecutions(c.kv, c.prefix, c.taskId)).some((e) => e.scheduledAt > tookAt),
        {
          timeoutMs: LEADER_TTL_MS + 5000,
          intervalMs: 100,
          message: 'the new leader fires the every-second task',
        },
      );
      console.log(`bounded reads: the new leader fired ${Date.now() - killedAt} ms after the kill`);
      const failed = c.follower.logs.filter((l) =>
        String(l.msg).startsWith('a leader component failed'),
      );
      assert.deepEqual(failed, [], 'every leader component started at once');
    });

    await t.test('ListExecutions pages over executions with full output', async () => {
      const store = new Store({ client: c.kv, prefix: c.prefix, replicaId: 'test' });
      const keyring = await clusterKeyring(store, c.masterKey);
      const template = (
        await store.range<ExecutionRecord>(keys.taskExecutionPrefix(c.taskId), { limit: 1 })
      ).items[0];
      assert.ok(template, 'the every-second task has an execution to copy');
      const taskId = await createCron(c, 'test.bounded.output');
      const count = 40;
      for (let run = 1; run <= count; run++) {
        const id = `${taskId}-${run}-1`;
        // Full output: 64 KiB on each stream, ~230 KB stored; 40 of them are ~9 MB.
        const output = keyring.sealJson(
          {
            stdout: randomBytes(64 * 1024).toString('base64'),
            stderr: randomBytes(64 * 1024).toString('base64'),
          },
          outputAad(id),
        );
        const record: ExecutionRecord = {
          ...template.value,
          id,
          taskId,
          run,
          attempt: 1,
          state: 'succeeded',
          result: {
            exitCode: 0,
            output: output.toString('base64'),
            stdoutTruncated: false,
            stderrTruncated: false,
            oomKilled: false,
            timedOut: false,
            message: '',
            durationMs: 1,
          },
        };
        await store.commit(new Tx().putJson(keys.execution(id), record));
      }

      const request = ListExecutionsRequest.fromPartial({ taskId, pageSize: 1000 });
      const first = await rpc<ListExecutionsResponse>((cb) =>
        c.client.listExecutions(request, c.md, cb),
      );
      assert.ok(
        first.executions.length > 0 && first.executions.length < count,
        `the first page is bounded by bytes (${first.executions.length} of ${count})`,
      );
      assert.notEqual(first.nextPageToken, '', 'the first page says there is more');
      const all = await listAllExecutions(c.client, c.md, taskId);
      assert.deepEqual(
        all.map((e) => e.run).sort((x, y) => x - y),
        Array.from({ length: count }, (_, i) => i + 1),
        'every execution is listed once',
      );
      for (const e of all) {
        assert.equal(e.result?.stdout.length, 64 * 1024, `${e.id}: full stdout`);
        assert.equal(e.result?.stderr.length, 64 * 1024, `${e.id}: full stderr`);
      }
    });
  },
);
