/**
 * Pure parts of `citadelctl service-cert ...`: the flags turned into a plan (user, lifetime, key
 * type and the files to write) and into AdminService requests. All flag validation happens
 * here, before any key is generated or any call made; each error names the flag to fix.
 */

import { join, resolve } from 'node:path';

import { parseDuration } from '../../common/duration.js';
import { InvalidArgumentError } from '../../common/errors.js';
import {
  IssueServiceCertificateRequest,
  RevokeServiceCertificateRequest,
} from '../../gen/citadel/v1/admin_service.js';
import { parseNonEmpty, parseUserId } from '../flags.js';

/** Key algorithms a service certificate may use: ECDSA P-256 or Ed25519. */
export type ServiceKeyType = 'p256' | 'ed25519';

/** Shortest and longest certificate lifetime the contract accepts, and the default. */
export const MIN_VALIDITY_SECONDS = 60;
export const MAX_VALIDITY_SECONDS = 365 * 24 * 60 * 60;
export const DEFAULT_VALIDITY_SECONDS = 90 * 24 * 60 * 60;

/** Flags of `service-cert issue`. */
export interface IssueServiceCertFlags {
  /** Where the key and certificates go. @default the current directory */
  outDir?: string;
  /** Certificate lifetime, 60s to 365d. @default "90d" */
  validity?: string;
  /** `p256` or `ed25519`. @default "p256" */
  keyType?: string;
}

/** What `service-cert issue` will do, resolved from its arguments. */
export interface ServiceCertPlan {
  readonly userId: string;
  readonly validitySeconds: number;
  readonly keyType: ServiceKeyType;
  /** Absolute path of the output directory. */
  readonly outDir: string;
  /** Absolute path of the private key to create, `<out-dir>/<user>.key`. */
  readonly keyFile: string;
  /** Absolute path of the certificate to create, `<out-dir>/<user>.crt`. */
  readonly certFile: string;
  /** Absolute path of the cluster CA certificate, `<out-dir>/ca.crt`, written if absent. */
  readonly caFile: string;
}

/**
 * Resolves `service-cert issue USER_ID` and its flags.
 * @param cwd the directory a relative --out-dir is resolved against.
 * @throws InvalidArgumentError naming the argument or flag: a malformed USER_ID, an unknown
 *   --key-type, or a --validity that is malformed, fractional or outside 60s-365d.
 */
export function planServiceCertificate(
  userId: string,
  flags: IssueServiceCertFlags,
  cwd: string = process.cwd(),
): ServiceCertPlan {
  const user = parseUserId(userId, 'USER_ID');
  const outDir = resolve(
    cwd,
    flags.outDir === undefined ? '.' : parseNonEmpty(flags.outDir, '--out-dir'),
  );
  return {
    userId: user,
    validitySeconds:
      flags.validity === undefined ? DEFAULT_VALIDITY_SECONDS : parseValidity(flags.validity),
    keyType: flags.keyType === undefined ? 'p256' : parseKeyType(flags.keyType),
    outDir,
    keyFile: join(outDir, `${user}.key`),
    certFile: join(outDir, `${user}.crt`),
    caFile: join(outDir, 'ca.crt'),
  };
}

/** Builds IssueServiceCertificateRequest for a plan and the CSR made with its key. */
export function buildIssueServiceCertificateRequest(
  plan: ServiceCertPlan,
  csrPem: string,
): IssueServiceCertificateRequest {
  return IssueServiceCertificateRequest.fromPartial({
    userId: plan.userId,
    csrPem,
    validitySeconds: plan.validitySeconds,
  });
}

/**
 * Builds RevokeServiceCertificateRequest. The serial is accepted as the server prints it
 * (lowercase hex) or as openssl does (`serial=3F9A...`, or `3f:9a:...`).
 * @throws InvalidArgumentError when SERIAL is not hexadecimal.
 */
export function buildRevokeServiceCertificateRequest(
  serial: string,
): RevokeServiceCertificateRequest {
  const hex = parseNonEmpty(serial, 'SERIAL')
    .replace(/^serial=/i, '')
    .replaceAll(':', '')
    .toLowerCase();
  if (!/^[0-9a-f]{1,40}$/.test(hex)) {
    throw new InvalidArgumentError(
      'SERIAL',
      `"${serial}" is not a certificate serial in hexadecimal, as service-cert issue prints it`,
    );
  }
  return RevokeServiceCertificateRequest.fromPartial({ serial: hex });
}

/** `--validity`: a duration of whole seconds from 60s to 365d. */
function parseValidity(text: string): number {
  const ms = parseDuration(text, '--validity');
  if (ms % 1000 !== 0) throw new InvalidArgumentError('--validity', 'must be whole seconds');
  const seconds = ms / 1000;
  if (seconds < MIN_VALIDITY_SECONDS || seconds > MAX_VALIDITY_SECONDS) {
    throw new InvalidArgumentError('--validity', `"${text}" is not from 60s to 365d`);
  }
  return seconds;
}

/** `--key-type p256|ed25519`. */
function parseKeyType(text: string): ServiceKeyType {
  const value = text.trim().toLowerCase();
  if (value === 'p256' || value === 'ed25519') return value;
  throw new InvalidArgumentError('--key-type', `"${text}" is not one of p256, ed25519`);
}
