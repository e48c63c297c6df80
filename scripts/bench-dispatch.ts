/**
 * Execution figures for `npm run bench` (docs/performance.md): with real agent processes
 * running real containers on the local Docker engine,
 * - latency, one task at a time: create to the agent holding its assignment (the agent's own
 *   debug log line, stamped on arrival), to the server taking the agent's StartExecution (the
 *   execution's start time) and to the container started (Docker's own `start` event), beside
 *   `docker run` to its `start` event;
 * - throughput: completed executions per second of a trivial container task with 1 agent and
 *   with 3, beside `docker run` of the same image at the same concurrency (the agents' total
 *   slots), measured in the same run.
 * Everything runs on this host, so the server's timestamps, Docker's and ours share one clock.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { credentials, type Metadata, type ServiceError } from '@grpc/grpc-js';
import Dockerode from 'dockerode';
import { LABELS } from '../agent/run-spec.js';
import { AdminServiceClient } from '../gen/citadel/v1/admin_service.js';
import { ExecutionState, type Execution } from '../gen/citadel/v1/execution.js';
import {
  CreateTaskRequest,
  ListExecutionsRequest,
  type TaskServiceClient,
} from '../gen/citadel/v1/task_service.js';
import { singleUseToken } from './bench-workers.js';
import { agentJoinProcess, spawnAgent, type AgentProcess } from '../test/helpers/worker.js';
import { TERMINAL } from '../test/helpers/execution-states.js';

const run = promisify(execFile);

const IMAGE = 'citadel/task-executor:latest';
const SLOTS = Number(process.env.BENCH_AGENT_SLOTS ?? 4);
const LATENCY_SAMPLES = Number(process.env.BENCH_LATENCY_SAMPLES ?? 30);
const THROUGHPUT_TASKS = Number(process.env.BENCH_EXECUTIONS ?? 60);

function unary<Res>(fn: (cb: (err: ServiceError | null, res: Res) => void) => void): Promise<Res> {
  return new Promise((resolve, reject) => fn((err, res) => (err ? reject(err) : resolve(res))));
}

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
};

/** Runs `op(i)` for i < n with `concurrency` at once. */
async function pool(n: number, concurrency: number, op: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, concurrency) }, async () => {
      while (next < n) await op(next++);
    }),
  );
}

/** Docker `start` events of containers the agents label, by execution id, in ms. */
function watchContainerStarts(docker: Dockerode): {
  starts: Map<string, number>;
  stop: () => void;
} {
  const starts = new Map<string, number>();
  let stream: (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
  void docker
    .getEvents({
      filters: { type: ['container'], event: ['start'], label: [`${LABELS.managed}=true`] },
    })
    .then((s) => {
      stream = s;
      let buffered = '';
      s.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const event = JSON.parse(buffered.slice(0, nl)) as {
            timeNano: number;
            Actor: { Attributes: Record<string, string> };
          };
          buffered = buffered.slice(nl + 1);
          const id = event.Actor.Attributes[LABELS.execution];
          if (id) starts.set(id, event.timeNano / 1e6);
        }
      });
    });
  return {
    starts,
    stop: () => stream?.destroy?.(),
  };
}

export interface DispatchBenchOptions {
  port: number;
  caPem: Buffer;
  admin: Metadata;
  tasks: TaskServiceClient;
}

/** Runs the execution benchmarks against the server on `port` and prints their figures. */
export async function dispatchFigures(opts: DispatchBenchOptions): Promise<void> {
  const admin = new AdminServiceClient(`localhost:${opts.port}`, credentials.createSsl(opts.caPem));
  const docker = new Dockerode();
  const events = watchContainerStarts(docker);
  const dirs: string[] = [];
  const agents: AgentProcess[] = [];

  const createTask = async (): Promise<{ taskId: string; sentAt: number }> => {
    const sentAt = Date.now();
    const res = await unary<{ task?: { id: string } }>((cb) =>
      opts.tasks.createTask(
        CreateTaskRequest.fromPartial({ task: { type: 'container', payload: { argv: ['true'] } } }),
        opts.admin,
        cb,
      ),
    );
    return { taskId: res.task!.id, sentAt };
  };
  const executions = async (taskId = ''): Promise<Execution[]> => {
    const out: Execution[] = [];
    let pageToken = '';
    do {
      const res = await unary<{ executions: Execution[]; nextPageToken: string }>((cb) =>
        opts.tasks.listExecutions(
          ListExecutionsRequest.fromPartial({ taskId, pageSize: 1000, pageToken }),
          opts.admin,
          cb,
        ),
      );
      out.push(...res.executions);
      pageToken = res.nextPageToken;
    } while (pageToken);
    return out;
  };
  /** Waits for `count` terminal executions of `taskIds` (polling the API every 20 ms). */
  const ended = async (taskIds: Set<string>, taskId = ''): Promise<Execution[]> => {
    for (;;) {
      const done = (await executions(taskId)).filter(
        (e) => taskIds.has(e.taskId) && TERMINAL.has(e.state),
      );
      if (done.length >= taskIds.size) return done;
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const startAgent = async (i: number) => {
    const created = await singleUseToken(admin, opts.admin);
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-bench-agent-'));
    dirs.push(dir);
    await agentJoinProcess(`localhost:${opts.port}`, created, dir, ['--hostname', `bench-${i}`]);
    const agent = spawnAgent([
      ...['run', '--data-dir', dir, '--slots', String(SLOTS)],
      // For 'assignment received', stamped by the agent as the assignment arrives.
      ...['--log-level', 'debug'],
    ]);
    agents.push(agent);
    await agent.waitForLog((l) => l.msg === 'heartbeat accepted');
  };

  /** Completed executions per second: `n` tasks created at once, to the last one's end. */
  const throughput = async (n: number): Promise<number> => {
    const ids = new Set<string>();
    const t0 = Date.now();
    await pool(n, 16, async () => void ids.add((await createTask()).taskId));
    const done = await ended(ids);
    const last = Math.max(...done.map((e) => e.endTime!.getTime()));
    const failed = done.filter((e) => e.state !== ExecutionState.EXECUTION_STATE_SUCCEEDED);
    if (failed.length > 0) throw new Error(`${failed.length} executions did not succeed`);
    return n / ((last - t0) / 1000);
  };
  const dockerRun = ['run', '--rm', '--network', 'none', '--read-only', '--cap-drop', 'ALL'];
  /** `docker run` of the same trivial container, `n` times, `concurrency` at once. */
  const dockerBaseline = async (n: number, concurrency: number): Promise<number> => {
    const t0 = Date.now();
    await pool(
      n,
      concurrency,
      async () => void (await run('docker', [...dockerRun, IMAGE, 'true'])),
    );
    return n / ((Date.now() - t0) / 1000);
  };
  /** Time from invoking `docker run` to Docker's `start` event of its container. */
  const dockerRunToStart = async (i: number): Promise<number | undefined> => {
    const id = `bench-docker-run-${i}`;
    const labels = ['--label', `${LABELS.managed}=true`, '--label', `${LABELS.execution}=${id}`];
    const t0 = Date.now();
    await run('docker', [...dockerRun, ...labels, IMAGE, 'true']);
    const started = events.starts.get(id);
    return started === undefined ? undefined : started - t0;
  };

  try {
    console.log('');
    console.log(
      `executions: trivial container task (${IMAGE} true); agents with ${SLOTS} slots each`,
    );
    await dockerBaseline(2, 2); // warm the engine
    await startAgent(1);

    const toHold: number[] = [];
    const toAck: number[] = [];
    const toStart: number[] = [];
    for (let i = 0; i < LATENCY_SAMPLES; i++) {
      const { taskId, sentAt } = await createTask();
      const [e] = await ended(new Set([taskId]), taskId);
      const received = agents[0]!.logs.find(
        (l) => l.msg === 'assignment received' && l.executionId === e!.id,
      );
      if (received) toHold.push(Date.parse(String(received.time)) - sentAt);
      toAck.push(e!.startTime!.getTime() - sentAt);
      const started = events.starts.get(e!.id);
      if (started !== undefined) toStart.push(started - sentAt);
    }
    const line = (name: string, xs: number[]) =>
      console.log(
        `${name.padEnd(44)} p50 ${pct(xs, 0.5).toFixed(1).padStart(6)} ms   p99 ${pct(xs, 0.99).toFixed(1).padStart(6)} ms   (${xs.length} one at a time)`,
      );
    const baselineStart: number[] = [];
    for (let i = 0; i < LATENCY_SAMPLES; i++) {
      const ms = await dockerRunToStart(i);
      if (ms !== undefined) baselineStart.push(ms);
    }
    line('create to agent holding the assignment', toHold);
    line('create to StartExecution taken', toAck);
    line('create to container started', toStart);
    line('docker run to container started (baseline)', baselineStart);
    console.log(
      `create-to-start p50 / docker-run-to-start p50: ${(pct(toStart, 0.5) / pct(baselineStart, 0.5)).toFixed(2)} (target <= 1.5)`,
    );

    const rows: [string, number, number][] = [];
    for (const count of [1, 3]) {
      while (agents.length < count) await startAgent(agents.length + 1);
      const concurrency = count * SLOTS;
      const citadel = await throughput(THROUGHPUT_TASKS);
      const baseline = await dockerBaseline(THROUGHPUT_TASKS, concurrency);
      rows.push([`${count} agent${count > 1 ? 's' : ''}, ${concurrency} slots`, citadel, baseline]);
    }
    for (const [name, citadel, baseline] of rows) {
      console.log(
        `completed executions/s, ${name.padEnd(20)} ${citadel.toFixed(1).padStart(6)}/s   ` +
          `docker run at the same concurrency ${baseline.toFixed(1).padStart(6)}/s   ratio ${(citadel / baseline).toFixed(2)}`,
      );
    }
  } finally {
    events.stop();
    admin.close();
    await Promise.all(agents.map((a) => a.kill('SIGTERM')));
    await Promise.all(dirs.map((d) => fs.rm(d, { recursive: true, force: true })));
  }
}
