/**
 * Helpers for tests that run a two-replica cluster as child processes around an every-second
 * cron task (failover and fencing): set-up, cleanup, reads of the stored executions, and the
 * exactly-once check of the firings.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { TestContext } from 'node:test';
import { credentials, type Metadata, type ServiceError } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { ExecutionTrigger, type Execution } from '../../gen/citadel/v1/execution.js';
import { MissedRunPolicy, OverlapPolicy } from '../../gen/citadel/v1/task.js';
import {
  CreateTaskRequest,
  ListExecutionsRequest,
  TaskServiceClient,
  type CreateTaskResponse,
  type ListExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import { startTestEtcd } from './etcd.js';
import { eventually } from './eventually.js';
import { bearer, freshPrefix, spawnServer, type ServerProcess } from './server.js';

/** `--leader-ttl` that spawnServer passes. */
export const LEADER_TTL_MS = 2000;

/** Registers cleanups that run once, last registered first, after the test. */
export function cleanupStack(t: TestContext): (fn: () => unknown) => void {
  const fns: (() => unknown)[] = [];
  t.after(async () => {
    const errors: unknown[] = [];
    for (const fn of fns.reverse()) {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    }
    if (errors.length > 0) throw new AggregateError(errors, 'cleanup failed');
  });
  return (fn) => fns.push(fn);
}

/** Runs a unary call given its callback, as a promise rejecting with the ServiceError. */
export function rpc<Res>(
  start: (callback: (err: ServiceError | null, res: Res) => void) => unknown,
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    start((err, res) => (err ? reject(err) : resolve(res)));
  });
}

/** Every execution of `taskId`, through the API (all pages), in run order. */
export async function listAllExecutions(
  client: TaskServiceClient,
  md: Metadata,
  taskId: string,
): Promise<Execution[]> {
  const all: Execution[] = [];
  let pageToken = '';
  do {
    const request = ListExecutionsRequest.fromPartial({ taskId, pageSize: 1000, pageToken });
    const res = await rpc<ListExecutionsResponse>((cb) => client.listExecutions(request, md, cb));
    all.push(...res.executions);
    pageToken = res.nextPageToken;
  } while (pageToken !== '');
  return all;
}

export interface StoredExecution {
  id: string;
  run: number;
  scheduledAt: number;
  /** Revision at which etcd created the record. */
  createRevision: number;
}

/** The task's execution records as stored in etcd (at `revision`, 0 = now). */
export async function readExecutions(
  kv: Etcd3,
  prefix: string,
  taskId: string,
  revision = 0,
): Promise<StoredExecution[]> {
  const res = await kv.getAll().prefix(`${prefix}executions/${taskId}/`).revision(revision).exec();
  return res.kvs.map((e) => {
    const value = JSON.parse(e.value.toString()) as Omit<StoredExecution, 'createRevision'>;
    return { ...value, createRevision: Number(e.create_revision) };
  });
}

/**
 * Asserts the firings of an every-second cron task: runs 1..N in order, each firing second
 * once (distinct scheduled times) and none missing between the first and the last.
 */
export function assertEveryFiringOnce(executions: Execution[]): number[] {
  assert.ok(executions.length > 0, 'no executions');
  const byRun = [...executions].sort((x, y) => x.run - y.run);
  assert.deepEqual(
    byRun.map((e) => e.run),
    byRun.map((_, i) => i + 1),
    'run numbers are 1..N without duplicates',
  );
  for (const e of byRun) {
    assert.equal(e.attempt, 1, `${e.id}: attempt`);
    assert.equal(e.trigger, ExecutionTrigger.EXECUTION_TRIGGER_SCHEDULE, `${e.id}: trigger`);
    assert.ok(e.scheduledTime, `${e.id}: scheduled_time is set`);
  }
  const times = byRun.map((e) => e.scheduledTime!.getTime());
  const duplicates = times.filter((t, i) => times.indexOf(t) !== i);
  assert.deepEqual(
    duplicates.map((t) => new Date(t).toISOString()),
    [],
    'a firing was created twice',
  );
  const sorted = [...times].sort((x, y) => x - y);
  assert.deepEqual(times, sorted, 'runs are numbered in firing order');
  for (const t of times) assert.equal(t % 1000, 0, `firing ${t} is on a whole second`);
  const missing: string[] = [];
  for (let t = sorted[0]!; t <= sorted[sorted.length - 1]!; t += 1000) {
    if (!times.includes(t)) missing.push(new Date(t).toISOString());
  }
  assert.deepEqual(missing, [], 'firing seconds missing between the first and the last');
  return times;
}

export interface CronCluster {
  etcd: { endpoint: string };
  kv: Etcd3;
  prefix: string;
  /** The replicas' master key (base64), for tests that seal records themselves. */
  masterKey: string;
  /** The replica that led first, and the other one. */
  leader: ServerProcess;
  follower: ServerProcess;
  /** A client of the follower (it outlives the leader), with the admin key's metadata. */
  client: TaskServiceClient;
  md: Metadata;
  taskId: string;
  /** Registers a cleanup for the end of the test. */
  defer: (fn: () => unknown) => void;
}

/**
 * Starts an etcd and two replica processes, waits for one to lead, creates an every-second
 * cron task (ALLOW, SKIP) through the follower and waits for its first three executions.
 */
export async function startCronCluster(t: TestContext, type: string): Promise<CronCluster> {
  const defer = cleanupStack(t);
  const etcd = await startTestEtcd();
  defer(() => etcd.stop());
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-cluster-'));
  defer(() => fs.rm(root, { recursive: true, force: true }));
  const kv = new Etcd3({ hosts: etcd.endpoint });
  defer(() => kv.close());

  const prefix = freshPrefix();
  const masterKey = randomBytes(32).toString('base64');
  const spawn = async (name: string): Promise<ServerProcess> => {
    const server = await spawnServer({
      etcdEndpoint: etcd.endpoint,
      prefix,
      masterKey,
      dataDir: path.join(root, name),
    });
    // SIGKILL also ends a stopped process.
    defer(() => server.kill('SIGKILL'));
    return server;
  };
  // The first replica bootstraps the cluster; the second joins it.
  const first = await spawn('first');
  const second = await spawn('second');
  const leader = await Promise.race(
    [first, second].map(async (s) => {
      await s.waitForLog((l) => l.msg === 'became leader');
      return s;
    }),
  );
  const follower = leader === first ? second : first;
  assert.ok(
    !follower.logs.some((l) => l.msg === 'became leader'),
    'only one replica leads at a time',
  );

  const adminKey = (await fs.readFile(path.join(root, 'first', 'admin.key'), 'utf8')).trim();
  const caPem = await fs.readFile(path.join(root, 'first', 'ca.crt'));
  const md = bearer(adminKey);
  const client = new TaskServiceClient(`localhost:${follower.port}`, credentials.createSsl(caPem));
  defer(() => client.close());

  const createRequest = CreateTaskRequest.fromPartial({
    task: {
      type,
      schedule: {
        $case: 'cron',
        value: {
          expression: '* * * * * *',
          overlapPolicy: OverlapPolicy.OVERLAP_POLICY_ALLOW,
          missedRunPolicy: MissedRunPolicy.MISSED_RUN_POLICY_SKIP,
        },
      },
    },
  });
  const { task } = await rpc<CreateTaskResponse>((cb) => client.createTask(createRequest, md, cb));
  assert.ok(task?.id, 'created task has an id');
  await eventually(async () => (await readExecutions(kv, prefix, task.id)).length >= 3, {
    timeoutMs: 10_000,
    intervalMs: 100,
    message: 'the leader creates 3 executions of the every-second task',
  });
  return { etcd, kv, prefix, masterKey, leader, follower, client, md, taskId: task.id, defer };
}
