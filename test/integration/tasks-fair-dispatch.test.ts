/**
 * Fair dispatch across owners (docs/dispatch.md, "The dispatcher") on a real etcd and a real
 * server: a user limited to one concurrent execution with 600 due runs at the head of a
 * priority does not hold back a second user's task. When a worker's slots appear, the second
 * user's task is assigned in the same pass as the first user's one allowed run (the first two
 * fencing tokens), the rest of the first user's runs wait, and they go on in due order when
 * that run ends. A queue entry as older versions wrote it (no owner in its value) is still
 * dispatched. The worker is joined in process and announces its slots by signed heartbeats;
 * assignments are observed in etcd, where the dispatcher writes them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { HeartbeatSequence, signedHeartbeat } from '../../agent/heartbeat.js';
import { executionId } from '../../common/ids.js';
import { Role } from '../../gen/citadel/v1/admin.js';
import { CreateApiKeyRequest, CreateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { CreateTaskRequest } from '../../gen/citadel/v1/task_service.js';
import { keys } from '../../server/store/keys.js';
import { Tx } from '../../server/store/store.js';
import type { AssignmentKey } from '../../server/tasks/records.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  adminClient,
  createToken,
  joinWorker,
  workerClient,
  type JoinedWorker,
} from '../helpers/worker.js';

/** The limited user's backlog: more than the 500 entries the old dispatcher read per priority. */
const BACKLOG = 600;
/** CreateTask calls in flight at once. */
const CREATE_CONCURRENCY = 16;
const SLOTS = 4;

let etcd: TestEtcd;
let ts: TestServer;
/** One worker, joined but not online until its first heartbeat. */
let worker: JoinedWorker;
let client: ReturnType<typeof workerClient>;
const sequence = new HeartbeatSequence();

before(async () => {
  etcd = await startTestEtcd();
  // A heartbeat changes the slots; the lease outlives the tests, so none is needed in between.
  ts = await startTestServer(etcd.endpoint, { workerLeaseTtlSeconds: 300 });
  await eventually(() => ts.server.election.isLeader, { message: 'the only replica leads' });
  worker = await joinWorker(ts, await createToken(ts));
  client = workerClient(ts.server.workerPort, worker.identity);
});

after(async () => {
  client?.close();
  await ts?.stop();
  await etcd?.stop();
});

/** A signed heartbeat announcing `totalSlots`: the worker's capacity, as the dispatcher sees it. */
async function announceSlots(totalSlots: number): Promise<void> {
  await client.heartbeat(
    signedHeartbeat(
      {
        workerId: worker.workerId,
        sequence: sequence.next(),
        sendTime: new Date(),
        certificateSerial: worker.identity.serial,
        totalSlots,
      },
      worker.identity.privateKey,
    ),
  );
}

/** The executions the worker holds (`assignments/<workerId>/`), with their fencing tokens. */
async function assignments(): Promise<{ id: string; token: number }[]> {
  const page = await ts.server.store.rangeAll<AssignmentKey>(
    keys.assignmentPrefix(worker.workerId),
  );
  return page.items.map((i) => ({ id: i.key.split('/')[2]!, token: i.value.fencingToken }));
}

/** Creates a user with the admin key and returns an API key of theirs. */
async function userKey(id: string, maxConcurrentExecutions: number): Promise<string> {
  const admin = adminClient(ts);
  try {
    await ts.call(
      admin.createUser.bind(admin),
      CreateUserRequest.fromPartial({
        user: { id, role: Role.ROLE_SCHEDULER, maxConcurrentExecutions },
      }),
    );
    const { key } = await ts.call(
      admin.createApiKey.bind(admin),
      CreateApiKeyRequest.fromPartial({ userId: id }),
    );
    return key;
  } finally {
    admin.close();
  }
}

/** A one-time task due now (its first execution is queued by the create); returns its id. */
async function createTask(key: string): Promise<string> {
  const res = await ts.call(
    ts.client.createTask,
    CreateTaskRequest.fromPartial({ task: { type: 'fair.noop' } }),
    key,
  );
  return res.task!.id;
}

/** Queued execution ids whose task is in `taskIds`, in queue (dispatch) order. */
async function queued(taskIds: ReadonlySet<string>): Promise<string[]> {
  const ids: string[] = [];
  let startAfter: string | undefined;
  for (;;) {
    const page = await ts.server.store.range(keys.queuePrefix, { startAfter, limit: 1000 });
    for (const item of page.items) {
      const id = item.key.split('/')[3]!;
      if (taskIds.has(id.slice(0, id.indexOf('-')))) ids.push(id);
    }
    if (!page.more) return ids;
    startAfter = page.items[page.items.length - 1]!.key;
  }
}

test('a user at max_concurrent_executions with 600 due runs does not hold back another user', async () => {
  const aliceKey = await userKey('alice', 1);
  const bobKey = await userKey('bob', 0);

  // Alice's backlog first, then Bob's one task: in due order Bob's run is the 601st entry.
  const aliceTasks = new Set<string>();
  let made = 0;
  await Promise.all(
    Array.from({ length: CREATE_CONCURRENCY }, async () => {
      while (made < BACKLOG) {
        made++;
        aliceTasks.add(await createTask(aliceKey));
      }
    }),
  );
  const bobTask = await createTask(bobKey);
  const bobRun = executionId(bobTask, 1, 1);
  const aliceQueue = await queued(aliceTasks);
  assert.equal(aliceQueue.length, BACKLOG, 'every run of Alice is queued (no worker yet)');

  // The worker comes online with free slots: one heartbeat, one event for the dispatcher.
  await announceSlots(SLOTS);

  const first = await eventually(
    async () => {
      const held = await assignments();
      assert.ok(
        held.some((a) => a.id === bobRun),
        `Bob's run is assigned; the worker holds ${JSON.stringify(held)}`,
      );
      return held;
    },
    { timeoutMs: 15_000, message: "Bob's run is assigned while Alice's backlog waits" },
  );
  const aliceHeld = first.filter((a) => a.id !== bobRun);
  assert.deepEqual(
    aliceHeld.map((a) => a.id),
    [aliceQueue[0]],
    "Alice holds exactly her one allowed run, her earliest due, beside Bob's",
  );
  const bobToken = first.find((a) => a.id === bobRun)!.token;
  assert.ok(
    bobToken <= 2,
    `Bob's run took one of the first two fencing tokens (${bobToken}): the first pass with ` +
      'free slots assigned it, together with the one run Alice may have',
  );

  // Alice's run ends: her slot frees and her next run, in due order, follows Bob's.
  const ended = await ts.server.executions.finishExecution(aliceQueue[0]!, 'succeeded', {
    exitCode: 0,
    output: null,
    stdoutTruncated: false,
    stderrTruncated: false,
    oomKilled: false,
    timedOut: false,
    message: '',
  });
  assert.equal(ended.execution.value.state, 'succeeded');
  const second = await eventually(
    async () => {
      const held = await assignments();
      assert.equal(held.length, 2, `two runs held: ${JSON.stringify(held)}`);
      assert.ok(!held.some((a) => a.id === aliceQueue[0]), "Alice's ended run is no longer held");
      return held;
    },
    { message: "Alice's next run is assigned once her first ends" },
  );
  const next = second.find((a) => a.id !== bobRun)!;
  assert.equal(next.id, aliceQueue[1], "Alice's runs go in due order");
  assert.ok(next.token > bobToken, `Alice's second run (${next.token}) came after Bob's`);
  assert.equal((await queued(aliceTasks)).length, BACKLOG - 2, 'the rest of Alice waits');
});

test('a queue entry as older versions wrote it (no owner in its value) is still dispatched', async () => {
  // Carol may run one at a time: her second run waits in the queue while her first is held.
  const carolKey = await userKey('carol', 1);
  const [firstTask, secondTask] = [await createTask(carolKey), await createTask(carolKey)];
  const firstRun = executionId(firstTask, 1, 1);
  const secondRun = executionId(secondTask, 1, 1);
  await eventually(
    async () => {
      const held = await assignments();
      assert.ok(
        held.some((a) => a.id === firstRun),
        `Carol's first run is assigned; held ${JSON.stringify(held)}`,
      );
    },
    { message: "Carol's first run is assigned" },
  );
  const entry = (await ts.server.store.rangeAll(keys.queuePrefix)).items.find((i) =>
    i.key.endsWith(`/${secondRun}`),
  );
  assert.deepEqual(entry?.value, { owner: 'carol' }, 'a queue entry names its owner');
  // Rewrite it as an older version wrote it: an empty value.
  await ts.server.store.commit(new Tx().expect(entry.key, entry.modRevision).put(entry.key, ''));

  await ts.server.executions.finishExecution(firstRun, 'succeeded', {
    output: null,
    stdoutTruncated: false,
    stderrTruncated: false,
    oomKilled: false,
    timedOut: false,
    message: '',
  });
  await eventually(
    async () => {
      const held = await assignments();
      assert.ok(
        held.some((a) => a.id === secondRun),
        `Carol's second run is assigned; held ${JSON.stringify(held)}`,
      );
    },
    { message: "Carol's ownerless entry is dispatched once her first run ends" },
  );
  assert.deepEqual(await queued(new Set([secondTask])), [], "Carol's entry left the queue");
});
