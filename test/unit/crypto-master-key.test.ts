// Unit tests for master key loading: generation, reload, precedence and validation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../common/errors.js';
import { loadMasterKey } from '../../server/crypto/master-key.js';

const posix = process.platform !== 'win32';

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'citadel-master-key-'));
  try {
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

void test('generates a 0600 key file in a fresh data dir and loads it again identically', () =>
  withTempDir(async (dir) => {
    const dataDir = join(dir, 'data');
    const first = await loadMasterKey({ dataDir, createIfMissing: true });
    assert.equal(first.source, 'generated');
    assert.equal(first.key.length, 32);

    const path = join(dataDir, 'master.key');
    const content = await readFile(path, 'utf8');
    assert.equal(content, `${first.key.toString('base64')}\n`);
    if (posix) {
      assert.equal((await stat(path)).mode & 0o777, 0o600);
      assert.equal((await stat(dataDir)).mode & 0o777, 0o700);
    }

    const second = await loadMasterKey({ dataDir, createIfMissing: true });
    assert.equal(second.source, 'file');
    assert.deepEqual(second.key, first.key);

    const explicit = await loadMasterKey({ file: path, dataDir: dir, createIfMissing: false });
    assert.equal(explicit.source, 'file');
    assert.deepEqual(explicit.key, first.key);
  }));

void test('the environment value wins over a file and the data dir', () =>
  withTempDir(async (dir) => {
    const envKey = randomBytes(32);
    const fileKey = randomBytes(32);
    const file = join(dir, 'other.key');
    await writeFile(file, fileKey.toString('base64'), { mode: 0o600 });
    const loaded = await loadMasterKey({
      envValue: envKey.toString('base64'),
      file,
      dataDir: dir,
      createIfMissing: true,
    });
    assert.equal(loaded.source, 'env');
    assert.deepEqual(loaded.key, envKey);
  }));

void test('a key of the wrong length or not base64 is a ConfigError naming the source', () =>
  withTempDir(async (dir) => {
    const short = randomBytes(16).toString('base64');
    await assert.rejects(
      loadMasterKey({ envValue: short, createIfMissing: false }),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.field === 'CITADEL_MASTER_KEY' &&
        !err.message.includes(short),
    );
    await assert.rejects(
      loadMasterKey({ envValue: 'not base64 at all!', createIfMissing: false }),
      ConfigError,
    );
    await assert.rejects(loadMasterKey({ envValue: '', createIfMissing: false }), ConfigError);

    const file = join(dir, 'short.key');
    await writeFile(file, `${randomBytes(31).toString('base64')}\n`, { mode: 0o600 });
    await assert.rejects(
      loadMasterKey({ file, createIfMissing: false }),
      (err: unknown) => err instanceof ConfigError && err.field === '--master-key-file',
    );
  }));

void test('an explicit key file must exist', () =>
  withTempDir(async (dir) => {
    await assert.rejects(
      loadMasterKey({ file: join(dir, 'missing.key'), dataDir: dir, createIfMissing: true }),
      ConfigError,
    );
  }));

void test('a missing data dir key is not created when createIfMissing is false', () =>
  withTempDir(async (dir) => {
    await assert.rejects(loadMasterKey({ dataDir: dir, createIfMissing: false }), ConfigError);
    await assert.rejects(loadMasterKey({ createIfMissing: true }), ConfigError);
  }));

void test(
  'a key file readable by group or others is refused with a chmod hint',
  { skip: !posix },
  () =>
    withTempDir(async (dir) => {
      const key = randomBytes(32).toString('base64');
      const file = join(dir, 'loose.key');
      await writeFile(file, `${key}\n`);
      await chmod(file, 0o644);
      await assert.rejects(
        loadMasterKey({ file, createIfMissing: false }),
        (err: unknown) =>
          err instanceof ConfigError && /chmod 600/.test(err.message) && !err.message.includes(key),
      );

      const dataDir = join(dir, 'data');
      await loadMasterKey({ dataDir, createIfMissing: true });
      await chmod(join(dataDir, 'master.key'), 0o640);
      await assert.rejects(loadMasterKey({ dataDir, createIfMissing: true }), ConfigError);
    }),
);
