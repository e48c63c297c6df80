/**
 * Worker figures for `npm run bench`: the time from an admin's BlockWorker call to the blocked
 * worker's open stream being cut by the replica holding it (docs/workers.md).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { credentials, Metadata, type ServiceError } from '@grpc/grpc-js';
import { compileJoinOptions } from '../agent/agent-options.js';
import { loadIdentity } from '../agent/identity.js';
import { joinCluster } from '../agent/join.js';
import { dataPaths } from '../agent/state.js';
import {
  AdminServiceClient,
  BlockWorkerRequest,
  CreateBootstrapTokenRequest,
} from '../gen/citadel/v1/admin_service.js';
import { WorkerServiceClient } from '../gen/citadel/v1/worker_service.js';

function unary<Res>(fn: (cb: (err: ServiceError | null, res: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

/** A bootstrap token good for one join within the hour. */
export function singleUseToken(
  admin: AdminServiceClient,
  md: Metadata,
): Promise<{ token: string; caHash: string }> {
  return unary((cb) =>
    admin.createBootstrapToken(
      CreateBootstrapTokenRequest.fromPartial({
        bootstrapToken: { maxUses: 1, expireTime: new Date(Date.now() + 3_600_000) },
      }),
      md,
      cb,
    ),
  );
}

/**
 * Joins `count` workers through the server on `port`, opens each one's Connect stream on
 * `workerPort`, blocks them one by one and returns each block-to-cut time in ms.
 */
export async function blockToStreamCut(opts: {
  port: number;
  workerPort: number;
  caPem: Buffer;
  admin: Metadata;
  count: number;
}): Promise<number[]> {
  const admin = new AdminServiceClient(`localhost:${opts.port}`, credentials.createSsl(opts.caPem));
  const dirs: string[] = [];
  const times: number[] = [];
  try {
    for (let i = 0; i < opts.count; i++) {
      // Blocking a worker revokes its token too: one token per worker.
      const created = await singleUseToken(admin, opts.admin);
      const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-bench-agent-'));
      dirs.push(dir);
      const joined = await joinCluster(
        compileJoinOptions({
          server: `localhost:${opts.port}`,
          token: created.token,
          caHash: created.caHash,
          dataDir: dir,
          hostname: `bench-${i}`,
        }),
      );
      const id = await loadIdentity(dataPaths(dir));
      const worker = new WorkerServiceClient(
        `localhost:${opts.workerPort}`,
        credentials.createSsl(opts.caPem, Buffer.from(id.keyPem), Buffer.from(id.certPem)),
      );
      const stream = worker.connect({}, new Metadata());
      await new Promise<void>((resolve, reject) => {
        stream.once('data', () => resolve());
        stream.once('error', reject);
      });
      const cut = new Promise<number>((resolve) =>
        stream.once('error', () => resolve(performance.now())),
      );
      const t0 = performance.now();
      await unary((cb) =>
        admin.blockWorker(
          BlockWorkerRequest.fromPartial({ id: joined.workerId, reason: 'bench' }),
          opts.admin,
          cb,
        ),
      );
      times.push((await cut) - t0);
      worker.close();
    }
    return times;
  } finally {
    admin.close();
    await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
  }
}
