/**
 * Idempotency keys on CreateTask: where an owner's key is recorded, and the keyed fingerprint
 * of the request that used it, so a retry of the same request returns the same task and a
 * different request under the same key is refused, while etcd holds nothing a guessed payload
 * could be checked against (docs/architecture.md, "Encryption at rest").
 */
import { createHash } from 'node:crypto';
import type { Keyring } from '../crypto/sealer.js';
import { keys } from '../store/keys.js';
import { legacyRequestHash } from './task-validation.js';

/**
 * The HKDF info of the key that idempotency records' request fingerprints are made with
 * (server/crypto/sealer.ts `fingerprint`). A new version needs a new label.
 */
export const IDEMPOTENCY_FINGERPRINT = 'citadel idempotency fingerprint v1';

/**
 * `idempotency/<sha256(owner, key)>`: the task an owner's idempotency key created, and a
 * fingerprint of the request that created it: HMAC-SHA256 of the owner and the canonical
 * request under a key derived from data key `kid`, so etcd holds nothing a guessed payload
 * could be checked against. Records written before fingerprints were keyed hold `requestHash`,
 * the unsalted SHA-256 of the canonical request, instead; they are still honoured.
 */
export interface IdempotencyRecord {
  taskId: string;
  kid?: string;
  requestHmac?: string;
  /** The unsalted form, of records written before fingerprints were keyed: read, never written. */
  requestHash?: string;
}

/**
 * The fingerprint of `owner`'s create request (its canonical form) under data key `kid`.
 * @throws DecryptError if `kid` is no longer in the keyring.
 */
export function requestFingerprint(
  keyring: Keyring,
  owner: string,
  request: string,
  kid: string,
): string {
  // The owner is in it, so equal requests of two owners do not show as equal in etcd.
  return keyring.fingerprint(`${owner}\0${request}`, IDEMPOTENCY_FINGERPRINT, kid);
}

/** Whether the idempotency record `prior` was written for this owner's `request`. */
export function sameRequest(
  keyring: Keyring,
  prior: IdempotencyRecord,
  owner: string,
  request: string,
): boolean {
  if (prior.requestHmac !== undefined && prior.kid !== undefined) {
    return prior.requestHmac === requestFingerprint(keyring, owner, request, prior.kid);
  }
  // Written before fingerprints were keyed: honoured as it was then.
  return prior.requestHash === legacyRequestHash(request);
}

/** The key (`idempotency/<sha256(owner, key)>`) that maps an owner's idempotency key to its task. */
export function idempotencyKeyOf(owner: string, key: string): string {
  return keys.idempotency(createHash('sha256').update(`${owner}\0${key}`).digest('hex'));
}
