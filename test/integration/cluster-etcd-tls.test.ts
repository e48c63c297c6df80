/**
 * etcd over mutual TLS: the server's embedded default always runs etcd with client-certificate
 * authentication, and a replica reaches an external TLS etcd with --etcd-ca-file,
 * --etcd-cert-file and --etcd-key-file (or the same keys in its config file), validated at start.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { ConfigError } from '../../common/errors.js';
import { createLogger } from '../../common/logger.js';
import { ListTasksRequest } from '../../gen/citadel/v1/task_service.js';
import { CitadelServer } from '../../server/server.js';
import { compileServerOptions, type ServerOptionsInput } from '../../server/server-options.js';
import { startTestEtcd, type TestEtcd } from '../helpers/etcd.js';
import { freshPrefix, spawnServer, startTestServer } from '../helpers/server.js';

let etcd: TestEtcd;
let tlsFiles: { etcdCaFile: string; etcdCertFile: string; etcdKeyFile: string };
const cleanups: (() => Promise<unknown>)[] = [];

before(async () => {
  etcd = await startTestEtcd({ tls: true });
  const tls = etcd.tls!;
  tlsFiles = { etcdCaFile: tls.caFile, etcdCertFile: tls.certFile, etcdKeyFile: tls.keyFile };
});

after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
  await etcd?.stop();
});

async function tempDir(): Promise<string> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'citadel-etcd-tls-'));
  cleanups.push(() => fs.rm(dir, { recursive: true, force: true }));
  return dir;
}

/** Whether a plain or certificate-less client can read anything: it must not. */
async function assertRefusesStrangers(endpoint: string, rootCertificate: Buffer): Promise<void> {
  for (const options of [
    { hosts: endpoint.replace('https:', 'http:') },
    {
      hosts: endpoint,
      credentials: { rootCertificate },
      grpcOptions: { 'grpc.ssl_target_name_override': 'localhost' },
    },
  ]) {
    const client = new Etcd3({ ...options, dialTimeout: 1000 });
    try {
      await assert.rejects(client.get('anything').string(), /UNAVAILABLE/, options.hosts);
    } finally {
      client.close();
    }
  }
}

void test(
  'an in-process replica serves over an external TLS etcd',
  { timeout: 30_000 },
  async () => {
    const ts = await startTestServer(etcd.endpoint, tlsFiles);
    cleanups.push(() => ts.stop());
    const res = await ts.call(ts.client.listTasks, ListTasksRequest.fromPartial({}));
    assert.deepEqual(res.tasks, []);
    await ts.stop();
  },
);

void test(
  'without a client certificate a replica cannot start on the TLS etcd',
  { timeout: 30_000 },
  async () => {
    const options = compileServerOptions({
      dataDir: await tempDir(),
      listen: '127.0.0.1:0',
      workerListen: '127.0.0.1:0',
      etcdEndpoints: [etcd.endpoint],
      etcdPrefix: freshPrefix(),
      etcdCaFile: tlsFiles.etcdCaFile,
      metricsAddr: '',
      logLevel: 'silent',
      masterKeyEnv: randomBytes(32).toString('base64'),
    });
    const logger = createLogger({ name: 'test-server', level: 'silent', destination: 2 });
    await assert.rejects(
      CitadelServer.start(options, logger),
      /bad certificate|certificate required/,
    );
  },
);

void test(
  'the embedded default runs etcd with client-certificate authentication',
  { timeout: 30_000 },
  async () => {
    const ts = await startTestServer('http://unused:1', { etcdEndpoints: [] });
    cleanups.push(() => ts.stop());
    const { dataDir } = ts.server.options;
    const pid = (await fs.readFile(path.join(dataDir, 'etcd', 'etcd.pid'), 'utf8')).trim();
    const argv = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    assert.ok(argv.includes('--client-cert-auth'), argv.join(' '));
    assert.ok(argv.includes('--peer-client-cert-auth'), argv.join(' '));
    const endpoint = argv
      .find((a) => a.startsWith('--listen-client-urls='))
      ?.slice('--listen-client-urls='.length);
    assert.match(endpoint ?? '', /^https:\/\/127\.0\.0\.1:\d+$/);

    const tlsDir = path.join(dataDir, 'etcd-tls');
    assert.equal((await fs.stat(tlsDir)).mode & 0o777, 0o700);
    assert.deepEqual((await fs.readdir(tlsDir)).sort(), [
      'ca.crt',
      'client.crt',
      'client.key',
      'server.crt',
      'server.key',
    ]);
    await assertRefusesStrangers(endpoint!, await fs.readFile(path.join(tlsDir, 'ca.crt')));

    const res = await ts.call(ts.client.listTasks, ListTasksRequest.fromPartial({}));
    assert.deepEqual(res.tasks, []);
    await ts.stop();
  },
);

void test(
  'citadel-server takes the etcd TLS files from flags and its config file',
  { timeout: 30_000 },
  async () => {
    const dir = await tempDir();
    const config = path.join(dir, 'citadel.yaml');
    await fs.writeFile(config, `etcdCaFile: ${JSON.stringify(tlsFiles.etcdCaFile)}\n`);
    const server = await spawnServer({
      etcdEndpoint: etcd.endpoint,
      prefix: freshPrefix(),
      masterKey: randomBytes(32).toString('base64'),
      dataDir: path.join(dir, 'data'),
      extraArgs: [
        '--config',
        config,
        '--etcd-cert-file',
        tlsFiles.etcdCertFile,
        '--etcd-key-file',
        tlsFiles.etcdKeyFile,
      ],
    });
    cleanups.push(() => server.kill());
    await server.waitForLog((l) => l.msg === 'became leader');
    await server.kill('SIGTERM');

    await assert.rejects(
      spawnServer({
        etcdEndpoint: etcd.endpoint,
        prefix: freshPrefix(),
        masterKey: randomBytes(32).toString('base64'),
        dataDir: path.join(dir, 'data2'),
        extraArgs: ['--etcd-cert-file', tlsFiles.etcdCertFile],
      }),
      /exited \(2\).*--etcd-key-file: is required with --etcd-cert-file/s,
    );
  },
);

void test('the etcd TLS options are validated', async () => {
  const dir = await tempDir();
  const https = { etcdEndpoints: ['https://127.0.0.1:2379'] };
  const cases: [ServerOptionsInput, RegExp][] = [
    [{ etcdCaFile: tlsFiles.etcdCaFile }, /^--etcd-ca-file: needs --etcd-endpoints/],
    [
      { etcdEndpoints: ['http://127.0.0.1:2379'], etcdCaFile: tlsFiles.etcdCaFile },
      /^--etcd-endpoints: must be https:\/\/ when --etcd-ca-file is given/,
    ],
    [
      { etcdEndpoints: ['http://127.0.0.1:2379', 'https://127.0.0.1:2380'] },
      /^--etcd-endpoints: must be all http:\/\/ or all https:\/\//,
    ],
    [
      { ...https, etcdCertFile: tlsFiles.etcdCertFile },
      /^--etcd-key-file: is required with --etcd-cert-file/,
    ],
    [
      { ...https, etcdKeyFile: tlsFiles.etcdKeyFile },
      /^--etcd-cert-file: is required with --etcd-key-file/,
    ],
    [
      { ...https, etcdCaFile: path.join(dir, 'missing.crt') },
      /^--etcd-ca-file: cannot read .*missing\.crt/,
    ],
    [{ ...https, etcdCaFile: dir }, /^--etcd-ca-file: .* is not a regular file/],
  ];
  for (const [input, message] of cases) {
    assert.throws(
      () => compileServerOptions({ dataDir: dir, ...input }),
      (err: unknown) => err instanceof ConfigError && message.test(err.message),
      JSON.stringify(input),
    );
  }
  const ok = compileServerOptions({ dataDir: dir, ...https, ...tlsFiles });
  assert.equal(ok.etcdCaFile, tlsFiles.etcdCaFile);
  // https with no files: the system's CAs verify etcd.
  assert.equal(compileServerOptions({ dataDir: dir, ...https }).etcdCaFile, undefined);
});
