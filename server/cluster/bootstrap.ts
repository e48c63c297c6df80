/**
 * Cluster bootstrap and key loading. The first replica to start on an empty etcd creates the
 * cluster record, the first data key, the CA and an admin API key in one transaction; every
 * replica then loads the data keys and the CA with its master key.
 */
import { mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, ConflictError, DecryptError } from '../../common/errors.js';
import { randomBase32 } from '../../common/ids.js';
import { generateApiKey, type ApiKeyRecord } from '../auth/api-keys.js';
import { Keyring, generateKey, unwrapDataKey, wrapDataKey } from '../crypto/sealer.js';
import { keys } from '../store/keys.js';
import { BOOTSTRAP_ADMIN, type UserRecord } from '../auth/users.js';
import { Tx, type Store, type Versioned } from '../store/store.js';
import { createCa, type CaMaterial } from '../tls/ca.js';

export interface ClusterMaterial {
  clusterId: string;
  keyring: Keyring;
  ca: CaMaterial;
  /** The admin API key, only on the replica that bootstrapped the cluster. */
  adminKey?: string;
}

const CA_KEY_AAD = 'citadel/ca/key';

/**
 * Creates the cluster if etcd holds none yet, then loads its keys. The admin key of a new
 * cluster is saved to `adminKeyFile` (0600): staged before the commit and moved into place
 * after it, so a crash can never leave a cluster whose only admin key was never written down.
 */
export async function bootstrapCluster(
  store: Store,
  masterKey: Buffer,
  adminKeyFile: string,
): Promise<ClusterMaterial> {
  let adminKey: string | undefined;
  if (!(await store.get(keys.cluster))) {
    const clusterId = randomBase32(12);
    const kid = 'dk1';
    const dataKey = generateKey();
    const ca = await createCa();
    const master = new Keyring(new Map([['master', masterKey]]), 'master');
    const admin = generateApiKey();
    const now = Date.now();
    const record: ApiKeyRecord = {
      id: `key_${randomBase32(12)}`,
      prefix: admin.key.slice(0, 12),
      userId: BOOTSTRAP_ADMIN,
      description: 'created with the cluster',
      createdAt: now,
      expiresAt: null,
    };
    const adminUser: UserRecord = {
      id: BOOTSTRAP_ADMIN,
      role: 'admin',
      allowedTaskTypes: [],
      allowedPriorities: [],
      maxTasks: 0,
      maxConcurrentExecutions: 0,
      taskScope: 'all',
      enabled: true,
      createdAt: now,
      updatedAt: now,
    };
    const tx = new Tx()
      .expect(keys.cluster, 0)
      .putJson(keys.cluster, { id: clusterId, createdAt: now })
      .put(keys.dataKey(kid), wrapDataKey(masterKey, kid, dataKey).toString('base64'))
      .put(keys.activeDataKey, kid)
      .put(keys.caCert, ca.certPem)
      .put(keys.caKey, master.seal(ca.keyPkcs8, CA_KEY_AAD).toString('base64'))
      .putJson(keys.user(BOOTSTRAP_ADMIN), adminUser)
      .putJson(keys.apiKey(admin.hashHex), record)
      .putJson(keys.apiKeyId(record.id), { hash: admin.hashHex })
      .record({
        eventType: 'configuration_change',
        action: 'bootstrap_cluster',
        result: 'success',
        userId: 'system:bootstrap',
        details: { cluster_id: clusterId, admin_key_id: record.id },
      });
    const staged = `${adminKeyFile}.pending`;
    await writePrivateFile(staged, admin.key + '\n');
    try {
      await store.commit(tx);
      adminKey = admin.key;
    } catch (err) {
      await rm(staged, { force: true });
      if (!(err instanceof ConflictError)) throw err;
      // Another replica bootstrapped first: load what it wrote.
    }
    if (adminKey) await rename(staged, adminKeyFile);
  }
  return { ...(await loadCluster(store, masterKey)), adminKey };
}

async function loadCluster(
  store: Store,
  masterKey: Buffer,
): Promise<Omit<ClusterMaterial, 'adminKey'>> {
  const cluster = await store.getJson<{ id: string }>(keys.cluster);
  const active = await store.get(keys.activeDataKey);
  const caCert = await store.get(keys.caCert);
  const caKey = await store.get(keys.caKey);
  if (!cluster || !active || !caCert || !caKey) {
    throw new ConfigError('--etcd-prefix', 'the cluster record in etcd is incomplete');
  }
  const dataKeys = new Map<string, Buffer>();
  const raw: Versioned<Buffer>[] = [];
  for await (const page of store.rawPages(keys.dataKeyPrefix)) raw.push(...page.items);
  try {
    for (const { key, value } of raw) {
      const kid = key.slice(keys.dataKeyPrefix.length);
      dataKeys.set(kid, unwrapDataKey(masterKey, kid, Buffer.from(value.toString(), 'base64')));
    }
    const master = new Keyring(new Map([['master', masterKey]]), 'master');
    const keyPkcs8 = master.open(Buffer.from(caKey.value.toString(), 'base64'), CA_KEY_AAD);
    return {
      clusterId: cluster.value.id,
      keyring: new Keyring(dataKeys, active.value.toString()),
      ca: { certPem: caCert.value.toString(), keyPkcs8 },
    };
  } catch (err) {
    if (err instanceof DecryptError) {
      throw new ConfigError(
        'master key',
        "does not open this cluster's keys: every replica needs the master key the cluster was created with",
      );
    }
    throw err;
  }
}

/**
 * Writes a file readable by its owner only (0600), creating the folder (0700). The content
 * goes to a fresh exclusive temporary file that is renamed into place, so it is never readable
 * through looser permissions of an older file or written through a symlink.
 */
export async function writePrivateFile(file: string, content: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${randomBase32(8)}.tmp`;
  try {
    await writeFile(tmp, content, { mode: 0o600, flag: 'wx' });
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
