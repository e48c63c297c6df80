/**
 * The registry of issued client certificates (workers and services) under `certs/<serial>`,
 * which is also the revocation list: a certificate is accepted only while its record exists
 * and carries no `revokedAt`. Every replica holds it in memory (a WatchedTable), so a
 * revocation committed anywhere is refused everywhere as soon as the watch event arrives.
 */
import type { Logger } from 'pino';
import { keys } from '../store/keys.js';
import type { Store, Tx, Versioned } from '../store/store.js';
import { WatchedTable } from '../store/watched-table.js';
import type { CertKind } from '../tls/identity-uri.js';

export interface CertRecord {
  /** Lowercase hex. */
  serial: string;
  kind: CertKind;
  /** Worker id or user id. */
  subject: string;
  issuedAt: number;
  notAfter: number;
  revokedAt?: number;
  revokeReason?: string;
}

export class CertRegistry extends WatchedTable<CertRecord> {
  constructor(store: Store, logger: Logger) {
    super(store, keys.certPrefix, logger);
  }

  /** Whether `serial` is registered for this holder, unrevoked and unexpired. */
  accepts(serial: string, kind: CertKind, subject: string, now = Date.now()): boolean {
    const record = this.get(serial);
    return (
      record !== undefined &&
      record.kind === kind &&
      record.subject === subject &&
      record.revokedAt === undefined &&
      record.notAfter > now
    );
  }

  /** Every registered certificate of one holder (from memory). */
  of(kind: CertKind, subject: string): CertRecord[] {
    return [...this.values()].filter((c) => c.kind === kind && c.subject === subject);
  }
}

/**
 * Adds to `tx` the revocation of each unrevoked certificate in `certs` (read from etcd) and the
 * deletion of expired ones. Returns the serials still registered (revoked but unexpired).
 */
export function revokeInTx(
  tx: Tx,
  certs: Iterable<Versioned<CertRecord>>,
  reason: string,
  now: number,
): string[] {
  const kept: string[] = [];
  for (const cert of certs) {
    if (cert.value.notAfter <= now) {
      tx.expect(cert.key, cert.modRevision).delete(cert.key);
      continue;
    }
    kept.push(cert.value.serial);
    if (cert.value.revokedAt === undefined) {
      tx.expect(cert.key, cert.modRevision).putJson(cert.key, {
        ...cert.value,
        revokedAt: now,
        revokeReason: reason,
      });
    }
  }
  return kept;
}
