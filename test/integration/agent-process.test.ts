// citadel-agent as a real process against real servers on a real etcd: join from the command
// line, a steady agent across certificate renewals for a minute, deregistration after SIGKILL,
// and riding out the SIGKILL of the replica it uses.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { keys } from '../../server/store/keys.js';
import { Store } from '../../server/store/store.js';
import { Etcd3 } from 'etcd3';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { freshPrefix, REPO_ROOT, spawnServer, startTestServer } from '../helpers/server.js';
import { agentJoinProcess, createToken, spawnAgent, type AgentProcess } from '../helpers/worker.js';

const run = promisify(execFile);

let etcd: TestEtcd;

before(async () => {
  etcd = await startTestEtcd();
});

after(async () => {
  await etcd.stop();
});

async function tempDir(): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), 'citadel-agent-'));
}

type Audit = Record<string, unknown> & { details?: Record<string, unknown> };

async function auditsOf(store: Store, workerId: string, action: string): Promise<Audit[]> {
  const items = (await store.rangeAll<Audit>(keys.auditPrefix)).items.map((i) => i.value);
  return items.filter((a) => a.worker_id === workerId && a.action === action);
}

describe('one replica', () => {
  test(
    'a steady agent stays registered for a minute across certificate renewals; SIGKILL deregisters it within TTL + 1 s',
    { timeout: 120_000 },
    async () => {
      const ttlSeconds = 4;
      const ts = await startTestServer(etcd.endpoint, {
        workerLeaseTtlSeconds: ttlSeconds,
        heartbeatIntervalMs: 1000,
        workerCertTtlMs: 10_000,
      });
      const dataDir = await tempDir();
      let agent: AgentProcess | undefined;
      try {
        const token = await createToken(ts);
        const out = await agentJoinProcess(`localhost:${ts.server.port}`, token, dataDir);
        const workerId = /joined as (w_[0-9a-z]{16})/.exec(out)?.[1];
        assert.ok(workerId, `join printed the worker id: ${out}`);
        const state = JSON.parse(await fs.readFile(path.join(dataDir, 'state.json'), 'utf8')) as {
          servers: string[];
        };
        assert.deepEqual(state.servers, [`localhost:${ts.server.workerPort}`]);
        assert.doesNotMatch(
          (await fs.readdir(dataDir)).join(' ') +
            (await fs.readFile(path.join(dataDir, 'state.json'), 'utf8')),
          /cbt_/,
        );

        agent = spawnAgent(['run', '--data-dir', dataDir, '--log-level', 'debug']);
        await agent.waitForLog((l) => l.msg === 'connected');
        const store = ts.server.store;
        const live = await eventually(async () => {
          const v = await store.get(keys.live(workerId));
          assert.ok(v, 'v');
          return v;
        });
        // For a minute: the worker's live key is the same one (never lapsed, never replaced).
        const start = Date.now();
        await eventually(
          async () => {
            const now = await store.get(keys.live(workerId));
            assert.equal(now?.createRevision, live.createRevision, 'the lease never lapsed');
            return Date.now() - start >= 60_000;
          },
          { timeoutMs: 75_000, intervalMs: 500, message: 'a minute passes' },
        );
        assert.deepEqual(await auditsOf(store, workerId, 'deregister'), []);
        const renewals = await auditsOf(store, workerId, 'renew_certificate');
        assert.ok(renewals.length >= 5, `renewed ${renewals.length} times in a minute`);
        assert.deepEqual(
          (await store.rangeAll<Audit>(keys.auditPrefix)).items.filter(
            (i) => i.value.event_type === 'heartbeat_refused' && i.value.worker_id === workerId,
          ),
          [],
        );
        const status = JSON.parse(await fs.readFile(path.join(dataDir, 'status.json'), 'utf8')) as {
          lastHeartbeatAt: string;
          certificateSerial: string;
        };
        assert.ok(
          Date.now() - Date.parse(status.lastHeartbeatAt) < 5000,
          'Date.now() - Date.parse(status.lastHeartbeatAt) < 5000',
        );
        assert.equal(status.certificateSerial, renewals.at(-1)!.details!.serial);

        const killedAt = Date.now();
        await agent.kill('SIGKILL');
        await eventually(async () => (await auditsOf(store, workerId, 'deregister')).length === 1, {
          timeoutMs: 15_000,
          intervalMs: 50,
          message: 'deregistered',
        });
        const took = Date.now() - killedAt;
        assert.ok(took <= ttlSeconds * 1000 + 1000, `deregistered ${took} ms after SIGKILL`);
      } finally {
        await agent?.kill('SIGKILL');
        await ts.stop();
        await fs.rm(dataDir, { recursive: true, force: true });
      }
    },
  );
});

describe('two replicas', () => {
  test(
    'the agent keeps heartbeating when the replica it uses is SIGKILLed',
    { timeout: 90_000 },
    async () => {
      const prefix = freshPrefix();
      const masterKey = randomBytes(32).toString('base64');
      const dirs = [await tempDir(), await tempDir(), await tempDir()];
      const extraArgs = ['--worker-lease-ttl', '6', '--heartbeat-interval', '1s'];
      const first = await spawnServer({
        etcdEndpoint: etcd.endpoint,
        prefix,
        masterKey,
        dataDir: dirs[0]!,
        extraArgs,
      });
      const second = await spawnServer({
        etcdEndpoint: etcd.endpoint,
        prefix,
        masterKey,
        dataDir: dirs[1]!,
        extraArgs,
      });
      const client = new Etcd3({ hosts: etcd.endpoint, dialTimeout: 5000 });
      const store = new Store({ client, prefix, replicaId: 'test' });
      let agent: AgentProcess | undefined;
      try {
        // A token through the first replica's admin key, then join through it.
        const adminKey = (await fs.readFile(path.join(dirs[0]!, 'admin.key'), 'utf8')).trim();
        const caPath = path.join(dirs[0]!, 'ca.crt');
        const { stdout } = await run(
          process.execPath,
          [
            '--import',
            'tsx',
            'cli/main.ts',
            '--server',
            `localhost:${first.port}`,
            '--ca',
            caPath,
            'token',
            'create',
            '--expires',
            '1h',
            '-o',
            'json',
          ],
          { cwd: REPO_ROOT, env: { ...process.env, CITADEL_API_KEY: adminKey } },
        );
        const created = JSON.parse(stdout) as { token: string; caHash: string };
        await agentJoinProcess(`localhost:${first.port}`, created, dirs[2]!);
        const workerId = (
          JSON.parse(await fs.readFile(path.join(dirs[2]!, 'state.json'), 'utf8')) as {
            workerId: string;
          }
        ).workerId;
        agent = spawnAgent([
          'run',
          '--data-dir',
          dirs[2]!,
          '--server',
          `localhost:${first.workerPort},localhost:${second.workerPort}`,
        ]);
        await agent.waitForLog(
          (l) => l.msg === 'connected' && l.server === `localhost:${first.workerPort}`,
        );
        const live = await eventually(async () => {
          const v = await store.get(keys.live(workerId));
          assert.ok(v, 'v');
          return v;
        });
        await first.kill('SIGKILL');
        await agent.waitForLog(
          (l) => l.msg === 'connected' && l.server === `localhost:${second.workerPort}`,
          15_000,
        );
        // Heartbeats go on through the second replica: the same lease stays alive past its TTL.
        const after = Date.now();
        await eventually(
          async () => {
            const now = await store.get(keys.live(workerId));
            assert.equal(now?.createRevision, live.createRevision, 'the lease never lapsed');
            return Date.now() - after >= 8000;
          },
          { timeoutMs: 15_000, intervalMs: 250, message: 'past one lease TTL' },
        );
        assert.deepEqual(await auditsOf(store, workerId, 'deregister'), []);
      } finally {
        await agent?.kill('SIGKILL');
        await first.kill('SIGKILL');
        await second.kill('SIGTERM');
        client.close();
        await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
      }
    },
  );
});
