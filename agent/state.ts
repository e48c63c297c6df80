/**
 * The agent's data folder: where each file lives, atomic writes (temporary file, fsync,
 * rename) with the mode set when the file is opened, and reading `state.json` (what join
 * learnt) and `status.json` (what the running agent last recorded). No token is ever stored.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

import { ConfigError, FailedPreconditionError } from '../common/errors.js';
import { KEY_TYPES, type KeyType } from './keys.js';

/** Default data folder of the agent. */
export const DEFAULT_DATA_DIR = '/var/lib/citadel-agent';

/** The files of a data folder. */
export interface DataPaths {
  readonly dir: string;
  /** The pinned cluster CA, PEM. */
  readonly ca: string;
  /** The worker's private key, PKCS#8 PEM, mode 0600. */
  readonly key: string;
  /** The worker's client certificate, PEM. */
  readonly cert: string;
  /** A renewed key written before it replaces `key` (see identity.ts). */
  readonly nextKey: string;
  /** A renewed certificate written before it replaces `cert`. */
  readonly nextCert: string;
  /** {@link JoinState}. */
  readonly state: string;
  /** {@link AgentStatus}. */
  readonly status: string;
}

/** The paths of the files in `dir`. */
export function dataPaths(dir: string): DataPaths {
  const abs = path.resolve(dir);
  return {
    dir: abs,
    ca: path.join(abs, 'ca.crt'),
    key: path.join(abs, 'worker.key'),
    cert: path.join(abs, 'worker.crt'),
    nextKey: path.join(abs, 'worker.key.next'),
    nextCert: path.join(abs, 'worker.crt.next'),
    state: path.join(abs, 'state.json'),
    status: path.join(abs, 'status.json'),
  };
}

/** What join learnt, in `state.json`. */
export interface JoinState {
  workerId: string;
  /** Worker endpoints, `HOST:PORT`, tried in order. */
  servers: string[];
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
  keyType: KeyType;
  /** ISO 8601. */
  joinedAt: string;
}

/** What the running agent recorded after its last successful heartbeat, in `status.json`. */
export interface AgentStatus {
  workerId: string;
  /** The worker endpoint that accepted the heartbeat. */
  server: string;
  /** ISO 8601. */
  lastHeartbeatAt: string;
  certificateSerial: string;
  /** ISO 8601. */
  certificateNotAfter: string;
  /** The agent's state kind when written (`connected`, `stopped`, ...). */
  state: string;
}

/**
 * Creates the data folder with mode 0700 if it does not exist. An existing folder keeps its
 * mode (it may be one the operator chose on purpose); the result says whether others can
 * enter it, so the caller can warn.
 */
export async function ensureDataDir(dir: string): Promise<{ groupOrOtherAccess: boolean }> {
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await fs.stat(dir);
  return { groupOrOtherAccess: (st.mode & 0o077) !== 0 };
}

/**
 * Replaces `file` atomically: writes a temporary file beside it, opened with `mode` so the
 * content is never readable more widely, fsyncs it, renames it over `file` and fsyncs the
 * folder. A crash leaves either the old content or the new, never a mix.
 */
export async function writeFileAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await fs.open(tmp, 'wx', mode);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await handle.close();
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await fs.rename(tmp, file);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** Writes a secret (a private key): mode 0600. */
export function writePrivateFile(file: string, data: string): Promise<void> {
  return writeFileAtomic(file, data, 0o600);
}

/** Writes a file that holds nothing secret (certificates, state): mode 0644. */
export function writePublicFile(file: string, data: string): Promise<void> {
  return writeFileAtomic(file, data, 0o644);
}

/** Fsyncs a folder so a rename in it survives a crash. */
export async function syncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } catch {
    // Some filesystems refuse fsync on a folder; the rename itself was still atomic.
  } finally {
    await handle.close();
  }
}

/** Writes `state.json`. */
export function writeJoinState(paths: DataPaths, state: JoinState): Promise<void> {
  return writePublicFile(paths.state, `${JSON.stringify(state, null, 2)}\n`);
}

/**
 * Reads `state.json`.
 *
 * @throws FailedPreconditionError when the folder holds no join (run `citadel-agent join`).
 * @throws ConfigError when the file is unreadable or malformed.
 */
export async function readJoinState(paths: DataPaths): Promise<JoinState> {
  let text: string;
  try {
    text = await fs.readFile(paths.state, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new FailedPreconditionError(
        `not joined: ${paths.state} does not exist; run citadel-agent join first`,
      );
    }
    throw new ConfigError(paths.state, (err as Error).message);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(paths.state, `not JSON: ${(err as Error).message}`);
  }
  return checkJoinState(raw, paths.state);
}

/** Reads `status.json`, or undefined if the agent never recorded one (or it is unreadable). */
export async function readAgentStatus(paths: DataPaths): Promise<AgentStatus | undefined> {
  try {
    return JSON.parse(await fs.readFile(paths.status, 'utf8')) as AgentStatus;
  } catch {
    return undefined;
  }
}

/** Writes `status.json`. */
export function writeAgentStatus(paths: DataPaths, status: AgentStatus): Promise<void> {
  return writePublicFile(paths.status, `${JSON.stringify(status, null, 2)}\n`);
}

function checkJoinState(raw: unknown, field: string): JoinState {
  const o = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const bad = (key: string, want: string): never => {
    throw new ConfigError(`${field}: ${key}`, `must be ${want}`);
  };
  if (typeof o.workerId !== 'string' || o.workerId === '') bad('workerId', 'a worker id');
  if (
    !Array.isArray(o.servers) ||
    o.servers.length === 0 ||
    !o.servers.every((s) => typeof s === 'string')
  ) {
    bad('servers', 'a non-empty list of HOST:PORT');
  }
  for (const key of ['heartbeatIntervalMs', 'leaseTtlMs'] as const) {
    const v = o[key];
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) bad(key, 'a positive number');
  }
  if (!(KEY_TYPES as readonly unknown[]).includes(o.keyType)) bad('keyType', 'p256 or ed25519');
  return {
    workerId: o.workerId as string,
    servers: o.servers as string[],
    heartbeatIntervalMs: o.heartbeatIntervalMs as number,
    leaseTtlMs: o.leaseTtlMs as number,
    keyType: o.keyType as KeyType,
    joinedAt: typeof o.joinedAt === 'string' ? o.joinedAt : '',
  };
}
