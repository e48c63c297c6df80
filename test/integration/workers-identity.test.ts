// Worker identity on a real etcd and a real server (in process): join, the mutual-TLS worker
// endpoint, signed heartbeats and their refusals, blocking with stream cut, and certificates
// from elsewhere. docs/workers.md is the design these check.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { stat } from 'node:fs/promises';
import * as path from 'node:path';
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { credentials, Metadata, status, type ServiceError } from '@grpc/grpc-js';
import { signedHeartbeat, HeartbeatSequence } from '../../agent/heartbeat.js';
import { generateWorkerKey } from '../../agent/keys.js';
import {
  AdminServiceClient,
  BlockWorkerRequest,
  DeregisterWorkerRequest,
  GetWorkerRequest,
  RevokeBootstrapTokenRequest,
} from '../../gen/citadel/v1/admin_service.js';
import { JoinServiceClient, type JoinResponse } from '../../gen/citadel/v1/join_service.js';
import { ExecutionState } from '../../gen/citadel/v1/execution.js';
import {
  CreateTaskRequest,
  ListExecutionsRequest,
  ListTasksRequest,
} from '../../gen/citadel/v1/task_service.js';
import { WorkerState } from '../../gen/citadel/v1/worker.js';
import type { ConnectResponse } from '../../gen/citadel/v1/worker_service.js';
import { keys } from '../../server/store/keys.js';
import { Tx } from '../../server/store/store.js';
import type { LiveRecord } from '../../server/workers/worker-table.js';
import { createCa, issueClientCert } from '../../server/tls/ca.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { startTestServer, type TestServer } from '../helpers/server.js';
import {
  adminClient,
  codeOf,
  createToken,
  joinWorker,
  workerClient,
  type JoinedWorker,
} from '../helpers/worker.js';

let etcd: TestEtcd;
let ts: TestServer;
let admin: AdminServiceClient;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint, {
    authFailureLimit: 10_000,
    heartbeatRefusalLimit: 4,
    workerLeaseTtlSeconds: 3,
    heartbeatIntervalMs: 1000,
  });
  admin = adminClient(ts);
});

after(async () => {
  admin.close();
  await ts.stop();
  await etcd.stop();
});

type Audit = Record<string, unknown> & { details?: Record<string, unknown> };

async function audits(match: (a: Audit) => boolean): Promise<Audit[]> {
  const items = (await ts.server.store.rangeAll<Audit>(keys.auditPrefix)).items;
  return items.map((i) => i.value).filter(match);
}

function joinRaw(token: string, csrPem: string): Promise<JoinResponse> {
  const client = new JoinServiceClient(
    `localhost:${ts.server.port}`,
    credentials.createSsl(Buffer.from(ts.server.caPem)),
  );
  return new Promise<JoinResponse>((resolve, reject) =>
    client.join({ token, csrPem, hostname: 'raw' }, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    }),
  );
}

/** A heartbeat of `w` signed with its own key, fresh time and the next sequence. */
function heartbeatOf(w: JoinedWorker, seq: HeartbeatSequence, overrides = {}) {
  return signedHeartbeat(
    {
      workerId: w.workerId,
      sequence: seq.next(),
      sendTime: new Date(),
      certificateSerial: w.identity.serial,
      ...overrides,
    },
    w.identity.privateKey,
  );
}

async function getWorker(id: string) {
  return (await ts.call(admin.getWorker.bind(admin), GetWorkerRequest.fromPartial({ id }))).worker!;
}

describe('join', () => {
  test('the happy path: the server picks the identity, the key stays private, the join is audited', async () => {
    const token = await createToken(ts, { labels: { pool: 'blue' } });
    const w = await joinWorker(ts, token, { keyType: 'ed25519' });
    assert.match(w.workerId, /^w_[0-9a-z]{16}$/);
    const mode = (await stat(path.join(w.dataDir, 'worker.key'))).mode & 0o777;
    assert.equal(mode, 0o600);
    const cert = new X509Certificate(w.identity.certPem);
    assert.equal(cert.subjectAltName, `URI:citadel://worker/${w.workerId}`);
    assert.match(cert.toLegacyObject().ext_key_usage?.join(',') ?? '', /1\.3\.6\.1\.5\.5\.7\.3\.2/);
    const worker = await getWorker(w.workerId);
    assert.equal(worker.state, WorkerState.WORKER_STATE_ACTIVE);
    assert.equal(worker.labels.pool, 'blue');
    assert.equal(worker.certificateSerial, w.identity.serial);
    const joins = await audits((a) => a.action === 'join' && a.worker_id === w.workerId);
    assert.equal(joins.length, 1);
    assert.equal(joins[0]!.details!.token_id, token.id);
  });

  test('a wrong CA hash is refused by the agent before the token is sent', async () => {
    const token = await createToken(ts);
    await assert.rejects(
      joinWorker(ts, token, { caHash: `sha256:${'0'.repeat(64)}` }),
      /CA hash mismatch/,
    );
    // The token was not used: a join with the right hash still works.
    await joinWorker(ts, token);
  });

  test('expired, used-up and revoked tokens are refused and audited', async () => {
    const used = await createToken(ts, { uses: 1 });
    await joinWorker(ts, used);
    const usedUp = await codeOf(joinWorker(ts, used));
    assert.equal(usedUp, status.FAILED_PRECONDITION);

    const revoked = await createToken(ts);
    await ts.call(
      admin.revokeBootstrapToken.bind(admin),
      RevokeBootstrapTokenRequest.fromPartial({ id: revoked.id }),
    );
    assert.equal(await codeOf(joinWorker(ts, revoked)), status.FAILED_PRECONDITION);

    const expiresAt = Date.now() + 1000;
    const expiring = await createToken(ts, { ttlMs: 1000, uses: 5 });
    await eventually(() => Date.now() > expiresAt, { message: 'the token’s expiry passes' });
    assert.equal(await codeOf(joinWorker(ts, expiring)), status.FAILED_PRECONDITION);
    assert.equal(
      await codeOf(joinWorker(ts, { ...used, token: `cbt_${'A'.repeat(43)}` })),
      status.UNAUTHENTICATED,
    );
    // Refusals are audited off the answer's path: wait for the records.
    await eventually(async () => {
      const reasons = new Set(
        (await audits((a) => a.event_type === 'authentication_attempt' && a.action === 'join')).map(
          (a) => a.details!.reason,
        ),
      );
      for (const r of ['token_used_up', 'token_revoked', 'token_expired', 'unknown_token']) {
        assert.ok(reasons.has(r), `audited ${r}`);
      }
    });
  });

  test('a CSR with a broken signature is refused; a CSR asking for other names gets the server’s identity only', async () => {
    const token = await createToken(ts, { uses: 5 });
    const keys1 = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ]);
    const keys2 = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ]);
    const forged = await x509.Pkcs10CertificateRequestGenerator.create({
      name: 'CN=forged',
      keys: { publicKey: keys1.publicKey, privateKey: keys2.privateKey },
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    });
    const err = (await joinRaw(token.token, forged.toString('pem')).catch(
      (e: unknown) => e,
    )) as ServiceError;
    assert.equal(err.code, status.INVALID_ARGUMENT);
    assert.match(err.details, /csr_pem: the signature does not verify/);

    const other = await joinWorker(ts, token);
    const greedy = await x509.Pkcs10CertificateRequestGenerator.create({
      name: `CN=${other.workerId}`,
      keys: keys1,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.SubjectAlternativeNameExtension([
          { type: 'url', value: `citadel://worker/${other.workerId}` },
          { type: 'url', value: 'citadel://service/admin' },
          { type: 'dns', value: 'localhost' },
        ]),
      ],
    });
    const res = await joinRaw(token.token, greedy.toString('pem'));
    assert.notEqual(res.workerId, other.workerId);
    const cert = new X509Certificate(res.certificatePem);
    assert.equal(cert.subjectAltName, `URI:citadel://worker/${res.workerId}`);
    assert.equal(cert.subject, `CN=${res.workerId}`);
    await eventually(
      async () =>
        (await audits((a) => a.action === 'join' && a.details?.reason === 'bad_csr')).length > 0,
      { message: 'the bad CSR is audited' },
    );
  });
});

describe('heartbeats', () => {
  test('a valid heartbeat registers the worker under a lease; it goes offline when they stop', async () => {
    const w = await joinWorker(ts, await createToken(ts));
    const c = workerClient(ts.server.workerPort, w.identity);
    try {
      const seq = new HeartbeatSequence();
      const res = await c.heartbeat(heartbeatOf(w, seq));
      assert.equal(res.leaseTtlMs, 3000);
      assert.equal((await getWorker(w.workerId)).online, true);
      assert.ok(
        await ts.server.store.get(keys.live(w.workerId)),
        'await ts.server.store.get(keys.live(w.workerId))',
      );
      // No more heartbeats: the lease lapses and the leader deregisters the worker.
      await eventually(async () => (await getWorker(w.workerId)).online === false, {
        timeoutMs: 8000,
        message: 'deregistered after the lease TTL',
      });
      const dereg = await audits((a) => a.action === 'deregister' && a.worker_id === w.workerId);
      assert.equal(dereg.length, 1);
      assert.equal(dereg[0]!.details!.reason, 'lease_expired');
      // A valid heartbeat registers it again, under the same identity.
      await c.heartbeat(heartbeatOf(w, seq));
      assert.equal((await getWorker(w.workerId)).online, true);
    } finally {
      c.close();
    }
  });

  test("a heartbeat's total_slots is written to the live record when it changes, re-checked per session, never by an older heartbeat", async () => {
    const w = await joinWorker(ts, await createToken(ts));
    const c = workerClient(ts.server.workerPort, w.identity);
    const live = async () =>
      (await ts.server.store.getJson<LiveRecord>(keys.live(w.workerId)))!.value;
    /** Opens a Connect stream (a new session on this replica) and closes it once connected. */
    const newSession = async () => {
      const stream = c.client.connect({}, new Metadata());
      await new Promise<void>((resolve, reject) => {
        stream.once('data', () => resolve());
        stream.once('error', reject);
      });
      stream.on('error', () => undefined);
      stream.cancel();
    };
    try {
      const seq = new HeartbeatSequence();
      await c.heartbeat(heartbeatOf(w, seq, { totalSlots: 4 }));
      assert.equal((await live()).totalSlots, 4);
      const stopping = heartbeatOf(w, seq, { totalSlots: 0 });
      await c.heartbeat(stopping);
      const drained = await live();
      assert.equal(drained.totalSlots, 0);
      const stoppingSequence = drained.slotsSequence!;
      await c.heartbeat(heartbeatOf(w, seq, { totalSlots: 4 }));
      assert.equal((await live()).totalSlots, 4);
      assert.ok((await live()).slotsSequence! > stoppingSequence, 'a later heartbeat changed it');
      // A new session on this replica forgets what it knew: after another writer set 0, an
      // unchanged heartbeat of 4 writes 4 again (the restarted agent is not starved).
      const current = await ts.server.store.getJson<LiveRecord>(keys.live(w.workerId));
      await ts.server.store.commit(
        new Tx()
          .expect(current!.key, current!.modRevision)
          .putJson(
            current!.key,
            { ...current!.value, totalSlots: 0, slotsSequence: current!.value.slotsSequence! + 1 },
            current!.value.leaseId,
          ),
      );
      await c.heartbeat(heartbeatOf(w, seq, { totalSlots: 4 }));
      assert.equal((await live()).totalSlots, 0, 'this replica still trusts what it wrote');
      await newSession();
      await c.heartbeat(heartbeatOf(w, seq, { totalSlots: 4 }));
      assert.equal((await live()).totalSlots, 4);

      // Slots set by a later heartbeat (one that reached another replica first) stay.
      const later = (await ts.server.store.getJson<LiveRecord>(keys.live(w.workerId)))!;
      await ts.server.store.commit(
        new Tx()
          .expect(later.key, later.modRevision)
          .putJson(
            later.key,
            { ...later.value, totalSlots: 0, slotsSequence: later.value.slotsSequence! + 1e9 },
            later.value.leaseId,
          ),
      );
      await newSession();
      await c.heartbeat(heartbeatOf(w, seq, { totalSlots: 4 }));
      assert.equal((await live()).totalSlots, 0);
    } finally {
      c.close();
    }
  });

  test('a different key, a replayed sequence and a stale time are each refused and audited', async () => {
    const w = await joinWorker(ts, await createToken(ts));
    const c = workerClient(ts.server.workerPort, w.identity);
    try {
      const seq = new HeartbeatSequence();
      const good = heartbeatOf(w, seq);
      await c.heartbeat(good);
      const otherKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
      const wrongKey = signedHeartbeat(
        {
          workerId: w.workerId,
          sequence: seq.next(),
          sendTime: new Date(),
          certificateSerial: w.identity.serial,
        },
        otherKey,
      );
      const stale = heartbeatOf(w, seq, { sendTime: new Date(Date.now() - 10 * 60_000) });
      const refusals: [string, typeof good][] = [
        ['bad_signature', wrongKey],
        ['replayed', good],
        ['stale', stale],
      ];
      for (const [reason, hb] of refusals) {
        const err = (await c.heartbeat(hb).catch((e: unknown) => e)) as ServiceError;
        assert.equal(err.code, status.UNAUTHENTICATED, reason);
        assert.match(err.details, new RegExp(`\\(${reason}\\)`));
      }
      const audited = (
        await audits((a) => a.event_type === 'heartbeat_refused' && a.worker_id === w.workerId)
      ).map((a) => a.details!.reason);
      assert.deepEqual(audited, ['bad_signature', 'replayed', 'stale']);
      // Three refusals are under the limit (4): the worker still works.
      await c.heartbeat(heartbeatOf(w, seq));
    } finally {
      c.close();
    }
  });

  test('repeated refusals block the worker and raise a security alert', async () => {
    const w = await joinWorker(ts, await createToken(ts));
    const c = workerClient(ts.server.workerPort, w.identity);
    try {
      const seq = new HeartbeatSequence();
      const replayed = heartbeatOf(w, seq);
      await c.heartbeat(replayed);
      for (let i = 0; i < 4; i++) {
        assert.equal(await codeOf(c.heartbeat(replayed)), status.UNAUTHENTICATED);
      }
      await eventually(
        async () => (await getWorker(w.workerId)).state === WorkerState.WORKER_STATE_BLOCKED,
        {
          message: 'blocked after 4 refusals',
        },
      );
      const alerts = await audits(
        (a) => a.event_type === 'security_alert' && a.worker_id === w.workerId,
      );
      assert.equal(alerts.length, 1);
      const err = (await c.heartbeat(heartbeatOf(w, seq)).catch((e: unknown) => e)) as ServiceError;
      assert.equal(err.code, status.UNAUTHENTICATED);
      assert.match(err.details, /blocked/);
    } finally {
      c.close();
    }
  });
});

describe('liveness', () => {
  test('executions of a worker whose lease lapses become lost and are retried per policy', async () => {
    await eventually(() => ts.server.election.isLeader, { message: 'the only replica leads' });
    const w = await joinWorker(ts, await createToken(ts));
    const c = workerClient(ts.server.workerPort, w.identity);
    try {
      await c.heartbeat(heartbeatOf(w, new HeartbeatSequence()));
      const created = await ts.call(
        ts.client.createTask,
        CreateTaskRequest.fromPartial({
          task: {
            type: 'lease.test',
            schedule: { $case: 'oneTime', value: { runAt: new Date() } },
            retryPolicy: { maxAttempts: 2, initialBackoff: { seconds: 0, nanos: 100_000_000 } },
          },
        }),
      );
      const taskId = created.task!.id;
      const list = async () =>
        (
          await ts.call(
            ts.client.listExecutions,
            ListExecutionsRequest.fromPartial({ taskId, pageSize: 10 }),
          )
        ).executions;
      const first = await eventually(async () => {
        const e = (await list())[0];
        assert.equal(e?.state, ExecutionState.EXECUTION_STATE_PENDING);
        return e;
      });
      // Dispatch is a later issue: assign it to this worker the way dispatch will.
      await ts.server.executions.assignExecution(first.id, w.workerId);
      // No more heartbeats: the lease lapses, the worker is deregistered, its work is lost.
      const after = await eventually(
        async () => {
          const all = await list();
          assert.equal(
            all.find((e) => e.id === first.id)?.state,
            ExecutionState.EXECUTION_STATE_LOST,
          );
          assert.ok(
            all.some((e) => e.id !== first.id),
            'all.some((e) => e.id !== first.id)',
          );
          return all;
        },
        { timeoutMs: 10_000, message: 'the execution is lost and retried' },
      );
      const retry = after.find((e) => e.id !== first.id)!;
      assert.equal(retry.attempt, 2);
      assert.equal((await getWorker(w.workerId)).online, false);
    } finally {
      c.close();
    }
  });

  test('DeregisterWorker retires a worker: calls refused, token kept, a new join gets a new identity', async () => {
    const token = await createToken(ts, { uses: 2 });
    const w = await joinWorker(ts, token);
    const c = workerClient(ts.server.workerPort, w.identity);
    try {
      const seq = new HeartbeatSequence();
      await c.heartbeat(heartbeatOf(w, seq));
      const res = await ts.call(
        admin.deregisterWorker.bind(admin),
        DeregisterWorkerRequest.fromPartial({ id: w.workerId, reason: 'host decommissioned' }),
      );
      assert.equal(res.worker!.state, WorkerState.WORKER_STATE_RETIRED);
      assert.equal(res.worker!.online, false);
      assert.equal(await codeOf(c.heartbeat(heartbeatOf(w, seq))), status.UNAUTHENTICATED);
      const again = await joinWorker(ts, token);
      assert.notEqual(again.workerId, w.workerId);
    } finally {
      c.close();
    }
  });
});

describe('renewal', () => {
  test('a certificate renews exactly once however many renewals race, and not too early', async () => {
    const short = await startTestServer(etcd.endpoint, { workerCertTtlMs: 10_000 });
    const shortAdmin = adminClient(short);
    try {
      const token = await createToken(short);
      const joinedAt = Date.now();
      const w = await joinWorker(short, token);
      const c = workerClient(short.server.workerPort, w.identity);
      const renew = async () => {
        const { csrPem } = await generateWorkerKey('p256', 'renewer');
        return new Promise<string>((resolve, reject) =>
          c.client.renewCertificate({ csrPem }, (err, res) =>
            err ? reject(err) : resolve(res.certificatePem),
          ),
        );
      };
      try {
        const early = (await renew().catch((e: unknown) => e)) as ServiceError;
        assert.equal(early.code, status.FAILED_PRECONDITION);
        assert.match(early.details, /renewal too early/);
        // Issued after joinedAt with a 10 s lifetime: a quarter has passed 2.5 s after it.
        await eventually(() => Date.now() > joinedAt + 3000, {
          message: 'a quarter of the lifetime passes',
        });
        const results = await Promise.allSettled(Array.from({ length: 10 }, () => renew()));
        const won = results.filter((r) => r.status === 'fulfilled');
        assert.equal(
          won.length,
          1,
          `exactly one renewal per certificate: ${results.map((r) => (r.status === 'rejected' ? (r.reason as ServiceError).details : 'ok')).join('; ')}`,
        );
        for (const r of results) {
          if (r.status === 'rejected') {
            assert.equal((r.reason as ServiceError).code, status.UNAUTHENTICATED);
          }
        }
        const worker = (
          await short.call(
            shortAdmin.getWorker.bind(shortAdmin),
            GetWorkerRequest.fromPartial({ id: w.workerId }),
          )
        ).worker!;
        const serials = (
          await short.server.store.rangeAll<{ revokedAt?: number; subject: string }>(
            keys.certPrefix,
          )
        ).items.filter((i) => i.value.subject === w.workerId);
        assert.equal(serials.length, 2);
        assert.equal(serials.filter((i) => i.value.revokedAt === undefined).length, 1);
        assert.equal(
          worker.certificateSerial,
          new X509Certificate(
            (won[0] as PromiseFulfilledResult<string>).value,
          ).serialNumber.toLowerCase(),
        );
      } finally {
        c.close();
      }
    } finally {
      shortAdmin.close();
      await short.stop();
    }
  });
});

describe('blocking', () => {
  test('a blocked worker’s stream is cut and its next call refused within 1 s; re-join is refused', async () => {
    const token = await createToken(ts, { uses: 3 });
    const w = await joinWorker(ts, token);
    const c = workerClient(ts.server.workerPort, w.identity);
    try {
      const seq = new HeartbeatSequence();
      await c.heartbeat(heartbeatOf(w, seq));
      const stream = c.client.connect({}, new Metadata());
      const events: ConnectResponse[] = [];
      const ended = new Promise<{ at: number; err: ServiceError }>((resolve) => {
        stream.on('error', (err: ServiceError) => resolve({ at: Date.now(), err }));
      });
      stream.on('data', (e: ConnectResponse) => events.push(e));
      await eventually(() => events.length > 0, { message: 'connected event' });
      assert.equal(events[0]!.event?.$case, 'connected');

      const blockedAt = Date.now();
      await ts.call(
        admin.blockWorker.bind(admin),
        BlockWorkerRequest.fromPartial({ id: w.workerId, reason: 'compromised in test' }),
      );
      const cut = await ended;
      assert.equal(cut.err.code, status.UNAUTHENTICATED);
      assert.ok(cut.at - blockedAt < 1000, `stream cut ${cut.at - blockedAt} ms after the block`);
      const refusedAt = Date.now();
      assert.equal(await codeOf(c.heartbeat(heartbeatOf(w, seq))), status.UNAUTHENTICATED);
      assert.ok(Date.now() - refusedAt < 1000, 'Date.now() - refusedAt < 1000');
      // The certificate itself is still far from expiry: this is revocation, not expiry.
      assert.ok(
        w.identity.notAfter.getTime() - Date.now() > 30 * 60_000,
        'w.identity.notAfter.getTime() - Date.now() > 30 * 60_000',
      );
      // Its token is revoked with it: a re-join with it is refused.
      assert.equal(await codeOf(joinWorker(ts, token)), status.FAILED_PRECONDITION);
      assert.ok(
        !(await ts.server.store.get(keys.live(w.workerId))),
        '!(await ts.server.store.get(keys.live(w.workerId)))',
      );
    } finally {
      c.close();
    }
  });
});

describe('certificates from elsewhere', () => {
  test('a client certificate of another CA cannot even complete a handshake on the worker endpoint', async () => {
    const w = await joinWorker(ts, await createToken(ts));
    const otherCa = await createCa({ commonName: 'not the cluster CA' });
    const foreign = await issueClientCert(otherCa, {
      uri: `citadel://worker/${w.workerId}`,
      commonName: w.workerId,
    });
    const c = workerClient(ts.server.workerPort, {
      caPem: ts.server.caPem,
      keyPem: foreign.keyPem!,
      certPem: foreign.certPem,
    });
    try {
      const seq = new HeartbeatSequence();
      assert.equal(await codeOf(c.heartbeat(heartbeatOf(w, seq))), status.UNAVAILABLE);
    } finally {
      c.close();
    }
    // Nor without a certificate at all.
    const { WorkerServiceClient } = await import('../../gen/citadel/v1/worker_service.js');
    const bare = new WorkerServiceClient(
      `localhost:${ts.server.workerPort}`,
      credentials.createSsl(Buffer.from(ts.server.caPem)),
    );
    try {
      const code = await new Promise<number>((resolve) =>
        bare.heartbeat(heartbeatOf(w, new HeartbeatSequence()), (err) => resolve(err?.code ?? 0)),
      );
      assert.equal(code, status.UNAVAILABLE);
    } finally {
      bare.close();
    }
  });

  test('a worker certificate used on the public API as if it were a user is refused', async () => {
    const w = await joinWorker(ts, await createToken(ts));
    const { TaskServiceClient } = await import('../../gen/citadel/v1/task_service.js');
    const client = new TaskServiceClient(
      `localhost:${ts.server.port}`,
      credentials.createSsl(
        Buffer.from(ts.server.caPem),
        Buffer.from(w.identity.keyPem),
        Buffer.from(w.identity.certPem),
      ),
    );
    try {
      const list = (md: Metadata) =>
        new Promise<void>((resolve, reject) =>
          client.listTasks(ListTasksRequest.fromPartial({}), md, (err) =>
            err ? reject(err) : resolve(),
          ),
        );
      const alone = (await list(new Metadata()).catch((e: unknown) => e)) as ServiceError;
      assert.equal(alone.code, status.UNAUTHENTICATED);
      assert.match(alone.details, /worker certificate is not a user/);
      // Not even with a valid admin key beside it.
      const md = new Metadata();
      md.set('authorization', `Bearer ${ts.adminKey}`);
      assert.equal(await codeOf(list(md)), status.UNAUTHENTICATED);
    } finally {
      client.close();
    }
  });
});
