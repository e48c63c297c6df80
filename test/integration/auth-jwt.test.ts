/**
 * OAuth 2.0 bearer JWTs against a real server: a valid token maps `sub` to a user and its role
 * claim to the role; every forged, stale or foreign token is refused UNAUTHENTICATED and
 * audited; unknown subjects are refused unless auto-provisioning makes them viewers.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { credentials, status, type ServiceError } from '@grpc/grpc-js';
import { exportJWK, exportSPKI, generateKeyPair, SignJWT, type CryptoKey } from 'jose';
import { Role } from '../../gen/citadel/v1/admin.js';
import { AdminServiceClient, CreateUserRequest } from '../../gen/citadel/v1/admin_service.js';
import { CreateTaskRequest, ListTasksRequest } from '../../gen/citadel/v1/task_service.js';
import { keys } from '../../server/store/keys.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { bearer, startTestServer, type TestServer } from '../helpers/server.js';

const ISSUER = 'https://idp.example.test';
const AUDIENCE = 'citadel';

let etcd: TestEtcd;
let ts: TestServer;
let dir: string;
let k1: { privateKey: CryptoKey; publicKey: CryptoKey };
let k2: { privateKey: CryptoKey; publicKey: CryptoKey };

before(async () => {
  etcd = await startTestEtcd();
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-jwt-'));
  k1 = await generateKeyPair('RS256', { extractable: true });
  k2 = await generateKeyPair('RS256', { extractable: true });
  const jwks = {
    keys: [{ ...(await exportJWK(k1.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' }],
  };
  await fs.writeFile(path.join(dir, 'jwks.json'), JSON.stringify(jwks));
  ts = await startTestServer(etcd.endpoint, {
    jwtJwksFile: path.join(dir, 'jwks.json'),
    jwtIssuer: ISSUER,
    jwtAudience: AUDIENCE,
    jwtLeewaySeconds: 5,
    authFailureLimit: 10_000,
  });
  const admin = new AdminServiceClient(
    `localhost:${ts.server.port}`,
    credentials.createSsl(Buffer.from(ts.server.caPem)),
  );
  await new Promise((resolve, reject) =>
    admin.createUser(
      CreateUserRequest.fromPartial({ user: { id: 'erin', role: Role.ROLE_SCHEDULER } }),
      bearer(ts.adminKey),
      (e, r) => (e ? reject(e) : resolve(r)),
    ),
  );
  admin.close();
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
  await fs.rm(dir, { recursive: true, force: true });
});

interface Claims {
  sub?: string;
  iss?: string;
  aud?: string;
  exp?: number;
  nbf?: number;
  citadel_role?: string;
}

const now = () => Math.floor(Date.now() / 1000);

function sign(claims: Claims = {}, key = k1.privateKey, kid = 'k1'): Promise<string> {
  const c = { sub: 'erin', iss: ISSUER, aud: AUDIENCE, exp: now() + 300, ...claims };
  let jwt = new SignJWT(c.citadel_role ? { citadel_role: c.citadel_role } : {})
    .setProtectedHeader({ alg: 'RS256', kid })
    .setSubject(c.sub)
    .setIssuer(c.iss)
    .setAudience(c.aud)
    .setIssuedAt()
    .setExpirationTime(c.exp);
  if (c.nbf !== undefined) jwt = jwt.setNotBefore(c.nbf);
  return jwt.sign(key);
}

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

function list(token: string): Promise<status> {
  return new Promise((resolve) =>
    ts.client.listTasks(ListTasksRequest.fromPartial({}), bearer(token), (e: ServiceError | null) =>
      resolve(e ? e.code : status.OK),
    ),
  );
}

describe('OAuth 2.0 bearer JWTs', () => {
  test('a valid token authenticates its subject; the role claim sets the role', async () => {
    assert.equal(await list(await sign()), status.OK);
    const asViewer = await sign({ citadel_role: 'viewer' });
    const code = await new Promise<status>((resolve) =>
      ts.client.createTask(
        CreateTaskRequest.fromPartial({ task: { type: 'x' } }),
        bearer(asViewer),
        (e: ServiceError | null) => resolve(e ? e.code : status.OK),
      ),
    );
    assert.equal(code, status.PERMISSION_DENIED);
  });

  test('forged, stale and foreign tokens are all refused and audited', async () => {
    const valid = await sign();
    const [h, p, sig] = valid.split('.') as [string, string, string];
    const publicPem = await exportSPKI(k1.publicKey);
    const hs256WithPublicKey = await new SignJWT({})
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .setSubject('erin')
      .setIssuer(ISSUER)
      .setAudience(AUDIENCE)
      .setExpirationTime(now() + 300)
      .sign(new TextEncoder().encode(publicPem));
    const attacks: Record<string, string> = {
      'alg none': `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'erin', iss: ISSUER, aud: AUDIENCE, exp: now() + 300 })}.`,
      'HS256 with the public key as secret': hs256WithPublicKey,
      expired: await sign({ exp: now() - 600 }),
      'not yet valid': await sign({ nbf: now() + 600 }),
      'wrong audience': await sign({ aud: 'someone-else' }),
      'wrong issuer': await sign({ iss: 'https://evil.example.test' }),
      'unknown key id': await sign({}, k1.privateKey, 'k9'),
      'altered payload': `${h}.${b64({ ...(JSON.parse(Buffer.from(p, 'base64url').toString()) as object), sub: 'admin' })}.${sig}`,
      'valid token from a key not in the JWKS': await sign({}, k2.privateKey, 'k1'),
      'unknown role claim': await sign({ citadel_role: 'superuser' }),
      "role claim above the user's role": await sign({ citadel_role: 'admin' }),
      'subject naming the bootstrap admin': await sign({ sub: 'admin' }),
      'subject that is not a string': await new SignJWT({ sub: ['erin'] } as unknown as Record<
        string,
        unknown
      >)
        .setProtectedHeader({ alg: 'RS256', kid: 'k1' })
        .setIssuer(ISSUER)
        .setAudience(AUDIENCE)
        .setExpirationTime(now() + 300)
        .sign(k1.privateKey),
      'unknown subject': await sign({ sub: 'mallory' }),
    };
    const before = await auditCount();
    const wrong: string[] = [];
    for (const [name, token] of Object.entries(attacks)) {
      const code = await list(token);
      if (code !== status.UNAUTHENTICATED) wrong.push(`${name}: ${status[code]}`);
    }
    assert.deepEqual(wrong, []);
    const audited = await eventually(async () => {
      const n = await auditCount();
      assert.ok(
        n - before >= Object.keys(attacks).length,
        'n - before >= Object.keys(attacks).length',
      );
      return n;
    });
    assert.ok(
      audited >= before + Object.keys(attacks).length,
      'audited >= before + Object.keys(attacks).length',
    );
  });

  test('unknown subjects become viewers only with auto-provisioning', async () => {
    const other = await startTestServer(etcd.endpoint, {
      jwtJwksFile: path.join(dir, 'jwks.json'),
      jwtIssuer: ISSUER,
      jwtAudience: AUDIENCE,
      jwtAutoProvision: true,
    });
    try {
      const token = await sign({ sub: 'frank' });
      const code = await new Promise<status>((resolve) =>
        other.client.listTasks(
          ListTasksRequest.fromPartial({}),
          bearer(token),
          (e: ServiceError | null) => resolve(e ? e.code : status.OK),
        ),
      );
      assert.equal(code, status.OK);
      const user = await other.server.store.getJson<{ role: string }>(keys.user('frank'));
      assert.equal(user?.value.role, 'viewer');
    } finally {
      await other.stop();
    }
  });
});

async function auditCount(): Promise<number> {
  const items = (await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix)).items;
  return items.filter(
    (a) => a.value.event_type === 'authentication_attempt' && a.value.action === 'jwt',
  ).length;
}
