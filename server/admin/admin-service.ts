/**
 * AdminService handlers: users and their API keys. Every change is one store transaction with
 * its audit record (`configuration_change`); keys are returned once and stored only as hashes.
 */
import {
  AlreadyExistsError,
  ConflictError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
} from '../../common/errors.js';
import { decodePageToken, encodePageToken, pageSize } from '../api/page-token.js';
import { randomBase32 } from '../../common/ids.js';
import type { ApiKey } from '../../gen/citadel/v1/admin.js';
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import { generateApiKey, type ApiKeyRecord } from '../auth/api-keys.js';
import { keys } from '../store/keys.js';
import { retryOnConflict } from '../store/retry-on-conflict.js';
import { configChange, description } from './admin-common.js';
import { unary, type Principal } from '../auth/admission.js';
import { workerAdmin, type WorkerAdminDeps } from './worker-admin.js';
import { Tx, type AuditEvent, type Store, type Versioned } from '../store/store.js';
import { validateUserId, type UserRecord } from '../auth/users.js';
import { UPDATABLE_USER_PATHS, userSettings, userToProto, validateRole } from './user-settings.js';

const ALL_USER_PATHS = UPDATABLE_USER_PATHS.filter((p) => p !== 'role');

export function adminService(deps: WorkerAdminDeps): AdminServiceServer {
  const store: Store = deps.store;

  const readUser = async (id: string, field = 'id'): Promise<Versioned<UserRecord>> => {
    const user = await store.getJson<UserRecord>(keys.user(validateUserId(id, field)));
    if (!user) throw new NotFoundError('user', id);
    return user;
  };
  const toUser = async (u: UserRecord) => userToProto(u, await store.count(keys.ownedPrefix(u.id)));
  const toKey = (k: ApiKeyRecord, lastUsedAt?: number): ApiKey => ({
    id: k.id,
    userId: k.userId,
    prefix: k.prefix,
    description: k.description,
    createTime: new Date(k.createdAt),
    expireTime: k.expiresAt === null ? undefined : new Date(k.expiresAt),
    lastUsedTime: lastUsedAt === undefined ? undefined : new Date(lastUsedAt),
  });

  /** Read-modify-write of a user with a compare on what was read. */
  const changeUser = async (
    principal: Principal,
    id: string,
    action: string,
    change: (u: UserRecord) => UserRecord,
    details: AuditEvent['details'] = {},
  ): Promise<UserRecord> =>
    retryOnConflict(async () => {
      const current = await readUser(id);
      const next = { ...change(current.value), updatedAt: Date.now() };
      const tx = new Tx()
        .expect(current.key, current.modRevision)
        .putJson(current.key, next)
        .record(configChange(principal, action, { user: id, ...details }));
      await store.commit(tx);
      return next;
    });

  return {
    ...workerAdmin(deps),
    createUser: unary(deps, 'AdminService/CreateUser', async (req, { principal }) => {
      if (!req.user) throw new InvalidArgumentError('user', 'is required');
      const id = validateUserId(req.user.id);
      const now = Date.now();
      const user: UserRecord = {
        id,
        role: validateRole(req.user.role),
        allowedTaskTypes: [],
        allowedPriorities: [],
        maxTasks: 0,
        maxConcurrentExecutions: 0,
        taskScope: 'own',
        ...userSettings(req.user, ALL_USER_PATHS),
        enabled: true,
        createdAt: now,
        updatedAt: now,
      };
      const tx = new Tx()
        .expect(keys.user(id), 0)
        .putJson(keys.user(id), user)
        .record(configChange(principal, 'create_user', { user: id, role: user.role }));
      try {
        await store.commit(tx);
      } catch (err) {
        if (err instanceof ConflictError)
          throw new AlreadyExistsError(`user ${JSON.stringify(id)} already exists`);
        throw err;
      }
      return { user: await toUser(user) };
    }),

    getUser: unary(deps, 'AdminService/GetUser', async (req) => ({
      user: await toUser((await readUser(req.id)).value),
    })),

    listUsers: unary(deps, 'AdminService/ListUsers', async (req) => {
      const size = pageSize(req.pageSize);
      const startAfter = decodePageToken(req.pageToken, keys.userPrefix);
      const page = await store.range<UserRecord>(keys.userPrefix, { startAfter, limit: size });
      const last = page.items[page.items.length - 1];
      return {
        users: await Promise.all(page.items.map((u) => toUser(u.value))),
        nextPageToken: page.more && last ? encodePageToken(last.key) : '',
      };
    }),

    updateUser: unary(deps, 'AdminService/UpdateUser', async (req, { principal }) => {
      if (!req.user) throw new InvalidArgumentError('user', 'is required');
      const paths = req.updateMask ?? [];
      if (paths.length === 0) {
        throw new InvalidArgumentError(
          'update_mask',
          `is required: name the fields to change (${UPDATABLE_USER_PATHS.join(', ')})`,
        );
      }
      const settings = userSettings(req.user, paths);
      if (
        req.user.id === principal.userId &&
        settings.role !== undefined &&
        settings.role !== 'admin'
      ) {
        throw new FailedPreconditionError('you cannot take the admin role from yourself');
      }
      const user = await changeUser(
        principal,
        req.user.id,
        'update_user',
        (u) => ({ ...u, ...settings }),
        {
          fields: paths.join(','),
          // The new values (none is secret), so a grant can be reconstructed from the audit.
          values: JSON.stringify(settings),
        },
      );
      return { user: await toUser(user) };
    }),

    disableUser: unary(deps, 'AdminService/DisableUser', async (req, { principal }) => {
      if (req.id === principal.userId) {
        throw new FailedPreconditionError('you cannot disable yourself');
      }
      const reason = description(req.reason);
      const user = await changeUser(
        principal,
        req.id,
        'disable_user',
        (u) => ({ ...u, enabled: false }),
        {
          reason,
        },
      );
      return { user: await toUser(user) };
    }),

    enableUser: unary(deps, 'AdminService/EnableUser', async (req, { principal }) => {
      const user = await changeUser(principal, req.id, 'enable_user', (u) => ({
        ...u,
        enabled: true,
      }));
      return { user: await toUser(user) };
    }),

    createApiKey: unary(deps, 'AdminService/CreateApiKey', async (req, { principal }) => {
      const user = await readUser(req.userId, 'user_id');
      const expiresAt = req.expireTime?.getTime() ?? null;
      if (expiresAt !== null && !(expiresAt > Date.now())) {
        throw new InvalidArgumentError('expire_time', 'must be in the future');
      }
      const generated = generateApiKey();
      const record: ApiKeyRecord = {
        id: `key_${randomBase32(12)}`,
        prefix: generated.key.slice(0, 12),
        userId: user.value.id,
        description: description(req.description),
        createdAt: Date.now(),
        expiresAt,
      };
      const tx = new Tx()
        .expect(user.key, user.modRevision)
        .putJson(keys.apiKey(generated.hashHex), record)
        .putJson(keys.apiKeyId(record.id), { hash: generated.hashHex })
        .record(
          configChange(principal, 'create_api_key', { user: record.userId, key_id: record.id }),
        );
      await store.commit(tx);
      return { apiKey: toKey(record), key: generated.key };
    }),

    listApiKeys: unary(deps, 'AdminService/ListApiKeys', async (req) => {
      const user = await readUser(req.userId, 'user_id');
      const records = [...deps.apiKeys.values()]
        .filter((k) => k.userId === user.value.id)
        .sort((a, b) => a.createdAt - b.createdAt);
      const usage = await store.getManyJson<{ lastUsedAt: number }>(
        records.map((k) => keys.apiKeyUsage(k.id)),
      );
      return {
        apiKeys: records.map((k) => toKey(k, usage.get(keys.apiKeyUsage(k.id))?.value.lastUsedAt)),
      };
    }),

    revokeApiKey: unary(deps, 'AdminService/RevokeApiKey', async (req, { principal }) => {
      if (!/^key_[0-9a-z]{1,32}$/.test(req.id)) {
        throw new InvalidArgumentError('id', 'is not an API key id (key_...)');
      }
      const index = await store.getJson<{ hash: string }>(keys.apiKeyId(req.id));
      const record = index && (await store.getJson<ApiKeyRecord>(keys.apiKey(index.value.hash)));
      if (!index || !record) throw new NotFoundError('api key', req.id);
      const tx = new Tx()
        .expect(index.key, index.modRevision)
        .expect(record.key, record.modRevision)
        .delete(index.key)
        .delete(record.key)
        .delete(keys.apiKeyUsage(req.id))
        .record(
          configChange(principal, 'revoke_api_key', { user: record.value.userId, key_id: req.id }),
        );
      await store.commit(tx);
      return { apiKey: toKey(record.value) };
    }),
  };
}
