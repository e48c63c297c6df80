/**
 * Integration-test helpers for workers: bootstrap tokens through AdminService, in-process joins
 * through the agent's own join code, a mutual-TLS WorkerService client with promise-returning
 * calls, and `citadel-agent` as a real child process: the built single executable when
 * CITADEL_AGENT_BIN names it (scripts/test.sh builds it first), else from source.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { compileJoinOptions } from '../../agent/agent-options.js';
import { loadIdentity, type WorkerIdentity } from '../../agent/identity.js';
import { joinCluster } from '../../agent/join.js';
import { dataPaths } from '../../agent/state.js';
import {
  AdminServiceClient,
  CreateBootstrapTokenRequest,
} from '../../gen/citadel/v1/admin_service.js';
import {
  WorkerServiceClient,
  type HeartbeatRequest,
  type HeartbeatResponse,
} from '../../gen/citadel/v1/worker_service.js';
import { bearer, REPO_ROOT, type TestServer } from './server.js';

export interface IssuedToken {
  token: string;
  caHash: string;
  id: string;
}

/** An AdminService client on the test server's public port. */
export function adminClient(ts: TestServer): AdminServiceClient {
  return new AdminServiceClient(
    `localhost:${ts.server.port}`,
    credentials.createSsl(Buffer.from(ts.server.caPem)),
  );
}

/** Creates a bootstrap token with the admin key. */
export async function createToken(
  ts: TestServer,
  opts: { uses?: number; ttlMs?: number; labels?: Record<string, string> } = {},
): Promise<IssuedToken> {
  const admin = adminClient(ts);
  try {
    const res = await ts.call(
      admin.createBootstrapToken.bind(admin),
      CreateBootstrapTokenRequest.fromPartial({
        bootstrapToken: {
          maxUses: opts.uses ?? 1,
          expireTime: new Date(Date.now() + (opts.ttlMs ?? 3_600_000)),
          labels: opts.labels ?? {},
        },
      }),
    );
    return { token: res.token, caHash: res.caHash, id: res.bootstrapToken!.id };
  } finally {
    admin.close();
  }
}

export interface JoinedWorker {
  workerId: string;
  dataDir: string;
  identity: WorkerIdentity;
}

/** Data folders joinWorker made (they hold private keys): removed when the test file exits. */
const joinedDirs: string[] = [];
process.once('exit', () => {
  for (const dir of joinedDirs) rmSync(dir, { recursive: true, force: true });
});

/** Joins in-process with the agent's join code into a fresh data folder. */
export async function joinWorker(
  ts: TestServer,
  token: IssuedToken,
  opts: { keyType?: 'p256' | 'ed25519'; caHash?: string; dataDir?: string } = {},
): Promise<JoinedWorker> {
  let dataDir = opts.dataDir;
  if (dataDir === undefined) {
    dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-agent-'));
    joinedDirs.push(dataDir);
  }
  const result = await joinCluster(
    compileJoinOptions({
      server: `localhost:${ts.server.port}`,
      token: token.token,
      caHash: opts.caHash ?? token.caHash,
      dataDir,
      keyType: opts.keyType ?? 'p256',
      hostname: 'test-host',
    }),
  );
  return { workerId: result.workerId, dataDir, identity: await loadIdentity(dataPaths(dataDir)) };
}

/** A WorkerService client presenting `identity` over mutual TLS, with promise methods. */
export function workerClient(
  port: number,
  identity: Pick<WorkerIdentity, 'caPem' | 'keyPem' | 'certPem'>,
) {
  const client = new WorkerServiceClient(
    `localhost:${port}`,
    credentials.createSsl(
      Buffer.from(identity.caPem),
      Buffer.from(identity.keyPem),
      Buffer.from(identity.certPem),
    ),
  );
  return {
    client,
    heartbeat: (req: HeartbeatRequest) =>
      new Promise<HeartbeatResponse>((resolve, reject) =>
        client.heartbeat(req, new Metadata(), { deadline: Date.now() + 5000 }, (err, res) =>
          err ? reject(err) : resolve(res),
        ),
      ),
    close: () => client.close(),
  };
}

/** The gRPC status code a promise rejects with (0 if it resolves). */
export async function codeOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (err) {
    return (err as ServiceError).code;
  }
}

export { bearer };

/** `citadel-agent` as a child process, with its JSON log lines. */
export interface AgentProcess {
  child: ChildProcess;
  logs: Record<string, unknown>[];
  waitForLog(match: (l: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<void>;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** The command that runs `citadel-agent <args>`: the built binary if CITADEL_AGENT_BIN is set. */
export function agentCommand(args: string[]): [string, string[]] {
  const bin = process.env.CITADEL_AGENT_BIN;
  if (bin) return [path.resolve(REPO_ROOT, bin), args];
  return [process.execPath, ['--import', 'tsx', 'agent/main.ts', ...args]];
}

/**
 * `citadel-agent join` as a process, with `server` (HOST:PORT of the public API), the token and
 * CA hash, the data folder and any further flags; resolves with its stdout.
 */
export async function agentJoinProcess(
  server: string,
  token: Pick<IssuedToken, 'token' | 'caHash'>,
  dataDir: string,
  extra: string[] = [],
): Promise<string> {
  const args = ['join', '--server', server, '--token', token.token, '--ca-hash', token.caHash];
  const { stdout } = await promisify(execFile)(
    ...agentCommand([...args, '--data-dir', dataDir, ...extra]),
    { cwd: REPO_ROOT },
  );
  return stdout;
}

/** Runs `citadel-agent <args>` and collects its JSON log lines. */
export function spawnAgent(args: string[]): AgentProcess {
  const child = spawn(...agentCommand(args), {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout }).on('line', (text) => {
    try {
      logs.push({ ...(JSON.parse(text) as Record<string, unknown>), receivedAt: Date.now() });
    } catch {
      return;
    }
    for (const w of [...waiters]) w();
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    logs,
    waitForLog: (match, timeoutMs = 20_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!logs.some(match)) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(
            new Error(`agent log line not seen in ${timeoutMs} ms; stderr: ${stderr.slice(-2000)}`),
          );
        }, timeoutMs);
        waiters.add(check);
        check();
      }),
    kill: async (signal = 'SIGKILL') => {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      await exited;
    },
  };
}
