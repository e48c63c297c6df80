/**
 * OAuth 2.0 JWTs with the JWKS fetched from an HTTPS URL, against a real server process: the
 * key set is fetched once and cached, a token with an unknown key id makes the server fetch
 * again (a rotated key set), and fetches are rate-limited to one per cooldown however many
 * unknown key ids arrive.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { credentials, Metadata, status } from '@grpc/grpc-js';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { Role } from '../../gen/citadel/v1/admin.js';
import { AdminServiceClient, CreateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { ListTasksRequest, TaskServiceClient } from '../../gen/citadel/v1/task_service.js';
import { createCa, issueServerCert } from '../../server/tls/ca.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { bearer, freshPrefix, spawnServer, type ServerProcess } from '../helpers/server.js';

const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'citadel';

let etcd: TestEtcd;
let idp: Server;
let server: ServerProcess;
let dir: string;
let client: TaskServiceClient;
let jwks: { keys: object[] } = { keys: [] };
let fetches = 0;
let k1: { privateKey: CryptoKey; publicKey: CryptoKey };
let k2: { privateKey: CryptoKey; publicKey: CryptoKey };

before(async () => {
  etcd = await startTestEtcd();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-jwks-'));
  k1 = await generateKeyPair('ES256', { extractable: true });
  k2 = await generateKeyPair('ES256', { extractable: true });
  jwks = { keys: [{ ...(await exportJWK(k1.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] };
  // The identity provider: HTTPS with a certificate from a CA the server process trusts.
  const ca = await createCa({ commonName: 'test IdP CA' });
  const cert = await issueServerCert(ca, {
    commonName: 'idp',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
  await fs.writeFile(path.join(dir, 'idp-ca.crt'), ca.certPem);
  idp = createServer({ key: cert.keyPem, cert: cert.certPem }, (req, res) => {
    if (req.url !== '/jwks.json') return void res.writeHead(404).end();
    fetches++;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks));
  });
  await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve));
  const idpPort = (idp.address() as AddressInfo).port;
  server = await spawnServer({
    etcdEndpoint: etcd.endpoint,
    prefix: freshPrefix(),
    masterKey: randomBytes(32).toString('base64'),
    dataDir: path.join(dir, 'server'),
    env: { NODE_EXTRA_CA_CERTS: path.join(dir, 'idp-ca.crt') },
    extraArgs: [
      '--jwt-jwks-url',
      `https://localhost:${idpPort}/jwks.json`,
      '--jwt-issuer',
      ISSUER,
      '--jwt-audience',
      AUDIENCE,
      '--jwt-jwks-cooldown',
      '2s',
      '--auth-failure-limit',
      '10000',
    ],
  });
  const ca2 = await fs.readFile(path.join(dir, 'server', 'ca.crt'));
  const adminKey = (await fs.readFile(path.join(dir, 'server', 'admin.key'), 'utf8')).trim();
  const admin = new AdminServiceClient(`localhost:${server.port}`, credentials.createSsl(ca2));
  await new Promise((resolve, reject) =>
    admin.createUser(
      CreateUserRequest.fromPartial({ user: { id: 'erin', role: Role.ROLE_VIEWER } }),
      bearer(adminKey),
      (e, r) => (e ? reject(e) : resolve(r)),
    ),
  );
  admin.close();
  client = new TaskServiceClient(`localhost:${server.port}`, credentials.createSsl(ca2));
});

after(async () => {
  client?.close();
  await server?.kill('SIGTERM');
  idp?.close();
  await etcd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

function token(key: CryptoKey, kid: string): Promise<string> {
  return new SignJWT({})
    .setProtectedHeader({ alg: 'ES256', kid })
    .setSubject('erin')
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setExpirationTime('5m')
    .sign(key);
}

function list(jwt: string): Promise<status> {
  const md = new Metadata();
  md.set('authorization', `Bearer ${jwt}`);
  return new Promise((resolve) =>
    client.listTasks(ListTasksRequest.fromPartial({}), md, (err) =>
      resolve(err ? err.code : status.OK),
    ),
  );
}

test('the key set is cached, refetched for an unknown key id, and fetched at most once per cooldown', async () => {
  const t1 = await token(k1.privateKey, 'k1');
  assert.equal(await list(t1), status.OK);
  assert.equal(fetches, 1);
  for (let i = 0; i < 10; i++) assert.equal(await list(t1), status.OK);
  assert.equal(fetches, 1, 'served from the cache');

  // The IdP rotates in k2. A flood of unknown key ids costs at most one fetch per cooldown.
  jwks = {
    keys: [
      ...jwks.keys,
      { ...(await exportJWK(k2.publicKey)), kid: 'k2', alg: 'ES256', use: 'sig' },
    ],
  };
  const started = Date.now();
  const bogus = await Promise.all(
    Array.from({ length: 20 }, (_, i) => token(k2.privateKey, `unknown-${i}`)),
  );
  for (const t of bogus) assert.equal(await list(t), status.UNAUTHENTICATED);
  const windows = Math.floor((Date.now() - started) / 2000) + 1;
  assert.ok(fetches - 1 <= windows, `${fetches - 1} fetches in ${windows} cooldown windows`);

  // Once the cooldown has passed, a token signed with the new key is accepted after a refetch.
  const t2 = await token(k2.privateKey, 'k2');
  await eventually(async () => (await list(t2)) === status.OK, {
    timeoutMs: 10_000,
    intervalMs: 500,
    message: 'k2 is fetched and accepted',
  });
  assert.equal(await list(t1), status.OK, 'k1 still works');
});
