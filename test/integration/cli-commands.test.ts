/**
 * citadelctl end to end: the real CLI as a child process against a real TLS server on a real
 * etcd. Covers every task and execution command in JSON and table output, the exit codes (2 for
 * a bad flag, refused before any connection; 1 for server errors), and the watch stream.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { createServer, type AddressInfo, type Server } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { REPO_ROOT, startTestServer, type TestServer } from '../helpers/server.js';

let etcd: TestEtcd;
let ts: TestServer;
let tmpDir: string;
let keyFile: string;
let caFile: string;

before(async () => {
  etcd = await startTestEtcd();
  ts = await startTestServer(etcd.endpoint);
  tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-cli-'));
  caFile = path.join(tmpDir, 'ca.crt');
  keyFile = path.join(tmpDir, 'admin.key');
  await fs.writeFile(caFile, ts.server.caPem);
  await fs.writeFile(keyFile, `${ts.adminKey}\n`, { mode: 0o600 });
});

after(async () => {
  await ts?.stop();
  await etcd?.stop();
  if (tmpDir) await fs.rm(tmpDir, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** The environment of a citadelctl run: this server, its CA and the admin key, no config file. */
function cliEnv(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CITADEL_SERVER: `localhost:${ts.server.port}`,
    CITADEL_CA: caFile,
    CITADEL_API_KEY_FILE: keyFile,
    // An empty config home, so a config file on this machine cannot change the outcome.
    XDG_CONFIG_HOME: tmpDir,
    ...overrides,
  };
  delete env.CITADEL_API_KEY;
  delete env.CITADEL_INSECURE;
  delete env.NODE_TEST_CONTEXT;
  return env;
}

function spawnCli(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', 'cli/main.ts', ...args], {
    cwd: REPO_ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/** Runs citadelctl to completion. */
function ctl(args: string[], env: Record<string, string> = {}): Promise<Result> {
  const child = spawnCli(args, cliEnv(env));
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs citadelctl, asserts exit status 0 and returns standard output. */
async function ok(args: string[]): Promise<string> {
  const r = await ctl(args);
  assert.equal(r.code, 0, `citadelctl ${args.join(' ')} exited ${r.code}; stderr: ${r.stderr}`);
  return r.stdout;
}

/** Runs citadelctl with `-o json` and parses its output. */
async function okJson(args: string[]): Promise<Record<string, unknown>> {
  return JSON.parse(await ok([...args, '-o', 'json'])) as Record<string, unknown>;
}

/** proto3 JSON of a Task, as far as these tests look at it. */
interface TaskJson {
  id: string;
  type: string;
  payload?: Record<string, unknown>;
  oneTime?: { runAt?: string };
  cron?: { expression: string; timeZone?: string; overlapPolicy?: string };
  priority?: string;
  labels?: Record<string, string>;
  enabled?: boolean;
  nextRunTime?: string;
  owner?: string;
  etag: string;
}

interface ExecutionJson {
  id: string;
  taskId: string;
  state: string;
  trigger: string;
  attempt: number;
}

const taskOf = (doc: Record<string, unknown>) => doc.task as TaskJson;
const executionOf = (doc: Record<string, unknown>) => doc.execution as ExecutionJson;

/** A time `ms` ahead, whole seconds, as citadelctl prints it (ISO 8601 UTC, no milliseconds). */
function whole(ms: number): string {
  return new Date(Math.ceil((Date.now() + ms) / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

/** The cell under `column` in `row`, for a table whose header is `header`. */
function cell(header: string, row: string, column: string): string {
  const start = header.indexOf(column);
  assert.ok(start >= 0, `no ${column} column in: ${header}`);
  return row
    .slice(start)
    .split(/\s{3,}/)[0]!
    .trim();
}

// Shared between the tests below, which run in order.
let onceId: string;
let cronId: string;
const runAt = whole(3_600_000);

void test('task create, one-time, -o json: the task as created', async () => {
  const doc = await okJson([
    'task',
    'create',
    '--type',
    'demo.hello',
    '--payload',
    '{"argv":["echo","hello from citadel"]}',
    '--run-at',
    runAt,
    '--priority',
    'low',
    '--label',
    'env=test',
  ]);
  assert.equal(doc.created, true);
  const task = taskOf(doc);
  assert.match(task.id, /^t_[0-9a-z]{16}$/);
  assert.equal(task.type, 'demo.hello');
  assert.deepEqual(task.payload, { argv: ['echo', 'hello from citadel'] });
  assert.equal(new Date(task.oneTime!.runAt!).getTime(), new Date(runAt).getTime());
  assert.equal(new Date(task.nextRunTime!).getTime(), new Date(runAt).getTime());
  assert.equal(task.priority, 'PRIORITY_LOW');
  assert.deepEqual(task.labels, { env: 'test' });
  assert.equal(task.enabled, true);
  assert.equal(task.owner, 'admin');
  assert.match(task.etag, /^\d+$/);
  onceId = task.id;
});

void test('task create, cron, -o json: zone and next run', async () => {
  const task = taskOf(
    await okJson([
      'task',
      'create',
      '--type',
      'demo.report',
      '--cron',
      '0 0 1 1 *',
      '--tz',
      'Europe/Berlin',
      '--label',
      'env=test',
    ]),
  );
  cronId = task.id;
  assert.equal(task.cron?.expression, '0 0 1 1 *');
  assert.equal(task.cron.timeZone, 'Europe/Berlin');
  assert.equal(task.cron.overlapPolicy, 'OVERLAP_POLICY_ALLOW');
  assert.equal(task.oneTime, undefined);
  // Midnight of the next 1 January in Berlin: 23:00 UTC the day before (CET, UTC+1).
  const next = new Date(task.nextRunTime!);
  assert.ok(next.getTime() > Date.now(), 'next.getTime() > Date.now()');
  assert.equal(next.toISOString().slice(5), '12-31T23:00:00.000Z');
});

void test('task create, table output: a details block with the next run', async () => {
  const out = await ok([
    'task',
    'create',
    '--type',
    'demo.table',
    '--cron',
    '*/5 * * * * *',
    '--label',
    'env=table',
  ]);
  assert.match(out, /^id: +t_[0-9a-z]{16}$/m);
  assert.match(out, /^type: +demo\.table$/m);
  assert.match(out, /^schedule: +cron "\*\/5 \* \* \* \* \*" UTC$/m);
  assert.match(out, /^next run: +\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$/m);
  const id = /^id: +(\S+)$/m.exec(out)![1]!;
  assert.match(await ok(['task', 'delete', id]), /^deleted task t_/);
});

void test('task get: JSON and details', async () => {
  const task = taskOf(await okJson(['task', 'get', onceId]));
  assert.equal(task.id, onceId);
  assert.equal(task.type, 'demo.hello');
  const out = await ok(['task', 'get', cronId]);
  assert.match(out, new RegExp(`^id: +${cronId}$`, 'm'));
  assert.match(out, /^schedule: +cron "0 0 1 1 \*" Europe\/Berlin$/m);
  assert.match(out, /^labels: +env=test$/m);
});

void test('task list: a table with a NEXT RUN column; -o json and filters', async () => {
  const out = await ok(['task', 'list', '--label', 'env=test']);
  const [header, ...rows] = out.trimEnd().split('\n');
  assert.match(header!, /^ID +TYPE +SCHEDULE +PRIORITY +ENABLED +NEXT RUN +LABELS$/);
  assert.equal(rows.length, 2, out);
  const onceRow = rows.find((r) => r.startsWith(onceId));
  const cronRow = rows.find((r) => r.startsWith(cronId));
  assert.ok(onceRow && cronRow, out);
  assert.equal(cell(header!, onceRow, 'NEXT RUN'), runAt);
  assert.equal(cell(header!, onceRow, 'SCHEDULE'), `once ${runAt}`);
  assert.equal(cell(header!, onceRow, 'PRIORITY'), 'low');
  assert.match(cell(header!, cronRow, 'NEXT RUN'), /^\d{4}-12-31T23:00:00Z$/);

  const doc = await okJson(['task', 'list', '--type', 'demo.report']);
  const ids = (doc.tasks as TaskJson[]).map((t) => t.id);
  assert.deepEqual(ids, [cronId]);
});

void test('task update --priority high changes only the priority', async () => {
  const before = taskOf(await okJson(['task', 'get', onceId]));
  const task = taskOf(await okJson(['task', 'update', onceId, '--priority', 'high']));
  assert.equal(task.priority, 'PRIORITY_HIGH');
  assert.equal(task.type, before.type);
  assert.deepEqual(task.labels, before.labels);
  assert.equal(task.nextRunTime, before.nextRunTime);
  assert.notEqual(task.etag, before.etag);
  assert.match(await ok(['task', 'get', onceId]), /^priority: +high$/m);
});

void test('task pause and resume', async () => {
  const paused = taskOf(await okJson(['task', 'pause', cronId]));
  assert.equal(paused.enabled ?? false, false);
  assert.equal(paused.nextRunTime, undefined);
  const list = await ok(['task', 'list', '--paused']);
  assert.match(list, new RegExp(`^${cronId} .* false +- +env=test$`, 'm'));

  assert.match(
    await ok(['task', 'resume', cronId]),
    /^resumed task t_\S+; next run \d{4}-12-31T23:00:00Z$/m,
  );
  const resumed = taskOf(await okJson(['task', 'get', cronId]));
  assert.equal(resumed.enabled, true);
  assert.ok(resumed.nextRunTime, 'resumed.nextRunTime');
});

void test('task run, then execution list, get and cancel', async () => {
  const run = executionOf(await okJson(['task', 'run', onceId]));
  assert.equal(run.taskId, onceId);
  assert.equal(run.state, 'EXECUTION_STATE_PENDING');
  assert.equal(run.trigger, 'EXECUTION_TRIGGER_MANUAL');
  assert.equal(run.id, `${onceId}-00000001-01`);

  const list = await okJson(['execution', 'list', '--task', onceId]);
  assert.deepEqual(
    (list.executions as ExecutionJson[]).map((e) => [e.id, e.state]),
    [[run.id, 'EXECUTION_STATE_PENDING']],
  );
  const table = await ok(['execution', 'list', '--task', onceId]);
  assert.match(table, /^ID +STATE +ATTEMPT +TRIGGER +WORKER +SCHEDULED +STARTED +ENDED +EXIT$/m);
  assert.match(table, new RegExp(`^${run.id} +pending +1 +manual +- `, 'm'));

  assert.equal(executionOf(await okJson(['execution', 'get', run.id])).id, run.id);
  assert.match(await ok(['execution', 'get', run.id]), /^state: +pending$/m);

  const cancelled = executionOf(await okJson(['execution', 'cancel', run.id]));
  assert.equal(cancelled.state, 'EXECUTION_STATE_CANCELLED');
  const pending = await okJson(['execution', 'list', '--task', onceId, '--state', 'pending']);
  assert.equal(pending.executions, undefined, 'no pending execution is left');
});

void test('a bad flag exits 2, names the flag and never contacts the server', async () => {
  const connections: number[] = [];
  const server: Server = createServer((socket) => {
    connections.push(Date.now());
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  try {
    const r = await ctl(['task', 'create', '--type', 'demo.hello', '--priority', 'urgent'], {
      CITADEL_SERVER: `127.0.0.1:${port}`,
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /^citadelctl: --priority: "urgent" is not one of high, medium, low$/m);
    assert.equal(r.stdout, '');
    assert.equal(connections.length, 0, 'citadelctl connected to the server');
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

void test('NOT_FOUND exits 1 with citadelctl: NOT_FOUND:', async () => {
  const r = await ctl(['task', 'get', 't_0000000000000000']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^citadelctl: NOT_FOUND: /m);
  assert.equal(r.stdout, '');
});

void test('a wrong API key exits 1 with UNAUTHENTICATED', async () => {
  const wrongKey = path.join(tmpDir, 'wrong.key');
  await fs.writeFile(wrongKey, `sk_live_${'x'.repeat(43)}\n`, { mode: 0o600 });
  const r = await ctl(['task', 'list'], { CITADEL_API_KEY_FILE: wrongKey });
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /^citadelctl: UNAUTHENTICATED/m);
  assert.match(r.stderr, /hint: the server refused the API key from .*wrong\.key/);
  assert.equal(r.stdout, '');
});

void test('execution watch --task -o json prints a JSON line for a new execution', async () => {
  // Watch from the task's own revision on, so the execution below is seen even if it is created
  // before the stream is established on the server.
  const task = taskOf(await okJson(['task', 'get', cronId]));
  const watch = spawnCli(
    ['execution', 'watch', '--task', cronId, '--after-revision', task.etag, '-o', 'json'],
    cliEnv(),
  );
  let stderr = '';
  watch.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => watch.once('close', resolve));
  try {
    let buffered = '';
    const firstLine = new Promise<string>((resolve, reject) => {
      watch.stdout!.on('data', (d: Buffer) => {
        buffered += d.toString();
        const nl = buffered.indexOf('\n');
        if (nl >= 0) resolve(buffered.slice(0, nl));
      });
      void exited.then((code) =>
        reject(new Error(`watch exited (${code}) before a line; stderr: ${stderr}`)),
      );
    });
    const run = executionOf(await okJson(['task', 'run', cronId]));
    const event = JSON.parse(await firstLine) as {
      execution: ExecutionJson;
      revision: string | number;
    };
    assert.equal(event.execution.id, run.id);
    assert.equal(event.execution.taskId, cronId);
    assert.equal(event.execution.state, 'EXECUTION_STATE_PENDING');
    assert.ok(
      Number(event.revision) > Number(task.etag),
      'Number(event.revision) > Number(task.etag)',
    );
  } finally {
    watch.kill('SIGINT');
  }
  assert.equal(await exited, 0, `watch did not end cleanly on SIGINT; stderr: ${stderr}`);
});

void test('task delete, then the task is gone', async () => {
  const doc = await okJson(['task', 'delete', cronId]);
  // The manual run from the watch test was still pending, so the delete cancelled it.
  assert.equal(doc.cancelledExecutions, 1);
  assert.match(
    await ok(['task', 'delete', onceId]),
    /^deleted task t_\S+; cancelled 0 active executions$/m,
  );
  const r = await ctl(['task', 'get', cronId]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^citadelctl: NOT_FOUND: /m);
  const left = await okJson(['task', 'list']);
  assert.equal(left.tasks, undefined, 'no task is left');
});
