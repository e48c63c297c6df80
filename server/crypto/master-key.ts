/**
 * Loads the server's 32-byte master key (which wraps the data keys) from the environment, an
 * explicit key file, or the data directory, generating it there on first start if allowed.
 * The key itself never appears in a log line or an error message.
 */
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { chmod, link, mkdir, open, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ConfigError } from '../../common/errors.js';

const KEY_BYTES = 32;
const KEY_FILE_NAME = 'master.key';
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

const ENV_FIELD = 'CITADEL_MASTER_KEY';
const FILE_FIELD = '--master-key-file';
const DATA_DIR_FIELD = '--data-dir';

/** Where to look for the master key. Precedence: `envValue`, then `file`, then `dataDir`. */
export interface MasterKeyOptions {
  /** Base64 of 32 bytes, as read by the entry point from `CITADEL_MASTER_KEY`. */
  envValue?: string;
  /** Path of a key file (base64 content) that must exist and be mode 0600 or stricter. */
  file?: string;
  /** Data directory; its `master.key` is used when neither of the above is given. */
  dataDir?: string;
  /** Generate `<dataDir>/master.key` (mode 0600, directory 0700) if it does not exist. */
  createIfMissing: boolean;
}

/** The loaded key and where it came from. */
export interface LoadedMasterKey {
  key: Buffer;
  source: 'env' | 'file' | 'generated';
}

/**
 * Loads the master key. Order: `envValue` (if defined, even if empty) > `file` (must exist) >
 * `<dataDir>/master.key` (created when `createIfMissing`).
 * @throws ConfigError naming the source if the key is not base64 of exactly 32 bytes, a key file
 *   is missing, unreadable or readable by group/others, or no source is configured.
 */
export async function loadMasterKey(opts: MasterKeyOptions): Promise<LoadedMasterKey> {
  if (opts.envValue !== undefined) {
    return { key: decodeKey(ENV_FIELD, opts.envValue), source: 'env' };
  }
  if (opts.file !== undefined) {
    const key = await readKeyFile(FILE_FIELD, opts.file);
    if (key === undefined) {
      throw new ConfigError(FILE_FIELD, `${opts.file} does not exist`);
    }
    return { key, source: 'file' };
  }
  if (opts.dataDir === undefined) {
    throw new ConfigError(
      FILE_FIELD,
      `no master key configured: set ${ENV_FIELD}, pass ${FILE_FIELD} or ${DATA_DIR_FIELD}`,
    );
  }
  const path = join(opts.dataDir, KEY_FILE_NAME);
  const existing = await readKeyFile(DATA_DIR_FIELD, path);
  if (existing !== undefined) {
    return { key: existing, source: 'file' };
  }
  if (!opts.createIfMissing) {
    throw new ConfigError(DATA_DIR_FIELD, `${path} does not exist and creating it is disabled`);
  }
  return generateKeyFile(opts.dataDir, path);
}

/** Decodes base64 text into a 32-byte key; the message never echoes the text. */
function decodeKey(field: string, text: string): Buffer {
  const trimmed = text.trim();
  // Buffer.from(..., 'base64') silently skips junk, so check the alphabet first.
  if (!BASE64.test(trimmed)) {
    throw new ConfigError(field, `master key must be base64 of ${KEY_BYTES} bytes`);
  }
  const key = Buffer.from(trimmed, 'base64');
  if (key.length !== KEY_BYTES) {
    throw new ConfigError(
      field,
      `master key must be base64 of ${KEY_BYTES} bytes, got ${key.length} bytes`,
    );
  }
  return key;
}

/** Reads and validates a key file; `undefined` if it does not exist. */
async function readKeyFile(field: string, path: string): Promise<Buffer | undefined> {
  let handle;
  try {
    handle = await open(path, fsConstants.O_RDONLY);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw new ConfigError(field, `cannot open ${path} (${errnoCode(err) ?? 'unknown error'})`);
  }
  try {
    // Check the opened file, not the path, so a swap between check and read cannot slip by.
    const stat = await handle.stat();
    if (!stat.isFile()) {
      throw new ConfigError(field, `${path} is not a regular file`);
    }
    if (process.platform !== 'win32' && (stat.mode & 0o077) !== 0) {
      throw new ConfigError(
        field,
        `${path} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}); ` +
          `run: chmod 600 ${path}`,
      );
    }
    return decodeKey(field, await handle.readFile('utf8'));
  } finally {
    await handle.close();
  }
}

/**
 * Writes a fresh key to `path` without ever exposing a partial file: write a private temporary
 * file, then hard-link it into place, which fails if another process created the key first.
 */
async function generateKeyFile(dataDir: string, path: string): Promise<LoadedMasterKey> {
  const created = await mkdir(dataDir, { recursive: true, mode: 0o700 });
  if (created !== undefined) await chmod(dataDir, 0o700);

  const key = randomBytes(KEY_BYTES);
  const tmp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(tmp, 'wx', 0o600);
  try {
    await handle.chmod(0o600); // open()'s mode is filtered by the umask; set it exactly
    await handle.writeFile(`${key.toString('base64')}\n`, 'utf8');
    await handle.sync();
  } finally {
    await handle.close();
  }
  try {
    await link(tmp, path);
  } catch (err) {
    if (errnoCode(err) !== 'EEXIST') throw err;
    // Lost a race with a concurrent start: use the winner's key.
    const winner = await readKeyFile(DATA_DIR_FIELD, path);
    if (winner === undefined) throw err;
    return { key: winner, source: 'file' };
  } finally {
    await unlink(tmp);
  }
  return { key, source: 'generated' };
}

function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string') {
    return err.code;
  }
  return undefined;
}
