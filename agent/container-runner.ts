/**
 * Runs one execution in a sandboxed, throw-away Docker container: no network, read-only root,
 * a small noexec /tmp (and the same tmpfs, not a volume on the worker's disk, wherever the image
 * declares a VOLUME), memory / CPU / pids limits, no capabilities, an unprivileged user, capped
 * output, a hard timeout and cancellation; and removes the containers it labelled but no longer
 * tracks (nomad's reconcile_dangling), each with its anonymous volumes. Never pulls: images must
 * already be on the worker.
 */
import { performance } from 'node:perf_hooks';

import Dockerode from 'dockerode';
import { pino } from 'pino';

import {
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
} from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import { OutputCapture } from './output-capture.js';
import {
  containerConfig,
  containerName,
  imageVolumePaths,
  LABELS,
  validateRunSpec,
} from './run-spec.js';
import type { RunResult, RunSpec, RunState } from './run-spec.js';

export {
  containerConfig,
  containerName,
  DEFAULT_IMAGE,
  DEFAULT_LIMITS,
  imageVolumePaths,
  LABELS,
  validateRunSpec,
} from './run-spec.js';
export type { RunFailure, RunResult, RunSpec, RunState } from './run-spec.js';

/** After the exit, how long the attach stream may take to deliver its last bytes. */
const STREAM_END_GRACE_MS = 5_000;
/** After an unexplained SIGKILL, how long an `oom` event may take to follow the exit. */
const OOM_EVENT_GRACE_MS = 1_000;
/** Socket errors meaning the engine is not there (not running, socket missing, restarting). */
const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOENT', 'ECONNRESET', 'EPIPE']);

export interface RunOptions {
  /** Aborting kills the container: `cancelled`. */
  signal?: AbortSignal;
  /** Called once, right after the container started. */
  onStarted?: (startedAt: Date) => void;
}

export interface ContainerRunnerOptions {
  /** @default new Dockerode() (DOCKER_HOST or /var/run/docker.sock) */
  docker?: Dockerode;
  /** Written on every container, so reconcile only touches this worker's. */
  workerId: string;
  /** @default a silent logger */
  logger?: Logger;
}

type Stream = NodeJS.ReadableStream & { destroy?: () => void };

/** Runs executions in Docker containers on one worker. */
export class ContainerRunner {
  readonly #docker: Dockerode;
  readonly #workerId: string;
  readonly #logger: Logger;

  constructor(options: ContainerRunnerOptions) {
    if (options.workerId === '') throw new InvalidArgumentError('workerId', 'is empty');
    this.#docker = options.docker ?? new Dockerode();
    this.#workerId = options.workerId;
    this.#logger = options.logger ?? pino({ enabled: false });
  }

  /**
   * Runs `spec` to its end and always removes its container. What the task itself causes (an
   * exit code, OOM, timeout, a missing image or program) is a result, not an error.
   *
   * @throws InvalidArgumentError for a malformed spec.
   * @throws UnavailableError when the Docker engine cannot be reached.
   * @throws FailedPreconditionError when a container of that name exists already.
   */
  async run(spec: RunSpec, options: RunOptions = {}): Promise<RunResult> {
    validateRunSpec(spec);
    const { signal } = options;
    const stdout = new OutputCapture(spec.outputCapBytes);
    const stderr = new OutputCapture(spec.outputCapBytes);
    let startedAt: Date | null = null;
    const result = (state: RunState, message: string, exit?: Partial<RunResult>): RunResult => ({
      state,
      exitCode: null,
      oomKilled: false,
      timedOut: state === 'timed_out',
      stdout: stdout.toBuffer(),
      stderr: stderr.toBuffer(),
      stdoutTruncated: stdout.truncated,
      stderrTruncated: stderr.truncated,
      startedAt,
      durationMs: 0,
      message,
      ...exit,
    });

    if (signal?.aborted) return result('cancelled', 'cancelled before start');
    const image = await this.#inspectImage(spec.image);
    if (!image) {
      return result(
        'failed',
        `image ${spec.image} is not present on this worker; build or load it`,
        { failure: 'image_missing' },
      );
    }
    // Each path where the image declares a VOLUME gets a capped tmpfs, or the image is refused:
    // never a volume on the worker's disk (see imageVolumePaths).
    const volumes = imageVolumePaths(image.Config.Volumes);
    if (!volumes.ok) {
      return result('failed', `image ${spec.image} ${volumes.reason}; refused`, {
        failure: 'image_refused',
      });
    }
    const streams: Stream[] = [];
    let container: Dockerode.Container | undefined;
    try {
      const c = (container = await this.#create(spec, {
        id: image.Id,
        volumePaths: volumes.paths,
      }));
      // Both watched before the start, so no byte of output and no OOM is missed.
      const output: Stream = await dockerCall('attach', () =>
        c.attach({ stream: true, stdout: true, stderr: true }),
      );
      streams.push(output);
      const outputEnded = new Promise<void>((resolve) => {
        output.once('end', resolve).once('close', resolve);
        // Kept attached: an unhandled 'error' (the engine went away) would crash the agent.
        output.on('error', (err) => {
          this.#logger.warn({ err, executionId: spec.executionId }, 'output stream failed');
          resolve();
        });
      });
      this.#docker.modem.demuxStream(output, stdout, stderr);
      const oom = await this.#watchOom(c.id);
      streams.push(oom.stream);

      if (signal?.aborted) return result('cancelled', 'cancelled before start');
      try {
        await dockerCall('start', () => c.start());
      } catch (err) {
        // 400: the engine refused this task (its program does not exist, say): the task's fault.
        if (statusCodeOf(err) !== 400) throw err;
        return result('failed', `container did not start: ${dockerMessage(err)}`, {
          failure: 'start_refused',
        });
      }
      const startedMs = performance.now();
      startedAt = new Date();
      try {
        options.onStarted?.(startedAt);
      } catch (err) {
        this.#logger.warn({ err, executionId: spec.executionId }, 'onStarted threw');
      }

      const killedFor = await this.#supervise(c, spec.timeoutMs, signal);
      const durationMs = Math.round(performance.now() - startedMs);
      if (!(await settlesWithin(outputEnded, STREAM_END_GRACE_MS))) {
        this.#logger.warn({ executionId: spec.executionId }, 'output did not end after the exit');
      }
      const { State } = await dockerCall('inspect', () => c.inspect());
      const exitCode = State.ExitCode;
      // Docker 20.10 leaves State.OOMKilled false when its `oom` event comes after the exit,
      // so the event counts too, and is awaited a moment after a SIGKILL that was not ours.
      let oomKilled = State.OOMKilled || oom.seen();
      if (!oomKilled && !killedFor && exitCode === 137) {
        oomKilled = await settlesWithin(oom.arrived, OOM_EVENT_GRACE_MS);
      }
      const exit = { exitCode, oomKilled, durationMs };
      if (killedFor === 'timeout') {
        return result('timed_out', `timed out after ${spec.timeoutMs} ms; killed`, {
          ...exit,
          failure: 'timeout',
        });
      }
      if (killedFor === 'cancel') return result('cancelled', 'cancelled; killed', exit);
      if (oomKilled) {
        return result('failed', `out of memory: killed at the ${spec.memoryBytes}-byte limit`, {
          ...exit,
          failure: 'out_of_memory',
        });
      }
      if (exitCode === 0) return result('succeeded', 'exited with code 0', exit);
      const why = exitCode === 137 ? ' (SIGKILL, not from Citadel; Docker reported no OOM)' : '';
      return result('failed', `exited with code ${exitCode}${why}`, {
        ...exit,
        failure: 'exit_code',
      });
    } finally {
      for (const stream of streams) stream.destroy?.();
      if (container) await this.#remove(container, spec.executionId);
    }
  }

  /**
   * Force-removes every container labelled for this worker whose execution is not in
   * `tracked`, running or not, with its anonymous volumes. Add an execution to `tracked` before
   * calling {@link run} for it.
   *
   * @returns the removed containers' execution ids.
   * @throws UnavailableError when the Docker engine cannot be reached.
   */
  async reconcile(tracked: ReadonlySet<string>): Promise<string[]> {
    const label = [`${LABELS.managed}=true`, `${LABELS.worker}=${this.#workerId}`];
    const list = await dockerCall('list containers', () =>
      this.#docker.listContainers({ all: true, filters: { label } }),
    );
    const removed: string[] = [];
    for (const info of list) {
      const executionId = info.Labels[LABELS.execution] ?? '';
      if (tracked.has(executionId)) continue;
      await this.#remove(this.#docker.getContainer(info.Id), executionId);
      this.#logger.info({ executionId, containerId: info.Id }, 'removed a dangling container');
      removed.push(executionId);
    }
    return removed;
  }

  /**
   * Waits for the container's exit, killing it (SIGKILL) at the timeout or on abort. Says why it
   * was killed, or undefined when it exited by itself, even if a kill raced that exit.
   */
  async #supervise(
    c: Dockerode.Container,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Promise<'timeout' | 'cancel' | undefined> {
    let reason: 'timeout' | 'cancel' | undefined;
    let kill: Promise<boolean> | undefined;
    let killError: (err: unknown) => void = () => {};
    // A kill that fails leaves the wait hanging: this ends it.
    const killFailed = new Promise<never>((_, reject) => (killError = reject));
    const stop = (why: 'timeout' | 'cancel') => {
      if (reason) return;
      reason = why;
      kill = dockerCall('kill', () => c.kill({ signal: 'SIGKILL' })).then(
        () => true,
        (err: unknown) => {
          const code = statusCodeOf(err);
          if (code !== 404 && code !== 409) killError(err); // 404, 409: it had exited already
          return false;
        },
      );
    };
    const timer = setTimeout(() => stop('timeout'), timeoutMs);
    const onAbort = () => stop('cancel');
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) stop('cancel');
    try {
      await Promise.race([dockerCall('wait', () => c.wait()), killFailed]);
      return kill && (await kill) ? reason : undefined;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Follows the engine's `oom` events of one container. */
  async #watchOom(containerId: string) {
    const stream: Stream = await dockerCall('events', () =>
      this.#docker.getEvents({ filters: { container: [containerId], event: ['oom'] } }),
    );
    let seen = false;
    let notify = () => {};
    const arrived = new Promise<void>((resolve) => (notify = resolve));
    // The filter lets only this container's `oom` events through: any event is one.
    stream.on('data', () => {
      seen = true;
      notify();
    });
    stream.on('error', (err) => this.#logger.warn({ err }, 'docker event stream failed'));
    return { stream, arrived, seen: () => seen };
  }

  /** The image as the engine describes it; null when it is not on this worker. */
  async #inspectImage(image: string): Promise<Dockerode.ImageInspectInfo | null> {
    try {
      return await dockerCall('inspect image', () => this.#docker.getImage(image).inspect());
    } catch (err) {
      if (statusCodeOf(err) === 404) return null;
      throw err;
    }
  }

  async #create(
    spec: RunSpec,
    image: Parameters<typeof containerConfig>[2],
  ): Promise<Dockerode.Container> {
    const name = containerName(spec.executionId);
    try {
      return await dockerCall('create', () =>
        this.#docker.createContainer(containerConfig(spec, this.#workerId, image)),
      );
    } catch (err) {
      if (statusCodeOf(err) !== 409) throw err;
      throw new FailedPreconditionError(
        `container ${name} exists already (reconcile removes one left by a crash)`,
        { cause: err },
      );
    }
  }

  /**
   * Removes a container, running or not, with its anonymous volumes: those of run() have none,
   * but a container an older agent left may have one holding a task's data on the worker's disk.
   */
  async #remove(container: Dockerode.Container, executionId: string): Promise<void> {
    try {
      await dockerCall('remove', () => container.remove({ v: true, force: true }));
    } catch (err) {
      if (statusCodeOf(err) === 404) return;
      // Not thrown: the run's outcome stands, and the next reconcile removes the container.
      this.#logger.warn({ err, executionId }, 'container not removed');
    }
  }
}

/** The HTTP status the engine answered with; undefined when the error is no engine answer. */
export function statusCodeOf(err: unknown): number | undefined {
  const code = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof code === 'number' ? code : undefined;
}

/** One Docker call; an unreachable engine (by errno, never by text) becomes UnavailableError. */
async function dockerCall<T>(action: string, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    const code = (err as { code?: unknown } | null)?.code;
    if (statusCodeOf(err) === undefined && typeof code === 'string' && UNREACHABLE.has(code)) {
      throw new UnavailableError(`docker engine unreachable (${action}: ${code})`, { cause: err });
    }
    throw err;
  }
}

/** Docker's own explanation of a refused request, for the run's message. */
function dockerMessage(err: unknown): string {
  const message = (err as { json?: { message?: unknown } } | null)?.json?.message;
  return typeof message === 'string' ? message : String(err);
}

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), late]);
  } finally {
    clearTimeout(timer);
  }
}
