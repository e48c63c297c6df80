/**
 * The gRPC boundary against a real etcd and a real TLS server, driven with raw bytes and a
 * foreign client where our generated client would never send such a request: requests that do
 * not decode are the caller's fault (INVALID_ARGUMENT, not INTERNAL), status messages stay small
 * enough for clients that cap response metadata at 8 KiB, two authorization entries are refused
 * as ambiguous, and the Prometheus endpoint answers.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { request } from 'node:http';
import {
  credentials,
  makeGenericClientConstructor,
  status,
  type Client,
  type ServiceError,
} from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { CreateTaskRequest } from '../../gen/citadel/v1/task_service.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { bearer, startTestServer, type TestServer } from '../helpers/server.js';

let etcd: TestEtcd;
let ts: TestServer;
let raw: Client & Record<string, (...args: unknown[]) => unknown>;

const bytes = (b: Buffer) => b;

/** A client sending and receiving raw bytes on TaskService methods. */
function rawClient(port: number, caPem: string) {
  const method = (name: string, responseStream = false) => ({
    path: `/citadel.v1.TaskService/${name}`,
    requestStream: false,
    responseStream,
    requestSerialize: bytes,
    requestDeserialize: bytes,
    responseSerialize: bytes,
    responseDeserialize: bytes,
  });
  const Ctor = makeGenericClientConstructor(
    {
      CreateTask: method('CreateTask'),
      WatchExecutions: method('WatchExecutions', true),
    },
    'RawTaskService',
  );
  return new Ctor(`localhost:${port}`, credentials.createSsl(Buffer.from(caPem))) as Client &
    Record<string, (...args: unknown[]) => unknown>;
}

function unaryRaw(name: string, body: Buffer, key = ts.adminKey): Promise<ServiceError | null> {
  return new Promise((resolve) => {
    raw[name]!(body, bearer(key), { deadline: Date.now() + 10_000 }, (err: ServiceError | null) =>
      resolve(err),
    );
  });
}

function streamRaw(name: string, body: Buffer): Promise<ServiceError | null> {
  return new Promise((resolve) => {
    const call = raw[name]!(body, bearer(ts.adminKey), {
      deadline: Date.now() + 10_000,
    }) as NodeJS.EventEmitter & {
      cancel(): void;
    };
    call.on('data', () => undefined);
    call.on('error', (err: ServiceError) => resolve(err));
    call.on('end', () => resolve(null));
  });
}

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint, { metricsAddr: '127.0.0.1:0' });
  raw = rawClient(ts.server.port, ts.server.caPem);
});

after(async () => {
  raw.close();
  await ts.stop();
  await etcd.stop();
});

describe('requests that do not decode', () => {
  test('garbage bytes answer INVALID_ARGUMENT naming the message', async () => {
    const err = await unaryRaw('CreateTask', Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x7f, 0x01]));
    assert.equal(err?.code, status.INVALID_ARGUMENT, `code of ${err?.message}`);
    assert.match(err.details, /could not be decoded as the CreateTask request message/);
  });

  test('an int64 past 2^53 answers INVALID_ARGUMENT on a stream', async () => {
    const body = new BinaryWriter()
      .uint32((2 << 3) | 0) // WatchExecutionsRequest.after_revision, varint
      .int64(2n ** 60n)
      .finish();
    const err = await streamRaw('WatchExecutions', Buffer.from(body));
    assert.equal(err?.code, status.INVALID_ARGUMENT, `code of ${err?.message}`);
    assert.match(err.details, /WatchExecutions request message/);
  });

  test('an unauthenticated caller learns nothing about decoding', async () => {
    const err = await unaryRaw('CreateTask', Buffer.from([0xff, 0xff]), 'sk_live_nope');
    assert.equal(err?.code, status.UNAUTHENTICATED, `code of ${err?.message}`);
  });

  test('a payload nested 60 levels deep is a client error, never INTERNAL', async () => {
    let payload: Record<string, unknown> = { leaf: 'x' };
    for (let i = 0; i < 60; i++) payload = { nested: payload };
    const body = CreateTaskRequest.encode(
      CreateTaskRequest.fromPartial({ task: { type: 'demo.deep', payload } }),
    ).finish();
    const err = await unaryRaw('CreateTask', Buffer.from(body));
    assert.notEqual(err?.code, status.INTERNAL, `not INTERNAL: ${err?.message}`);
  });
});

test('a huge echoed value is cut to a message every client can read', async () => {
  const body = CreateTaskRequest.encode(
    CreateTaskRequest.fromPartial({
      task: {
        type: 'demo.tz',
        schedule: {
          $case: 'cron',
          value: { expression: '* * * * *', timeZone: 'Z'.repeat(100_000) },
        },
      },
    }),
  ).finish();
  const err = await unaryRaw('CreateTask', Buffer.from(body));
  assert.equal(err?.code, status.INVALID_ARGUMENT, `code of ${err?.message}`);
  assert.ok(Buffer.byteLength(err.details) <= 1024, `details of ${err.details.length} characters`);
  assert.match(err.details, /time_zone/);
  assert.match(err.details, /\(cut; \d+ bytes in all\)$/);
});

test('a message cut inside an emoji neither splits it nor brings the replica down', async () => {
  const body = CreateTaskRequest.encode(
    CreateTaskRequest.fromPartial({
      task: { type: 'demo.labels', labels: { ['a'.repeat(970) + '😀'.repeat(40)]: 'v' } },
    }),
  ).finish();
  const err = await unaryRaw('CreateTask', Buffer.from(body));
  assert.equal(err?.code, status.INVALID_ARGUMENT, `code of ${err?.message}`);
  assert.match(err.details, /task\.labels/);
  const again = await unaryRaw('CreateTask', Buffer.from([0xff]));
  assert.equal(again?.code, status.INVALID_ARGUMENT, 'the replica still answers');
});

test('two authorization entries are refused as ambiguous (a Python grpcio client)', async () => {
  // grpc-js refuses to send two; grpcio sends both, and Node would keep only the first.
  const script = `
import grpc, sys
creds = grpc.ssl_channel_credentials(open(sys.argv[1], 'rb').read())
ch = grpc.secure_channel('localhost:${ts.server.port}', creds)
call = ch.unary_unary('/citadel.v1.TaskService/ListTasks')
for metadata in ([('authorization', 'Bearer ${ts.adminKey}')],
                 [('authorization', 'Bearer ${ts.adminKey}'), ('authorization', 'Bearer sk_live_other')]):
    try:
        call(b'', metadata=metadata, timeout=10)
        print('OK')
    except grpc.RpcError as e:
        print(e.code().name, e.details())
`;
  const caFile = ts.server.caPath;
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('/usr/bin/python3', ['-c', script, caFile]);
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.stderr.on('data', (d: Buffer) => (text += d.toString()));
    child.on('error', reject);
    child.on('exit', () => resolve(text));
  });
  const [single, double] = out.trim().split('\n');
  assert.equal(single, 'OK', `one entry is accepted: ${out}`);
  assert.match(double ?? '', /^UNAUTHENTICATED 2 authorization metadata entries/, out);
});

test('/metrics serves the RPC counters in the Prometheus text format', async () => {
  const port = ts.server.metricsPort;
  assert.ok(port, 'the metrics endpoint is bound');
  await unaryRaw('CreateTask', Buffer.from([0xff]));
  const text = await new Promise<string>((resolve, reject) => {
    request({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(body));
    })
      .on('error', reject)
      .end();
  });
  assert.match(text, /# TYPE citadel_rpc_total counter/);
  assert.match(
    text,
    /citadel_rpc_total\{method="TaskService\/CreateTask",code="INVALID_ARGUMENT"\} [1-9]/,
  );
  assert.match(text, /citadel_leader /);
});
