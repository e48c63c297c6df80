/**
 * The cluster area's registration: the replica's store over its etcd connection, the master
 * key, and the cluster itself (created on the first start, loaded on every later one), with the
 * CA certificate written beside the data for clients.
 */
import path from 'node:path';
import type { Etcd3 } from 'etcd3';
import { ConfigError } from '../../common/errors.js';
import { randomBase32 } from '../../common/ids.js';
import { loadMasterKey } from '../crypto/master-key.js';
import { Store } from '../store/store.js';
import { bootstrapCluster, writePrivateFile, type ClusterMaterial } from './bootstrap.js';

/** The server options this area reads (rows of server-options.ts). */
export interface ClusterOptions {
  dataDir: string;
  etcdPrefix: string;
  etcdEndpoints: string[];
  masterKeyFile?: string;
  masterKeyEnv?: string;
}

export interface ClusterArea {
  store: Store;
  material: ClusterMaterial;
  /** This replica's id (in audit records and leader keys). */
  replicaId: string;
  /** Where the CA certificate was written. */
  caPath: string;
}

/**
 * Opens the cluster on `client`: loads the master key, then creates or loads the cluster.
 * @throws ConfigError when replicas of an external etcd are not given the master key.
 */
export async function openCluster(
  client: Etcd3,
  options: Readonly<ClusterOptions>,
): Promise<ClusterArea> {
  const replicaId = randomBase32(8);
  const store = new Store({ client, prefix: options.etcdPrefix, replicaId });
  const embedded = options.etcdEndpoints.length === 0;
  const master = await loadMasterKey({
    envValue: options.masterKeyEnv,
    file: options.masterKeyFile,
    dataDir: options.dataDir,
    // Only the embedded default makes its own key: replicas of a shared etcd must all be
    // given the cluster's key, or one host's disk would silently hold the only copy.
    createIfMissing: embedded,
  }).catch((err: unknown) => {
    if (embedded || options.masterKeyEnv !== undefined || options.masterKeyFile !== undefined) {
      throw err;
    }
    throw new ConfigError(
      'CITADEL_MASTER_KEY',
      'with --etcd-endpoints every replica needs the cluster master key: set CITADEL_MASTER_KEY ' +
        '(base64 of 32 random bytes, e.g. from `openssl rand -base64 32`) or --master-key-file',
    );
  });
  const material = await bootstrapCluster(
    store,
    master.key,
    path.join(options.dataDir, 'admin.key'),
  );
  const caPath = path.join(options.dataDir, 'ca.crt');
  await writePrivateFile(caPath, material.ca.certPem);
  return { store, material, replicaId, caPath };
}
