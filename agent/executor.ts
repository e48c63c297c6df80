/**
 * Runs the executions assigned to this worker (docs/dispatch.md, "On the worker"): acknowledge
 * with StartExecution, run the container, report with ReportResult, each call carrying the
 * assignment's fencing token. A report's message is in fixed words with a reason code; any
 * text that may echo the task's payload (the engine's errors name the image or argv[0]) goes
 * only in its `detail`, which the server seals, and neither is logged. An assignment already
 * running elsewhere in this worker's past (the agent restarted) is reported lost; a cancel
 * aborts the container. When the agent stops, `drain` aborts what runs and reports it lost, so
 * it is retried at once. Reports are retried until the server answers them, through whatever
 * connection the agent has at the time.
 */
import { status, type ServiceError } from '@grpc/grpc-js';
import type { Logger } from '../common/logger.js';
import { FailureReason } from '../gen/citadel/v1/execution.js';
import {
  AssignmentState,
  Outcome,
  ReportResultRequest,
  type Assignment,
  type ContainerSpec,
} from '../gen/citadel/v1/worker_service.js';
import { fullJitterDelayMs } from './backoff.js';
import {
  beyondMaxima,
  DEFAULT_LIMITS,
  type RunFailure,
  type RunResult,
  type RunSpec,
  type TaskMaxima,
} from './run-spec.js';
import type { WorkerConnection } from './worker-client.js';

/** What the executor needs of a container runtime (agent/container-runner.ts). */
export interface Runner {
  run(spec: RunSpec, options: { signal: AbortSignal }): Promise<RunResult>;
}

const OUTCOMES = {
  succeeded: Outcome.OUTCOME_SUCCEEDED,
  failed: Outcome.OUTCOME_FAILED,
  timed_out: Outcome.OUTCOME_TIMED_OUT,
} as const;

/** Codes after which a call is not worth repeating: the server has decided. */
const FINAL = new Set<number>([
  status.FAILED_PRECONDITION,
  status.NOT_FOUND,
  status.INVALID_ARGUMENT,
  status.PERMISSION_DENIED,
]);

/** Most characters of a report's message or detail (the server refuses more). */
const MAX_TEXT = 1024;

/**
 * The report's reason and plaintext words for each way a run fails: fixed texts, built from
 * nothing of the payload. The runner's own line, which may echo it, becomes the `detail`.
 */
const FAILURES: Record<RunFailure, { reason: FailureReason; message: (r: RunResult) => string }> = {
  exit_code: {
    reason: FailureReason.FAILURE_REASON_EXIT_CODE,
    message: (r) => `exited with code ${r.exitCode ?? 'unknown'}`,
  },
  out_of_memory: {
    reason: FailureReason.FAILURE_REASON_OUT_OF_MEMORY,
    message: () => 'out of memory: killed at the memory limit',
  },
  timeout: {
    reason: FailureReason.FAILURE_REASON_TIMEOUT,
    message: () => 'timed out; killed',
  },
  image_missing: {
    reason: FailureReason.FAILURE_REASON_IMAGE_MISSING,
    message: () => "the task's image is not present on this worker; build or load it",
  },
  image_refused: {
    reason: FailureReason.FAILURE_REASON_IMAGE_REFUSED,
    message: () =>
      "the task's image declares a volume where the sandbox cannot mount a tmpfs; refused",
  },
  start_refused: {
    reason: FailureReason.FAILURE_REASON_START_REFUSED,
    message: () =>
      "the container engine refused to start the task's program (is argv[0] in the image?)",
  },
};

/** The abort reason of executions stopped because the agent stops. */
const AGENT_STOPPING = 'agent stopping';

/** The container spec's own limits, leaving out each it leaves at 0 (the default). */
function definedLimits(c: ContainerSpec): Partial<TaskMaxima> {
  const out: Partial<TaskMaxima> = {};
  if (c.memoryBytes > 0) out.memoryBytes = c.memoryBytes;
  if (c.nanoCpus > 0) out.nanoCpus = c.nanoCpus;
  if (c.pidsLimit > 0) out.pidsLimit = c.pidsLimit;
  return out;
}

export class Executor {
  /** Executions this agent runs now, with the way to abort each and their end. */
  readonly #running = new Map<string, { controller: AbortController; done: Promise<void> }>();
  #draining = false;
  #stopped = false;

  constructor(
    private readonly runner: Runner,
    /** The connection to use now, if the agent has one. */
    private readonly connection: () => WorkerConnection | undefined,
    private readonly logger: Logger,
    /** The most a task may ask for here; a task asking for more fails without running. */
    private readonly maxima: TaskMaxima,
  ) {}

  /** Ids of the executions running now, for heartbeats. */
  runningIds(): string[] {
    return [...this.#running.keys()];
  }

  /** Handles an assignment event (the same one may arrive again after a reconnect). */
  onAssignment(a: Assignment): void {
    if (this.#draining || this.#stopped || this.#running.has(a.executionId)) return;
    this.logger.debug({ executionId: a.executionId, attempt: a.attempt }, 'assignment received');
    if (a.state === AssignmentState.ASSIGNMENT_STATE_RUNNING) {
      // Acknowledged by this worker before a restart, and not running now: lost.
      void this.#report(
        ReportResultRequest.fromPartial({
          executionId: a.executionId,
          fencingToken: a.fencingToken,
          outcome: Outcome.OUTCOME_LOST,
          message: 'the agent restarted while running it',
        }),
      );
      return;
    }
    const controller = new AbortController();
    const done = this.#execute(a, controller).finally(() => this.#running.delete(a.executionId));
    this.#running.set(a.executionId, { controller, done });
  }

  /** Handles a cancel event: aborts the container if this agent runs it. */
  onCancelled(executionId: string): void {
    this.#running.get(executionId)?.controller.abort();
  }

  /**
   * Stops taking work, aborts what runs and reports each lost ("the agent stopped"); resolves
   * once every report is answered. Bound it with a deadline, then call `stop`.
   */
  async drain(): Promise<void> {
    this.#draining = true;
    const running = [...this.#running.values()];
    for (const r of running) r.controller.abort(AGENT_STOPPING);
    await Promise.all(running.map((r) => r.done));
  }

  /**
   * Aborts everything, stops taking work and gives up on unanswered calls; resolves when every
   * run has ended (its container removed) or after `graceMs`.
   */
  async stop(graceMs = 0): Promise<void> {
    this.#stopped = true;
    const running = [...this.#running.values()];
    for (const r of running) r.controller.abort(AGENT_STOPPING);
    if (running.length === 0 || graceMs <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      Promise.all(running.map((r) => r.done)),
      new Promise((resolve) => (timer = setTimeout(resolve, graceMs))),
    ]);
    clearTimeout(timer);
  }

  async #execute(a: Assignment, controller: AbortController): Promise<void> {
    const id = a.executionId;
    const started = await this.#call('start', id, (c) =>
      c.startExecution({ executionId: id, fencingToken: a.fencingToken }, 10_000),
    );
    if (!started) return;
    this.logger.info({ executionId: id, attempt: a.attempt }, 'execution started');
    const report = ReportResultRequest.fromPartial({
      executionId: id,
      fencingToken: a.fencingToken,
    });
    const tooMuch = a.container && beyondMaxima(definedLimits(a.container), this.maxima);
    if (!a.container) {
      report.outcome = Outcome.OUTCOME_FAILED;
      report.reason = FailureReason.FAILURE_REASON_NO_RUNNER;
      // The type is no part of the payload: the server keeps it in plaintext anyway.
      report.message = `no runner for task type ${JSON.stringify(a.taskType)} on this worker`;
    } else if (tooMuch) {
      report.outcome = Outcome.OUTCOME_FAILED;
      report.reason = FailureReason.FAILURE_REASON_RESOURCES_EXCEEDED;
      report.message = 'the task asks for more memory, CPU or processes than this worker allows';
      report.detail = tooMuch;
    } else {
      const timeoutMs = Number(a.timeout?.seconds ?? 0) * 1000 + (a.timeout?.nanos ?? 0) / 1e6;
      try {
        const r = await this.runner.run(
          {
            executionId: id,
            image: a.container.image,
            argv: a.container.argv,
            env: a.container.env,
            timeoutMs: timeoutMs > 0 ? timeoutMs : 3_600_000,
            ...DEFAULT_LIMITS,
            // A worker's maxima bound the defaults too, not only what a task asks for.
            memoryBytes: Math.min(DEFAULT_LIMITS.memoryBytes, this.maxima.memoryBytes),
            nanoCpus: Math.min(DEFAULT_LIMITS.nanoCpus, this.maxima.nanoCpus),
            pidsLimit: Math.min(DEFAULT_LIMITS.pidsLimit, this.maxima.pidsLimit),
            ...definedLimits(a.container),
          },
          { signal: controller.signal },
        );
        if (r.state === 'cancelled') {
          if (controller.signal.reason !== AGENT_STOPPING) {
            this.logger.info({ executionId: id }, 'execution cancelled');
            return; // the server has already ended it
          }
          report.outcome = Outcome.OUTCOME_LOST;
          report.message = 'the agent stopped while running it';
          await this.#report(report);
          return;
        }
        Object.assign(report, {
          outcome: OUTCOMES[r.state],
          exitCode: r.exitCode ?? undefined,
          stdout: r.stdout,
          stderr: r.stderr,
          stdoutTruncated: r.stdoutTruncated,
          stderrTruncated: r.stderrTruncated,
          oomKilled: r.oomKilled,
          ...reportedText(r),
        });
      } catch (err) {
        // The engine's error text may name the image or echo argv: detail only.
        report.outcome = Outcome.OUTCOME_FAILED;
        report.reason = FailureReason.FAILURE_REASON_RUNTIME_ERROR;
        report.message = "the container could not run: the worker's container engine failed";
        report.detail = String((err as Error).message).slice(0, MAX_TEXT);
      }
    }
    await this.#report(report);
  }

  async #report(report: ReportResultRequest): Promise<void> {
    const ok = await this.#call('report', report.executionId, (c) =>
      c.reportResult(report, 10_000),
    );
    if (ok) {
      // Never the message or detail: the detail may echo the payload.
      this.logger.info(
        {
          executionId: report.executionId,
          outcome: Outcome[report.outcome],
          reason: FailureReason[report.reason],
        },
        'execution reported',
      );
    }
  }

  /**
   * Makes `call` until the server answers it: true on success, false when the server refused
   * it for good (a stale token, an execution already ended). Transient failures and having no
   * connection are retried with a jittered backoff, for as long as the agent runs.
   */
  async #call(
    what: string,
    executionId: string,
    call: (c: WorkerConnection) => Promise<void>,
  ): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      const connection = this.connection();
      if (connection) {
        try {
          await call(connection);
          return true;
        } catch (err) {
          const code = (err as ServiceError).code;
          if (FINAL.has(code)) {
            this.logger.warn(
              { executionId, what, code: status[code], details: (err as ServiceError).details },
              'execution call refused',
            );
            return false;
          }
        }
      }
      if (this.#stopped) return false;
      await new Promise((r) =>
        setTimeout(r, fullJitterDelayMs(attempt, { initialMs: 200, maxMs: 5000 })),
      );
    }
  }
}

/** A run's reason, fixed message and (when the runner said more) detail, for its report. */
function reportedText(r: RunResult): Pick<ReportResultRequest, 'reason' | 'message' | 'detail'> {
  const failure = r.failure === undefined ? undefined : FAILURES[r.failure];
  const message = failure
    ? failure.message(r)
    : r.state === 'succeeded'
      ? 'exited with code 0'
      : `the run ended ${r.state}`;
  return {
    reason: failure?.reason ?? FailureReason.FAILURE_REASON_UNSPECIFIED,
    message,
    detail: r.message === message ? '' : r.message.slice(0, MAX_TEXT),
  };
}
