/**
 * Server reflection as grpcurl uses it, from a client in another language: Python grpcio with
 * reflection stubs generated from Debian's grpc-proto (test/python/reflection_client.py). The
 * client asks for the file declaring TaskService, fetches every import by file name, builds a
 * descriptor pool from the answers alone, describes the service and invokes ListTasks with an
 * API key. Every file must come under its own name with its real imports, the well-known types
 * included (grpc-js reflection fed a proto-loader definition merged them and dropped imports,
 * so grpcurl could not resolve google.protobuf.Timestamp).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { CreateTaskRequest } from '../../gen/citadel/v1/task_service.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { REPO_ROOT, startTestServer, type TestServer } from '../helpers/server.js';

const run = promisify(execFile);

/** Debian's python3: the pyenv python3 first on PATH cannot import python3-grpcio. */
const PYTHON = '/usr/bin/python3';
/** Where Debian's grpc-proto puts the reflection protos (scripts/setup.sh installs it). */
const GRPC_PROTO = '/usr/share/grpc-proto/grpc/reflection/v1/reflection.proto';

let etcd: TestEtcd;
let ts: TestServer;
let tmp: string;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-reflection-'));
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

interface Summary {
  services: string[];
  files: string[];
  by_filename: string[];
  by_name: Record<string, string>;
  errors: string[];
  methods: string[];
  list_tasks_input: string;
  input_fields: string[];
  tasks: { id: string; type: string; createTime?: string }[];
}

test('a Python client resolves, describes and invokes ListTasks from reflection alone', async () => {
  // Generated under another file name: a `grpc/` folder on PYTHONPATH would hide grpcio itself.
  const protos = path.join(tmp, 'protos');
  const out = path.join(tmp, 'stubs');
  await fs.mkdir(protos);
  await fs.mkdir(out);
  await fs
    .copyFile(GRPC_PROTO, path.join(protos, 'citadel_reflection.proto'))
    .catch(() =>
      assert.fail(`${GRPC_PROTO} is missing: run \`sudo bash scripts/setup.sh\` (grpc-proto)`),
    );
  await run(
    'protoc',
    [
      '-I',
      protos,
      `--python_out=${out}`,
      `--grpc_python_out=${out}`,
      '--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin',
      'citadel_reflection.proto',
    ],
    { timeout: 20_000 },
  );
  const { task } = await ts.call(
    ts.client.createTask,
    CreateTaskRequest.fromPartial({ task: { type: 'demo.reflection' } }),
  );
  const caFile = path.join(tmp, 'ca.pem');
  await fs.writeFile(caFile, ts.server.caPem);

  // Asynchronous on purpose: the server runs in this process and must keep serving.
  const { stdout } = await run(PYTHON, [path.join(REPO_ROOT, 'test/python/reflection_client.py')], {
    timeout: 30_000,
    env: {
      ...process.env,
      PYTHONPATH: out,
      PYTHONDONTWRITEBYTECODE: '1',
      CITADEL_SERVER: `localhost:${ts.server.port}`,
      CITADEL_CA: caFile,
      CITADEL_API_KEY: ts.adminKey,
    },
  });
  const s = JSON.parse(stdout) as Summary;

  assert.deepEqual(
    [...s.services].sort(),
    [
      'citadel.v1.AdminService',
      'citadel.v1.JoinService',
      'citadel.v1.TaskService',
      'grpc.health.v1.Health',
    ],
    'list names what this port serves (WorkerService is on the worker endpoint)',
  );
  assert.deepEqual(s.errors, [], 'every reflection request was answered');
  for (const file of [
    'citadel/v1/task_service.proto',
    'citadel/v1/task.proto',
    'citadel/v1/execution.proto',
    'google/protobuf/timestamp.proto',
    'google/protobuf/duration.proto',
    'google/protobuf/struct.proto',
    'google/protobuf/field_mask.proto',
  ]) {
    assert.ok(s.files.includes(file), `resolved ${file}: ${s.files.join(', ')}`);
  }
  for (const [name, got] of Object.entries(s.by_name)) {
    assert.equal(got, name, `file_by_filename ${name}`);
  }
  assert.ok(
    'google/protobuf/timestamp.proto' in s.by_name,
    `the well-known types are asked for by name: ${Object.keys(s.by_name).join(', ')}`,
  );
  assert.ok(s.methods.includes('ListTasks'), `methods: ${s.methods.join(', ')}`);
  assert.equal(s.list_tasks_input, 'citadel.v1.ListTasksRequest');
  assert.ok(s.input_fields.includes('page_size'), `fields: ${s.input_fields.join(', ')}`);
  const listed = s.tasks.find((t) => t.id === task!.id);
  assert.ok(listed, `ListTasks through reflection lists ${task!.id}: ${stdout}`);
  assert.equal(listed.type, 'demo.reflection');
  assert.match(listed.createTime ?? '', /^\d{4}-\d\d-\d\dT/, 'a Timestamp decoded as one');
});
