/**
 * Open WatchExecutions streams end when their credential expires, against a real etcd and
 * server: many API keys expiring within a few seconds, each watched by one stream while
 * execution changes keep coming; every stream ends with UNAUTHENTICATED, none before its key
 * expires, none left open, and none is sent a change made after its key expired.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as delay } from 'node:timers/promises';
import { status, type ServiceError, type StatusObject } from '@grpc/grpc-js';
import { Role, TaskScope } from '../../gen/citadel/v1/admin.js';
import {
  AdminServiceClient,
  CreateApiKeyRequest,
  CreateUserRequest,
} from '../../gen/citadel/v1/admin_service.js';
import {
  CreateTaskRequest,
  type WatchExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { bearer, startTestServer, type TestServer } from '../helpers/server.js';
import { adminClient } from '../helpers/worker.js';

let etcd: TestEtcd;
let ts: TestServer;
let admin: AdminServiceClient;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
  admin = adminClient(ts);
});

after(async () => {
  admin?.close();
  await ts?.stop();
  await etcd?.stop();
});

/** How many streams, and how their keys' expiries are spread. */
const STREAMS = 60;
const FIRST_EXPIRY_MS = 3000;
const EXPIRY_SPREAD_MS = 2000;
/** How late after its key's expiry a stream may end. */
const END_BOUND_MS = 2000;

interface WatchedKey {
  expiresAt: number;
  /** Each change received: `<execution id>:<state>` and when. */
  received: { change: string; at: number }[];
  end?: { code: status; at: number };
  ended: Promise<void>;
  cancel(): void;
}

test('streams whose API keys expire within seconds all end at expiry, and are sent nothing made after it', async () => {
  await ts.call(
    admin.createUser.bind(admin),
    CreateUserRequest.fromPartial({
      user: { id: 'watcher', role: Role.ROLE_VIEWER, taskScope: TaskScope.TASK_SCOPE_ALL },
    }),
  );
  const { task } = await ts.call(
    ts.client.createTask,
    CreateTaskRequest.fromPartial({
      task: {
        type: 'w',
        schedule: { $case: 'oneTime', value: { runAt: new Date(Date.now() + 3600_000) } },
      },
    }),
  );
  const taskId = task!.id;
  // When each change was asked for, by `<execution id>:<state>`: it commits after that.
  const madeAt = new Map<string, number>();
  const change = (e: WatchExecutionsResponse) => `${e.execution!.id}:${e.execution!.state}`;
  let lastAsked = 0;
  const run = async () => {
    const asked = (lastAsked = Date.now());
    const { execution } = await ts.call(ts.client.runTask, { id: taskId });
    madeAt.set(change({ execution } as WatchExecutionsResponse), asked);
    const cancelAsked = Date.now();
    const cancelled = await ts.call(ts.client.cancelExecution, { id: execution!.id });
    madeAt.set(change(cancelled as WatchExecutionsResponse), cancelAsked);
  };
  await run(); // replayed to every stream, which shows it open

  const start = Date.now();
  const created = await Promise.all(
    Array.from({ length: STREAMS }, (_, i) =>
      ts.call(
        admin.createApiKey.bind(admin),
        CreateApiKeyRequest.fromPartial({
          userId: 'watcher',
          expireTime: new Date(
            start + FIRST_EXPIRY_MS + Math.round((i * EXPIRY_SPREAD_MS) / (STREAMS - 1)),
          ),
        }),
      ),
    ),
  );
  const watched: WatchedKey[] = created.map(({ key, apiKey }) => {
    const stream = ts.client.watchExecutions(
      { taskId, afterRevision: Number(task!.etag) },
      bearer(key),
    );
    const w: WatchedKey = {
      expiresAt: apiKey!.expireTime!.getTime(),
      received: [],
      ended: new Promise((resolve) =>
        stream.on('status', (s: StatusObject) => {
          w.end = { code: s.code, at: Date.now() };
          resolve();
        }),
      ),
      cancel: () => stream.cancel(),
    };
    stream.on('data', (e: WatchExecutionsResponse) =>
      w.received.push({ change: change(e), at: Date.now() }),
    );
    stream.on('error', (_: ServiceError) => undefined);
    return w;
  });
  try {
    await eventually(() => watched.every((w) => w.received.length > 0 || w.end), {
      message: 'every stream open (sent the replayed change) or ended',
    });
    for (const w of watched) {
      assert.ok(
        w.received.length > 0 && w.received[0]!.at < w.expiresAt,
        'each stream was open before its key expired',
      );
    }

    // Changes keep coming while the keys expire, until every stream has ended and one more
    // change was made after the last expiry.
    const lastExpiry = Math.max(...watched.map((w) => w.expiresAt));
    const allEnded = Promise.all(watched.map((w) => w.ended));
    let done = false;
    void allEnded.then(() => (done = true));
    const changes = (async () => {
      while (!(done && lastAsked >= lastExpiry) && Date.now() < lastExpiry + END_BOUND_MS) {
        await run();
      }
    })();
    const bound = new AbortController();
    const timedOut = delay(lastExpiry + END_BOUND_MS - Date.now(), 'timed out', {
      signal: bound.signal,
    }).catch(() => 'ended');
    const outcome = await Promise.race([allEnded.then(() => 'ended'), timedOut]);
    bound.abort();
    await changes;
    const open = watched.filter((w) => w.end === undefined);
    assert.equal(
      outcome,
      'ended',
      `${open.length} of ${STREAMS} streams still open ${END_BOUND_MS} ms after the last expiry`,
    );

    for (const w of watched) {
      assert.equal(w.end!.code, status.UNAUTHENTICATED, 'ended by the expiry');
      assert.ok(w.end!.at >= w.expiresAt, `ended ${w.expiresAt - w.end!.at} ms before its expiry`);
      assert.ok(
        w.end!.at - w.expiresAt < END_BOUND_MS,
        `ended ${w.end!.at - w.expiresAt} ms after its expiry`,
      );
      const late = w.received.filter((r) => (madeAt.get(r.change) ?? -Infinity) >= w.expiresAt);
      assert.deepEqual(late, [], 'no change made after the key expired is sent');
    }
    assert.ok(lastAsked >= lastExpiry, 'changes were made past the last expiry');
  } finally {
    for (const w of watched) if (w.end === undefined) w.cancel();
  }
});
