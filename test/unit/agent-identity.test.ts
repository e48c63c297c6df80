import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { webcrypto } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';

import {
  identityFromPem,
  loadIdentity,
  saveRenewedIdentity,
  type WorkerIdentity,
} from '../../agent/identity.js';
import { generateWorkerKey, type KeyType } from '../../agent/keys.js';
import {
  dataPaths,
  readJoinState,
  writeJoinState,
  writePrivateFile,
  type DataPaths,
} from '../../agent/state.js';
import { ConfigError, FailedPreconditionError } from '../../common/errors.js';
import { createCa, issueClientCert, type CaMaterial } from '../../server/tls/ca.js';

let ca: CaMaterial;

/** Key, CSR and a certificate for it from `ca`, as a join or renewal produces them. */
async function issueIdentity(keyType: KeyType = 'p256'): Promise<WorkerIdentity> {
  const material = await generateWorkerKey(keyType, 'test-host');
  const csr = new x509.Pkcs10CertificateRequest(material.csrPem);
  // @peculiar/x509 types this with the DOM CryptoKey, which this project does not load.
  const publicKey = (await csr.publicKey.export(webcrypto)) as webcrypto.CryptoKey;
  const { certPem } = await issueClientCert(ca, {
    uri: 'citadel://worker/w_test',
    commonName: 'w_test',
    publicKey,
  });
  return identityFromPem(ca.certPem, material.privateKeyPem, certPem);
}

async function freshFolder(): Promise<DataPaths> {
  const paths = dataPaths(await fs.mkdtemp(path.join(os.tmpdir(), 'agent-identity-')));
  await fs.writeFile(paths.ca, ca.certPem);
  return paths;
}

async function writeLive(paths: DataPaths, identity: WorkerIdentity): Promise<void> {
  await writePrivateFile(paths.key, identity.keyPem);
  await fs.writeFile(paths.cert, identity.certPem);
}

async function mode(file: string): Promise<number> {
  return (await fs.stat(file)).mode & 0o777;
}

before(async () => {
  ca = await createCa();
});

void describe('identityFromPem', () => {
  void it('reads the serial (lowercase hex), validity and key type of both key types', async () => {
    for (const keyType of ['p256', 'ed25519'] as const) {
      const identity = await issueIdentity(keyType);
      assert.equal(identity.keyType, keyType);
      assert.match(identity.serial, /^[0-9a-f]+$/);
      assert.ok(identity.notAfter > identity.notBefore, 'identity.notAfter > identity.notBefore');
    }
  });

  void it('refuses a certificate for another key, or from another CA', async () => {
    const a = await issueIdentity();
    const b = await issueIdentity();
    assert.throws(() => identityFromPem(ca.certPem, a.keyPem, b.certPem), FailedPreconditionError);
    const otherCa = await createCa();
    assert.throws(
      () => identityFromPem(otherCa.certPem, a.keyPem, a.certPem),
      FailedPreconditionError,
    );
  });
});

void describe('saveRenewedIdentity and loadIdentity', () => {
  void it('replace the key (mode 0600) and certificate, leaving no temporary files', async () => {
    const paths = await freshFolder();
    await writeLive(paths, await issueIdentity());
    const renewed = await issueIdentity();
    await saveRenewedIdentity(paths, renewed);
    assert.equal(await mode(paths.key), 0o600);
    assert.deepEqual((await fs.readdir(paths.dir)).sort(), ['ca.crt', 'worker.crt', 'worker.key']);
    assert.equal((await loadIdentity(paths)).serial, renewed.serial);
  });

  void it('finish a renewal interrupted before either rename', async () => {
    const paths = await freshFolder();
    const old = await issueIdentity();
    const renewed = await issueIdentity();
    await writeLive(paths, old);
    await writePrivateFile(paths.nextKey, renewed.keyPem);
    await fs.writeFile(paths.nextCert, renewed.certPem);
    assert.equal((await loadIdentity(paths)).serial, renewed.serial);
    assert.equal(await fs.readFile(paths.cert, 'utf8'), renewed.certPem);
    assert.equal(await mode(paths.key), 0o600);
  });

  void it('finish a renewal interrupted between the key and the certificate rename', async () => {
    const paths = await freshFolder();
    const old = await issueIdentity();
    const renewed = await issueIdentity();
    await writePrivateFile(paths.key, renewed.keyPem);
    await fs.writeFile(paths.cert, old.certPem);
    await fs.writeFile(paths.nextCert, renewed.certPem);
    assert.equal((await loadIdentity(paths)).serial, renewed.serial);
    await assert.rejects(fs.stat(paths.nextCert));
  });

  void it('drop a renewed key that never got its certificate', async () => {
    const paths = await freshFolder();
    const old = await issueIdentity();
    await writeLive(paths, old);
    await writePrivateFile(paths.nextKey, (await issueIdentity()).keyPem);
    assert.equal((await loadIdentity(paths)).serial, old.serial);
    await assert.rejects(fs.stat(paths.nextKey));
  });

  void it('refuse a folder whose key and certificate do not match', async () => {
    const paths = await freshFolder();
    await writePrivateFile(paths.key, (await issueIdentity()).keyPem);
    await fs.writeFile(paths.cert, (await issueIdentity()).certPem);
    await assert.rejects(loadIdentity(paths), FailedPreconditionError);
  });
});

void describe('state.json', () => {
  void it('round-trips, and says "not joined" when missing', async () => {
    const paths = await freshFolder();
    await assert.rejects(readJoinState(paths), (err: unknown) => {
      assert.ok(err instanceof FailedPreconditionError, 'err instanceof FailedPreconditionError');
      assert.match(err.message, /not joined/);
      return true;
    });
    const state = {
      workerId: 'w_x',
      servers: ['localhost:7444'],
      heartbeatIntervalMs: 2000,
      leaseTtlMs: 10000,
      keyType: 'ed25519' as const,
      joinedAt: new Date().toISOString(),
    };
    await writeJoinState(paths, state);
    assert.deepEqual(await readJoinState(paths), state);
  });

  void it('names the bad field of a malformed file', async () => {
    const paths = await freshFolder();
    await fs.writeFile(paths.state, JSON.stringify({ workerId: 'w_x', servers: [] }));
    await assert.rejects(readJoinState(paths), (err: unknown) => {
      assert.ok(err instanceof ConfigError, 'err instanceof ConfigError');
      assert.match(err.message, /servers/);
      return true;
    });
  });
});
