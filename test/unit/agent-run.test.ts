/**
 * The agent's run loop against in-process fake WorkerService replicas over real mutual TLS:
 * signed heartbeats, failover to the next address, renewal while the server cuts the old
 * certificate's stream, and a refusal. No etcd: the fakes only check what the agent sends.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import {
  Server,
  ServerCredentials,
  status,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { verify, webcrypto, X509Certificate } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { pino } from 'pino';

import { Agent, type AgentState } from '../../agent/agent.js';
import { identityFromPem, loadIdentity, type WorkerIdentity } from '../../agent/identity.js';
import { generateWorkerKey } from '../../agent/keys.js';
import { dataPaths, readAgentStatus, type DataPaths } from '../../agent/state.js';
import {
  HeartbeatBody,
  WorkerServiceService,
  type ConnectRequest,
  type ConnectResponse,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type RenewCertificateRequest,
  type RenewCertificateResponse,
} from '../../gen/citadel/v1/worker_service.js';
import {
  createCa,
  issueClientCert,
  issueServerCert,
  type CaMaterial,
} from '../../server/tls/ca.js';
import { eventually } from '../helpers/eventually.js';

const WORKER_ID = 'w_fake0000000000';

let ca: CaMaterial;
let serving: { certPem: string; keyPem: string };

/** Issues a worker certificate for a CSR, `ttlMs` long (notBefore back-dated as the server does). */
async function issueFor(csrPem: string, ttlMs: number): Promise<string> {
  const csr = new x509.Pkcs10CertificateRequest(csrPem);
  // @peculiar/x509 types this with the DOM CryptoKey, which this project does not load.
  const publicKey = (await csr.publicKey.export(webcrypto)) as webcrypto.CryptoKey;
  const { certPem } = await issueClientCert(ca, {
    uri: `citadel://worker/${WORKER_ID}`,
    commonName: WORKER_ID,
    publicKey,
    validityMs: ttlMs,
  });
  return certPem;
}

interface SeenHeartbeat {
  replica: string;
  body: HeartbeatBody;
  peerSerial: string;
}

/** A WorkerService replica that verifies heartbeats like the real one and records them. */
class FakeReplica {
  readonly heartbeats: SeenHeartbeat[] = [];
  readonly renewals: string[] = [];
  readonly streams = new Map<string, ServerWritableStream<ConnectRequest, ConnectResponse>>();
  /** Set to refuse every call with UNAUTHENTICATED and this message. */
  refuse: string | undefined;
  port = 0;
  readonly #server = new Server();

  constructor(
    readonly replicaId: string,
    private readonly certTtlMs: number,
  ) {
    this.#server.addService(WorkerServiceService, {
      heartbeat: (
        call: ServerUnaryCall<HeartbeatRequest, HeartbeatResponse>,
        cb: sendUnaryData<HeartbeatResponse>,
      ) => this.#heartbeat(call, cb),
      renewCertificate: (
        call: ServerUnaryCall<RenewCertificateRequest, RenewCertificateResponse>,
        cb: sendUnaryData<RenewCertificateResponse>,
      ) => void this.#renew(call, cb),
      connect: (call: ServerWritableStream<ConnectRequest, ConnectResponse>) => this.#connect(call),
    });
  }

  async start(): Promise<void> {
    const creds = ServerCredentials.createSsl(
      Buffer.from(ca.certPem),
      [{ private_key: Buffer.from(serving.keyPem), cert_chain: Buffer.from(serving.certPem) }],
      true,
    );
    this.port = await new Promise<number>((resolve, reject) =>
      this.#server.bindAsync('127.0.0.1:0', creds, (err, port) =>
        err ? reject(err) : resolve(port),
      ),
    );
  }

  stop(): void {
    this.#server.forceShutdown();
  }

  #peer(call: { getAuthContext(): { sslPeerCertificate?: { raw?: Buffer } } }) {
    const raw = call.getAuthContext().sslPeerCertificate?.raw;
    assert.ok(raw, 'mutual TLS presents a client certificate');
    return new X509Certificate(raw);
  }

  #heartbeat(
    call: ServerUnaryCall<HeartbeatRequest, HeartbeatResponse>,
    cb: sendUnaryData<HeartbeatResponse>,
  ): void {
    if (this.refuse !== undefined) {
      cb({ code: status.UNAUTHENTICATED, details: this.refuse });
      return;
    }
    const peer = this.#peer(call);
    const { body, signature } = call.request;
    const ok =
      peer.publicKey.asymmetricKeyType === 'ed25519'
        ? verify(null, body, peer.publicKey, signature)
        : verify('sha256', body, { key: peer.publicKey, dsaEncoding: 'der' }, signature);
    if (!ok) {
      cb({ code: status.UNAUTHENTICATED, details: 'bad_signature' });
      return;
    }
    const decoded = HeartbeatBody.decode(body);
    this.heartbeats.push({
      replica: this.replicaId,
      body: decoded,
      peerSerial: peer.serialNumber.toLowerCase(),
    });
    cb(null, { leaseTtlMs: 2_000, nextHeartbeatMs: 0 });
  }

  async #renew(
    call: ServerUnaryCall<RenewCertificateRequest, RenewCertificateResponse>,
    cb: sendUnaryData<RenewCertificateResponse>,
  ): Promise<void> {
    const oldSerial = this.#peer(call).serialNumber.toLowerCase();
    const certificatePem = await issueFor(call.request.csrPem, this.certTtlMs);
    this.renewals.push(new X509Certificate(certificatePem).serialNumber.toLowerCase());
    // As the real server: the old certificate's stream is cut when it is retired, which
    // reaches the agent before the answer.
    const old = this.streams.get(oldSerial);
    old?.emit('error', {
      code: status.UNAUTHENTICATED,
      details: 'this certificate was replaced by a renewal; use the new one',
    });
    await new Promise((resolve) => setTimeout(resolve, 50));
    cb(null, { certificatePem });
  }

  #connect(call: ServerWritableStream<ConnectRequest, ConnectResponse>): void {
    if (this.refuse !== undefined) {
      call.emit('error', { code: status.UNAUTHENTICATED, details: this.refuse });
      return;
    }
    const serial = this.#peer(call).serialNumber.toLowerCase();
    this.streams.set(serial, call);
    call.on('cancelled', () => this.streams.delete(serial));
    call.write({
      event: { $case: 'connected', value: { workerId: WORKER_ID, replicaId: this.replicaId } },
    });
  }
}

/** A joined data folder with a certificate `ttlMs` long. */
async function joinedFolder(
  ttlMs: number,
): Promise<{ paths: DataPaths; identity: WorkerIdentity }> {
  const paths = dataPaths(await fs.mkdtemp(path.join(os.tmpdir(), 'agent-run-')));
  const material = await generateWorkerKey('p256', 'test-host');
  const identity = identityFromPem(
    ca.certPem,
    material.privateKeyPem,
    await issueFor(material.csrPem, ttlMs),
  );
  await fs.writeFile(paths.ca, ca.certPem);
  await fs.writeFile(paths.key, identity.keyPem, { mode: 0o600 });
  await fs.writeFile(paths.cert, identity.certPem);
  return { paths, identity };
}

/** A logger whose lines the test can read. */
function capturedLogger() {
  const lines: { msg: string; [k: string]: unknown }[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) {
        lines.push(JSON.parse(line) as { msg: string });
      }
      done();
    },
  });
  return { logger: pino({ level: 'debug' }, sink), lines };
}

function startAgent(
  paths: DataPaths,
  identity: WorkerIdentity,
  replicas: FakeReplica[],
  extra: { refusedRetryMs?: number } = {},
) {
  const { logger, lines } = capturedLogger();
  const states: AgentState[] = [];
  const agent = new Agent(
    {
      paths,
      workerId: WORKER_ID,
      servers: replicas.map((r) => ({ host: '127.0.0.1', port: r.port })),
      heartbeatIntervalMs: 100,
      leaseTtlMs: 2_000,
      slots: 2,
      // Offers its slots; these fake replicas never assign anything to run.
      runner: { run: () => Promise.reject(new Error('no executions in this test')) },
      onStateChange: (s) => states.push(s),
      ...extra,
    },
    identity,
    logger,
  );
  agent.start();
  return { agent, lines, states };
}

before(async () => {
  ca = await createCa();
  serving = await issueServerCert(ca, {
    commonName: 'fake',
    dnsNames: ['localhost'],
    ipAddresses: ['127.0.0.1'],
  });
});

void describe('Agent', () => {
  const replicas: FakeReplica[] = [];
  const agents: Agent[] = [];

  async function replica(id: string, certTtlMs = 3_600_000): Promise<FakeReplica> {
    const r = new FakeReplica(id, certTtlMs);
    await r.start();
    replicas.push(r);
    return r;
  }

  after(async () => {
    await Promise.all(agents.map((a) => a.stop()));
    for (const r of replicas) r.stop();
  });

  void it('sends signed heartbeats with rising sequences and records status.json', async () => {
    const a = await replica('a');
    const { paths, identity } = await joinedFolder(3_600_000);
    const { agent, lines } = startAgent(paths, identity, [a]);
    agents.push(agent);

    await eventually(() => a.heartbeats.length >= 5, { message: 'five heartbeats' });
    await eventually(() => agent.state.kind === 'connected' && agent.state.replicaId === 'a');
    const seqs = a.heartbeats.map((h) => h.body.sequence);
    assert.ok(
      seqs.every((s, i) => i === 0 || s > seqs[i - 1]!),
      'strictly increasing',
    );
    for (const h of a.heartbeats) {
      assert.equal(h.body.workerId, WORKER_ID);
      assert.equal(h.body.certificateSerial, identity.serial);
      assert.equal(h.peerSerial, identity.serial);
      assert.equal(h.body.totalSlots, 2);
    }
    assert.ok(
      lines.some((l) => l.msg === 'connected' && l.replicaId === 'a'),
      "lines.some((l) => l.msg === 'connected' && l.replicaId === 'a')",
    );
    assert.ok(
      lines.some((l) => l.msg === 'heartbeat accepted'),
      "lines.some((l) => l.msg === 'heartbeat accepted')",
    );
    const recorded = await eventually(async () => {
      const s = await readAgentStatus(paths);
      assert.ok(s, 's');
      return s;
    });
    assert.equal(recorded.workerId, WORKER_ID);
    assert.equal(recorded.certificateSerial, identity.serial);

    await agent.stop();
    assert.equal(agent.state.kind, 'stopped');
    assert.equal((await readAgentStatus(paths))?.state, 'stopped');
  });

  void it('moves to the next address when its replica goes away', async () => {
    const a = await replica('a');
    const b = await replica('b');
    const { paths, identity } = await joinedFolder(3_600_000);
    const { agent, lines } = startAgent(paths, identity, [a, b]);
    agents.push(agent);

    await eventually(() => a.heartbeats.length >= 2, { message: 'heartbeats on a' });
    const lastOnA = a.heartbeats.at(-1)!.body.sequence;
    a.stop();
    await eventually(() => b.heartbeats.length >= 2, { message: 'heartbeats on b' });
    assert.ok(b.heartbeats[0]!.body.sequence > lastOnA, 'b.heartbeats[0]!.body.sequence > lastOnA');
    await eventually(() => agent.state.kind === 'connected' && agent.state.replicaId === 'b');
    assert.ok(
      lines.some((l) => l.msg === 'worker call failed'),
      "lines.some((l) => l.msg === 'worker call failed')",
    );
    await agent.stop();
  });

  void it('renews its certificate, surviving the server cutting the old stream first', async () => {
    const ttlMs = 3_000; // renewal 1.2-1.5 s after issuance
    const a = await replica('a', ttlMs);
    const { paths, identity } = await joinedFolder(ttlMs);
    const { agent, lines, states } = startAgent(paths, identity, [a]);
    agents.push(agent);

    await eventually(() => a.renewals.length >= 1, { message: 'a renewal', timeoutMs: 5_000 });
    const renewed = a.renewals[0]!;
    await eventually(() => a.heartbeats.some((h) => h.body.certificateSerial === renewed), {
      message: 'heartbeats with the new certificate',
    });
    assert.ok(
      states.every((s) => s.kind !== 'backoff'),
      `no session failure: ${JSON.stringify(states.filter((s) => s.kind === 'backoff'))}`,
    );
    assert.ok(
      lines.some((l) => l.msg === 'certificate renewed' && l.serial === renewed),
      "lines.some((l) => l.msg === 'certificate renewed' && l.serial === renewed)",
    );
    // The stream is back, on the new certificate.
    await eventually(() => a.streams.has(renewed), { message: 'stream on the new certificate' });
    const onDisk = await loadIdentity(paths);
    assert.ok(a.renewals.includes(onDisk.serial), 'a.renewals.includes(onDisk.serial)');
    assert.equal((await fs.stat(paths.key)).mode & 0o777, 0o600);
    await agent.stop();
  });

  void it('keeps retrying slowly, logging once, when the server refuses the worker', async () => {
    const a = await replica('a');
    a.refuse = `worker ${WORKER_ID} is blocked`;
    const { paths, identity } = await joinedFolder(3_600_000);
    const { agent, lines, states } = startAgent(paths, identity, [a], { refusedRetryMs: 200 });
    agents.push(agent);

    await eventually(() => states.filter((s) => s.kind === 'backoff').length >= 3, {
      message: 'three refused attempts',
    });
    const refusals = lines.filter((l) => l.msg === 'worker refused by server');
    assert.ok(refusals.length >= 1, 'refusals.length >= 1');
    assert.ok(
      refusals.every((l) => l.terminal === true),
      'refusals.every((l) => l.terminal === true)',
    );
    // One line per distinct failure, not one per retry.
    const keys = refusals.map((l) => `${String(l.operation)}:${String(l.details)}`);
    assert.equal(new Set(keys).size, keys.length);
    for (const s of states) {
      if (s.kind === 'backoff')
        assert.ok(s.delayMs >= 100 && s.delayMs <= 200, 's.delayMs >= 100 && s.delayMs <= 200');
    }

    a.refuse = undefined; // the operator relents (not possible for a real block; here, a test)
    await eventually(() => agent.state.kind === 'connected', { message: 'back to connected' });
    await agent.stop();
  });
});
