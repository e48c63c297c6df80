/**
 * Checks one signed heartbeat (docs/workers.md, "Heartbeats"): the signature with the public
 * key of the connection's own certificate, the body's identity against that certificate, the
 * send time against the allowed skew, and the sequence against the last accepted one.
 */
import { verify } from 'node:crypto';
import { UnauthenticatedError } from '../../common/errors.js';
import { HeartbeatBody, type HeartbeatRequest } from '../../gen/citadel/v1/worker_service.js';
import type { PeerCertificate } from '../tls/peer-certificate.js';

export type HeartbeatRefusalReason =
  'malformed' | 'bad_signature' | 'identity_mismatch' | 'stale' | 'replayed';

/** A heartbeat that cannot be accepted; answered UNAUTHENTICATED, audited, counted. */
export class HeartbeatRefusedError extends UnauthenticatedError {
  constructor(
    readonly reason: HeartbeatRefusalReason,
    detail: string,
  ) {
    super(`heartbeat refused (${reason}): ${detail}`);
  }
}

/** Largest heartbeat body accepted, in bytes. */
const MAX_BODY_BYTES = 64 * 1024;
/** Most workers whose last sequence one replica remembers. */
const MAX_TRACKED = 200_000;

export class HeartbeatVerifier {
  private readonly lastSequence = new Map<string, number>();

  constructor(
    private readonly options: { maxSkewMs: number },
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Verifies `request` as sent over a connection authenticated by `peer`, and records its
   * sequence as the last accepted one.
   * @throws HeartbeatRefusedError with the reason.
   */
  accept(request: HeartbeatRequest, peer: PeerCertificate, floor = 0): HeartbeatBody {
    if (request.body.length === 0 || request.body.length > MAX_BODY_BYTES) {
      throw new HeartbeatRefusedError('malformed', `the body must be 1 to ${MAX_BODY_BYTES} bytes`);
    }
    const type = peer.publicKey.asymmetricKeyType;
    let valid = false;
    try {
      valid =
        type === 'ed25519'
          ? verify(null, request.body, peer.publicKey, request.signature)
          : verify(
              'sha256',
              request.body,
              { key: peer.publicKey, dsaEncoding: 'der' },
              request.signature,
            );
    } catch {
      valid = false;
    }
    if (!valid) {
      throw new HeartbeatRefusedError(
        'bad_signature',
        'the signature does not verify with the key of this connection’s certificate',
      );
    }
    let body: HeartbeatBody;
    try {
      body = HeartbeatBody.decode(request.body);
    } catch {
      throw new HeartbeatRefusedError('malformed', 'the body is not a HeartbeatBody');
    }
    if (body.workerId !== peer.subject || body.certificateSerial.toLowerCase() !== peer.serial) {
      throw new HeartbeatRefusedError(
        'identity_mismatch',
        'worker_id and certificate_serial must name the calling certificate',
      );
    }
    const sentAt = body.sendTime?.getTime();
    const now = this.now();
    if (sentAt === undefined || Math.abs(now - sentAt) > this.options.maxSkewMs) {
      throw new HeartbeatRefusedError(
        'stale',
        `send_time must be within ${this.options.maxSkewMs} ms of the server's clock`,
      );
    }
    const last = Math.max(this.lastSequence.get(body.workerId) ?? 0, floor);
    if (!(body.sequence > last)) {
      throw new HeartbeatRefusedError('replayed', 'sequence is not above the last accepted one');
    }
    this.remember(body.workerId, body.sequence);
    return body;
  }

  /** Whether this replica has accepted a heartbeat of `workerId` (else ask etcd for a floor). */
  knows(workerId: string): boolean {
    return this.lastSequence.has(workerId);
  }

  /** Forgets a worker (blocked, retired). */
  forget(workerId: string): void {
    this.lastSequence.delete(workerId);
  }

  private remember(workerId: string, sequence: number): void {
    if (!this.lastSequence.has(workerId) && this.lastSequence.size >= MAX_TRACKED) {
      const oldest = this.lastSequence.keys().next().value;
      if (oldest !== undefined) this.lastSequence.delete(oldest);
    }
    this.lastSequence.set(workerId, sequence);
  }
}
