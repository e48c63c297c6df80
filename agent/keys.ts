/**
 * The worker's key pair and certificate signing request, made locally so the private key never
 * leaves the host: ECDSA P-256 (the default) or Ed25519, and a PKCS#10 CSR signed with it.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { type KeyObject, createPrivateKey, webcrypto } from 'node:crypto';

import { InvalidArgumentError } from '../common/errors.js';

/** The key types a worker may use. */
export const KEY_TYPES = ['p256', 'ed25519'] as const;

/** A worker key type: `p256` (ECDSA on P-256) or `ed25519`. */
export type KeyType = (typeof KEY_TYPES)[number];

/** A fresh key pair and the CSR that proves possession of it. */
export interface WorkerKeyMaterial {
  readonly keyType: KeyType;
  /** The private key, PKCS#8 PEM. Secret: written only to `worker.key` (mode 0600). */
  readonly privateKeyPem: string;
  /** The PKCS#10 CSR, PEM. */
  readonly csrPem: string;
}

const ALGORITHMS = {
  p256: {
    key: { name: 'ECDSA', namedCurve: 'P-256' },
    signing: { name: 'ECDSA', hash: 'SHA-256' },
  },
  ed25519: {
    key: { name: 'Ed25519' },
    signing: { name: 'Ed25519' },
  },
} as const;

/**
 * Parses a `--key-type` value.
 *
 * @throws InvalidArgumentError naming `field` for anything but `p256` or `ed25519`.
 */
export function parseKeyType(text: string, field: string): KeyType {
  const value = text.trim().toLowerCase();
  if ((KEY_TYPES as readonly string[]).includes(value)) return value as KeyType;
  throw new InvalidArgumentError(field, `"${text}" is not a key type; use p256 or ed25519`);
}

/**
 * Generates a key pair of `keyType` and a CSR for it with subject `CN=<commonName>`. The
 * server ignores the CSR's subject (it picks the worker's identity), so the name is only a
 * hint for humans reading the CSR.
 */
export async function generateWorkerKey(
  keyType: KeyType,
  commonName: string,
): Promise<WorkerKeyMaterial> {
  const crypto = webcrypto;
  const algorithm = ALGORITHMS[keyType];
  // Both algorithms yield a key pair; the overload for a generic algorithm cannot tell.
  const keys = (await crypto.subtle.generateKey(algorithm.key, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: [{ CN: [sanitizeCommonName(commonName)] }],
      keys,
      signingAlgorithm: algorithm.signing,
    },
    crypto,
  );
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    keyType,
    privateKeyPem: pemFile(x509.PemConverter.encode(pkcs8, x509.PemConverter.PrivateKeyTag)),
    csrPem: pemFile(csr.toString('pem')),
  };
}

/** The key type of a loaded private key, or undefined if workers cannot use it. */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  if (key.asymmetricKeyType === 'ed25519') return 'ed25519';
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') {
    return 'p256';
  }
  return undefined;
}

/** Loads a PKCS#8 PEM private key. Throws Node's error for malformed PEM. */
export function loadPrivateKey(pem: string): KeyObject {
  return createPrivateKey({ key: pem, format: 'pem' });
}

/** Ends PEM text with a newline, as files and concatenated bundles expect. */
export function pemFile(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

/** A host name fit for a CN: printable, no separators that would split the name, <= 64. */
function sanitizeCommonName(name: string): string {
  const cleaned = name.replace(/[^A-Za-z0-9.\-_]/g, '-').slice(0, 64);
  return cleaned === '' ? 'citadel-worker' : cleaned;
}
