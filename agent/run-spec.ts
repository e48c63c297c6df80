/**
 * What one sandboxed run is asked to do (RunSpec, with its default limits and validation), how
 * it ended (RunResult), and the container it runs in (name, labels, sandbox options): the
 * contract between the agent and the container runner. Pure.
 */
import { createHash } from 'node:crypto';
import { posix } from 'node:path';

import type { ContainerCreateOptions } from 'dockerode';

import { InvalidArgumentError } from '../common/errors.js';

/** The image built by scripts/build-task-image.sh. */
export const DEFAULT_IMAGE = 'citadel/task-executor:latest';

/** Default sandbox limits, to spread into a {@link RunSpec}. */
export const DEFAULT_LIMITS = Object.freeze({
  /** Memory, with no swap on top. @default 256 MiB */
  memoryBytes: 256 * 1024 * 1024,
  /** CPU time in billionths of a CPU. @default 1 CPU */
  nanoCpus: 1_000_000_000,
  /** Processes and threads. @default 64 */
  pidsLimit: 64,
  /**
   * Size of /tmp, and of each path where the image declares a volume; counted in the memory
   * limit as they fill. @default 64 MiB
   */
  tmpfsBytes: 64 * 1024 * 1024,
  /** Bytes kept per stream. @default 64 KiB */
  outputCapBytes: 64 * 1024,
});

/** What a task may ask for on this worker unless `citadel-agent run` says otherwise. */
export const DEFAULT_MAXIMA = Object.freeze({
  memoryBytes: 4096 * 1024 * 1024,
  /** Not a fixed figure: agent-options' defaultTaskMaxima puts the host's CPU count here. */
  nanoCpus: 0,
  pidsLimit: 1024,
});

/** The most a task may ask for on this worker, in RunSpec's units. */
export type TaskMaxima = Pick<RunSpec, 'memoryBytes' | 'nanoCpus' | 'pidsLimit'>;

/**
 * Why a task's own limits exceed this worker's maxima (the first one over, for people, naming
 * the agent flag that sets it), or undefined if they fit. Only limits the task set are checked.
 */
export function beyondMaxima(asked: Partial<TaskMaxima>, maxima: TaskMaxima): string | undefined {
  const MiB = 1024 * 1024;
  if (asked.memoryBytes !== undefined && asked.memoryBytes > maxima.memoryBytes) {
    return `the task asks for ${asked.memoryBytes / MiB} MiB of memory; this worker allows at most ${maxima.memoryBytes / MiB} (--max-task-memory-mb)`;
  }
  if (asked.nanoCpus !== undefined && asked.nanoCpus > maxima.nanoCpus) {
    return `the task asks for ${asked.nanoCpus / 1e9} CPUs; this worker allows at most ${maxima.nanoCpus / 1e9} (--max-task-cpus)`;
  }
  if (asked.pidsLimit !== undefined && asked.pidsLimit > maxima.pidsLimit) {
    return `the task asks for ${asked.pidsLimit} processes; this worker allows at most ${maxima.pidsLimit} (--max-task-pids)`;
  }
  return undefined;
}

/** Labels on every container of a run; reconcile finds a worker's containers by them. */
export const LABELS = Object.freeze({
  managed: 'org.citadel.managed',
  worker: 'org.citadel.worker',
  execution: 'org.citadel.execution',
});

/** The user tasks run as: "nobody", called `task` in the default image. */
const TASK_USER = '65534:65534';
/** Docker refuses a memory limit under 6 MiB. */
const MIN_MEMORY_BYTES = 6 * 1024 * 1024;
/** The longest delay a Node timer can take. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;

/** One execution to run. */
export interface RunSpec {
  /** Names and labels the container; unique per attempt. */
  executionId: string;
  /** A local image; it is never pulled. */
  image: string;
  /** The program and its arguments, run directly: no shell, the image's entrypoint cleared. */
  argv: string[];
  /** Added to the image's environment (PATH=/bin in the default image). */
  env: Record<string, string>;
  /** Wall-clock limit from the start; then SIGKILL and `timed_out`. */
  timeoutMs: number;
  /** Memory limit, also the memory + swap limit (no swap); at least 6 MiB. */
  memoryBytes: number;
  /** CPU quota in billionths of a CPU. */
  nanoCpus: number;
  /** Processes and threads in the container at once. */
  pidsLimit: number;
  /**
   * Size of the writable /tmp (noexec, nosuid, nodev), and of each path where the image declares
   * a volume (see {@link imageVolumePaths}); the root is read-only.
   */
  tmpfsBytes: number;
  /** Bytes kept per stream (stdout, stderr); the rest is counted and dropped. */
  outputCapBytes: number;
}

export type RunState = 'succeeded' | 'failed' | 'timed_out' | 'cancelled';

/**
 * Why a run did not succeed, in a fixed vocabulary (the wire's FailureReason): what the agent
 * may report in plaintext, unlike the message, which can echo the task's payload.
 */
export type RunFailure =
  'exit_code' | 'out_of_memory' | 'timeout' | 'image_missing' | 'image_refused' | 'start_refused';

/** How an execution ended. Failures of the infrastructure are thrown, not returned. */
export interface RunResult {
  state: RunState;
  /** The process's exit code; null when it never ran. 137 after a SIGKILL. */
  exitCode: number | null;
  /** The kernel killed it at the memory limit (the exit code may even be 0). */
  oomKilled: boolean;
  timedOut: boolean;
  /** The first `outputCapBytes` of the stream. */
  stdout: Buffer;
  stderr: Buffer;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** When the container started; null when it never did. */
  startedAt: Date | null;
  /** From the start to the observed exit; 0 when it never started. */
  durationMs: number;
  /**
   * One line for people: what happened. Never contains the task's output, but it may name the
   * image or carry the engine's own text, which echoes argv[0]: report it only where the
   * payload may go (the executor sends it as the sealed `detail`).
   */
  message: string;
  /** Why a failed or timed-out run did not succeed; absent when it succeeded or was cancelled. */
  failure?: RunFailure;
}

/**
 * Checks a spec before anything is created.
 *
 * @throws InvalidArgumentError naming the first bad field (`spec.timeoutMs`, ...).
 */
export function validateRunSpec(spec: RunSpec): void {
  const integer = (field: keyof RunSpec, value: number, min: number) => {
    if (!Number.isSafeInteger(value) || value < min) {
      throw new InvalidArgumentError(`spec.${field}`, `must be an integer of at least ${min}`);
    }
  };
  if (spec.executionId === '') throw new InvalidArgumentError('spec.executionId', 'is empty');
  if (spec.image === '') throw new InvalidArgumentError('spec.image', 'is empty');
  if (spec.argv.length === 0 || spec.argv[0] === '') {
    throw new InvalidArgumentError('spec.argv', 'must name a program');
  }
  if (spec.argv.some((arg) => arg.includes('\0'))) {
    throw new InvalidArgumentError('spec.argv', 'contains a NUL character');
  }
  for (const [key, value] of Object.entries(spec.env)) {
    if (key === '' || key.includes('=') || key.includes('\0') || value.includes('\0')) {
      throw new InvalidArgumentError('spec.env', `invalid variable ${JSON.stringify(key)}`);
    }
  }
  // Not necessarily whole: a protobuf Duration converts to fractional milliseconds.
  if (!(spec.timeoutMs > 0 && spec.timeoutMs <= MAX_TIMEOUT_MS)) {
    throw new InvalidArgumentError(
      'spec.timeoutMs',
      `must be above 0 and at most ${MAX_TIMEOUT_MS}`,
    );
  }
  integer('memoryBytes', spec.memoryBytes, MIN_MEMORY_BYTES);
  integer('nanoCpus', spec.nanoCpus, 1);
  integer('pidsLimit', spec.pidsLimit, 1);
  integer('tmpfsBytes', spec.tmpfsBytes, 1);
  integer('outputCapBytes', spec.outputCapBytes, 0);
}

/**
 * The Docker container name of an execution: `citadel-<id>`. An id outside Docker's name
 * characters is rewritten and suffixed with a hash of the original, so two ids never share a name.
 */
export function containerName(executionId: string): string {
  const safe = executionId.replace(/[^a-zA-Z0-9_.-]/g, '_').slice(0, 128);
  if (safe === executionId && safe.length > 0) return `citadel-${safe}`;
  const digest = createHash('sha256').update(executionId).digest('hex').slice(0, 12);
  return `citadel-${safe}-${digest}`;
}

/**
 * Where an image declares volumes (its Dockerfile's `VOLUME`, `Config.Volumes` of an image
 * inspect), cleaned as Docker cleans them; or why the sandbox cannot cover one.
 *
 * Docker would give each such path an anonymous volume: a writable folder on the worker's disk,
 * past the read-only root and the capped /tmp, that outlives the container. {@link containerConfig}
 * mounts a size-capped tmpfs at each of these paths instead, and Docker creates no volume where a
 * tmpfs is mounted. A path no tmpfs can be mounted at (relative, or `/`) refuses the image.
 */
export function imageVolumePaths(
  // null for an image without volumes, whatever @types/dockerode says.
  volumes: Readonly<Record<string, unknown>> | null | undefined,
): { ok: true; paths: string[] } | { ok: false; reason: string } {
  const paths = new Set<string>();
  for (const declared of Object.keys(volumes ?? {})) {
    // Go's filepath.Clean, which Docker applies before it matches a tmpfs to a volume path.
    const clean = posix.normalize(declared).replace(/(.)\/+$/, '$1');
    if (!posix.isAbsolute(clean) || clean === '/') {
      return {
        ok: false,
        reason: `declares a volume at ${JSON.stringify(declared)}, where the sandbox cannot mount a size-capped tmpfs in its place`,
      };
    }
    paths.add(clean);
  }
  return { ok: true, paths: [...paths].sort() };
}

/**
 * The sandbox, as Docker's create options: argv run directly (no shell, no entrypoint), as
 * "nobody", without network or capabilities, on a read-only root with a noexec /tmp, within the
 * spec's limits, labelled for reconcile. Created from the inspected image's id, so the image
 * checked is the image run, even if its name moves meanwhile; its volume paths
 * ({@link imageVolumePaths}) get a tmpfs like /tmp's, so nothing a task writes reaches the
 * worker's disk.
 */
export function containerConfig(
  spec: RunSpec,
  workerId: string,
  image: { id: string; volumePaths: readonly string[] },
): ContainerCreateOptions {
  // Each tmpfs is capped on its own; all of them together are also held by the memory limit.
  const tmpfs = `rw,noexec,nosuid,nodev,size=${spec.tmpfsBytes}`;
  return {
    name: containerName(spec.executionId),
    Image: image.id,
    Entrypoint: [],
    Cmd: spec.argv,
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    User: TASK_USER,
    Labels: {
      [LABELS.execution]: spec.executionId,
      [LABELS.worker]: workerId,
      [LABELS.managed]: 'true',
    },
    AttachStdout: true,
    AttachStderr: true,
    Tty: false,
    OpenStdin: false,
    NetworkDisabled: true,
    HostConfig: {
      NetworkMode: 'none',
      ReadonlyRootfs: true,
      Tmpfs: Object.fromEntries(['/tmp', ...image.volumePaths].map((path) => [path, tmpfs])),
      Memory: spec.memoryBytes,
      MemorySwap: spec.memoryBytes,
      NanoCpus: spec.nanoCpus,
      PidsLimit: spec.pidsLimit,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      AutoRemove: false,
      Privileged: false,
      // Output reaches us through attach only: a json-file log would grow on the worker's disk.
      LogConfig: { Type: 'none', Config: {} },
    },
  };
}
