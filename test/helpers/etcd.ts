/** Integration-test helper: a throwaway embedded etcd on free loopback ports in a fresh temp dir. */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';

import { startEmbeddedEtcd } from '../../server/embedded-etcd.js';

/** A running test etcd; `stop()` also removes its data dir. */
export interface TestEtcd {
  readonly endpoint: string;
  readonly dataDir: string;
  stop(): Promise<void>;
}

/** Starts a fresh single-member etcd; call `stop()` (e.g. in `after`) to kill it and clean up. */
export async function startTestEtcd(): Promise<TestEtcd> {
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-etcd-'));
  try {
    const etcd = await startEmbeddedEtcd({ dataDir, readyTimeoutMs: 15_000 });
    let stopped: Promise<void> | undefined;
    return {
      endpoint: etcd.endpoint,
      dataDir,
      stop: () =>
        (stopped ??= (async () => {
          await etcd.stop();
          await fs.rm(dataDir, { recursive: true, force: true });
        })()),
    };
  } catch (err) {
    await fs.rm(dataDir, { recursive: true, force: true });
    throw err;
  }
}
