/**
 * The replica's etcd client: to the external etcd cluster given by --etcd-endpoints (with its
 * TLS files), or to a private single-member etcd started under the data folder (the embedded
 * default), which always runs with mutual TLS.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Etcd3, type IOptions } from 'etcd3';
import type { Logger } from 'pino';
import { ETCD_MAX_RECEIVE_BYTES } from '../store/range-limits.js';
import { startEmbeddedEtcd, type EmbeddedEtcd } from './embedded-etcd.js';

type EtcdCredentials = NonNullable<IOptions['credentials']>;

/** The server options this module reads (rows of server-options.ts). */
export interface EtcdClientOptions {
  dataDir: string;
  etcdEndpoints: string[];
  etcdCaFile?: string;
  etcdCertFile?: string;
  etcdKeyFile?: string;
}

export interface EtcdConnection {
  client: Etcd3;
  /** Set when the replica started its own embedded etcd. */
  embedded?: EmbeddedEtcd;
  /** Closes the client and stops the embedded etcd. */
  close(): Promise<void>;
}

/**
 * The etcd3 client's TLS credentials for an external etcd, from --etcd-ca-file,
 * --etcd-cert-file and --etcd-key-file; undefined if none is set (https endpoints then
 * verify etcd against the system's CAs).
 */
async function externalEtcdCredentials(
  options: Readonly<EtcdClientOptions>,
): Promise<EtcdCredentials | undefined> {
  const { etcdCaFile, etcdCertFile, etcdKeyFile } = options;
  if (etcdCaFile === undefined && etcdCertFile === undefined) return undefined;
  const read = (file: string | undefined) =>
    file === undefined ? Promise.resolve(undefined) : readFile(file);
  const [rootCertificate, certChain, privateKey] = await Promise.all(
    [etcdCaFile, etcdCertFile, etcdKeyFile].map(read),
  );
  return {
    // etcd3 types it as required but hands it to grpc's createSsl, where null means the
    // system's CAs.
    rootCertificate: rootCertificate ?? (null as unknown as Buffer),
    certChain,
    privateKey,
  };
}

/** Connects to the external etcd, or starts the embedded one and connects to it. */
export async function connectEtcd(
  options: Readonly<EtcdClientOptions>,
  logger: Logger,
): Promise<EtcdConnection> {
  let embedded: EmbeddedEtcd | undefined;
  let endpoints = options.etcdEndpoints;
  let credentials: EtcdCredentials | undefined;
  // gRPC's default receive limit (4 MiB) is smaller than four legal etcd values; the store
  // sizes every range page to fit this limit instead (store.ts, MAX_RANGE_PAGE).
  let grpcOptions: IOptions['grpcOptions'] = {
    'grpc.max_receive_message_length': ETCD_MAX_RECEIVE_BYTES,
  };
  if (endpoints.length === 0) {
    // Always mutual TLS: on plaintext loopback any local user could rewrite the cluster.
    embedded = await startEmbeddedEtcd({
      dataDir: path.join(options.dataDir, 'etcd'),
      tls: { dir: path.join(options.dataDir, 'etcd-tls') },
      onLog: (line) => logger.trace({ etcd: line }, 'etcd'),
    });
    endpoints = [embedded.endpoint];
    const tls = embedded.tls!; // always set when started with a TLS dir
    credentials = tls.credentials;
    grpcOptions = { ...grpcOptions, 'grpc.ssl_target_name_override': tls.serverName };
    if (embedded.tlsRenewed !== undefined) {
      logger.info({ reason: embedded.tlsRenewed }, 'embedded etcd TLS certificates issued');
    }
    logger.info({ endpoint: embedded.endpoint, clientCertAuth: true }, 'embedded etcd started');
  } else {
    credentials = await externalEtcdCredentials(options);
  }
  const client = new Etcd3({ hosts: endpoints, dialTimeout: 5000, credentials, grpcOptions });
  return {
    client,
    embedded,
    close: async () => {
      client.close();
      await embedded?.stop();
    },
  };
}
