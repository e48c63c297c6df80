/**
 * Integration-test helpers for servers: an in-process replica on a shared test etcd with a
 * fresh key prefix and port 0, a TLS client authenticated with the admin key, and replicas as
 * real child processes (for SIGKILL / SIGSTOP tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { credentials, Metadata, type CallOptions, type ServiceError } from '@grpc/grpc-js';
import { createLogger } from '../../common/logger.js';
import { TaskServiceClient } from '../../gen/citadel/v1/task_service.js';
import { CitadelServer } from '../../server/server.js';
import { compileServerOptions, type ServerOptionsInput } from '../../server/server-options.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** A unique etcd prefix per test, so tests sharing an etcd never see each other's keys. */
export function freshPrefix(): string {
  return `/test-${randomBytes(6).toString('hex')}/`;
}

export interface TestServer {
  server: CitadelServer;
  client: TaskServiceClient;
  adminKey: string;
  /** Calls a unary method with the admin key; rejects with the ServiceError. */
  call<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, key?: string): Promise<Res>;
  stop(): Promise<void>;
}

/** The 4-argument overload of a generated client method (the one TypeScript infers from). */
type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (err: ServiceError | null, res: Res) => void,
) => unknown;

export function bearer(key: string): Metadata {
  const md = new Metadata();
  md.set('authorization', `Bearer ${key}`);
  return md;
}

/** Starts an in-process replica on `etcdEndpoint` with a fresh prefix and data dir. */
export async function startTestServer(
  etcdEndpoint: string,
  overrides: ServerOptionsInput = {},
): Promise<TestServer> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-server-'));
  const options = compileServerOptions({
    dataDir,
    listen: '127.0.0.1:0',
    workerListen: '127.0.0.1:0',
    etcdEndpoints: [etcdEndpoint],
    etcdPrefix: freshPrefix(),
    metricsAddr: '',
    leaderTtlSeconds: 2,
    shutdownGraceMs: 1000,
    logLevel: process.env.CITADEL_TEST_LOG ?? 'silent',
    masterKeyEnv: randomBytes(32).toString('base64'),
    ...overrides,
  });
  const logger = createLogger({ name: 'test-server', level: options.logLevel, destination: 2 });
  const server = await CitadelServer.start(options, logger);
  // A replica joining an existing cluster has no admin key of its own.
  const adminKey =
    server.adminKey ??
    (await fs.readFile(path.join(dataDir, 'admin.key'), 'utf8').catch(() => '')).trim();
  const client = new TaskServiceClient(
    `localhost:${server.port}`,
    options.insecure
      ? credentials.createInsecure()
      : credentials.createSsl(Buffer.from(server.caPem)),
  );
  return {
    server,
    client,
    adminKey,
    call: <Req, Res>(method: UnaryMethod<Req, Res>, request: Req, key = adminKey) =>
      new Promise<Res>((resolve, reject) => {
        method.call(client, request, bearer(key), {}, (err, res) =>
          err ? reject(err) : resolve(res),
        );
      }),
    stop: async () => {
      client.close();
      await server.stop();
      await fs.rm(dataDir, { recursive: true, force: true });
    },
  };
}

/** A replica running as a child process (`node --import tsx server/main.ts`). */
export interface ServerProcess {
  child: ChildProcess;
  /** Parsed JSON log lines seen so far. */
  logs: Record<string, unknown>[];
  /** Resolves with the first log line for which `match` is true (past or future). */
  waitForLog(
    match: (line: Record<string, unknown>) => boolean,
    timeoutMs?: number,
  ): Promise<Record<string, unknown>>;
  port: number;
  /** Port of the worker endpoint (mutual TLS). */
  workerPort: number;
  replicaId: string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts a replica process sharing etcd `endpoint`, `prefix` and `masterKey` with its peers. */
export async function spawnServer(args: {
  etcdEndpoint: string;
  prefix: string;
  masterKey: string;
  dataDir: string;
  extraArgs?: string[];
  /** Extra environment variables. */
  env?: NodeJS.ProcessEnv;
}): Promise<ServerProcess> {
  const child = spawn(
    process.execPath,
    [
      // E.g. '--cpu-prof --cpu-prof-dir=DIR' to profile the replica under a test or the bench.
      ...(process.env.CITADEL_SERVER_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
      '--import',
      'tsx',
      path.join(REPO_ROOT, 'server/main.ts'),
      '--etcd-endpoints',
      args.etcdEndpoint,
      '--etcd-prefix',
      args.prefix,
      '--data-dir',
      args.dataDir,
      '--listen',
      '127.0.0.1:0',
      '--worker-listen',
      '127.0.0.1:0',
      '--metrics-addr',
      '',
      '--leader-ttl',
      '2',
      '--log-level',
      'debug',
      ...(args.extraArgs ?? []),
    ],
    {
      cwd: REPO_ROOT,
      env: { ...process.env, ...args.env, CITADEL_MASTER_KEY: args.masterKey },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const logs: Record<string, unknown>[] = [];
  const waiters: {
    match: (l: Record<string, unknown>) => boolean;
    resolve: (l: Record<string, unknown>) => void;
  }[] = [];
  createInterface({ input: child.stdout }).on('line', (text) => {
    let line: Record<string, unknown>;
    try {
      line = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return;
    }
    line.receivedAt = Date.now();
    logs.push(line);
    for (const w of [...waiters]) {
      if (w.match(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  );
  const waitForLog = (match: (l: Record<string, unknown>) => boolean, timeoutMs = 20_000) => {
    const seen = logs.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise<Record<string, unknown>>((resolve, reject) => {
      const timer = setTimeout(
        () =>
          reject(
            new Error(`log line not seen within ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`),
          ),
        timeoutMs,
      );
      const waiter = {
        match,
        resolve: (l: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      waiters.push(waiter);
      void exited.then((code) => {
        if (waiters.includes(waiter)) {
          clearTimeout(timer);
          reject(
            new Error(
              `server exited (${code}) before the log line; stderr: ${stderr.slice(-2000)}`,
            ),
          );
        }
      });
    });
  };
  const ready = await waitForLog((l) => l.msg === 'citadel-server ready').catch(
    async (err: unknown) => {
      child.kill('SIGKILL');
      await exited;
      throw err;
    },
  );
  return {
    child,
    logs,
    waitForLog,
    port: Number(String(ready.listen).split(':').pop()),
    workerPort: Number(String(ready.workerListen).split(':').pop()),
    replicaId: String(ready.replicaId),
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
