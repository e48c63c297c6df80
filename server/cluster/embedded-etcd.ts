/**
 * The embedded default: when no external etcd is configured, the server runs a private
 * single-member etcd under its data folder, bound to loopback only, and ties its life to ours.
 * The data dir and its pid file are etcd-data-dir.ts; the TLS material is etcd-tls.ts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as net from 'node:net';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

import { ConfigError, UnavailableError } from '../../common/errors.js';
import { isErrno } from './errno.js';
import { prepareDataDir, removePidFile, writePidFile } from './etcd-data-dir.js';
import { ensureEtcdTls, type EtcdClientTls, type EtcdServerTls } from './etcd-tls.js';

/** A running embedded etcd. */
export interface EmbeddedEtcd {
  /** Client URL: `https://127.0.0.1:PORT`, or `http://127.0.0.1:PORT` with `tls: false`. */
  readonly endpoint: string;
  /** The CA and client certificate a client must present; undefined with `tls: false`. */
  readonly tls: EtcdClientTls | undefined;
  /** Why the TLS material was made afresh at this start; undefined if it was reused. */
  readonly tlsRenewed: string | undefined;
  /** SIGTERM, then SIGKILL after 10 s; removes the pid file. Idempotent. */
  stop(): Promise<void>;
  /** Settles when the process ends: its exit code, or null if a signal ended it. */
  readonly exited: Promise<number | null>;
}

/** Options of {@link startEmbeddedEtcd}. */
export interface EmbeddedEtcdOptions {
  /** etcd's data dir (its `member/` dir goes inside); created with mode 0700. */
  dataDir: string;
  /**
   * Mutual TLS on the client and peer ports: `dir` holds the private etcd CA and certificates
   * (made on first use, see `ensureEtcdTls`), and only a client presenting the client
   * certificate may connect. `false` serves plaintext with no client authentication, so any
   * local user can read and write every key: for tests only.
   */
  tls: { dir: string } | false;
  /** Client port on 127.0.0.1. @default 0 (a free port) */
  clientPort?: number;
  /** Peer port on 127.0.0.1. @default 0 (a free port) */
  peerPort?: number;
  /** The etcd executable, a name looked up on PATH or a path. @default 'etcd' */
  binary?: string;
  /** How long etcd may take to serve clients. @default 30000 */
  readyTimeoutMs?: number;
  /** Receives each line etcd writes to stderr (zap JSON, one object a line). */
  onLog?: (line: string) => void;
}

/**
 * zap messages that mean the client listener is serving. With `--logger=zap` 3.4 logs only the
 * "serving client traffic ..." one for its listener, "insecurely" on an http URL and "securely"
 * on an https one (the first is its capnslog text); 3.5 and later log both.
 */
const READY_MESSAGES = new Set([
  'ready to serve client requests',
  'serving client traffic insecurely; this is strongly discouraged!',
  'serving client traffic securely',
]);
const STOP_GRACE_MS = 10_000;
const LOG_TAIL_LINES = 20;

/**
 * Starts a private single-member etcd listening on 127.0.0.1 only, and resolves once it serves
 * clients. With `tls`, both ports require a certificate of the private etcd CA
 * (`--client-cert-auth`, `--peer-client-cert-auth`). A leftover etcd of an earlier crash that
 * still holds this data dir (named by `<dataDir>/etcd.pid`) is killed first. Where util-linux
 * `setpriv` exists, etcd gets a parent death signal, so it dies with this process even on
 * SIGKILL.
 *
 * @throws ConfigError for a bad option.
 * @throws UnavailableError if the binary is missing, etcd exits before it is ready, or it is
 *   not ready within `readyTimeoutMs` (it is killed then); the message holds etcd's last log lines.
 */
export async function startEmbeddedEtcd(opts: EmbeddedEtcdOptions): Promise<EmbeddedEtcd> {
  if (!opts.dataDir) throw new ConfigError('dataDir', 'must not be empty');
  checkPort('clientPort', opts.clientPort);
  checkPort('peerPort', opts.peerPort);
  const readyTimeoutMs = opts.readyTimeoutMs ?? 30_000;
  if (!Number.isFinite(readyTimeoutMs) || readyTimeoutMs <= 0) {
    throw new ConfigError('readyTimeoutMs', 'must be a positive number of milliseconds');
  }

  const dataDir = path.resolve(opts.dataDir);
  const binaryName = opts.binary ?? 'etcd';
  const binary = await findExecutable(binaryName);
  if (binary === undefined) throw missingBinary(binaryName);

  const pidFile = await prepareDataDir(dataDir);

  const tls = opts.tls === false ? undefined : await ensureEtcdTls(opts.tls.dir);
  const [clientPort, peerPort] = await pickPorts(opts.clientPort, opts.peerPort);
  const scheme = tls === undefined ? 'http' : 'https';
  const clientUrl = `${scheme}://127.0.0.1:${clientPort}`;
  const peerUrl = `${scheme}://127.0.0.1:${peerPort}`;
  const [command, args] = await etcdCommand(
    binary,
    etcdFlags(dataDir, clientUrl, peerUrl, tls?.server),
  );

  const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const logTail: string[] = [];
  let onReady: (() => void) | undefined;
  // Read stderr for the whole life of etcd: a full pipe would block it.
  createInterface({ input: child.stderr, crlfDelay: Infinity }).on('line', (line) => {
    logTail.push(line);
    if (logTail.length > LOG_TAIL_LINES) logTail.shift();
    opts.onLog?.(line);
    if (onReady !== undefined && READY_MESSAGES.has(zapMessage(line) ?? '')) onReady();
  });
  const { exited, spawnError } = watchExit(child);

  // Fallback for a normal exit of this process where setpriv is missing.
  const killOnExit = (): void => void child.kill('SIGKILL');
  process.once('exit', killOnExit);
  void exited.then(() => process.removeListener('exit', killOnExit));

  const stop = once(async () => {
    if (!(await settlesWithin(exited, 0))) {
      child.kill('SIGTERM');
      if (!(await settlesWithin(exited, STOP_GRACE_MS))) {
        child.kill('SIGKILL');
        await exited;
      }
    }
    await removePidFile(pidFile, child.pid);
  });

  const ready = new Promise<void>((resolve) => (onReady = resolve));
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), readyTimeoutMs);
  });
  let started = false;
  try {
    if (child.pid !== undefined) {
      await writePidFile(pidFile, child.pid);
    }
    const outcome = await Promise.race([
      ready.then(() => 'ready' as const),
      exited.then(() => 'exited' as const),
      timedOut,
    ]);
    if (outcome === 'ready') {
      started = true;
      return { endpoint: clientUrl, tls: tls?.client, tlsRenewed: tls?.renewed, stop, exited };
    }
    if (outcome === 'timeout') child.kill('SIGKILL');
    await stop();

    const error = spawnError();
    if (isErrno(error, 'ENOENT')) throw missingBinary(binaryName, error);
    if (error !== undefined) {
      throw new UnavailableError(`cannot start ${binary}: ${String(error)}`, { cause: error });
    }
    const what =
      outcome === 'timeout'
        ? `was not ready within ${readyTimeoutMs} ms and was killed`
        : `exited (${describeExit(child)}) before it was ready`;
    throw new UnavailableError(
      `embedded etcd ${what}. Data dir ${dataDir}. Common causes: another etcd holds the data ` +
        `dir ("db file is flocked"), a port is in use, or the data dir is corrupt. ` +
        `Last log lines:\n${logTail.map(formatLogLine).join('\n')}`,
    );
  } finally {
    clearTimeout(timer);
    if (!started) await stop();
  }
}

/** etcd's flags: one member named `citadel` on loopback URLs, with mutual TLS given `tls`. */
function etcdFlags(
  dataDir: string,
  clientUrl: string,
  peerUrl: string,
  tls: EtcdServerTls | undefined,
): string[] {
  const name = 'citadel';
  const tlsArgs =
    tls === undefined
      ? []
      : [
          '--client-cert-auth',
          `--trusted-ca-file=${tls.caFile}`,
          `--cert-file=${tls.certFile}`,
          `--key-file=${tls.keyFile}`,
          // A single member never dials a peer, but its peer port must not take strangers.
          '--peer-client-cert-auth',
          `--peer-trusted-ca-file=${tls.caFile}`,
          `--peer-cert-file=${tls.certFile}`,
          `--peer-key-file=${tls.keyFile}`,
        ];
  return [
    `--name=${name}`,
    `--data-dir=${dataDir}`,
    `--listen-client-urls=${clientUrl}`,
    `--advertise-client-urls=${clientUrl}`,
    `--listen-peer-urls=${peerUrl}`,
    `--initial-advertise-peer-urls=${peerUrl}`,
    `--initial-cluster=${name}=${peerUrl}`,
    '--logger=zap',
    '--log-outputs=stderr',
    '--auto-compaction-mode=revision',
    '--auto-compaction-retention=10000',
    `--quota-backend-bytes=${4 * 1024 ** 3}`,
    '--snapshot-count=10000',
    ...tlsArgs,
  ];
}

/** The command and arguments that run etcd: under `setpriv --pdeathsig KILL` where it exists. */
async function etcdCommand(binary: string, etcdArgs: string[]): Promise<[string, string[]]> {
  // setpriv execs etcd in place (same pid); the death signal is tied to the forking thread,
  // which for child_process is Node's main thread.
  const setpriv = await findExecutable('setpriv');
  return setpriv === undefined
    ? [binary, etcdArgs]
    : [setpriv, ['--pdeathsig', 'KILL', '--', binary, ...etcdArgs]];
}

function missingBinary(name: string, cause?: unknown): UnavailableError {
  return new UnavailableError(
    `etcd executable ${JSON.stringify(name)} not found: install Debian's etcd-server package ` +
      `(apt-get install etcd-server), or pass --etcd-endpoints to use an external etcd`,
    { cause },
  );
}

function checkPort(field: string, port: number | undefined): void {
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new ConfigError(field, 'must be an integer from 0 to 65535 (0: pick a free port)');
  }
}

/** Resolves a command name on PATH (or a path) to an executable file; undefined if there is none. */
async function findExecutable(name: string): Promise<string | undefined> {
  const candidates = name.includes('/')
    ? [path.resolve(name)]
    : (process.env['PATH'] ?? '')
        .split(path.delimiter)
        .filter((dir) => dir !== '')
        .map((dir) => path.join(dir, name));
  for (const candidate of candidates) {
    try {
      await fs.access(candidate, fsConstants.X_OK);
      if ((await fs.stat(candidate)).isFile()) return candidate;
    } catch (err) {
      if (!isErrno(err, 'ENOENT', 'EACCES', 'ENOTDIR')) throw err;
    }
  }
  return undefined;
}

/** Free loopback ports for the ones not given; distinct because both probes stay open together. */
async function pickPorts(...wanted: (number | undefined)[]): Promise<number[]> {
  const probes: net.Server[] = [];
  try {
    const ports: number[] = [];
    for (const port of wanted) {
      if (port) {
        ports.push(port);
        continue;
      }
      const server = net.createServer();
      probes.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen({ host: '127.0.0.1', port: 0, exclusive: true }, resolve);
      });
      ports.push((server.address() as net.AddressInfo).port);
    }
    return ports;
  } finally {
    await Promise.all(
      probes.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}

function watchExit(child: ChildProcess): {
  exited: Promise<number | null>;
  spawnError: () => Error | undefined;
} {
  let error: Error | undefined;
  const exited = new Promise<number | null>((resolve) => {
    // 'close' comes after 'exit' once stderr is drained, so the log tail is complete.
    child.once('close', (code: number | null) => resolve(code));
    child.once('error', (err) => {
      // Only a failed spawn has no pid; other errors (a failed kill) leave the process running.
      if (child.pid === undefined) {
        error = err;
        resolve(null);
      }
    });
  });
  return { exited, spawnError: () => error };
}

function describeExit(child: ChildProcess): string {
  return child.signalCode !== null ? `signal ${child.signalCode}` : `code ${child.exitCode}`;
}

/** The `msg` of a zap JSON log line, if it is one. */
function zapMessage(line: string): string | undefined {
  if (!line.startsWith('{')) return undefined;
  try {
    const entry: unknown = JSON.parse(line);
    if (typeof entry === 'object' && entry !== null && 'msg' in entry) {
      return typeof entry.msg === 'string' ? entry.msg : undefined;
    }
  } catch {
    // Not JSON: Go runtime or gRPC output.
  }
  return undefined;
}

/** `level msg {other fields}` for zap lines (timestamps and callers only add noise to an error). */
function formatLogLine(line: string): string {
  if (zapMessage(line) === undefined) return `  ${line}`;
  const fields = JSON.parse(line) as Record<string, unknown>;
  const { level, msg } = fields;
  for (const key of ['level', 'msg', 'ts', 'caller']) delete fields[key];
  const rest = Object.keys(fields).length > 0 ? ` ${JSON.stringify(fields)}` : '';
  return `  ${String(level)} ${String(msg)}${rest}`;
}

async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([promise.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let result: Promise<void> | undefined;
  return () => (result ??= fn());
}
