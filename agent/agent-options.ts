/**
 * Options of the agent's commands, compiled once from flags and environment into readonly
 * objects: defaults applied, every field validated, a typed error naming the bad flag.
 */
import { availableParallelism, hostname as osHostname } from 'node:os';

import { InvalidArgumentError } from '../common/errors.js';
import { type KeyType, parseKeyType } from './keys.js';
import { parseCaHash } from './pinned-ca.js';
import { type ServerAddress, parseServerAddress, parseServerList } from './server-address.js';
import { DEFAULT_MAXIMA, type TaskMaxima } from './run-spec.js';
import { DEFAULT_DATA_DIR } from './state.js';

/** Input of {@link compileJoinOptions}: flag values as given. */
export interface JoinOptionsInput {
  /** The public API address, `HOST:PORT`. Required. */
  server?: string;
  /** The bootstrap token, `cbt_...`. Required; never written anywhere. */
  token?: string;
  /** `sha256:<hex>` of the cluster CA certificate. Required. */
  caHash?: string;
  /** @default CITADEL_AGENT_DATA_DIR, then /var/lib/citadel-agent */
  dataDir?: string;
  /** @default p256 */
  keyType?: string;
  /** The name reported to the server (not trusted by it). @default os.hostname() */
  hostname?: string;
  /** Join again over an existing identity in the data folder. @default false */
  force?: boolean;
  /** Deadline of the pinning handshake and of the Join call, ms. @default 15000 */
  timeoutMs?: number;
}

/** Compiled options of `citadel-agent join`. */
export interface JoinOptions {
  readonly server: ServerAddress;
  readonly token: string;
  readonly caHash: string;
  readonly dataDir: string;
  readonly keyType: KeyType;
  readonly hostname: string;
  readonly force: boolean;
  readonly timeoutMs: number;
}

/** Input of {@link compileRunOptions}. */
export interface RunOptionsInput {
  /** @default CITADEL_AGENT_DATA_DIR, then /var/lib/citadel-agent */
  dataDir?: string;
  /** Worker endpoints, `HOST:PORT[,HOST:PORT...]`, replacing the one learnt at join. */
  servers?: string;
  /** pino level. @default info */
  logLevel?: string;
  /** Executions the agent offers to run at once. @default os.availableParallelism() */
  slots?: string | number;
  /** The most memory a task may ask for, MiB. @default 4096 */
  maxTaskMemoryMb?: string | number;
  /** The most CPUs a task may ask for. @default os.availableParallelism() */
  maxTaskCpus?: string | number;
  /** The most processes a task may ask for. @default 1024 */
  maxTaskPids?: string | number;
}

/** Compiled options of `citadel-agent run`. */
export interface RunOptions {
  readonly dataDir: string;
  /** Undefined: use the servers in state.json. */
  readonly servers: readonly ServerAddress[] | undefined;
  readonly logLevel: string;
  readonly slots: number;
  /** The most a task may ask for, in the container runner's units. */
  readonly taskMaxima: TaskMaxima;
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/** The data folder: the flag, else CITADEL_AGENT_DATA_DIR, else the default. */
export function resolveDataDir(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const dir = flag ?? env.CITADEL_AGENT_DATA_DIR;
  return dir === undefined || dir.trim() === '' ? DEFAULT_DATA_DIR : dir;
}

/**
 * Compiles the options of `join`.
 *
 * @throws InvalidArgumentError naming the flag that is missing or malformed.
 */
export function compileJoinOptions(
  input: JoinOptionsInput,
  env: NodeJS.ProcessEnv = {},
): JoinOptions {
  const server = parseServerAddress(required(input.server, '--server'), '--server');
  const token = required(input.token, '--token').trim();
  if (/\s/.test(token)) throw new InvalidArgumentError('--token', 'must not contain blanks');
  const hostname = (input.hostname ?? osHostname()).trim();
  if (hostname === '') throw new InvalidArgumentError('--hostname', 'must not be empty');
  const timeoutMs = input.timeoutMs ?? 15_000;
  if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) {
    throw new InvalidArgumentError('timeoutMs', 'must be a positive number');
  }
  return {
    server,
    token,
    caHash: parseCaHash(required(input.caHash, '--ca-hash'), '--ca-hash'),
    dataDir: resolveDataDir(input.dataDir, env),
    keyType: parseKeyType(input.keyType ?? 'p256', '--key-type'),
    hostname,
    force: input.force ?? false,
    timeoutMs,
  };
}

/**
 * Compiles the options of `run`.
 *
 * @throws InvalidArgumentError naming the flag that is malformed.
 */
export function compileRunOptions(input: RunOptionsInput, env: NodeJS.ProcessEnv = {}): RunOptions {
  const logLevel = (input.logLevel ?? 'info').trim().toLowerCase();
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new InvalidArgumentError('--log-level', `must be one of ${LOG_LEVELS.join(', ')}`);
  }
  const slots = input.slots === undefined ? availableParallelism() : Number(input.slots);
  if (!Number.isInteger(slots) || slots < 0 || slots > 10_000) {
    throw new InvalidArgumentError('--slots', 'must be a whole number from 0 to 10000');
  }
  const memoryMb = numberFlag(input.maxTaskMemoryMb, '--max-task-memory-mb', 6, 65_536, true);
  // Docker refuses a CPU quota above the host's CPU count.
  const cpus = numberFlag(
    input.maxTaskCpus,
    '--max-task-cpus',
    0.01,
    availableParallelism(),
    false,
  );
  const pids = numberFlag(input.maxTaskPids, '--max-task-pids', 1, 4_194_304, true);
  return {
    dataDir: resolveDataDir(input.dataDir, env),
    servers: input.servers === undefined ? undefined : parseServerList(input.servers, '--server'),
    logLevel,
    slots,
    taskMaxima: {
      memoryBytes: memoryMb === undefined ? DEFAULT_MAXIMA.memoryBytes : memoryMb * 1024 * 1024,
      nanoCpus: cpus === undefined ? defaultTaskMaxima().nanoCpus : Math.round(cpus * 1e9),
      pidsLimit: pids ?? DEFAULT_MAXIMA.pidsLimit,
    },
  };
}

/** What a task may ask for when no flag says: DEFAULT_MAXIMA, with this host's CPU count. */
export function defaultTaskMaxima(): TaskMaxima {
  return { ...DEFAULT_MAXIMA, nanoCpus: availableParallelism() * 1e9 };
}

/** A numeric flag within [min, max], whole if `whole`; undefined when not given. */
function numberFlag(
  value: string | number | undefined,
  flag: string,
  min: number,
  max: number,
  whole: boolean,
): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(n >= min && n <= max) || (whole && !Number.isInteger(n)) || String(value).trim() === '') {
    throw new InvalidArgumentError(
      flag,
      `must be ${whole ? 'a whole number' : 'a number'} from ${min} to ${max}`,
    );
  }
  return n;
}

function required(value: string | undefined, flag: string): string {
  if (value === undefined || value.trim() === '') {
    throw new InvalidArgumentError(flag, 'is required');
  }
  return value;
}
