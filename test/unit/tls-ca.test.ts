// Unit tests for the cluster CA: certificate contents, chain verification and a real TLS handshake.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { X509Certificate, createHash, webcrypto as crypto } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { caFingerprint, createCa, issueClientCert, issueServerCert } from '../../server/tls/ca.js';
import { verifyCsr } from '../../server/tls/csr.js';

function hasOpenssl(): boolean {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Runs `openssl verify` on the certificates if the binary is present; returns whether it ran. */
async function opensslVerify(caPem: string, certPem: string, purpose: string): Promise<boolean> {
  if (!hasOpenssl()) return false;
  const dir = await mkdtemp(join(tmpdir(), 'citadel-ca-'));
  try {
    await writeFile(join(dir, 'ca.pem'), caPem);
    await writeFile(join(dir, 'cert.pem'), certPem);
    const out = execFileSync(
      'openssl',
      ['verify', '-purpose', purpose, '-CAfile', join(dir, 'ca.pem'), join(dir, 'cert.pem')],
      { encoding: 'utf8' },
    );
    assert.match(out, /: OK/);
    return true;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

void test('the CA is self-signed, a CA, and has the default name and fingerprint', async () => {
  const ca = await createCa();
  const cert = new X509Certificate(ca.certPem);
  assert.equal(cert.ca, true);
  assert.equal(cert.subject, 'CN=Citadel cluster CA');
  assert.equal(cert.issuer, cert.subject);
  assert.ok(cert.verify(cert.publicKey), 'cert.verify(cert.publicKey)');
  assert.ok(cert.checkIssued(cert), 'cert.checkIssued(cert)');
  const years = (Date.parse(cert.validTo) - Date.now()) / (365 * 24 * 3600 * 1000);
  assert.ok(years > 9.9 && years < 10.1, `validity ${years} years`);

  const fingerprint = caFingerprint(ca.certPem);
  assert.match(fingerprint, /^sha256:[0-9a-f]{64}$/);
  assert.equal(fingerprint, `sha256:${createHash('sha256').update(cert.raw).digest('hex')}`);
  assert.equal(fingerprint.slice(7).toUpperCase().match(/../g)!.join(':'), cert.fingerprint256);
});

void test('a serving certificate verifies against the CA and matches its names', async () => {
  const ca = await createCa({ commonName: 'test CA' });
  const server = await issueServerCert(ca, {
    commonName: 'citadel-server',
    dnsNames: ['localhost', 'citadel.internal'],
    ipAddresses: ['127.0.0.1', '::1'],
  });
  const caCert = new X509Certificate(ca.certPem);
  const cert = new X509Certificate(server.certPem);
  assert.ok(cert.verify(caCert.publicKey), 'cert.verify(caCert.publicKey)');
  assert.ok(cert.checkIssued(caCert), 'cert.checkIssued(caCert)');
  assert.equal(cert.ca, false);
  assert.equal(cert.checkHost('localhost'), 'localhost');
  assert.equal(cert.checkHost('citadel.internal'), 'citadel.internal');
  assert.equal(cert.checkHost('example.com'), undefined);
  assert.equal(cert.checkIP('127.0.0.1'), '127.0.0.1');
  assert.equal(cert.checkIP('10.0.0.1'), undefined);
  assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.1']);
  assert.equal(cert.serialNumber.length, 32);
  assert.ok(
    Number.parseInt(cert.serialNumber.slice(0, 2), 16) < 0x80,
    'Number.parseInt(cert.serialNumber.slice(0, 2), 16) < 0x80',
  );
  assert.ok(
    Date.parse(cert.validFrom) < Date.now() - 4 * 60 * 1000,
    'Date.parse(cert.validFrom) < Date.now() - 4 * 60 * 1000',
  );
  assert.match(server.keyPem, /^-----BEGIN PRIVATE KEY-----\n[^]*\n-----END PRIVATE KEY-----\n$/);
  assert.ok(
    server.certPem.endsWith('-----END CERTIFICATE-----\n'),
    "server.certPem.endsWith('-----END CERTIFICATE-----\\n')",
  );

  const ran = await opensslVerify(ca.certPem, server.certPem, 'sslserver');
  if (!ran) console.log('# openssl not found; skipped the openssl verify assertion');
});

void test('a TLS client trusting the CA completes a handshake with the serving certificate', async () => {
  const ca = await createCa();
  const { certPem, keyPem } = await issueServerCert(ca, {
    commonName: 'localhost',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  const server = tls.createServer({ cert: certPem, key: keyPem }, (socket) => {
    socket.end('hello');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const { port } = server.address() as AddressInfo;
    const { authorized, greeting } = await new Promise<{ authorized: boolean; greeting: string }>(
      (resolve, reject) => {
        const socket = tls.connect({
          host: '127.0.0.1',
          port,
          ca: ca.certPem,
          servername: 'localhost',
        });
        let data = '';
        socket.setEncoding('utf8');
        socket.on('data', (chunk: string) => (data += chunk));
        socket.on('end', () => resolve({ authorized: socket.authorized, greeting: data }));
        socket.on('error', reject);
      },
    );
    assert.equal(authorized, true);
    assert.equal(greeting, 'hello');
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

void test('a client certificate carries the URI SAN and verifies against the CA', async () => {
  const ca = await createCa();
  const client = await issueClientCert(ca, { uri: 'citadel://service/x', commonName: 'x' });
  assert.ok(client.keyPem, 'client.keyPem');
  const cert = new X509Certificate(client.certPem);
  assert.ok(cert.subjectAltName?.includes('URI:citadel://service/x'), cert.subjectAltName);
  assert.ok(
    cert.verify(new X509Certificate(ca.certPem).publicKey),
    'cert.verify(new X509Certificate(ca.certPem).publicKey)',
  );
  assert.deepEqual(cert.keyUsage, ['1.3.6.1.5.5.7.3.2']);
  assert.equal(cert.subject, 'CN=x');

  const ran = await opensslVerify(ca.certPem, client.certPem, 'sslclient');
  if (!ran) console.log('# openssl not found; skipped the openssl verify assertion');
});

void test('a client certificate for a supplied public key returns no private key', async () => {
  const ca = await createCa();
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const issued = await issueClientCert(ca, {
    uri: 'citadel://worker/w1',
    commonName: 'w1',
    publicKey: keys.publicKey,
  });
  assert.equal(issued.keyPem, undefined);
  const cert = new X509Certificate(issued.certPem);
  const spki = Buffer.from(await crypto.subtle.exportKey('spki', keys.publicKey));
  assert.deepEqual(cert.publicKey.export({ type: 'spki', format: 'der' }), spki);
});

void test('a client certificate for an Ed25519 key from a CSR carries only the server-chosen SAN', async () => {
  const ca = await createCa();
  const keys = (await crypto.subtle.generateKey({ name: 'Ed25519' }, true, [
    'sign',
    'verify',
  ])) as crypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: 'CN=w_other',
      keys,
      signingAlgorithm: { name: 'Ed25519' },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'url', value: 'citadel://worker/w_other' },
          { type: 'dns', value: 'evil.example' },
        ]),
      ],
    },
    crypto,
  );
  const verified = await verifyCsr(csr.toString('pem'));
  assert.equal(verified.keyType, 'ed25519');
  const issued = await issueClientCert(ca, {
    uri: 'citadel://worker/w_chosen',
    commonName: 'w_chosen',
    publicKey: verified.publicKey,
    validityMs: 10_000,
  });
  const cert = new X509Certificate(issued.certPem);
  assert.equal(cert.subjectAltName, 'URI:citadel://worker/w_chosen');
  assert.equal(issued.serial, cert.serialNumber.toLowerCase());
  assert.ok(
    issued.notAfter.getTime() - Date.now() <= 10_000,
    'issued.notAfter.getTime() - Date.now() <= 10_000',
  );
  assert.ok(
    cert.verify(new X509Certificate(ca.certPem).publicKey),
    'cert.verify(new X509Certificate(ca.certPem).publicKey)',
  );
});

void test('verifyCsr refuses garbage, a broken signature and an unsupported key', async () => {
  await assert.rejects(verifyCsr('not a csr'), /csr_pem: is not a PEM PKCS#10/);
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: 'CN=x', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } },
    crypto,
  );
  // Re-sign the same request body with another key: the signature no longer matches the key.
  const other = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const forged = await x509.Pkcs10CertificateRequestGenerator.create(
    {
      name: 'CN=x',
      keys: { publicKey: keys.publicKey, privateKey: other.privateKey },
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    },
    crypto,
  );
  await assert.rejects(verifyCsr(forged.toString('pem')), /the signature does not verify/);
  assert.equal((await verifyCsr(csr.toString('pem'))).keyType, 'p256');
  const p384 = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, [
    'sign',
    'verify',
  ]);
  const wrongCurve = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: 'CN=x', keys: p384, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-384' } },
    crypto,
  );
  await assert.rejects(verifyCsr(wrongCurve.toString('pem')), /P-256 or Ed25519/);
});
