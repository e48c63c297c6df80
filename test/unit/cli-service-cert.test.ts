import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { createPrivateKey, createPublicKey, webcrypto } from 'node:crypto';
import { describe, it } from 'node:test';

import {
  buildIssueServiceCertificateRequest,
  buildRevokeServiceCertificateRequest,
  generateServiceKey,
  planServiceCertificate,
} from '../../cli/commands/service-cert.js';
import { InvalidArgumentError } from '../../common/errors.js';

/** Asserts that `fn` throws InvalidArgumentError for `field`. */
function throwsFor(fn: () => unknown, field: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      err instanceof InvalidArgumentError,
      `expected InvalidArgumentError, got ${String(err)}`,
    );
    assert.equal(err.field, field);
    if (message) assert.match(err.message, message);
    return true;
  });
}

void describe('planServiceCertificate', () => {
  void it('defaults to 90 days, P-256 and the current directory', () => {
    assert.deepEqual(planServiceCertificate('billing-reports', {}, '/srv/app'), {
      userId: 'billing-reports',
      validitySeconds: 90 * 86_400,
      keyType: 'p256',
      outDir: '/srv/app',
      keyFile: '/srv/app/billing-reports.key',
      certFile: '/srv/app/billing-reports.crt',
      caFile: '/srv/app/ca.crt',
    });
  });

  void it('reads --out-dir against the working directory, --validity and --key-type', () => {
    const plan = planServiceCertificate(
      'svc@reports',
      { outDir: 'certs', validity: '1h30m', keyType: 'Ed25519' },
      '/srv/app',
    );
    assert.equal(plan.keyFile, '/srv/app/certs/svc@reports.key');
    assert.equal(plan.validitySeconds, 5400);
    assert.equal(plan.keyType, 'ed25519');
    assert.equal(planServiceCertificate('a', { outDir: '/etc/x' }, '/srv').caFile, '/etc/x/ca.crt');
    assert.equal(planServiceCertificate('a', { validity: '60s' }).validitySeconds, 60);
    assert.equal(planServiceCertificate('a', { validity: '365d' }).validitySeconds, 31_536_000);
  });

  void it('refuses bad arguments, naming each', () => {
    throwsFor(() => planServiceCertificate('', {}), 'USER_ID');
    // A user id cannot name a path outside --out-dir.
    throwsFor(() => planServiceCertificate('../etc/passwd', {}), 'USER_ID', /lowercase/);
    throwsFor(() => planServiceCertificate('Alice', {}), 'USER_ID');
    throwsFor(() => planServiceCertificate('a', { validity: '59s' }), '--validity', /60s to 365d/);
    throwsFor(() => planServiceCertificate('a', { validity: '366d' }), '--validity');
    throwsFor(() => planServiceCertificate('a', { validity: '90' }), '--validity', /no unit/);
    throwsFor(() => planServiceCertificate('a', { validity: '1m500ms' }), '--validity', /whole/);
    throwsFor(() => planServiceCertificate('a', { keyType: 'rsa' }), '--key-type', /p256/);
    throwsFor(() => planServiceCertificate('a', { outDir: ' ' }), '--out-dir');
  });
});

void describe('service certificate requests', () => {
  void it('sends the user, the CSR and the lifetime', () => {
    const plan = planServiceCertificate('alice', { validity: '30d' }, '/tmp');
    assert.deepEqual(buildIssueServiceCertificateRequest(plan, 'CSR'), {
      userId: 'alice',
      csrPem: 'CSR',
      validitySeconds: 30 * 86_400,
    });
  });

  void it('reads a serial as the server or openssl prints it', () => {
    assert.deepEqual(buildRevokeServiceCertificateRequest('51bbb5ffa9325a29'), {
      serial: '51bbb5ffa9325a29',
    });
    assert.equal(buildRevokeServiceCertificateRequest('serial=51BBB5FF').serial, '51bbb5ff');
    assert.equal(buildRevokeServiceCertificateRequest(' 51:bb:b5:ff ').serial, '51bbb5ff');
    throwsFor(() => buildRevokeServiceCertificateRequest(''), 'SERIAL');
    throwsFor(() => buildRevokeServiceCertificateRequest('xyz'), 'SERIAL', /hexadecimal/);
    throwsFor(() => buildRevokeServiceCertificateRequest('a'.repeat(41)), 'SERIAL');
  });
});

void describe('generateServiceKey', () => {
  for (const [keyType, keyName, signature] of [
    ['p256', 'ec', 'ECDSA'],
    ['ed25519', 'ed25519', 'Ed25519'],
  ] as const) {
    void it(`makes ${keyType}: a PKCS#8 key and a CSR it signed, CN = the user`, async () => {
      const { keyPem, csrPem } = await generateServiceKey('alice', keyType);
      assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
      const key = createPrivateKey(keyPem);
      assert.equal(key.asymmetricKeyType, keyName);
      if (keyType === 'p256') assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');

      const csr = new x509.Pkcs10CertificateRequest(csrPem);
      assert.equal(csr.subject, 'CN=alice');
      // The generator's declared type omits `name`, which every WebCrypto algorithm has.
      assert.equal((csr.signatureAlgorithm as { name?: string }).name, signature);
      assert.equal(await csr.verify(webcrypto), true);
      // The CSR carries the public half of the written key.
      assert.deepEqual(
        Buffer.from(csr.publicKey.rawData),
        createPublicKey(key).export({ type: 'spki', format: 'der' }),
      );
    });
  }
});
