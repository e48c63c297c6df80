/**
 * The worker's identity on disk: its private key, its client certificate and the pinned CA,
 * loaded and checked as one unit, and replaced as one unit on renewal. A renewal writes
 * `worker.key.next` and `worker.crt.next` first, then renames them over the live files; if
 * the agent dies between the two renames, the next load finishes the job instead of pairing
 * a new key with an old certificate.
 */
import { type KeyObject, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { ConfigError, FailedPreconditionError } from '../common/errors.js';
import { type KeyType, keyTypeOf, loadPrivateKey } from './keys.js';
import { type DataPaths, syncDir, writePrivateFile, writePublicFile } from './state.js';

/** A loaded key, its certificate and the CA: what mutual TLS and heartbeats need. */
export interface WorkerIdentity {
  readonly caPem: string;
  readonly keyPem: string;
  readonly certPem: string;
  readonly privateKey: KeyObject;
  readonly keyType: KeyType;
  /** Lowercase hex, as heartbeats carry it. */
  readonly serial: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/**
 * Builds an identity from PEM text, checking that the certificate is for the key and was
 * issued by the CA.
 *
 * @throws FailedPreconditionError when the key and certificate do not match, the key type is
 *   not one workers use, or the CA did not sign the certificate.
 */
export function identityFromPem(caPem: string, keyPem: string, certPem: string): WorkerIdentity {
  const privateKey = loadPrivateKey(keyPem);
  const keyType = keyTypeOf(privateKey);
  if (keyType === undefined) {
    throw new FailedPreconditionError('worker key is neither P-256 nor Ed25519');
  }
  const cert = new X509Certificate(certPem);
  if (!cert.checkPrivateKey(privateKey)) {
    throw new FailedPreconditionError('worker certificate is not for the worker key');
  }
  const ca = new X509Certificate(caPem);
  if (!cert.checkIssued(ca) || !cert.verify(ca.publicKey)) {
    throw new FailedPreconditionError('worker certificate was not issued by the pinned CA');
  }
  return {
    caPem,
    keyPem,
    certPem,
    privateKey,
    keyType,
    serial: certificateSerial(cert),
    notBefore: new Date(cert.validFrom),
    notAfter: new Date(cert.validTo),
  };
}

/** A certificate's serial as heartbeats and the server's registry spell it: lowercase hex. */
export function certificateSerial(cert: X509Certificate | string): string {
  const parsed = typeof cert === 'string' ? new X509Certificate(cert) : cert;
  return parsed.serialNumber.toLowerCase();
}

/**
 * Loads the identity from the data folder, first completing a renewal that was interrupted
 * between its two renames.
 *
 * @throws ConfigError when a file is missing or unreadable.
 * @throws FailedPreconditionError when no key and certificate in the folder match.
 */
export async function loadIdentity(paths: DataPaths): Promise<WorkerIdentity> {
  const caPem = await readRequired(paths.ca);
  const nextKey = await readOptional(paths.nextKey);
  const nextCert = await readOptional(paths.nextCert);
  if (nextKey !== undefined && nextCert !== undefined) {
    const renewed = tryIdentity(caPem, nextKey, nextCert);
    if (renewed !== undefined) {
      await promote(paths.nextKey, paths.key);
      await promote(paths.nextCert, paths.cert);
      return renewed;
    }
  }
  const keyPem = await readRequired(paths.key);
  if (nextCert !== undefined) {
    // The key was renamed but the certificate was not.
    const halfway = tryIdentity(caPem, keyPem, nextCert);
    if (halfway !== undefined) {
      await promote(paths.nextCert, paths.cert);
      return halfway;
    }
  }
  const identity = identityFromPem(caPem, keyPem, await readRequired(paths.cert));
  // Leftovers of a renewal that never got its certificate: nothing refers to them.
  await fs.rm(paths.nextKey, { force: true });
  await fs.rm(paths.nextCert, { force: true });
  return identity;
}

/**
 * Stores a renewed identity: both `.next` files first (the key with mode 0600), then the
 * renames, key first, so {@link loadIdentity} can finish an interrupted replacement.
 */
export async function saveRenewedIdentity(
  paths: DataPaths,
  identity: WorkerIdentity,
): Promise<void> {
  await writePrivateFile(paths.nextKey, identity.keyPem);
  await writePublicFile(paths.nextCert, identity.certPem);
  await promote(paths.nextKey, paths.key);
  await promote(paths.nextCert, paths.cert);
}

function tryIdentity(caPem: string, keyPem: string, certPem: string): WorkerIdentity | undefined {
  try {
    return identityFromPem(caPem, keyPem, certPem);
  } catch {
    return undefined;
  }
}

async function promote(from: string, to: string): Promise<void> {
  await fs.rename(from, to);
  await syncDir(path.dirname(to));
}

async function readRequired(file: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, `cannot read: ${(err as Error).message}`);
  }
}

async function readOptional(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(file, `cannot read: ${(err as Error).message}`);
  }
}
