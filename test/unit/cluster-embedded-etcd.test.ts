/**
 * The embedded etcd: a real etcd 3.4 process, started, used, stopped, restarted, orphaned; with
 * mutual TLS, it serves only clients presenting its client certificate.
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';

import { Etcd3, type IOptions } from 'etcd3';

import { UnavailableError } from '../../common/errors.js';
import { startEmbeddedEtcd } from '../../server/cluster/embedded-etcd.js';
import { ensureEtcdTls } from '../../server/cluster/etcd-tls.js';
import { createCa, issueClientCert } from '../../server/tls/ca.js';
import { startTestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-etcd-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

async function withClient<T>(
  endpoint: string,
  use: (client: Etcd3) => Promise<T>,
  options: Omit<IOptions, 'hosts'> = {},
): Promise<T> {
  const client = new Etcd3({ hosts: endpoint, ...options });
  try {
    return await use(client);
  } finally {
    client.close();
  }
}

async function readPid(dataDir: string): Promise<number> {
  return Number.parseInt(await fs.readFile(path.join(dataDir, 'etcd.pid'), 'utf8'), 10);
}

/** Gone or a zombie (whose reaping is up to whoever adopted it). */
async function isDead(pid: number): Promise<boolean> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function portIsClosed(port: number): Promise<boolean> {
  const socket = net.connect({ host: '127.0.0.1', port });
  try {
    await once(socket, 'connect');
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ECONNREFUSED';
  } finally {
    socket.destroy();
  }
}

async function freePort(): Promise<number> {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  server.close();
  await once(server, 'close');
  return port;
}

function killOnCleanup(child: ChildProcess): void {
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await once(child, 'exit');
    }
  });
}

void test('starts, serves put and get, and stops for good', { timeout: 15_000 }, async () => {
  const etcd = await startTestEtcd();
  cleanups.push(() => etcd.stop());
  assert.match(etcd.endpoint, /^http:\/\/127\.0\.0\.1:\d+$/);
  assert.equal((await fs.stat(etcd.dataDir)).mode & 0o777, 0o700);
  const pid = await readPid(etcd.dataDir);

  const value = await withClient(etcd.endpoint, async (client) => {
    await client.put('citadel/test').value('hello');
    return client.get('citadel/test').string();
  });
  assert.equal(value, 'hello');

  await etcd.stop();
  await etcd.stop(); // idempotent
  assert.ok(await isDead(pid), `etcd pid ${pid} still running after stop()`);
  assert.ok(await portIsClosed(Number(new URL(etcd.endpoint).port)), 'client port still open');
});

void test(
  'kills a leftover etcd that holds the data dir, then starts on the same data',
  { timeout: 15_000 },
  async () => {
    const dataDir = await tempDir();
    const [clientPort, peerPort] = [await freePort(), await freePort()];
    const url = (port: number) => `http://127.0.0.1:${port}`;
    // As a crashed server would leave it: an orphaned etcd (adopted by init) on this data dir,
    // and its pid file. A shell starts it in the background and exits.
    const args = [
      '--name=citadel',
      `--data-dir=${dataDir}`,
      `--listen-client-urls=${url(clientPort)}`,
      `--advertise-client-urls=${url(clientPort)}`,
      `--listen-peer-urls=${url(peerPort)}`,
      `--initial-advertise-peer-urls=${url(peerPort)}`,
      `--initial-cluster=citadel=${url(peerPort)}`,
    ];
    const shell = spawnSync('sh', ['-c', 'etcd "$@" >/dev/null 2>&1 & echo $!', 'sh', ...args], {
      encoding: 'utf8',
    });
    const leftoverPid = Number(shell.stdout.trim());
    assert.ok(leftoverPid > 0, `started the leftover etcd: ${shell.stderr}`);
    cleanups.push(async () => {
      try {
        process.kill(leftoverPid, 'SIGKILL');
      } catch {
        // already gone
      }
      await Promise.resolve();
    });
    await fs.writeFile(path.join(dataDir, 'etcd.pid'), `${leftoverPid}\n`);
    await eventually(
      () =>
        withClient(url(clientPort), (client) => client.put('citadel/survivor').value('yes').exec()),
      { timeoutMs: 10_000, message: 'the leftover etcd serves' },
    );

    const etcd = await startEmbeddedEtcd({ dataDir, tls: false });
    cleanups.push(() => etcd.stop());
    assert.ok(await isDead(leftoverPid), 'the leftover was killed');
    const pid = await readPid(dataDir);
    assert.notEqual(pid, leftoverPid);
    assert.equal(await isDead(pid), false);
    const value = await withClient(etcd.endpoint, (client) =>
      client.get('citadel/survivor').string(),
    );
    assert.equal(value, 'yes');
    await etcd.stop();
    assert.equal(await etcd.exited, null); // after a clean shutdown etcd re-raises SIGTERM
    await assert.rejects(fs.access(path.join(dataDir, 'etcd.pid')), { code: 'ENOENT' });
  },
);

void test(
  'an etcd that a live server still runs is not killed: the data dir is in use',
  { timeout: 15_000 },
  async () => {
    const dataDir = await tempDir();
    const first = await startEmbeddedEtcd({ dataDir, tls: false });
    cleanups.push(() => first.stop());
    await assert.rejects(
      startEmbeddedEtcd({ dataDir, tls: false }),
      (err: unknown) =>
        err instanceof UnavailableError && /is in use by a running etcd/.test(err.message),
    );
    const pid = await readPid(dataDir);
    assert.equal(await isDead(pid), false, 'the running etcd survived');
    await withClient(first.endpoint, (client) => client.put('still').value('here').exec());
  },
);

void test(
  'a missing etcd binary is UnavailableError naming the package to install',
  { timeout: 15_000 },
  async () => {
    const dataDir = await tempDir();
    await assert.rejects(
      startEmbeddedEtcd({ dataDir, tls: false, binary: 'etcd-does-not-exist' }),
      (err: unknown) => err instanceof UnavailableError && /etcd-server/.test(err.message),
    );
  },
);

void test('etcd dies with its parent on SIGKILL', { timeout: 15_000 }, async (t) => {
  try {
    await fs.access('/usr/bin/setpriv');
  } catch {
    t.skip('util-linux setpriv is not installed');
    return;
  }
  const dataDir = await tempDir();
  const moduleUrl = pathToFileURL(path.join(repoRoot, 'server/cluster/embedded-etcd.ts')).href;
  const script = `
    const { startEmbeddedEtcd } = await import(${JSON.stringify(moduleUrl)});
    await startEmbeddedEtcd({ dataDir: ${JSON.stringify(dataDir)}, tls: false });
    console.log('ready');
    setInterval(() => {}, 60_000);
  `;
  const parent = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  killOnCleanup(parent);
  const [output] = (await once(parent.stdout, 'data')) as [Buffer];
  assert.equal(output.toString().trim(), 'ready');
  const pid = await readPid(dataDir);
  assert.equal(await isDead(pid), false);
  cleanups.push(async () => {
    if (!(await isDead(pid))) process.kill(pid, 'SIGKILL');
  });

  parent.kill('SIGKILL');
  await eventually(() => isDead(pid), { timeoutMs: 5_000, message: `etcd pid ${pid} to die` });
});

const DAY_MS = 24 * 60 * 60 * 1000;

/** Client options for the TLS etcd; a short dial timeout so refused connections fail fast. */
function tlsOptions(credentials?: IOptions['credentials']): Omit<IOptions, 'hosts'> {
  return {
    credentials,
    dialTimeout: 1000,
    grpcOptions: { 'grpc.ssl_target_name_override': 'localhost' },
  };
}

void test(
  'with TLS it serves a client presenting the client certificate and refuses others',
  { timeout: 30_000 },
  async () => {
    const etcd = await startTestEtcd({ tls: true });
    cleanups.push(() => etcd.stop());
    assert.match(etcd.endpoint, /^https:\/\/127\.0\.0\.1:\d+$/);
    const tls = etcd.tls;
    assert.ok(tls, 'tls');
    const tlsDir = path.dirname(tls.caFile);
    assert.equal((await fs.stat(tlsDir)).mode & 0o777, 0o700);
    for (const file of [tls.caFile, tls.certFile, tls.keyFile, path.join(tlsDir, 'server.key')]) {
      assert.equal((await fs.stat(file)).mode & 0o777, 0o600, file);
    }
    await assert.rejects(fs.access(path.join(tlsDir, 'ca.key')), { code: 'ENOENT' });

    const value = await withClient(
      etcd.endpoint,
      async (client) => {
        await client.put('citadel/tls').value('mutual');
        return client.get('citadel/tls').string();
      },
      tlsOptions(tls.credentials),
    );
    assert.equal(value, 'mutual');

    // TLS that trusts etcd's CA, but no client certificate.
    const { rootCertificate } = tls.credentials;
    await assert.rejects(
      withClient(
        etcd.endpoint,
        (c) => c.get('citadel/tls').string(),
        tlsOptions({ rootCertificate }),
      ),
      /UNAVAILABLE.*(bad certificate|certificate required)/,
    );
    // A client certificate of another CA.
    const otherCa = await createCa({ commonName: 'not the etcd CA' });
    const stranger = await issueClientCert(otherCa, {
      uri: 'citadel://service/citadel-server',
      commonName: 'citadel-server',
    });
    await assert.rejects(
      withClient(
        etcd.endpoint,
        (c) => c.get('citadel/tls').string(),
        tlsOptions({
          rootCertificate,
          certChain: Buffer.from(stranger.certPem),
          privateKey: Buffer.from(stranger.keyPem!),
        }),
      ),
      /UNAVAILABLE.*(bad certificate|unknown ca)/,
    );
    // Plaintext on the TLS port.
    await assert.rejects(
      withClient(etcd.endpoint.replace('https:', 'http:'), (c) => c.get('citadel/tls').string(), {
        dialTimeout: 1000,
      }),
      /UNAVAILABLE/,
    );
    // Raw TLS without a client certificate: the handshake or the first read fails.
    const port = Number(new URL(etcd.endpoint).port);
    const response = await fetchVersion(port, rootCertificate).catch((err: unknown) => err);
    assert.ok(response instanceof Error, `GET /version without a client cert: ${String(response)}`);
    assert.match(response.message, /bad certificate|certificate required/);
  },
);

/** GET /version over TLS without a client certificate; resolves with the body if served. */
async function fetchVersion(port: number, ca: Buffer): Promise<string> {
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.get(
      { host: '127.0.0.1', port, path: '/version', ca, servername: 'localhost', timeout: 2000 },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

void test(
  'TLS material is reused across restarts and made afresh when missing, exposed or expiring',
  { timeout: 30_000 },
  async () => {
    const dir = path.join(await tempDir(), 'etcd-tls');
    const first = await ensureEtcdTls(dir);
    assert.equal(first.renewed, 'ca.crt is missing');
    const caPem = await fs.readFile(first.client.caFile, 'utf8');

    const again = await ensureEtcdTls(dir);
    assert.equal(again.renewed, undefined);
    assert.equal(await fs.readFile(again.client.caFile, 'utf8'), caPem);
    assert.deepEqual(again.client.credentials, first.client.credentials);

    // A restart of etcd on the same folders keeps the data and the certificates.
    const dataDir = path.join(path.dirname(dir), 'etcd');
    for (let i = 0; i < 2; i++) {
      const etcd = await startEmbeddedEtcd({ dataDir, tls: { dir } });
      try {
        assert.equal(etcd.tlsRenewed, undefined);
        const value = await withClient(
          etcd.endpoint,
          async (client) => {
            if (i === 0) await client.put('citadel/restart').value('kept');
            return client.get('citadel/restart').string();
          },
          tlsOptions(etcd.tls!.credentials),
        );
        assert.equal(value, 'kept');
      } finally {
        await etcd.stop();
      }
    }
    assert.equal(await fs.readFile(path.join(dir, 'ca.crt'), 'utf8'), caPem);

    await fs.rm(path.join(dir, 'client.key'));
    const missing = await ensureEtcdTls(dir);
    assert.equal(missing.renewed, 'client.key is missing');
    const caPem2 = await fs.readFile(path.join(dir, 'ca.crt'), 'utf8');
    assert.notEqual(caPem2, caPem);

    await fs.chmod(path.join(dir, 'server.key'), 0o644);
    const exposed = await ensureEtcdTls(dir);
    assert.equal(exposed.renewed, 'server.key is readable by others');
    assert.equal((await fs.stat(path.join(dir, 'server.key'))).mode & 0o777, 0o600);

    // A leaf from another set: not signed by ca.crt.
    const other = await ensureEtcdTls(path.join(path.dirname(dir), 'other-tls'));
    await fs.copyFile(other.client.certFile, path.join(dir, 'client.crt'));
    await fs.copyFile(other.client.keyFile, path.join(dir, 'client.key'));
    assert.equal((await ensureEtcdTls(dir)).renewed, 'client.crt is not signed by ca.crt');

    // Certificates are issued for 825 days: 800 days on, they are within the 30-day margin.
    assert.equal((await ensureEtcdTls(dir, Date.now() + 780 * DAY_MS)).renewed, undefined);
    const expiring = await ensureEtcdTls(dir, Date.now() + 800 * DAY_MS);
    assert.equal(expiring.renewed, 'server.crt expires within 30 days');
  },
);
