/**
 * Signed heartbeats: the HeartbeatBody a worker sends, encoded once and signed over its exact
 * bytes with the worker's private key (docs/workers.md, "Heartbeats"). Pure, so tests can
 * build valid heartbeats and forge invalid ones.
 */
import { type KeyObject, sign } from 'node:crypto';

import { InvalidArgumentError } from '../common/errors.js';
import { HeartbeatBody, HeartbeatRequest } from '../gen/citadel/v1/worker_service.js';

/** What goes into one heartbeat. */
export interface HeartbeatFields {
  /** The worker's id; must match the calling certificate. */
  workerId: string;
  /** Strictly increasing per worker; see {@link HeartbeatSequence}. */
  sequence: number;
  /** When the agent sends it. */
  sendTime: Date;
  /** Lowercase hex serial of the calling certificate. */
  certificateSerial: string;
  /** Executions running now. @default [] */
  runningExecutionIds?: readonly string[];
  /** How many more executions the agent can take now. @default 0 */
  freeSlots?: number;
  /** How many executions the agent can run at once. @default 0 */
  totalSlots?: number;
}

/** Serializes the body exactly as it is signed and sent. */
export function encodeHeartbeatBody(fields: HeartbeatFields): Buffer {
  const body = HeartbeatBody.fromPartial({
    workerId: fields.workerId,
    sequence: fields.sequence,
    sendTime: fields.sendTime,
    certificateSerial: fields.certificateSerial,
    runningExecutionIds: [...(fields.runningExecutionIds ?? [])],
    freeSlots: fields.freeSlots ?? 0,
    totalSlots: fields.totalSlots ?? 0,
  });
  return Buffer.from(HeartbeatBody.encode(body).finish());
}

/**
 * Signs `bytes` as the server verifies a heartbeat: ECDSA with SHA-256 and a DER-encoded
 * signature for P-256 keys, pure Ed25519 for Ed25519 keys.
 *
 * @throws InvalidArgumentError for any other kind of key.
 */
export function signHeartbeatBody(bytes: Uint8Array, privateKey: KeyObject): Buffer {
  switch (privateKey.asymmetricKeyType) {
    case 'ec':
      if (privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
        throw new InvalidArgumentError('privateKey', 'EC keys must be on curve P-256');
      }
      return sign('sha256', bytes, { key: privateKey, dsaEncoding: 'der' });
    case 'ed25519':
      return sign(null, bytes, privateKey);
    default:
      throw new InvalidArgumentError(
        'privateKey',
        `unsupported key type ${privateKey.asymmetricKeyType ?? privateKey.type}; want P-256 or Ed25519`,
      );
  }
}

/**
 * Builds the HeartbeatRequest for `fields`: the encoded body and the signature over it.
 *
 * @throws InvalidArgumentError if the key is neither P-256 nor Ed25519.
 */
export function signedHeartbeat(fields: HeartbeatFields, privateKey: KeyObject): HeartbeatRequest {
  const body = encodeHeartbeatBody(fields);
  return HeartbeatRequest.fromPartial({ body, signature: signHeartbeatBody(body, privateKey) });
}

/**
 * Heartbeat sequence numbers: they start at the current time in microseconds, so a restarted
 * agent is above its previous run without a stored counter, and go up by one per heartbeat.
 * A number is exact here: microseconds since 1970 stay below 2^53 until the year 2255.
 */
export class HeartbeatSequence {
  #last: number;

  /** @param startMicros the first number handed out. @default Date.now() * 1000 */
  constructor(startMicros: number = Date.now() * 1000) {
    this.#last = startMicros - 1;
  }

  /** The next number; every call returns a larger one. */
  next(): number {
    this.#last += 1;
    return this.#last;
  }
}
