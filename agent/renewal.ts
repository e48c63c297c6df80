/**
 * Certificate renewal: when to renew (40-50 % into the certificate's lifetime, jittered so a
 * fleet joined together does not renew together) and how (a fresh key pair and CSR, the
 * RenewCertificate call over the current connection, and the files replaced as one unit).
 */
import { identityFromPem, saveRenewedIdentity, type WorkerIdentity } from './identity.js';
import { generateWorkerKey } from './keys.js';
import type { DataPaths } from './state.js';
import type { WorkerConnection } from './worker-client.js';

/** The server back-dates notBefore by this much for peers with slow clocks. */
export const SERVER_BACKDATE_MS = 5 * 60 * 1000;

/** Earliest and latest renewal point, as fractions of the certificate's lifetime. */
export const RENEW_AT_FRACTION = { min: 0.4, max: 0.5 } as const;

/**
 * When the certificate was issued: notBefore, moved forward by the server's back-dating when
 * the validity is long enough to contain it, and never later than `nowMs` (a clock behind the
 * server's must not push renewal out).
 */
export function estimatedIssuedAtMs(
  validity: { notBefore: Date; notAfter: Date },
  nowMs: number,
): number {
  const notBefore = validity.notBefore.getTime();
  const span = validity.notAfter.getTime() - notBefore;
  const issued = span > SERVER_BACKDATE_MS ? notBefore + SERVER_BACKDATE_MS : notBefore;
  return Math.min(issued, nowMs);
}

/**
 * Milliseconds from `nowMs` until the certificate should be renewed: a point drawn uniformly
 * between 40 % and 50 % of the way from issuance to notAfter. Zero when that point has passed
 * (an agent restarted late in the certificate's life renews at once).
 *
 * @param random a source of numbers in [0, 1). @default Math.random
 */
export function renewalDelayMs(
  validity: { notBefore: Date; notAfter: Date },
  nowMs: number,
  random: () => number = Math.random,
): number {
  const issued = estimatedIssuedAtMs(validity, nowMs);
  const lifetime = validity.notAfter.getTime() - issued;
  const fraction =
    RENEW_AT_FRACTION.min + (RENEW_AT_FRACTION.max - RENEW_AT_FRACTION.min) * random();
  return Math.max(0, Math.round(issued + lifetime * fraction - nowMs));
}

/**
 * How long to wait before trying a failed renewal again: the reconnect-style doubling from
 * 1 s, capped at 30 s and at a tenth of the time left, so there are several tries before the
 * certificate expires.
 */
export function renewalRetryDelayMs(attempt: number, notAfterMs: number, nowMs: number): number {
  const doubling = 1_000 * 2 ** Math.max(0, attempt);
  const leftTenth = Math.max(0, notAfterMs - nowMs) / 10;
  return Math.max(500, Math.round(Math.min(doubling, 30_000, leftTenth)));
}

/** A renewed identity, and the error if it could not be stored. */
export interface RenewalOutcome {
  readonly identity: WorkerIdentity;
  /**
   * Set when the files could not be replaced. The server has retired the old certificate, so
   * the agent keeps the new identity in memory and stores it again at the next renewal.
   */
  readonly storeError?: unknown;
}

/**
 * Renews the certificate over `connection` (made with `current`): generates a key pair of the
 * same type, sends the CSR, checks the answer, and stores the new key (0600) and certificate.
 * The caller must reconnect with the new identity: the server refuses the old certificate from
 * now on.
 *
 * @throws the grpc-js ServiceError of a refused or failed call (nothing was written).
 * @throws FailedPreconditionError if the new certificate is not for the new key or not from
 *   the pinned CA (nothing was written).
 */
export async function renewCertificate(
  connection: WorkerConnection,
  paths: DataPaths,
  current: WorkerIdentity,
  options: { commonName: string; deadlineMs: number },
): Promise<RenewalOutcome> {
  const material = await generateWorkerKey(current.keyType, options.commonName);
  const response = await connection.renewCertificate(
    { csrPem: material.csrPem },
    options.deadlineMs,
  );
  const identity = identityFromPem(current.caPem, material.privateKeyPem, response.certificatePem);
  try {
    await saveRenewedIdentity(paths, identity);
    return { identity };
  } catch (storeError) {
    return { identity, storeError };
  }
}
