/**
 * Who may do what, against a real etcd and server: the permission matrix (every RPC, as every
 * role and unauthenticated, against the seed's role table written out here), per-user limits on
 * task types and priorities, max_tasks under concurrent creates, task scopes, API-key
 * lifecycle, and disabling a user seen at once by another replica.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { Role, TaskScope, type User } from '../../gen/citadel/v1/admin.js';
import {
  AdminServiceClient,
  AdminServiceService,
  CreateApiKeyRequest,
  CreateBootstrapTokenRequest,
  IssueServiceCertificateRequest,
  ListWorkersRequest,
  CreateUserRequest,
  UpdateUserRequest,
} from '../../gen/citadel/v1/admin_service.js';
import { Priority } from '../../gen/citadel/v1/task.js';
import {
  CreateTaskRequest,
  ListTasksRequest,
  TaskServiceService,
  UpdateTaskRequest,
} from '../../gen/citadel/v1/task_service.js';
import { RPC_PERMISSIONS, type RpcName } from '../../server/auth/authorization.js';
import { keys } from '../../server/store/keys.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { bearer, startTestServer, type TestServer } from '../helpers/server.js';

let etcd: TestEtcd;
let ts: TestServer;
let admin: AdminServiceClient;

before(async () => {
  etcd = await startTestEtcd();
  // The matrix makes many unauthenticated calls from one address: keep them unthrottled.
  ts = await startTestServer(etcd.endpoint, { authFailureLimit: 10_000 });
  admin = new AdminServiceClient(
    `localhost:${ts.server.port}`,
    credentials.createSsl(Buffer.from(ts.server.caPem)),
  );
});

after(async () => {
  admin?.close();
  await ts?.stop();
  await etcd?.stop();
});

type Unary = (
  req: unknown,
  md: Metadata,
  opts: object,
  cb: (e: ServiceError | null, r: unknown) => void,
) => unknown;

function call<Res = unknown>(
  client: object,
  method: string,
  request: unknown,
  key?: string,
): Promise<Res> {
  const fn = (client as Record<string, Unary>)[method]!;
  return new Promise<Res>((resolve, reject) =>
    fn.call(client, request, key === undefined ? new Metadata() : bearer(key), {}, (e, r) =>
      e ? reject(e) : resolve(r as Res),
    ),
  );
}

async function code(p: Promise<unknown>): Promise<status> {
  try {
    await p;
    return status.OK;
  } catch (err) {
    return (err as ServiceError).code;
  }
}

async function makeUser(user: Partial<User>): Promise<string> {
  await call(admin, 'createUser', CreateUserRequest.fromPartial({ user }), ts.adminKey);
  const res = await call<{ key: string }>(
    admin,
    'createApiKey',
    CreateApiKeyRequest.fromPartial({ userId: user.id }),
    ts.adminKey,
  );
  return res.key;
}

const ZERO_TASK = 't_0000000000000000';
const ZERO_EXEC = `${ZERO_TASK}-00000001-01`;
const ZERO_WORKER = 'w_0000000000000000';

/** A request per RPC whose outcome is fixed when the caller is allowed. */
const SAMPLES: Record<RpcName, { request: unknown; allowed: status }> = {
  'TaskService/CreateTask': {
    request: CreateTaskRequest.fromPartial({ task: { type: '' } }),
    allowed: status.INVALID_ARGUMENT,
  },
  'TaskService/GetTask': { request: { id: ZERO_TASK }, allowed: status.NOT_FOUND },
  'TaskService/ListTasks': { request: ListTasksRequest.fromPartial({}), allowed: status.OK },
  'TaskService/UpdateTask': {
    request: UpdateTaskRequest.fromPartial({ task: { id: ZERO_TASK }, updateMask: ['priority'] }),
    allowed: status.NOT_FOUND,
  },
  'TaskService/PauseTask': { request: { id: ZERO_TASK }, allowed: status.NOT_FOUND },
  'TaskService/ResumeTask': { request: { id: ZERO_TASK }, allowed: status.NOT_FOUND },
  'TaskService/DeleteTask': { request: { id: ZERO_TASK }, allowed: status.NOT_FOUND },
  'TaskService/RunTask': { request: { id: ZERO_TASK }, allowed: status.NOT_FOUND },
  'TaskService/CancelExecution': { request: { id: ZERO_EXEC }, allowed: status.NOT_FOUND },
  'TaskService/ListExecutions': {
    request: { taskId: '', states: [], pageSize: 0, pageToken: '' },
    allowed: status.OK,
  },
  'TaskService/GetExecution': { request: { id: ZERO_EXEC }, allowed: status.NOT_FOUND },
  'TaskService/WatchExecutions': {
    request: { taskId: '', afterRevision: 1e12 },
    allowed: status.OUT_OF_RANGE,
  },
  'AdminService/CreateUser': {
    request: CreateUserRequest.fromPartial({ user: { id: '' } }),
    allowed: status.INVALID_ARGUMENT,
  },
  'AdminService/GetUser': { request: { id: 'nobody' }, allowed: status.NOT_FOUND },
  'AdminService/ListUsers': { request: { pageSize: 0, pageToken: '' }, allowed: status.OK },
  'AdminService/UpdateUser': {
    request: UpdateUserRequest.fromPartial({ user: { id: 'nobody' }, updateMask: ['max_tasks'] }),
    allowed: status.NOT_FOUND,
  },
  'AdminService/DisableUser': { request: { id: 'nobody', reason: '' }, allowed: status.NOT_FOUND },
  'AdminService/EnableUser': { request: { id: 'nobody' }, allowed: status.NOT_FOUND },
  'AdminService/CreateApiKey': {
    request: CreateApiKeyRequest.fromPartial({ userId: 'nobody' }),
    allowed: status.NOT_FOUND,
  },
  'AdminService/ListApiKeys': { request: { userId: 'nobody' }, allowed: status.NOT_FOUND },
  'AdminService/RevokeApiKey': { request: { id: 'key_nothing' }, allowed: status.NOT_FOUND },
  'AdminService/CreateBootstrapToken': {
    request: CreateBootstrapTokenRequest.fromPartial({ bootstrapToken: {} }),
    allowed: status.INVALID_ARGUMENT,
  },
  'AdminService/ListBootstrapTokens': { request: { includeInactive: true }, allowed: status.OK },
  'AdminService/RevokeBootstrapToken': { request: { id: 'bt_nothing' }, allowed: status.NOT_FOUND },
  'AdminService/ListWorkers': {
    request: ListWorkersRequest.fromPartial({}),
    allowed: status.OK,
  },
  'AdminService/GetWorker': { request: { id: ZERO_WORKER }, allowed: status.NOT_FOUND },
  'AdminService/BlockWorker': {
    request: { id: ZERO_WORKER, reason: 'test' },
    allowed: status.NOT_FOUND,
  },
  'AdminService/DeregisterWorker': {
    request: { id: ZERO_WORKER, reason: '' },
    allowed: status.NOT_FOUND,
  },
  'AdminService/IssueServiceCertificate': {
    request: IssueServiceCertificateRequest.fromPartial({ userId: 'nobody' }),
    allowed: status.NOT_FOUND,
  },
  'AdminService/RevokeServiceCertificate': {
    request: { serial: '00' },
    allowed: status.NOT_FOUND,
  },
};

function invoke(rpc: RpcName, key: string | undefined): Promise<status> {
  const [service, method] = rpc.split('/') as [string, string];
  const client: object = service === 'AdminService' ? admin : ts.client;
  const name = method[0]!.toLowerCase() + method.slice(1);
  if (rpc === 'TaskService/WatchExecutions') {
    return new Promise((resolve) => {
      const s = ts.client.watchExecutions(
        SAMPLES[rpc].request as never,
        key === undefined ? new Metadata() : bearer(key),
      );
      s.on('data', () => resolve(status.OK));
      s.on('error', (e: ServiceError) => resolve(e.code));
    });
  }
  return code(call(client, name, SAMPLES[rpc].request, key));
}

describe('permission matrix', () => {
  test('the table names every served RPC, and every RPC has a sample', () => {
    const served = [
      ...Object.values(TaskServiceService).map((d) => d.path),
      ...Object.values(AdminServiceService).map((d) => d.path),
    ].map((p) => p.replace('/citadel.v1.', ''));
    assert.deepEqual([...served].sort(), Object.keys(RPC_PERMISSIONS).sort());
    assert.deepEqual(Object.keys(SAMPLES).sort(), Object.keys(RPC_PERMISSIONS).sort());
  });

  /**
   * Who may call what, written out from the seed's role table (admin: everything; scheduler:
   * create, read, update tasks; executor: execute tasks only; viewer: read only), not read from
   * the table under test, so a wrong grant there fails here.
   */
  const ADMIN_ONLY = 'admin';
  const READERS = 'admin scheduler viewer';
  const MAY_CALL: Record<RpcName, string> = {
    'TaskService/CreateTask': 'admin scheduler',
    'TaskService/GetTask': READERS,
    'TaskService/ListTasks': READERS,
    'TaskService/UpdateTask': 'admin scheduler',
    'TaskService/PauseTask': 'admin scheduler',
    'TaskService/ResumeTask': 'admin scheduler',
    'TaskService/DeleteTask': ADMIN_ONLY,
    'TaskService/RunTask': 'admin executor',
    'TaskService/CancelExecution': 'admin executor',
    'TaskService/ListExecutions': READERS,
    'TaskService/GetExecution': READERS,
    'TaskService/WatchExecutions': READERS,
    'AdminService/CreateUser': ADMIN_ONLY,
    'AdminService/GetUser': ADMIN_ONLY,
    'AdminService/ListUsers': ADMIN_ONLY,
    'AdminService/UpdateUser': ADMIN_ONLY,
    'AdminService/DisableUser': ADMIN_ONLY,
    'AdminService/EnableUser': ADMIN_ONLY,
    'AdminService/CreateApiKey': ADMIN_ONLY,
    'AdminService/ListApiKeys': ADMIN_ONLY,
    'AdminService/RevokeApiKey': ADMIN_ONLY,
    'AdminService/CreateBootstrapToken': ADMIN_ONLY,
    'AdminService/ListBootstrapTokens': ADMIN_ONLY,
    'AdminService/RevokeBootstrapToken': ADMIN_ONLY,
    'AdminService/ListWorkers': ADMIN_ONLY,
    'AdminService/GetWorker': ADMIN_ONLY,
    'AdminService/BlockWorker': ADMIN_ONLY,
    'AdminService/DeregisterWorker': ADMIN_ONLY,
    'AdminService/IssueServiceCertificate': ADMIN_ONLY,
    'AdminService/RevokeServiceCertificate': ADMIN_ONLY,
  };

  test('every RPC, as every role and unauthenticated, gets exactly the expected status', async () => {
    const roles = {
      admin: ts.adminKey,
      scheduler: await makeUser({ id: 'm-scheduler', role: Role.ROLE_SCHEDULER }),
      executor: await makeUser({ id: 'm-executor', role: Role.ROLE_EXECUTOR }),
      viewer: await makeUser({ id: 'm-viewer', role: Role.ROLE_VIEWER }),
    };
    const wrong: string[] = [];
    for (const rpc of Object.keys(RPC_PERMISSIONS) as RpcName[]) {
      const got = await invoke(rpc, undefined);
      if (got !== status.UNAUTHENTICATED) wrong.push(`${rpc} unauthenticated: ${status[got]}`);
      for (const [role, key] of Object.entries(roles)) {
        const expected = MAY_CALL[rpc].split(' ').includes(role)
          ? SAMPLES[rpc].allowed
          : status.PERMISSION_DENIED;
        const actual = await invoke(rpc, key);
        if (actual !== expected)
          wrong.push(`${rpc} as ${role}: ${status[actual]}, expected ${status[expected]}`);
      }
    }
    assert.deepEqual(wrong, []);
    const audit = await eventually(async () => {
      const items = (await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix))
        .items;
      const denied = items.filter((a) => a.value.event_type === 'authorization_failure');
      assert.ok(denied.length > 0, 'denied.length > 0');
      return denied;
    });
    assert.ok(
      audit.some(
        (a) => a.value.user_id === 'm-viewer' && a.value.action === 'TaskService/CreateTask',
      ),
      "audit.some( (a) => a.value.user_id === 'm-viewer' && a.value.action === 'TaskService/Cr...",
    );
  });
});

describe('limits and scopes', () => {
  const once = (runAt = new Date(Date.now() + 3600_000)) => ({
    $case: 'oneTime' as const,
    value: { runAt },
  });
  const cron = {
    $case: 'cron' as const,
    value: {
      expression: '0 * * * *',
      timeZone: 'UTC',
      overlapPolicy: 0,
      missedRunPolicy: 0,
      catchUpWindow: undefined,
    },
  };

  test('a scheduler limited to low priority and one-time tasks cannot create or update beyond', async () => {
    const key = await makeUser({
      id: 'limited',
      role: Role.ROLE_SCHEDULER,
      allowedTaskTypes: ['one_time'],
      allowedPriorities: [Priority.PRIORITY_LOW],
    });
    const create = (task: object) =>
      call<{ task: { id: string; etag: string } }>(
        ts.client,
        'createTask',
        CreateTaskRequest.fromPartial({ task }),
        key,
      );
    const denied = async (p: Promise<unknown>, field: RegExp) => {
      const err = await p.then(
        () => assert.fail('allowed'),
        (e: ServiceError) => e,
      );
      assert.equal(err.code, status.PERMISSION_DENIED, err.details);
      assert.match(err.details, field);
    };
    await denied(
      create({ type: 'r', priority: Priority.PRIORITY_HIGH, schedule: once() }),
      /^task\.priority:/,
    );
    await denied(
      create({ type: 'r', priority: Priority.PRIORITY_LOW, schedule: cron }),
      /^task\.cron:/,
    );
    const ok = await create({ type: 'r', priority: Priority.PRIORITY_LOW, schedule: once() });
    await denied(
      call(
        ts.client,
        'updateTask',
        UpdateTaskRequest.fromPartial({
          task: { id: ok.task.id, priority: Priority.PRIORITY_HIGH },
          updateMask: ['priority'],
        }),
        key,
      ),
      /^task\.priority:/,
    );
    await denied(
      call(
        ts.client,
        'updateTask',
        UpdateTaskRequest.fromPartial({
          task: { id: ok.task.id, schedule: cron },
          updateMask: ['cron'],
        }),
        key,
      ),
      /^task\.cron:/,
    );
  });

  test('50 concurrent creates by a user one below max_tasks: exactly one succeeds', async () => {
    const key = await makeUser({ id: 'quota', role: Role.ROLE_SCHEDULER, maxTasks: 5 });
    for (let i = 0; i < 4; i++) {
      await call(
        ts.client,
        'createTask',
        CreateTaskRequest.fromPartial({ task: { type: 'q', schedule: once() } }),
        key,
      );
    }
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        code(
          call(
            ts.client,
            'createTask',
            CreateTaskRequest.fromPartial({ task: { type: 'q', schedule: once() } }),
            key,
          ),
        ),
      ),
    );
    assert.equal(results.filter((c) => c === status.OK).length, 1);
    assert.equal(results.filter((c) => c === status.RESOURCE_EXHAUSTED).length, 49);
    assert.equal(await ts.server.store.count(keys.ownedPrefix('quota')), 5);
    const user = await call<{ user: User }>(admin, 'getUser', { id: 'quota' }, ts.adminKey);
    assert.equal(user.user.taskCount, 5);
  });

  test('task scopes: own tasks only by default; ALL sees everything; others are NOT_FOUND', async () => {
    const alice = await makeUser({ id: 'alice', role: Role.ROLE_SCHEDULER });
    const bob = await makeUser({ id: 'bob', role: Role.ROLE_SCHEDULER });
    const auditor = await makeUser({
      id: 'auditor',
      role: Role.ROLE_VIEWER,
      taskScope: TaskScope.TASK_SCOPE_ALL,
    });
    const { task } = await call<{ task: { id: string } }>(
      ts.client,
      'createTask',
      CreateTaskRequest.fromPartial({ task: { type: 's', schedule: once() } }),
      alice,
    );
    assert.equal(await code(call(ts.client, 'getTask', { id: task.id }, bob)), status.NOT_FOUND);
    assert.equal(await code(call(ts.client, 'pauseTask', { id: task.id }, bob)), status.NOT_FOUND);
    const bobs = await call<{ tasks: { id: string }[] }>(
      ts.client,
      'listTasks',
      ListTasksRequest.fromPartial({}),
      bob,
    );
    assert.ok(
      !bobs.tasks.some((t) => t.id === task.id),
      '!bobs.tasks.some((t) => t.id === task.id)',
    );
    assert.equal(await code(call(ts.client, 'getTask', { id: task.id }, alice)), status.OK);
    assert.equal(await code(call(ts.client, 'getTask', { id: task.id }, auditor)), status.OK);
  });
});

describe('keys and users', () => {
  test('an API key can expire, is listed without its secret with last use, and is revoked at once', async () => {
    await call(
      admin,
      'createUser',
      CreateUserRequest.fromPartial({ user: { id: 'carol', role: Role.ROLE_VIEWER } }),
      ts.adminKey,
    );
    const made = await call<{ key: string; apiKey: { id: string; prefix: string } }>(
      admin,
      'createApiKey',
      CreateApiKeyRequest.fromPartial({
        userId: 'carol',
        description: 'ci',
        expireTime: new Date(Date.now() + 3600_000),
      }),
      ts.adminKey,
    );
    assert.match(made.key, /^sk_live_/);
    assert.ok(made.key.startsWith(made.apiKey.prefix), 'made.key.startsWith(made.apiKey.prefix)');
    assert.equal(
      await code(call(ts.client, 'listTasks', ListTasksRequest.fromPartial({}), made.key)),
      status.OK,
    );
    const listed = await eventually(async () => {
      const res = await call<{ apiKeys: { id: string; lastUsedTime?: Date; expireTime?: Date }[] }>(
        admin,
        'listApiKeys',
        { userId: 'carol' },
        ts.adminKey,
      );
      assert.ok(res.apiKeys[0]?.lastUsedTime, 'last use recorded');
      return res;
    });
    assert.ok(listed.apiKeys[0]!.expireTime, 'listed.apiKeys[0]!.expireTime');
    assert.ok(!JSON.stringify(listed).includes(made.key), 'never the key itself');
    await call(admin, 'revokeApiKey', { id: made.apiKey.id }, ts.adminKey);
    await eventually(
      async () =>
        (await code(call(ts.client, 'listTasks', ListTasksRequest.fromPartial({}), made.key))) ===
        status.UNAUTHENTICATED,
    );
    assert.equal(
      await code(
        call(
          admin,
          'createApiKey',
          CreateApiKeyRequest.fromPartial({
            userId: 'carol',
            expireTime: new Date(Date.now() - 1000),
          }),
          ts.adminKey,
        ),
      ),
      status.INVALID_ARGUMENT,
    );
  });

  test('disabling a user: their next call on another replica is refused', async () => {
    // A second replica of the same cluster: same prefix, same master key.
    const replica = await startTestServer(etcd.endpoint, {
      etcdPrefix: ts.server.options.etcdPrefix,
      masterKeyEnv: ts.server.options.masterKeyEnv,
    });
    try {
      const dave = await makeUser({ id: 'dave', role: Role.ROLE_VIEWER });
      const onReplica = () =>
        code(call(replica.client, 'listTasks', ListTasksRequest.fromPartial({}), dave));
      await eventually(async () => (await onReplica()) === status.OK, {
        message: 'the replica knows dave',
      });
      // An open stream of dave's on the replica is cut when dave is disabled.
      const stream = replica.client.watchExecutions({ taskId: '', afterRevision: 0 }, bearer(dave));
      stream.on('data', () => undefined);
      const cut = new Promise<ServiceError>((resolve) => stream.on('error', resolve));
      await call(admin, 'disableUser', { id: 'dave', reason: 'left the company' }, ts.adminKey);
      const err = await cut;
      assert.equal(err.code, status.UNAUTHENTICATED);
      await eventually(async () => (await onReplica()) === status.UNAUTHENTICATED, {
        timeoutMs: 1000,
        message: 'refused within a second',
      });
      assert.equal(
        await code(call(admin, 'disableUser', { id: 'admin', reason: '' }, ts.adminKey)),
        status.FAILED_PRECONDITION,
      );
      await call(admin, 'enableUser', { id: 'dave' }, ts.adminKey);
      await eventually(async () => (await onReplica()) === status.OK);

      // Narrowing dave's scope also cuts a stream opened with the wider one.
      await call(
        admin,
        'updateUser',
        UpdateUserRequest.fromPartial({
          user: { id: 'dave', taskScope: TaskScope.TASK_SCOPE_ALL },
          updateMask: ['task_scope'],
        }),
        ts.adminKey,
      );
      await eventually(async () => (await onReplica()) === status.OK);
      const wide = replica.client.watchExecutions({ taskId: '', afterRevision: 0 }, bearer(dave));
      wide.on('data', () => undefined);
      const narrowed = new Promise<ServiceError>((resolve) => wide.on('error', resolve));
      await call(
        admin,
        'updateUser',
        UpdateUserRequest.fromPartial({
          user: { id: 'dave', taskScope: TaskScope.TASK_SCOPE_OWN },
          updateMask: ['task_scope'],
        }),
        ts.adminKey,
      );
      assert.equal((await narrowed).code, status.UNAUTHENTICATED);
    } finally {
      await replica.stop();
    }
  });
});
