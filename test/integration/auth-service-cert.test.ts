// Service identities over mutual TLS on the public API: a certificate from the cluster CA with
// SAN citadel://service/<user> authenticates as that user (role included) until it is revoked
// or the user disabled, and its open WatchExecutions streams end at revocation on every
// replica; one from another CA is no credential at all.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { webcrypto as crypto, X509Certificate } from 'node:crypto';
import { setTimeout as delay } from 'node:timers/promises';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { Role, TaskScope } from '../../gen/citadel/v1/admin.js';
import {
  CreateUserRequest,
  DisableUserRequest,
  IssueServiceCertificateRequest,
  RevokeServiceCertificateRequest,
} from '../../gen/citadel/v1/admin_service.js';
import {
  CreateTaskRequest,
  ListTasksRequest,
  TaskServiceClient,
  type WatchExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import { keys } from '../../server/store/keys.js';
import { createCa, issueClientCert } from '../../server/tls/ca.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import { adminClient } from '../helpers/worker.js';

let etcd: TestEtcd;
let ts: TestServer;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
});

after(async () => {
  await ts.stop();
  await etcd.stop();
});

/** A key pair made here (never sent) and a CSR for it, as `citadelctl service-cert issue` does. */
async function keyAndCsr(): Promise<{ keyPem: string; csrPem: string }> {
  const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
    'sign',
    'verify',
  ]);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: 'CN=svc', keys, signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } },
    crypto,
  );
  const der = await crypto.subtle.exportKey('pkcs8', keys.privateKey);
  return {
    keyPem: x509.PemConverter.encode(der, 'PRIVATE KEY'),
    csrPem: csr.toString('pem'),
  };
}

function clientWith(keyPem: string, certPem: string, replica = ts): TaskServiceClient {
  return new TaskServiceClient(
    `localhost:${replica.server.port}`,
    credentials.createSsl(
      Buffer.from(replica.server.caPem),
      Buffer.from(keyPem),
      Buffer.from(certPem),
    ),
  );
}

function list(client: TaskServiceClient): Promise<status> {
  return new Promise((resolve) =>
    client.listTasks(ListTasksRequest.fromPartial({}), new Metadata(), (err) =>
      resolve(err ? err.code : status.OK),
    ),
  );
}

test('a service certificate authenticates as its user with that user’s role, until revoked or disabled', async () => {
  const admin = adminClient(ts);
  try {
    await ts.call(
      admin.createUser.bind(admin),
      CreateUserRequest.fromPartial({ user: { id: 'reports-svc', role: Role.ROLE_VIEWER } }),
    );
    const { keyPem, csrPem } = await keyAndCsr();
    const issued = await ts.call(
      admin.issueServiceCertificate.bind(admin),
      IssueServiceCertificateRequest.fromPartial({
        userId: 'reports-svc',
        csrPem,
        validitySeconds: 3600,
      }),
    );
    const cert = new X509Certificate(issued.certificatePem);
    assert.equal(cert.subjectAltName, 'URI:citadel://service/reports-svc');
    assert.equal(issued.serial, cert.serialNumber.toLowerCase());

    const client = clientWith(keyPem, issued.certificatePem);
    try {
      assert.equal(await list(client), status.OK);
      // A viewer may read, not create.
      const created = await new Promise<ServiceError | null>((resolve) =>
        client.createTask(
          CreateTaskRequest.fromPartial({ task: { type: 'x' } }),
          new Metadata(),
          (err) => resolve(err),
        ),
      );
      assert.equal(created?.code, status.PERMISSION_DENIED);
      const mtlsAudit = (
        await ts.server.store.rangeAll<Record<string, unknown>>(keys.auditPrefix)
      ).items.filter(
        (a) => a.value.user_id === 'reports-svc' && a.value.event_type === 'authorization_failure',
      );
      assert.equal(mtlsAudit.length, 1);

      await ts.call(
        admin.revokeServiceCertificate.bind(admin),
        RevokeServiceCertificateRequest.fromPartial({ serial: issued.serial }),
      );
      await eventually(async () => (await list(client)) === status.UNAUTHENTICATED, {
        message: 'the revoked certificate is refused',
      });
    } finally {
      client.close();
    }

    // A second certificate works until the user is disabled.
    const second = await keyAndCsr();
    const again = await ts.call(
      admin.issueServiceCertificate.bind(admin),
      IssueServiceCertificateRequest.fromPartial({ userId: 'reports-svc', csrPem: second.csrPem }),
    );
    const client2 = clientWith(second.keyPem, again.certificatePem);
    try {
      assert.equal(await list(client2), status.OK);
      await ts.call(
        admin.disableUser.bind(admin),
        DisableUserRequest.fromPartial({ id: 'reports-svc', reason: 'test' }),
      );
      await eventually(async () => (await list(client2)) === status.UNAUTHENTICATED, {
        message: 'the disabled user’s certificate is refused',
      });
    } finally {
      client2.close();
    }
  } finally {
    admin.close();
  }
});

test('a certificate from another CA naming a service is no credential', async () => {
  const otherCa = await createCa({ commonName: 'someone else' });
  const forged = await issueClientCert(otherCa, {
    uri: 'citadel://service/admin',
    commonName: 'admin',
  });
  const client = clientWith(forged.keyPem!, forged.certPem);
  try {
    assert.equal(await list(client), status.UNAUTHENTICATED);
  } finally {
    client.close();
  }
});

/** An open WatchExecutions stream: the execution ids it was sent, and how it ended. */
interface Watch {
  received: string[];
  /** Resolves with the first change sent (the stream is then open). */
  opened: Promise<void>;
  /** Resolves with the error that ended the stream. */
  cut: Promise<ServiceError>;
}

function watch(client: TaskServiceClient, taskId: string, afterRevision: number): Watch {
  const stream = client.watchExecutions({ taskId, afterRevision }, new Metadata());
  const received: string[] = [];
  let opened!: () => void;
  const w: Watch = {
    received,
    opened: new Promise((resolve) => (opened = resolve)),
    cut: new Promise((resolve) => stream.on('error', resolve)),
  };
  stream.on('data', (e: WatchExecutionsResponse) => {
    received.push(e.execution!.id);
    opened();
  });
  return w;
}

/** Resolves with `promise`, or fails naming `what` if it takes longer than `ms`. */
async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  const timer = new AbortController();
  try {
    return await Promise.race([
      promise,
      delay(ms, undefined, { signal: timer.signal }).then(() => {
        throw new Error(`${what}: not within ${ms} ms`);
      }),
    ]);
  } finally {
    timer.abort();
  }
}

test('revoking a service certificate ends its open watch streams on every replica, sent no later change', async () => {
  // A second replica of the same cluster: same prefix, same master key.
  const replica = await startTestServer(etcd.endpoint, {
    etcdPrefix: ts.server.options.etcdPrefix,
    masterKeyEnv: ts.server.options.masterKeyEnv,
  });
  const admin = adminClient(ts);
  const clients: TaskServiceClient[] = [];
  try {
    await ts.call(
      admin.createUser.bind(admin),
      CreateUserRequest.fromPartial({
        user: { id: 'stream-svc', role: Role.ROLE_VIEWER, taskScope: TaskScope.TASK_SCOPE_ALL },
      }),
    );
    const { keyPem, csrPem } = await keyAndCsr();
    const issued = await ts.call(
      admin.issueServiceCertificate.bind(admin),
      IssueServiceCertificateRequest.fromPartial({ userId: 'stream-svc', csrPem }),
    );
    const { task } = await ts.call(
      ts.client.createTask,
      CreateTaskRequest.fromPartial({
        task: {
          type: 'w',
          schedule: { $case: 'oneTime', value: { runAt: new Date(Date.now() + 3600_000) } },
        },
      }),
    );
    const before = await ts.call(ts.client.runTask, { id: task!.id });
    const onA = clientWith(keyPem, issued.certificatePem);
    const onB = clientWith(keyPem, issued.certificatePem, replica);
    clients.push(onA, onB);
    await eventually(async () => (await list(onB)) === status.OK, {
      message: 'the second replica knows the certificate',
    });
    // Each stream is sent the run made before it opened, which shows it open.
    const streams = [onA, onB].map((c) => watch(c, task!.id, Number(task!.etag)));
    await within(Promise.all(streams.map((s) => s.opened)), 5000, 'both streams open');

    await ts.call(
      admin.revokeServiceCertificate.bind(admin),
      RevokeServiceCertificateRequest.fromPartial({ serial: issued.serial }),
    );
    const after = await ts.call(ts.client.runTask, { id: task!.id });
    const [cutA, cutB] = await within(
      Promise.all(streams.map((s) => s.cut)),
      2000,
      'both streams end after the revocation',
    );
    assert.equal(cutA!.code, status.UNAUTHENTICATED, 'the stream on the revoking replica');
    assert.equal(cutB!.code, status.UNAUTHENTICATED, 'the stream on the other replica');
    for (const s of streams) {
      assert.ok(s.received.includes(before.execution!.id), 'sent the change before');
      assert.ok(!s.received.includes(after.execution!.id), 'sent no change after the revocation');
    }
  } finally {
    for (const c of clients) c.close();
    admin.close();
    await replica.stop();
  }
});
