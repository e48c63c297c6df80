/**
 * `npm run bench`: task-create throughput and latency through a real citadel-server process
 * (TLS, API-key auth, validation, sealed payload, audit record in the same txn), beside the
 * baseline of raw etcd compare-and-put transactions from Node, measured in the same run on the
 * same etcd; the time from blocking a worker to its stream being cut; and, with real agents and
 * containers, dispatch latency and completed executions per second beside `docker run`
 * (scripts/bench-dispatch.ts). Prints medians and ratios; see docs/performance.md.
 * BENCH_ONLY=create|workers|executions runs one part.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { credentials } from '@grpc/grpc-js';
import { Etcd3 } from 'etcd3';
import { CreateTaskRequest, TaskServiceClient } from '../gen/citadel/v1/task_service.js';
import { startTestEtcd } from '../test/helpers/etcd.js';
import { bearer, freshPrefix, spawnServer } from '../test/helpers/server.js';
import { dispatchFigures } from './bench-dispatch.js';
import { blockToStreamCut } from './bench-workers.js';

const TOTAL = Number(process.env.BENCH_OPS ?? 5000);
const IN_FLIGHT = Number(process.env.BENCH_IN_FLIGHT ?? 64);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const ONLY = process.env.BENCH_ONLY;
const part = (name: string) => ONLY === undefined || ONLY === name;

interface Result {
  rate: number;
  p50: number;
  p99: number;
}

/** Runs `op` TOTAL times with IN_FLIGHT concurrent; returns ops/s and latency percentiles (ms). */
async function load(op: (i: number) => Promise<unknown>): Promise<Result> {
  const latencies: number[] = [];
  let next = 0;
  const start = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next < TOTAL) {
        const i = next++;
        const t0 = performance.now();
        await op(i);
        latencies.push(performance.now() - t0);
      }
    }),
  );
  const seconds = (performance.now() - start) / 1000;
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * p))]!;
  return { rate: TOTAL / seconds, p50: pct(0.5), p99: pct(0.99) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function summary(name: string, runs: Result[]): Result {
  const r = {
    rate: median(runs.map((x) => x.rate)),
    p50: median(runs.map((x) => x.p50)),
    p99: median(runs.map((x) => x.p99)),
  };
  console.log(
    `${name.padEnd(44)} ${r.rate.toFixed(0).padStart(7)} ops/s   p50 ${r.p50.toFixed(2).padStart(6)} ms   p99 ${r.p99.toFixed(2).padStart(6)} ms`,
  );
  return r;
}

async function main(): Promise<void> {
  console.log(
    `bench: ${TOTAL} operations per round, ${IN_FLIGHT} in flight, median of ${ROUNDS} rounds; ${os.cpus().length} cores`,
  );
  const etcd = await startTestEtcd();
  const dataDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-bench-'));
  const prefix = freshPrefix();
  const server = await spawnServer({
    etcdEndpoint: etcd.endpoint,
    prefix,
    masterKey: randomBytes(32).toString('base64'),
    dataDir,
    extraArgs: ['--log-level', 'info'],
  });
  const raw = new Etcd3({ hosts: etcd.endpoint });
  const client = new TaskServiceClient(
    `localhost:${server.port}`,
    credentials.createSsl(await fs.readFile(path.join(dataDir, 'ca.crt'))),
  );
  const md = bearer((await fs.readFile(path.join(dataDir, 'admin.key'), 'utf8')).trim());
  try {
    if (part('create')) {
      const rawRuns: Result[] = [];
      const createRuns: Result[] = [];
      const runAt = new Date(Date.now() + 86_400_000);
      for (let round = 0; round < ROUNDS; round++) {
        rawRuns.push(
          await load(async (i) => {
            const key = Buffer.from(`/bench-raw/${round}/${i}`);
            await raw.kv.txn({
              compare: [{ key, target: 'Create', result: 'Equal', create_revision: 0 }],
              success: [{ request_put: { key, value: randomBytes(300) } }],
            });
          }),
        );
        createRuns.push(
          await load(
            (i) =>
              new Promise((resolve, reject) =>
                client.createTask(
                  CreateTaskRequest.fromPartial({
                    task: {
                      type: 'bench.noop',
                      payload: { argv: ['true'], n: i },
                      schedule: { $case: 'oneTime', value: { runAt } },
                    },
                  }),
                  md,
                  (err, res) => (err ? reject(err) : resolve(res)),
                ),
              ),
          ),
        );
      }
      console.log('');
      const base = summary('raw etcd compare-and-put txn (baseline)', rawRuns);
      const create = summary('CreateTask (TLS, auth, sealed payload, audit)', createRuns);
      console.log('');
      console.log(
        `create rate / raw txn rate: ${(create.rate / base.rate).toFixed(2)} (target >= 0.75)`,
      );
      console.log(`create p99: ${create.p99.toFixed(2)} ms (target <= 25 ms)`);
    }
    if (part('workers')) {
      const cuts = (
        await blockToStreamCut({
          port: server.port,
          workerPort: server.workerPort,
          caPem: await fs.readFile(path.join(dataDir, 'ca.crt')),
          admin: md,
          count: 20,
        })
      ).sort((a, b) => a - b);
      console.log('');
      console.log(
        `BlockWorker call to stream cut, ${cuts.length} workers: median ${median(cuts).toFixed(1)} ms, ` +
          `max ${cuts.at(-1)!.toFixed(1)} ms (target <= 1000 ms)`,
      );
    }
    if (part('executions')) {
      await dispatchFigures({
        port: server.port,
        caPem: await fs.readFile(path.join(dataDir, 'ca.crt')),
        admin: md,
        tasks: client,
      });
    }
  } finally {
    client.close();
    raw.close();
    await server.kill('SIGTERM');
    await etcd.stop();
    await fs.rm(dataDir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
