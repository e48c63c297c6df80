/**
 * AdminService handlers for API keys: created for a user, listed, revoked. A key is returned
 * once, when it is created, and stored only as its hash; each change is one store transaction
 * with its audit record (`configuration_change`).
 */
import { InvalidArgumentError, NotFoundError } from '../../common/errors.js';
import { randomBase32 } from '../../common/ids.js';
import type { ApiKey } from '../../gen/citadel/v1/admin.js';
import type { AdminServiceServer } from '../../gen/citadel/v1/admin_service.js';
import { unary, type RpcDeps } from '../auth/admission.js';
import { generateApiKey, type ApiKeyRecord } from '../auth/api-keys.js';
import { keys } from '../store/keys.js';
import { Tx } from '../store/store.js';
import { configChange, description, readUser } from './admin-common.js';

type ApiKeyAdminRpcs = Pick<AdminServiceServer, 'createApiKey' | 'listApiKeys' | 'revokeApiKey'>;

/** The API view of a stored key: its prefix, never the key. */
function toKey(k: ApiKeyRecord, lastUsedAt?: number): ApiKey {
  return {
    id: k.id,
    userId: k.userId,
    prefix: k.prefix,
    description: k.description,
    createTime: new Date(k.createdAt),
    expireTime: k.expiresAt === null ? undefined : new Date(k.expiresAt),
    lastUsedTime: lastUsedAt === undefined ? undefined : new Date(lastUsedAt),
  };
}

/** CreateApiKey, ListApiKeys and RevokeApiKey of AdminService. */
export function apiKeyAdmin(deps: RpcDeps): ApiKeyAdminRpcs {
  const { store } = deps;

  return {
    createApiKey: unary(deps, 'AdminService/CreateApiKey', async (req, { principal }) => {
      const user = await readUser(store, req.userId, 'user_id');
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
      const user = await readUser(store, req.userId, 'user_id');
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
