/** Integration-test helper: a throwaway embedded etcd on free loopback ports in a fresh temp dir. */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import { startEmbeddedEtcd } from '../../server/cluster/embedded-etcd.js';
import type { EtcdClientTls } from '../../server/cluster/etcd-tls.js';

/** A running test etcd; `stop()` also removes its data dir. */
export interface TestEtcd {
  readonly endpoint: string;
  readonly dataDir: string;
  /** With `tls: true`: the CA and client certificate clients must present. */
  readonly tls: EtcdClientTls | undefined;
  stop(): Promise<void>;
}

/**
 * Starts a fresh single-member etcd; call `stop()` (e.g. in `after`) to kill it and clean up.
 * Plaintext by default, so tests can use `new Etcd3({ hosts: endpoint })`; `tls: true` starts
 * it as the server's embedded default does, with mutual TLS (certificates under the temp dir).
 */
export async function startTestEtcd(opts: { tls?: boolean } = {}): Promise<TestEtcd> {
  const tempDir = await fs.mkdtemp(path.join(await scratchRoot(), 'citadel-etcd-'));
  const dataDir = opts.tls ? path.join(tempDir, 'etcd') : tempDir;
  try {
    const etcd = await startEmbeddedEtcd({
      dataDir,
      tls: opts.tls ? { dir: path.join(tempDir, 'etcd-tls') } : false,
      readyTimeoutMs: 15_000,
    });
    let stopped: Promise<void> | undefined;
    return {
      endpoint: etcd.endpoint,
      dataDir,
      tls: etcd.tls,
      stop: () =>
        (stopped ??= (async () => {
          await etcd.stop();
          await fs.rm(tempDir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    await fs.rm(tempDir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * Where test etcds keep their data: a tmpfs (/dev/shm) when there is one. A test etcd needs no
 * durability, and on a disk shared with Docker its fsyncs can stall for seconds while
 * containers are created and removed, stalling every call of the server under test.
 */
async function scratchRoot(): Promise<string> {
  try {
    await fs.access('/dev/shm', fs.constants.W_OK);
    return '/dev/shm';
  } catch {
    return os.tmpdir();
  }
}
