import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  buildCreateApiKeyRequest,
  buildCreateUserRequest,
  buildDisableUserRequest,
  buildListApiKeysRequest,
  buildListUsersRequest,
  buildUpdateUserRequest,
  type UserFlags,
} from '../../cli/commands/admin.js';
import { parseExpiry } from '../../cli/flags.js';
import { apiKeysTable, roleName, scopeName, userDetails, usersTable } from '../../cli/format.js';
import { InvalidArgumentError } from '../../common/errors.js';
import { ApiKey, Role, TaskScope, User } from '../../gen/citadel/v1/admin.js';
import { UpdateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { Priority } from '../../gen/citadel/v1/task.js';

/** Asserts that `fn` throws InvalidArgumentError for `field`. */
function throwsFor(fn: () => unknown, field: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      err instanceof InvalidArgumentError,
      `expected InvalidArgumentError, got ${String(err)}`,
    );
    assert.equal(err.field, field);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const NOW = new Date('2026-11-24T10:00:00Z');

void describe('buildCreateUserRequest', () => {
  void it('with only --role leaves limits at zero and lists empty (no limit, any)', () => {
    assert.deepEqual(
      buildCreateUserRequest('alice', { role: 'viewer' }).user,
      User.fromPartial({ id: 'alice', role: Role.ROLE_VIEWER }),
    );
  });

  void it('sets every field from its flag', () => {
    const { user } = buildCreateUserRequest('billing-reports', {
      role: 'Scheduler',
      allowedTypes: 'container.run, http.call,cron,container.run',
      allowedPriorities: 'high,LOW,high',
      maxTasks: '50',
      maxConcurrent: '4',
      scope: 'all',
    });
    assert.equal(user?.id, 'billing-reports');
    assert.equal(user?.role, Role.ROLE_SCHEDULER);
    assert.deepEqual(user?.allowedTaskTypes, ['container.run', 'http.call', 'cron']);
    assert.deepEqual(user?.allowedPriorities, [Priority.PRIORITY_HIGH, Priority.PRIORITY_LOW]);
    assert.equal(user?.maxTasks, 50);
    assert.equal(user?.maxConcurrentExecutions, 4);
    assert.equal(user?.taskScope, TaskScope.TASK_SCOPE_ALL);
  });

  void it('reads an empty list flag as the empty list', () => {
    const { user } = buildCreateUserRequest('bob', {
      role: 'executor',
      allowedTypes: '',
      allowedPriorities: ' ',
    });
    assert.deepEqual(user?.allowedTaskTypes, []);
    assert.deepEqual(user?.allowedPriorities, []);
  });

  void it('refuses bad flags, naming each', () => {
    throwsFor(() => buildCreateUserRequest('alice', {}), '--role', /required/);
    throwsFor(() => buildCreateUserRequest('alice', { role: 'root' }), '--role', /"root"/);
    throwsFor(() => buildCreateUserRequest('alice', { role: '' }), '--role');
    throwsFor(
      () => buildCreateUserRequest('alice', { role: 'viewer', scope: 'mine' }),
      '--scope',
      /own, all/,
    );
    throwsFor(
      () => buildCreateUserRequest('alice', { role: 'viewer', allowedPriorities: 'high,urgent' }),
      '--allowed-priorities',
      /"urgent"/,
    );
    throwsFor(
      () => buildCreateUserRequest('alice', { role: 'viewer', allowedTypes: 'a,,b' }),
      '--allowed-types',
      /empty entry/,
    );
    throwsFor(
      () => buildCreateUserRequest('alice', { role: 'viewer', maxTasks: '-1' }),
      '--max-tasks',
    );
    throwsFor(
      () => buildCreateUserRequest('alice', { role: 'viewer', maxTasks: '4294967296' }),
      '--max-tasks',
    );
    throwsFor(
      () => buildCreateUserRequest('alice', { role: 'viewer', maxConcurrent: 'two' }),
      '--max-concurrent',
    );
    throwsFor(() => buildCreateUserRequest('', { role: 'viewer' }), 'ID');
    throwsFor(() => buildCreateUserRequest('Alice', { role: 'viewer' }), 'ID', /lowercase/);
    throwsFor(() => buildCreateUserRequest('a'.repeat(64), { role: 'viewer' }), 'ID');
  });
});

void describe('buildUpdateUserRequest', () => {
  void it('masks exactly the fields given, in contract order', () => {
    const cases: [UserFlags, string[]][] = [
      [{ role: 'admin' }, ['role']],
      [{ allowedTypes: 'a' }, ['allowed_task_types']],
      [{ allowedPriorities: 'low' }, ['allowed_priorities']],
      [{ maxTasks: '3' }, ['max_tasks']],
      [{ maxConcurrent: '1' }, ['max_concurrent_executions']],
      [{ scope: 'own' }, ['task_scope']],
      [
        { scope: 'all', maxTasks: '0', role: 'viewer', allowedTypes: 'x' },
        ['role', 'allowed_task_types', 'max_tasks', 'task_scope'],
      ],
      [
        {
          role: 'scheduler',
          allowedTypes: 'a,b',
          allowedPriorities: 'high',
          maxTasks: '10',
          maxConcurrent: '2',
          scope: 'own',
        },
        [
          'role',
          'allowed_task_types',
          'allowed_priorities',
          'max_tasks',
          'max_concurrent_executions',
          'task_scope',
        ],
      ],
    ];
    for (const [flags, mask] of cases) {
      assert.deepEqual(buildUpdateUserRequest('alice', flags).updateMask, mask);
    }
  });

  void it('sends the id and only the given values', () => {
    const request = buildUpdateUserRequest('alice', { maxTasks: '7' });
    assert.deepEqual(
      request,
      UpdateUserRequest.fromPartial({
        user: { id: 'alice', maxTasks: 7 },
        updateMask: ['max_tasks'],
      }),
    );
  });

  void it("clears a list with '' and removes a limit with 0, still naming the field", () => {
    const request = buildUpdateUserRequest('alice', {
      allowedTypes: '',
      allowedPriorities: '',
      maxConcurrent: '0',
    });
    assert.deepEqual(request.updateMask, [
      'allowed_task_types',
      'allowed_priorities',
      'max_concurrent_executions',
    ]);
    assert.deepEqual(request.user?.allowedTaskTypes, []);
    assert.deepEqual(request.user?.allowedPriorities, []);
    assert.equal(request.user?.maxConcurrentExecutions, 0);
  });

  void it('refuses nothing to change and bad values, naming the flag', () => {
    throwsFor(() => buildUpdateUserRequest('alice', {}), 'user update', /nothing to change/);
    throwsFor(() => buildUpdateUserRequest(' ', { role: 'admin' }), 'ID');
    throwsFor(() => buildUpdateUserRequest('alice', { role: 'superuser' }), '--role');
    throwsFor(() => buildUpdateUserRequest('alice', { scope: 'everything' }), '--scope');
    throwsFor(
      () => buildUpdateUserRequest('alice', { allowedPriorities: 'medium,,low' }),
      '--allowed-priorities',
    );
    throwsFor(
      () => buildUpdateUserRequest('alice', { allowedPriorities: 'p1' }),
      '--allowed-priorities',
    );
    throwsFor(() => buildUpdateUserRequest('alice', { maxTasks: '1.5' }), '--max-tasks');
  });
});

void describe('other user requests', () => {
  void it('buildListUsersRequest maps paging', () => {
    assert.deepEqual(buildListUsersRequest({ pageSize: '20', pageToken: 'p2' }), {
      pageSize: 20,
      pageToken: 'p2',
    });
    assert.deepEqual(buildListUsersRequest({}), { pageSize: 0, pageToken: '' });
    throwsFor(() => buildListUsersRequest({ pageSize: '0' }), '--page-size');
    throwsFor(() => buildListUsersRequest({ pageSize: '1001' }), '--page-size');
  });

  void it('buildDisableUserRequest carries the reason, at most 200 characters', () => {
    assert.deepEqual(buildDisableUserRequest('alice', { reason: 'left the team' }), {
      id: 'alice',
      reason: 'left the team',
    });
    assert.equal(buildDisableUserRequest('alice', {}).reason, '');
    throwsFor(() => buildDisableUserRequest('alice', { reason: 'x'.repeat(201) }), '--reason');
    throwsFor(() => buildDisableUserRequest('', {}), 'ID');
  });
});

void describe('API key requests', () => {
  void it('buildCreateApiKeyRequest reads --expires as a duration from now', () => {
    const request = buildCreateApiKeyRequest(
      { user: 'alice', description: 'nightly reports', expires: '90d' },
      NOW,
    );
    assert.deepEqual(request, {
      userId: 'alice',
      description: 'nightly reports',
      expireTime: new Date('2027-02-22T10:00:00Z'),
    });
  });

  void it('buildCreateApiKeyRequest reads --expires as an ISO 8601 time, and unset as never', () => {
    const at = buildCreateApiKeyRequest(
      { user: 'alice', expires: '2027-01-01T01:00:00+01:00' },
      NOW,
    );
    assert.deepEqual(at.expireTime, new Date('2027-01-01T00:00:00Z'));
    assert.equal(buildCreateApiKeyRequest({ user: 'alice' }, NOW).expireTime, undefined);
  });

  void it('refuses bad flags, naming each', () => {
    throwsFor(() => buildCreateApiKeyRequest({}), '--user');
    throwsFor(() => buildCreateApiKeyRequest({ user: 'alice', expires: '90' }, NOW), '--expires');
    throwsFor(
      () => buildCreateApiKeyRequest({ user: 'alice', expires: 'soon' }, NOW),
      '--expires',
      /duration.*ISO 8601/,
    );
    throwsFor(() => buildCreateApiKeyRequest({ user: 'alice', expires: '0s' }, NOW), '--expires');
    throwsFor(
      () => buildCreateApiKeyRequest({ user: 'alice', expires: '2027-01-01T00:00:00' }, NOW),
      '--expires',
      /zone/,
    );
    throwsFor(
      () => buildCreateApiKeyRequest({ user: 'alice', expires: '2026-01-01T00:00:00Z' }, NOW),
      '--expires',
      /future/,
    );
    throwsFor(
      () => buildCreateApiKeyRequest({ user: 'alice', description: 'd'.repeat(201) }, NOW),
      '--description',
    );
  });

  void it('parseExpiry names the flag it is given', () => {
    throwsFor(() => parseExpiry('later', '--until', NOW), '--until');
    assert.deepEqual(parseExpiry('1h30m', '--expires', NOW), new Date('2026-11-24T11:30:00Z'));
    const later = new Date('2026-11-24T10:00:00.250Z');
    assert.deepEqual(parseExpiry('1s', '--expires', later), new Date('2026-11-24T10:00:02Z'));
  });

  void it('buildListApiKeysRequest needs --user', () => {
    assert.deepEqual(buildListApiKeysRequest({ user: 'alice' }), { userId: 'alice' });
    throwsFor(() => buildListApiKeysRequest({}), '--user');
    throwsFor(() => buildListApiKeysRequest({ user: ' ' }), '--user');
  });
});

void describe('user and API key output', () => {
  const alice = User.fromPartial({
    id: 'alice',
    role: Role.ROLE_SCHEDULER,
    enabled: true,
    taskScope: TaskScope.TASK_SCOPE_ALL,
    taskCount: 3,
    maxTasks: 10,
    allowedTaskTypes: ['container.run', 'cron'],
    allowedPriorities: [Priority.PRIORITY_HIGH, Priority.PRIORITY_LOW],
    createTime: new Date('2026-11-01T09:00:00Z'),
  });
  const bob = User.fromPartial({ id: 'bob', role: Role.ROLE_VIEWER, taskCount: 0 });

  void it('fills the user table columns, names lower-case', () => {
    const [header, row, row2] = usersTable([alice, bob]).split('\n');
    assert.deepEqual(header?.split(/\s{2,}/), [
      'ID',
      'ROLE',
      'ENABLED',
      'SCOPE',
      'TASKS',
      'TYPES',
      'PRIORITIES',
    ]);
    assert.deepEqual(row?.split(/\s{2,}/), [
      'alice',
      'scheduler',
      'true',
      'all',
      '3/10',
      'container.run,cron',
      'high,low',
    ]);
    // No limit reads "-"; an unset scope reads "own"; empty lists mean any.
    assert.deepEqual(row2?.split(/\s{2,}/), ['bob', 'viewer', 'false', 'own', '0/-', 'any', 'any']);
  });

  void it('lower-cases role and scope names', () => {
    assert.equal(roleName(Role.ROLE_ADMIN), 'admin');
    assert.equal(roleName(Role.ROLE_EXECUTOR), 'executor');
    assert.equal(roleName(Role.UNRECOGNIZED), 'unknown');
    assert.equal(scopeName(TaskScope.TASK_SCOPE_UNSPECIFIED), 'own');
    assert.equal(scopeName(TaskScope.TASK_SCOPE_ALL), 'all');
  });

  void it('prints a user as a key: value block', () => {
    const out = userDetails(alice);
    assert.match(out, /^id: +alice$/m);
    assert.match(out, /^role: +scheduler$/m);
    assert.match(out, /^tasks: +3\/10$/m);
    assert.match(out, /^max concurrent: +-$/m);
    assert.match(out, /^allowed priorities: +high,low$/m);
    assert.match(out, /^created: +2026-11-01T09:00:00Z$/m);
    assert.match(out, /^updated: +-$/m);
  });

  void it('fills the API key table columns, "never" for no expiry or use', () => {
    const keys = [
      ApiKey.fromPartial({
        id: 'key_5m2q8x0c1vtr',
        userId: 'alice',
        prefix: 'sk_live_5m2q',
        description: 'nightly \x1b[2Jreports',
        createTime: new Date('2026-11-01T09:00:00Z'),
        expireTime: new Date('2027-01-01T00:00:00Z'),
        lastUsedTime: new Date('2026-11-24T09:59:00Z'),
      }),
      ApiKey.fromPartial({ id: 'key_2', userId: 'alice', prefix: 'sk_live_abcd' }),
    ];
    const [header, row, row2] = apiKeysTable(keys).split('\n');
    assert.deepEqual(header?.split(/\s{2,}/), [
      'ID',
      'USER',
      'PREFIX',
      'CREATED',
      'EXPIRES',
      'LAST USED',
      'DESCRIPTION',
    ]);
    assert.deepEqual(row?.split(/\s{2,}/), [
      'key_5m2q8x0c1vtr',
      'alice',
      'sk_live_5m2q',
      '2026-11-01T09:00:00Z',
      '2027-01-01T00:00:00Z',
      '2026-11-24T09:59:00Z',
      'nightly \\x1b[2Jreports',
    ]);
    assert.deepEqual(row2?.split(/\s{2,}/), [
      'key_2',
      'alice',
      'sk_live_abcd',
      '-',
      'never',
      'never',
      '-',
    ]);
  });
});
