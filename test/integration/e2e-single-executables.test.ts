/**
 * The single-executable binaries (scripts/build-sea.ts), built fresh into a temp folder and run
 * from `/` with no node on PATH, an empty environment, and the project's node_modules hidden
 * behind an empty folder in a private mount namespace (Node searches parent folders for
 * node_modules, so running from elsewhere is not enough). Covers --version and --help, a clean
 * failure of `status` on an empty data folder, and a cluster of the three binaries: a server on
 * a real etcd (one file: nothing beside it, its descriptor set is inside), a bootstrap token
 * from citadelctl, and an agent that joins with it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NODE_MODULES = path.join(REPO_ROOT, 'node_modules');
const run = promisify(execFile);

// A private mount namespace needs root; the suite runs as root on the build machines.
const skip = process.getuid?.() === 0 ? false : 'needs root (unshare -m) to hide node_modules';

let tmpDir: string;
let binDir: string;
let emptyDir: string;
let version: string;

before(
  async () => {
    if (skip) return;
    tmpDir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-sea-'));
    binDir = path.join(tmpDir, 'bin');
    emptyDir = path.join(tmpDir, 'empty');
    await fs.mkdir(emptyDir);
    const pkg = JSON.parse(await fs.readFile(path.join(REPO_ROOT, 'package.json'), 'utf8')) as {
      version: string;
    };
    version = pkg.version;
    // Always a fresh build (about 3 s a binary), so the test never passes on a stale one.
    await run(
      process.execPath,
      ['--import', 'tsx', 'scripts/build-sea.ts', '--out-dir', binDir, 'all'],
      { cwd: REPO_ROOT, timeout: 240_000 },
    );
  },
  { timeout: 300_000 },
);

after(async () => {
  if (tmpDir) await fs.rm(tmpDir, { recursive: true, force: true });
});

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The argv that runs `program args` from `/` with node_modules hidden, PATH=/nonexistent and
 * only `env` in the environment. `exec` all the way down, so the child's pid is the program's.
 */
function isolated(program: string, args: string[], env: Record<string, string> = {}): string[] {
  const script = 'mount --bind "$1" "$2" && shift 2 && cd / && exec /usr/bin/env -i "$@"';
  const vars = Object.entries({ PATH: '/nonexistent', ...env }).map(([k, v]) => `${k}=${v}`);
  return ['-m', '/bin/sh', '-c', script, 'sh', emptyDir, NODE_MODULES, ...vars, program, ...args];
}

async function runIsolated(
  program: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<Result> {
  return new Promise((resolve, reject) => {
    execFile(
      'unshare',
      isolated(program, args, env),
      { timeout: 30_000 },
      (err, stdout, stderr) => {
        if (err === null) resolve({ code: 0, stdout, stderr });
        else if (typeof err.code === 'number') resolve({ code: err.code, stdout, stderr });
        // Killed by the timeout, or unshare itself could not start.
        else reject(new Error(`${program}: ${err.message}`, { cause: err }));
      },
    );
  });
}

function bin(name: string): string {
  return path.join(binDir, name);
}

describe('single executables, with no node and no node_modules', { skip }, () => {
  test('the isolation holds: node_modules is empty and node is not on PATH', async () => {
    const r = await runIsolated('/bin/sh', [
      '-c',
      'test -z "$(ls -A "$0")" && ! command -v node',
      NODE_MODULES,
    ]);
    assert.equal(r.code, 0, r.stderr);
  });

  for (const name of ['citadel-agent', 'citadel-server', 'citadelctl']) {
    test(`${name} --version prints package.json's version`, async () => {
      const r = await runIsolated(bin(name), ['--version']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), version);
      assert.equal(r.stderr, '');
    });
  }

  test('citadel-agent --help lists its commands', async () => {
    const r = await runIsolated(bin('citadel-agent'), ['--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const command of ['join', 'run', 'status']) assert.match(r.stdout, new RegExp(command));
  });

  test('citadel-agent status on an empty data folder fails cleanly with exit 1', async () => {
    const dataDir = await fs.mkdtemp(path.join(tmpDir, 'agent-'));
    const r = await runIsolated(bin('citadel-agent'), ['status', '--data-dir', dataDir]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^citadel-agent: not joined: /);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(r.stdout, '');
  });

  describe('a cluster of the three binaries', () => {
    let etcd: TestEtcd | undefined;
    let server: ChildProcess | undefined;
    let serverExited: Promise<unknown> | undefined;
    let serverDir: string;
    let clientEnv: Record<string, string>;

    before(async () => {
      // The server needs nothing beside its executable.
      assert.deepEqual(await fs.readdir(binDir), ['citadel-agent', 'citadel-server', 'citadelctl']);
      await assert.rejects(fs.access(path.join(tmpDir, 'gen')), { code: 'ENOENT' });
      etcd = await startTestEtcd();
      serverDir = await fs.mkdtemp(path.join(tmpDir, 'server-'));
      const child = spawn(
        'unshare',
        isolated(
          bin('citadel-server'),
          [
            ...['--etcd-endpoints', etcd.endpoint, '--etcd-prefix', `/sea-test/`],
            ...['--data-dir', serverDir, '--metrics-addr', ''],
            ...['--listen', '127.0.0.1:0', '--worker-listen', '127.0.0.1:0'],
          ],
          { CITADEL_MASTER_KEY: randomBytes(32).toString('base64') },
        ),
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      server = child;
      serverExited = new Promise((resolve) => child.once('exit', resolve));
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const listen = await new Promise<string>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`server not ready: ${stderr}`)), 30_000);
        void serverExited?.then(() => reject(new Error(`server exited: ${stderr}`)));
        createInterface({ input: child.stdout }).on('line', (text) => {
          try {
            const line = JSON.parse(text) as { msg?: string; listen?: string };
            if (line.msg === 'citadel-server ready') {
              clearTimeout(timer);
              resolve(String(line.listen));
            }
          } catch {
            // not a log line
          }
        });
      });
      clientEnv = {
        CITADEL_SERVER: `localhost:${listen.split(':').pop()}`,
        CITADEL_CA: path.join(serverDir, 'ca.crt'),
        CITADEL_API_KEY_FILE: path.join(serverDir, 'admin.key'),
        XDG_CONFIG_HOME: emptyDir,
      };
    });

    after(async () => {
      if (server && server.exitCode === null && server.signalCode === null) {
        server.kill('SIGTERM');
      }
      await serverExited;
      await etcd?.stop();
    });

    test('citadelctl creates a token and citadel-agent joins with it', async () => {
      const token = await runIsolated(
        bin('citadelctl'),
        ['token', 'create', '--expires', '1h', '--label', 'pool=sea', '-o', 'json'],
        clientEnv,
      );
      assert.equal(token.code, 0, token.stderr);
      const created = JSON.parse(token.stdout) as { token: string; caHash: string };

      const dataDir = await fs.mkdtemp(path.join(tmpDir, 'agent-'));
      const join = await runIsolated(bin('citadel-agent'), [
        ...['join', '--server', clientEnv.CITADEL_SERVER!, '--token', created.token],
        ...['--ca-hash', created.caHash, '--data-dir', dataDir],
      ]);
      assert.equal(join.code, 0, join.stderr);
      const workerId = /joined as (w_\w+)/.exec(join.stdout)?.[1];
      assert.ok(workerId, join.stdout);

      const status = await runIsolated(bin('citadel-agent'), [
        ...['status', '--data-dir', dataDir, '-o', 'json'],
      ]);
      assert.equal(status.code, 0, status.stderr);
      assert.match(status.stdout, new RegExp(workerId));

      const list = await runIsolated(
        bin('citadelctl'),
        ['worker', 'list', '-o', 'json'],
        clientEnv,
      );
      assert.equal(list.code, 0, list.stderr);
      const workers = (JSON.parse(list.stdout) as { workers: { id: string; labels: object }[] })
        .workers;
      assert.deepEqual(
        workers.map((w) => [w.id, w.labels]),
        [[workerId, { host: os.hostname(), pool: 'sea' }]],
      );
    });
  });
});
