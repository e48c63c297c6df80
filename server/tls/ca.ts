/**
 * The cluster certificate authority: creates the self-signed CA and issues ECDSA P-256 serving
 * and client certificates signed with SHA-256.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { X509Certificate as NodeX509Certificate, createHash, webcrypto } from 'node:crypto';
import { isIP } from 'node:net';
import { InvalidArgumentError } from '../../common/errors.js';

type CryptoKey = webcrypto.CryptoKey;

const crypto = webcrypto;
const KEY_ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256' } as const;
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;
const DAY_MS = 24 * 60 * 60 * 1000;
/** Back-date notBefore so peers with slightly slow clocks accept a fresh certificate. */
const CLOCK_SKEW_MS = 5 * 60 * 1000;

/** The CA certificate and its private key. */
export interface CaMaterial {
  /** The self-signed CA certificate, PEM. */
  certPem: string;
  /** The CA's P-256 private key, PKCS#8 DER. Secret. */
  keyPkcs8: Buffer;
}

/** A certificate and, when this module generated the key pair, its private key. */
export interface IssuedCert {
  certPem: string;
  /** PKCS#8 PEM private key. Secret. */
  keyPem: string;
}

/**
 * Creates a self-signed cluster CA: BasicConstraints CA:true pathLen 0 (critical), KeyUsage
 * keyCertSign|cRLSign (critical), SubjectKeyIdentifier.
 * @param opts.commonName @default "Citadel cluster CA"
 * @param opts.validityDays @default 3650
 */
export async function createCa(opts?: {
  commonName?: string;
  validityDays?: number;
}): Promise<CaMaterial> {
  const commonName = opts?.commonName ?? 'Citadel cluster CA';
  const keys = await generateKeyPair();
  const { notBefore, notAfter } = validity((opts?.validityDays ?? 3650) * DAY_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: [{ CN: [commonName] }],
      notBefore,
      notAfter,
      keys,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(
          x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
          true,
        ),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  const keyPkcs8 = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { certPem: pemFile(cert.toString('pem')), keyPkcs8 };
}

/**
 * Issues a TLS serving certificate with a fresh key pair: serverAuth EKU, digitalSignature
 * KeyUsage, SAN with the given DNS names and IP addresses.
 * @param opts.validityDays @default 90 (capped at the CA's own expiry)
 * @param opts.alsoClientAuth adds clientAuth EKU, for a server that also dials with it (etcd).
 * @throws InvalidArgumentError if there is no SAN entry or an IP address is malformed.
 */
export async function issueServerCert(
  ca: CaMaterial,
  opts: {
    commonName: string;
    dnsNames: string[];
    ipAddresses: string[];
    validityDays?: number;
    alsoClientAuth?: boolean;
  },
): Promise<IssuedCert> {
  if (opts.dnsNames.length === 0 && opts.ipAddresses.length === 0) {
    throw new InvalidArgumentError('dnsNames', 'a serving certificate needs a DNS name or IP');
  }
  for (const name of opts.dnsNames) {
    if (name.length === 0 || /\s/.test(name)) {
      throw new InvalidArgumentError('dnsNames', `${JSON.stringify(name)} is not a DNS name`);
    }
  }
  for (const ip of opts.ipAddresses) {
    if (isIP(ip) === 0) {
      throw new InvalidArgumentError('ipAddresses', `${JSON.stringify(ip)} is not an IP address`);
    }
  }
  const keys = await generateKeyPair();
  const certPem = await issue(ca, {
    commonName: opts.commonName,
    publicKey: keys.publicKey,
    validityMs: (opts.validityDays ?? 90) * DAY_MS,
    extendedKeyUsages: opts.alsoClientAuth
      ? [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]
      : [x509.ExtendedKeyUsage.serverAuth],
    altNames: [
      ...opts.dnsNames.map((value) => ({ type: 'dns' as const, value })),
      ...opts.ipAddresses.map((value) => ({ type: 'ip' as const, value })),
    ],
  });
  return { certPem, keyPem: await privateKeyPem(keys.privateKey) };
}

/** A client certificate: its PEM, serial and expiry, and the private key if generated here. */
export interface IssuedClientCert {
  certPem: string;
  /** PKCS#8 PEM private key, only when this module generated the key pair. Secret. */
  keyPem?: string;
  /** Serial number, lowercase hex. */
  serial: string;
  notAfter: Date;
}

/**
 * Issues a TLS client certificate identifying a service or worker by a URI SAN (e.g.
 * `citadel://service/name`), with clientAuth EKU. If `publicKey` is given (e.g. from a
 * verified CSR) the certificate is for that key and no `keyPem` is returned; otherwise a
 * key pair is generated and its private key returned.
 * @param opts.validityMs @default 90 days (capped at the CA's own expiry)
 * @throws InvalidArgumentError if `uri` is not an absolute URI.
 */
export async function issueClientCert(
  ca: CaMaterial,
  opts: { uri: string; commonName: string; validityMs?: number; publicKey?: CryptoKey },
): Promise<IssuedClientCert> {
  if (!URL.canParse(opts.uri)) {
    throw new InvalidArgumentError('uri', `${JSON.stringify(opts.uri)} is not an absolute URI`);
  }
  const keys = opts.publicKey === undefined ? await generateKeyPair() : undefined;
  const certPem = await issue(ca, {
    commonName: opts.commonName,
    publicKey: opts.publicKey ?? keys!.publicKey,
    validityMs: opts.validityMs ?? 90 * DAY_MS,
    extendedKeyUsages: [x509.ExtendedKeyUsage.clientAuth],
    altNames: [{ type: 'url', value: opts.uri }],
  });
  const parsed = new NodeX509Certificate(certPem);
  const issued: IssuedClientCert = {
    certPem,
    serial: parsed.serialNumber.toLowerCase(),
    notAfter: new Date(parsed.validTo),
  };
  if (keys !== undefined) issued.keyPem = await privateKeyPem(keys.privateKey);
  return issued;
}

/** Returns `sha256:<lowercase hex>` of the certificate's DER encoding, for pinning the CA. */
export function caFingerprint(certPem: string): string {
  const der = new NodeX509Certificate(certPem).raw;
  return `sha256:${createHash('sha256').update(der).digest('hex')}`;
}

interface LeafSpec {
  commonName: string;
  publicKey: CryptoKey;
  validityMs: number;
  extendedKeyUsages: x509.ExtendedKeyUsage[];
  altNames: x509.JsonGeneralNames;
}

async function issue(ca: CaMaterial, spec: LeafSpec): Promise<string> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const caKey = await crypto.subtle.importKey('pkcs8', ca.keyPkcs8, KEY_ALGORITHM, false, ['sign']);
  const caSki = caCert.getExtension<x509.SubjectKeyIdentifierExtension>('2.5.29.14');
  const aki =
    caSki === null
      ? await x509.AuthorityKeyIdentifierExtension.create(caCert, false, crypto)
      : new x509.AuthorityKeyIdentifierExtension(caSki.keyId, false);
  const { notBefore, notAfter } = validity(spec.validityMs);
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: [{ CN: [spec.commonName] }],
      // Reuse the CA's encoded name so issuer and subject match byte for byte.
      issuer: caCert.subjectName,
      notBefore,
      notAfter: notAfter < caCert.notAfter ? notAfter : caCert.notAfter,
      publicKey: spec.publicKey,
      signingKey: caKey,
      signingAlgorithm: SIGNING_ALGORITHM,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension(spec.extendedKeyUsages, false),
        new x509.SubjectAlternativeNameExtension(spec.altNames, false),
        aki,
        await x509.SubjectKeyIdentifierExtension.create(spec.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return pemFile(cert.toString('pem'));
}

async function generateKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return crypto.subtle.generateKey(KEY_ALGORITHM, true, ['sign', 'verify']);
}

async function privateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey('pkcs8', key);
  return pemFile(x509.PemConverter.encode(der, x509.PemConverter.PrivateKeyTag));
}

/** Ends PEM text with a newline, as files and concatenated bundles expect. */
function pemFile(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

/** A random 16-byte serial whose DER INTEGER is positive and exactly 16 bytes long. */
function randomSerial(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return Buffer.from(bytes).toString('hex');
}

function validity(ms: number): { notBefore: Date; notAfter: Date } {
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new InvalidArgumentError('validity', 'must be a positive duration');
  }
  const now = Date.now();
  return { notBefore: new Date(now - CLOCK_SKEW_MS), notAfter: new Date(now + ms) };
}
