/**
 * PRODUCT promises that a Python client generated from proto/citadel/v1 works as well as the
 * TypeScript one: generate stubs with Debian's protoc + grpc_python_plugin into a temp dir, then
 * run test/python/client_smoke.py against an in-process TLS server.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { REPO_ROOT, startTestServer, type TestServer } from '../helpers/server.js';

const run = promisify(execFile);

/** Debian's python3: the pyenv python3 first on PATH cannot import python3-grpcio. */
const PYTHON = '/usr/bin/python3';
const SETUP_HINT =
  'run `sudo bash scripts/setup.sh` (installs protobuf-compiler, protobuf-compiler-grpc and ' +
  'python3-grpcio)';

let etcd: TestEtcd;
let ts: TestServer;
let tmp: string;

before(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-python-'));
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

/** The first executable called `name` on PATH, or undefined. */
async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const candidate = path.join(dir, name);
    try {
      await fs.access(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/** Output of a failed child process, for an assertion message. */
function describeFailure(err: unknown): string {
  const e = err as { message?: string; stdout?: string; stderr?: string };
  return [e.message, e.stdout, e.stderr].filter(Boolean).join('\n').slice(-4000);
}

interface Summary {
  one_time_id: string;
  cron_id: string;
  payload: Record<string, unknown>;
  timeout_seconds: number;
  cron_time_zone: string;
  listed: number;
  list_pages: number;
  priority: string;
  cancelled_state: string;
  watched_execution: string;
  watched_state: string;
  delete_cancelled: number;
  errors: { bad_cron: string; bad_time_zone: string; not_found: string; unauthenticated: string };
}

test('a Python client generated from the protos drives the whole TaskService', async () => {
  const protoc = await onPath('protoc');
  assert.ok(protoc, `protoc is not on PATH: ${SETUP_HINT}`);
  const plugin = await onPath('grpc_python_plugin');
  assert.ok(plugin, `grpc_python_plugin is not on PATH: ${SETUP_HINT}`);
  await run(PYTHON, ['-c', 'import grpc, google.protobuf'], { timeout: 10_000 }).catch(
    (err: unknown) =>
      assert.fail(`${PYTHON} cannot import grpc: ${SETUP_HINT}\n${describeFailure(err)}`),
  );

  const out = path.join(tmp, 'stubs');
  await fs.mkdir(out);
  const protos = (await fs.readdir(path.join(REPO_ROOT, 'proto/citadel/v1')))
    .filter((f) => f.endsWith('.proto'))
    .map((f) => `citadel/v1/${f}`);
  assert.ok(protos.length > 0, 'no .proto files found');
  // google/protobuf/*.proto resolve from protoc's own include dir (next to its bin dir).
  await run(
    protoc,
    [
      '-I',
      'proto',
      `--python_out=${out}`,
      `--grpc_python_out=${out}`,
      `--plugin=protoc-gen-grpc_python=${plugin}`,
      ...protos,
    ],
    { cwd: REPO_ROOT, timeout: 20_000 },
  ).catch((err: unknown) => assert.fail(`protoc failed:\n${describeFailure(err)}`));

  const caFile = path.join(tmp, 'ca.pem');
  await fs.writeFile(caFile, ts.server.caPem);

  // Asynchronous on purpose: the server runs in this process and must keep serving.
  const { stdout } = await run(PYTHON, [path.join(REPO_ROOT, 'test/python/client_smoke.py')], {
    cwd: REPO_ROOT,
    timeout: 30_000,
    env: {
      ...process.env,
      PYTHONPATH: out,
      PYTHONDONTWRITEBYTECODE: '1',
      CITADEL_SERVER: `localhost:${ts.server.port}`,
      CITADEL_CA: caFile,
      CITADEL_API_KEY: ts.adminKey,
    },
  }).catch((err: unknown) => assert.fail(`client_smoke.py failed:\n${describeFailure(err)}`));

  const summary = JSON.parse(stdout) as Summary;
  assert.match(summary.one_time_id, /^t_/);
  assert.match(summary.cron_id, /^t_/);
  assert.deepEqual(summary.payload, { argv: ['echo', 'hi'], env: { GREETING: 'hello' }, n: 3 });
  assert.equal(summary.timeout_seconds, 90);
  assert.equal(summary.cron_time_zone, 'Europe/Berlin');
  assert.equal(summary.listed, 2);
  assert.ok(summary.list_pages >= 2, `pages: ${summary.list_pages}`);
  assert.equal(summary.priority, 'PRIORITY_HIGH');
  assert.equal(summary.cancelled_state, 'EXECUTION_STATE_CANCELLED');
  assert.match(summary.watched_execution, new RegExp(`^${summary.cron_id}-`));
  assert.equal(summary.watched_state, 'EXECUTION_STATE_PENDING');
  assert.equal(summary.delete_cancelled, 1);
  assert.match(summary.errors.bad_cron, /cron\.expression/);
  assert.match(summary.errors.bad_time_zone, /cron\.time_zone/);
  assert.equal(summary.errors.not_found, 'NOT_FOUND');
  assert.equal(summary.errors.unauthenticated, 'UNAUTHENTICATED');
});
