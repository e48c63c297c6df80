/**
 * `citadel-agent join`: pin the cluster CA, make a key pair and CSR locally, exchange the
 * bootstrap token and CSR for a worker identity, and write the data folder. The token is sent
 * once, only after the CA matched, and never written to disk.
 */
import { Metadata, credentials } from '@grpc/grpc-js';
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs/promises';

import { FailedPreconditionError } from '../common/errors.js';
import {
  type JoinRequest,
  type JoinResponse,
  JoinServiceClient,
} from '../gen/citadel/v1/join_service.js';
import type { JoinOptions } from './agent-options.js';
import { identityFromPem, type WorkerIdentity } from './identity.js';
import { generateWorkerKey } from './keys.js';
import { caHash, fetchPinnedCa, type PinnedCa } from './pinned-ca.js';
import { formatServerAddress, tlsChannelOptions, type ServerAddress } from './server-address.js';
import {
  type JoinState,
  dataPaths,
  ensureDataDir,
  readJoinState,
  writeJoinState,
  writePrivateFile,
  writePublicFile,
} from './state.js';

/** What a successful join produced. */
export interface JoinResult {
  readonly workerId: string;
  /** Absolute path of the data folder. */
  readonly dataDir: string;
  /** What was written to `state.json`. */
  readonly state: JoinState;
  /** Lowercase hex serial of the new certificate. */
  readonly certificateSerial: string;
  /** Set when the data folder is open to group or others (the key file itself is 0600). */
  readonly dataDirWarning?: string;
}

/**
 * Joins the cluster and writes `ca.crt`, `worker.key` (0600), `worker.crt` and `state.json`.
 *
 * @throws FailedPreconditionError if the data folder already holds an identity (without
 *   `force`), or the server's answer does not fit (another CA, a certificate for another key).
 * @throws UnauthenticatedError on a CA hash mismatch; nothing but a TLS handshake was sent.
 * @throws UnavailableError if the server cannot be reached for pinning.
 * @throws the grpc-js ServiceError of a refused or failed Join call.
 */
export async function joinCluster(options: JoinOptions): Promise<JoinResult> {
  const paths = dataPaths(options.dataDir);
  if (!options.force) await refuseExistingIdentity(paths);

  const ca = await fetchPinnedCa(options.server, options.caHash, options.timeoutMs);

  const { groupOrOtherAccess } = await ensureDataDir(paths.dir);
  // Joining again (--force) replaces the key: the old identity stops being usable here.
  for (const stale of [paths.state, paths.status, paths.nextKey, paths.nextCert]) {
    await fs.rm(stale, { force: true });
  }
  const material = await generateWorkerKey(options.keyType, options.hostname);
  // The key is on disk, private, before anything that depends on it leaves the host.
  await writePrivateFile(paths.key, material.privateKeyPem);

  const response = await callJoin(options.server, ca.pem, options.timeoutMs, {
    token: options.token,
    csrPem: material.csrPem,
    hostname: options.hostname,
  });

  const identity = checkJoinResponse(response, ca, material.privateKeyPem);

  const state: JoinState = {
    workerId: response.workerId,
    servers: [formatServerAddress({ host: options.server.host, port: response.workerPort })],
    heartbeatIntervalMs: response.heartbeatIntervalMs || 2_000,
    leaseTtlMs: response.leaseTtlMs || 10_000,
    keyType: options.keyType,
    joinedAt: new Date().toISOString(),
  };
  await writePublicFile(paths.ca, ca.pem);
  await writePublicFile(paths.cert, identity.certPem);
  // state.json last: its presence means the folder holds a complete identity.
  await writeJoinState(paths, state);

  return {
    workerId: state.workerId,
    dataDir: paths.dir,
    state,
    certificateSerial: identity.serial,
    ...(groupOrOtherAccess
      ? { dataDirWarning: `${paths.dir} can be entered by group or others; chmod 700 it` }
      : {}),
  };
}

/** Calls JoinService.Join over TLS that trusts only the pinned CA. */
function callJoin(
  server: ServerAddress,
  caPem: string,
  timeoutMs: number,
  request: JoinRequest,
): Promise<JoinResponse> {
  const client = new JoinServiceClient(
    formatServerAddress(server),
    credentials.createSsl(Buffer.from(caPem)),
    tlsChannelOptions(server),
  );
  return new Promise<JoinResponse>((resolve, reject) => {
    client.join(request, new Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err) reject(err);
      else resolve(res);
    });
  }).finally(() => client.close());
}

/**
 * Checks the Join answer before anything is written: the CA is the pinned one, and the
 * certificate is for our key and from that CA.
 */
function checkJoinResponse(
  response: JoinResponse,
  ca: PinnedCa,
  privateKeyPem: string,
): WorkerIdentity {
  if (response.workerId === '' || response.workerPort === 0) {
    throw new FailedPreconditionError('the server did not name a worker id and worker port');
  }
  try {
    if (
      response.caCertificatePem !== '' &&
      caHash(new X509Certificate(response.caCertificatePem).raw) !== ca.hash
    ) {
      throw new Error('it names a CA other than the pinned one');
    }
    return identityFromPem(ca.pem, privateKeyPem, response.certificatePem);
  } catch (err) {
    throw new FailedPreconditionError(
      `the server's answer is unusable: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

async function refuseExistingIdentity(paths: ReturnType<typeof dataPaths>): Promise<void> {
  let existing: JoinState;
  try {
    existing = await readJoinState(paths);
  } catch {
    return; // nothing usable there: joining is what the operator wants
  }
  throw new FailedPreconditionError(
    `already joined as ${existing.workerId} (${paths.state}); use --force to join again ` +
      `with a new identity, or run: citadel-agent run --data-dir ${paths.dir}`,
  );
}
