/**
 * Idempotency keys on CreateTask against a real etcd and server: the stored record holds a
 * keyed fingerprint of the request (an HMAC under a key derived from the cluster's data key),
 * never the plain SHA-256 of the request, which would let a guessed payload be confirmed from
 * etcd; retries still return the first task and a different request under the same key is
 * still ALREADY_EXISTS; a record written in the old, unsalted form is still honoured.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { status, type ServiceError } from '@grpc/grpc-js';
import { Role } from '../../gen/citadel/v1/admin.js';
import { CreateApiKeyRequest, CreateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { Task } from '../../gen/citadel/v1/task.js';
import { CreateTaskRequest, type CreateTaskResponse } from '../../gen/citadel/v1/task_service.js';
import { keys } from '../../server/store/keys.js';
import { idempotencyKeyOf, type IdempotencyRecord } from '../../server/tasks/idempotency.js';
import { canonicalCreateRequest, legacyRequestHash } from '../../server/tasks/task-validation.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { adminClient } from '../helpers/worker.js';

let etcd: TestEtcd;
let ts: TestServer;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
});

function create(task: Partial<Task>, apiKey?: string): Promise<CreateTaskResponse> {
  return ts.call(ts.client.createTask, CreateTaskRequest.fromPartial({ task }), apiKey);
}

/** The task as the server decodes it from the wire, so its canonical form is the server's. */
function asReceived(task: Partial<Task>): Task {
  return Task.decode(Task.encode(Task.fromPartial(task)).finish());
}

/** The idempotency record of `owner`'s `key`, as etcd holds it (raw bytes). */
async function rawRecord(key: string, owner = 'admin'): Promise<string> {
  const full = ts.server.store.prefix + idempotencyKeyOf(owner, key);
  const value = await ts.server.store.client.get(full).string();
  assert.ok(value !== null, `no idempotency record at ${full}`);
  return value;
}

async function alreadyExists(p: Promise<unknown>): Promise<void> {
  await assert.rejects(p, (err: ServiceError) => {
    assert.equal(err.code, status.ALREADY_EXISTS, err.details);
    assert.match(err.details, /idempotency_key was already used for a different request/);
    return true;
  });
}

const aDayAhead = () => new Date(Date.now() + 86_400_000);

describe('idempotency records', () => {
  test('hold a keyed fingerprint, not the plain SHA-256 of the request; retries still dedupe', async () => {
    const guess = `guessable-${randomBytes(4).toString('hex')}`;
    const task: Partial<Task> = {
      type: 'email',
      idempotencyKey: `k-${randomBytes(6).toString('hex')}`,
      payload: { to: guess },
      schedule: { $case: 'oneTime', value: { runAt: aDayAhead() } },
    };
    const first = await create(task);
    assert.equal(first.created, true);

    const raw = await rawRecord(task.idempotencyKey!);
    const plainHash = legacyRequestHash(canonicalCreateRequest(asReceived(task)));
    assert.ok(
      !raw.includes(plainHash),
      'the record does not hold sha256(canonical request), which would confirm a payload guess',
    );
    assert.ok(!raw.includes(guess), 'the record does not hold the payload');
    const record = JSON.parse(raw) as IdempotencyRecord;
    assert.equal(record.taskId, first.task!.id);
    assert.match(record.requestHmac ?? '', /^[0-9a-f]{64}$/);
    const activeKid = await ts.server.store.get(keys.activeDataKey);
    assert.equal(record.kid, activeKid?.value.toString(), 'made with the active data key');
    assert.equal(record.requestHash, undefined);

    const again = await create(task);
    assert.equal(again.created, false);
    assert.equal(again.task!.id, first.task!.id);
    await alreadyExists(create({ ...task, payload: { to: `${guess}-other` } }));
  });

  test('the same request with the same key from two owners does not show as equal in etcd', async () => {
    const admin = adminClient(ts);
    let otherKey: string;
    try {
      await ts.call(
        admin.createUser.bind(admin),
        CreateUserRequest.fromPartial({ user: { id: 'other', role: Role.ROLE_SCHEDULER } }),
      );
      ({ key: otherKey } = await ts.call(
        admin.createApiKey.bind(admin),
        CreateApiKeyRequest.fromPartial({ userId: 'other' }),
      ));
    } finally {
      admin.close();
    }
    const task: Partial<Task> = {
      type: 'email',
      idempotencyKey: `shared-${randomBytes(6).toString('hex')}`,
      payload: { to: 'same' },
      schedule: { $case: 'oneTime', value: { runAt: aDayAhead() } },
    };
    const mine = await create(task);
    const theirs = await create(task, otherKey);
    assert.equal(theirs.created, true, "another owner's key is their own");
    assert.notEqual(theirs.task!.id, mine.task!.id);
    const [a, b] = [
      await rawRecord(task.idempotencyKey!),
      await rawRecord(task.idempotencyKey!, 'other'),
    ];
    assert.notEqual(
      (JSON.parse(a) as IdempotencyRecord).requestHmac,
      (JSON.parse(b) as IdempotencyRecord).requestHmac,
      'the owner is in the fingerprint',
    );
  });

  test('a record written in the old unsalted form is still honoured', async () => {
    const task: Partial<Task> = {
      type: 'email',
      idempotencyKey: `legacy-${randomBytes(6).toString('hex')}`,
      payload: { to: 'legacy' },
      schedule: { $case: 'oneTime', value: { runAt: aDayAhead() } },
    };
    const first = await create(task);
    // Rewrite the record as servers before keyed fingerprints wrote it.
    const full = ts.server.store.prefix + idempotencyKeyOf('admin', task.idempotencyKey!);
    await ts.server.store.client.put(full).value(
      JSON.stringify({
        taskId: first.task!.id,
        requestHash: legacyRequestHash(canonicalCreateRequest(asReceived(task))),
      }),
    );
    const again = await create(task);
    assert.equal(again.created, false);
    assert.equal(again.task!.id, first.task!.id);
    await alreadyExists(create({ ...task, payload: { to: 'legacy-other' } }));
  });
});
