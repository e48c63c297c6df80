/**
 * Server options: documented defaults, validated once at start into a readonly object.
 * Only server/main.ts reads flags, environment and the config file.
 */
import { constants as fsConstants, accessSync, statSync } from 'node:fs';
import { ConfigError } from '../common/errors.js';
import { parseHostPort } from './api/host-port.js';

export { parseHostPort };

export interface ServerOptions {
  /** Folder for the embedded etcd, the master key, ca.crt and admin.key. @default ".citadel" */
  dataDir: string;
  /** Address of the gRPC API. @default "127.0.0.1:7443" */
  listen: string;
  /** External etcd endpoints (http://host:port). Empty starts the embedded etcd. @default [] */
  etcdEndpoints: string[];
  /** Prefix of every key in etcd; lets clusters share an etcd. @default "/citadel/" */
  etcdPrefix: string;
  /** External etcd: PEM CA that signed etcd's certificate. Unset: the system's CAs. */
  etcdCaFile?: string;
  /** External etcd: PEM client certificate (with its chain) to present; needs etcdKeyFile. */
  etcdCertFile?: string;
  /** External etcd: PEM private key of etcdCertFile. */
  etcdKeyFile?: string;
  /** Leader lease TTL in seconds (2-60). @default 5 */
  leaderTtlSeconds: number;
  /** Firings later than this are "missed". @default 15000 */
  missedRunThresholdMs: number;
  /** Extra time past a timeout before an unreported execution is timed out. @default 30000 */
  timeoutGraceMs: number;
  /** Serve plaintext gRPC (local debugging only). @default false */
  insecure: boolean;
  /** Extra DNS names or IPs for the serving certificate. @default [] */
  tlsSans: string[];
  /** Address of the Prometheus endpoint, or "" to disable. @default "127.0.0.1:9464" */
  metricsAddr: string;
  /** Log level (fatal, error, warn, info, debug, trace). @default "info" */
  logLevel: string;
  /** File holding the base64 master key. Unset: CITADEL_MASTER_KEY or <dataDir>/master.key. */
  masterKeyFile?: string;
  /** Base64 master key from the environment (CITADEL_MASTER_KEY). */
  masterKeyEnv?: string;
  /** How long SIGTERM waits for in-flight calls. @default 10000 */
  shutdownGraceMs: number;
  /** Failed authentications allowed per peer (and per credential) in a window. @default 20 */
  authFailureLimit: number;
  /** That window. @default 60000 */
  authFailureWindowMs: number;
  /** OAuth 2.0 JWTs: a JWKS file. Setting it (or the URL) switches JWTs on. */
  jwtJwksFile?: string;
  /** OAuth 2.0 JWTs: a JWKS https URL. */
  jwtJwksUrl?: string;
  /** Required `iss` of tokens. */
  jwtIssuer?: string;
  /** Required `aud` of tokens. */
  jwtAudience?: string;
  /** Claim naming the caller's role. @default "citadel_role" */
  jwtRoleClaim: string;
  /** Least time between two fetches of the JWKS URL (unknown key ids refetch). @default 30000 */
  jwtJwksCooldownMs: number;
  /** Clock skew tolerated on exp / nbf, seconds. @default 30 */
  jwtLeewaySeconds: number;
  /** Create unknown token subjects as viewers. @default false */
  jwtAutoProvision: boolean;
  /** Address of the worker endpoint (mutual TLS only). @default "127.0.0.1:7444" */
  workerListen: string;
  /** Lifetime of worker certificates (10 s to 30 days). @default 3600000 */
  workerCertTtlMs: number;
  /** How often agents send heartbeats (100 ms to 1 min). @default 2000 */
  heartbeatIntervalMs: number;
  /** A worker's lease TTL in seconds (2-300); must exceed two heartbeat intervals. @default 10 */
  workerLeaseTtlSeconds: number;
  /** Largest difference allowed between a heartbeat's send time and the server's clock. @default 30000 */
  heartbeatMaxSkewMs: number;
  /** Refused heartbeats of one worker within the window that block it. @default 5 */
  heartbeatRefusalLimit: number;
  /** That window. @default 60000 */
  heartbeatRefusalWindowMs: number;
}

export type ServerOptionsInput = Partial<ServerOptions>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function intInRange(value: number, field: string, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

/**
 * Applies defaults and validates.
 * @throws ConfigError naming the bad option.
 */
export function compileServerOptions(input: ServerOptionsInput): Readonly<ServerOptions> {
  const o: ServerOptions = {
    dataDir: input.dataDir ?? '.citadel',
    listen: input.listen ?? '127.0.0.1:7443',
    etcdEndpoints: input.etcdEndpoints ?? [],
    etcdPrefix: input.etcdPrefix ?? '/citadel/',
    etcdCaFile: input.etcdCaFile,
    etcdCertFile: input.etcdCertFile,
    etcdKeyFile: input.etcdKeyFile,
    leaderTtlSeconds: input.leaderTtlSeconds ?? 5,
    missedRunThresholdMs: input.missedRunThresholdMs ?? 15_000,
    timeoutGraceMs: input.timeoutGraceMs ?? 30_000,
    insecure: input.insecure ?? false,
    tlsSans: input.tlsSans ?? [],
    metricsAddr: input.metricsAddr ?? '127.0.0.1:9464',
    logLevel: input.logLevel ?? 'info',
    masterKeyFile: input.masterKeyFile,
    masterKeyEnv: input.masterKeyEnv,
    shutdownGraceMs: input.shutdownGraceMs ?? 10_000,
    authFailureLimit: input.authFailureLimit ?? 20,
    authFailureWindowMs: input.authFailureWindowMs ?? 60_000,
    jwtJwksFile: input.jwtJwksFile,
    jwtJwksUrl: input.jwtJwksUrl,
    jwtIssuer: input.jwtIssuer,
    jwtAudience: input.jwtAudience,
    jwtRoleClaim: input.jwtRoleClaim ?? 'citadel_role',
    jwtLeewaySeconds: input.jwtLeewaySeconds ?? 30,
    jwtJwksCooldownMs: input.jwtJwksCooldownMs ?? 30_000,
    jwtAutoProvision: input.jwtAutoProvision ?? false,
    workerListen: input.workerListen ?? '127.0.0.1:7444',
    workerCertTtlMs: input.workerCertTtlMs ?? 3_600_000,
    heartbeatIntervalMs: input.heartbeatIntervalMs ?? 2000,
    workerLeaseTtlSeconds: input.workerLeaseTtlSeconds ?? 10,
    heartbeatMaxSkewMs: input.heartbeatMaxSkewMs ?? 30_000,
    heartbeatRefusalLimit: input.heartbeatRefusalLimit ?? 5,
    heartbeatRefusalWindowMs: input.heartbeatRefusalWindowMs ?? 60_000,
  };
  if (o.dataDir === '') throw new ConfigError('--data-dir', 'must not be empty');
  parseHostPort(o.listen, '--listen');
  if (o.metricsAddr !== '') parseHostPort(o.metricsAddr, '--metrics-addr');
  for (const e of o.etcdEndpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(e)) {
      throw new ConfigError('--etcd-endpoints', `${JSON.stringify(e)} is not http(s)://host:port`);
    }
  }
  checkEtcdTls(o);
  if (!/^\/[A-Za-z0-9._/-]*\/$/.test(o.etcdPrefix)) {
    throw new ConfigError('--etcd-prefix', 'must start and end with "/" (for example /citadel/)');
  }
  intInRange(o.leaderTtlSeconds, '--leader-ttl', 2, 60);
  intInRange(o.missedRunThresholdMs, '--missed-run-threshold', 1000, 86_400_000);
  intInRange(o.timeoutGraceMs, '--timeout-grace', 0, 3_600_000);
  intInRange(o.shutdownGraceMs, '--shutdown-grace', 0, 600_000);
  intInRange(o.authFailureLimit, '--auth-failure-limit', 1, 1_000_000);
  intInRange(o.authFailureWindowMs, '--auth-failure-window', 1000, 86_400_000);
  if (o.jwtJwksFile !== undefined || o.jwtJwksUrl !== undefined) {
    if (o.jwtJwksFile !== undefined && o.jwtJwksUrl !== undefined) {
      throw new ConfigError('--jwt-jwks-file', 'give --jwt-jwks-file or --jwt-jwks-url, not both');
    }
    if (!o.jwtIssuer) throw new ConfigError('--jwt-issuer', 'is required with a JWKS');
    if (!o.jwtAudience) throw new ConfigError('--jwt-audience', 'is required with a JWKS');
    if (o.jwtJwksUrl !== undefined && !o.jwtJwksUrl.startsWith('https://')) {
      throw new ConfigError('--jwt-jwks-url', 'must be an https:// URL');
    }
  } else if (o.jwtIssuer !== undefined || o.jwtAudience !== undefined || o.jwtAutoProvision) {
    throw new ConfigError('--jwt-jwks-file', 'JWT settings need --jwt-jwks-file or --jwt-jwks-url');
  }
  intInRange(o.jwtLeewaySeconds, '--jwt-leeway', 0, 300);
  intInRange(o.jwtJwksCooldownMs, '--jwt-jwks-cooldown', 1000, 3_600_000);
  if (!/^[A-Za-z0-9_:./-]{1,100}$/.test(o.jwtRoleClaim)) {
    throw new ConfigError('--jwt-role-claim', 'must be a claim name');
  }
  parseHostPort(o.workerListen, '--worker-listen');
  intInRange(o.workerCertTtlMs, '--worker-cert-ttl', 10_000, 30 * 86_400_000);
  intInRange(o.heartbeatIntervalMs, '--heartbeat-interval', 100, 60_000);
  intInRange(o.workerLeaseTtlSeconds, '--worker-lease-ttl', 2, 300);
  if (o.workerLeaseTtlSeconds * 1000 < 2 * o.heartbeatIntervalMs) {
    throw new ConfigError(
      '--worker-lease-ttl',
      'must be at least two heartbeat intervals, or one late heartbeat deregisters a worker',
    );
  }
  intInRange(o.heartbeatMaxSkewMs, '--heartbeat-max-skew', 1000, 3_600_000);
  intInRange(o.heartbeatRefusalLimit, '--heartbeat-refusal-limit', 1, 1_000_000);
  intInRange(o.heartbeatRefusalWindowMs, '--heartbeat-refusal-window', 1000, 86_400_000);
  if (!LOG_LEVELS.includes(o.logLevel)) {
    throw new ConfigError('--log-level', `must be one of ${LOG_LEVELS.join(', ')}`);
  }
  return Object.freeze(o);
}

/** The external etcd's TLS files: only with external endpoints, all https, files readable. */
function checkEtcdTls(o: ServerOptions): void {
  const files = [
    ['--etcd-ca-file', o.etcdCaFile],
    ['--etcd-cert-file', o.etcdCertFile],
    ['--etcd-key-file', o.etcdKeyFile],
  ] as const;
  const given = files.filter(([, file]) => file !== undefined);
  const schemes = new Set(o.etcdEndpoints.map((e) => e.slice(0, e.indexOf(':'))));
  if (schemes.size > 1) {
    throw new ConfigError('--etcd-endpoints', 'must be all http:// or all https://');
  }
  if (given.length === 0) return;
  const [flag] = given[0]!;
  if (o.etcdEndpoints.length === 0) {
    throw new ConfigError(
      flag,
      'needs --etcd-endpoints (the embedded etcd makes and uses its own certificates)',
    );
  }
  if (schemes.has('http')) {
    throw new ConfigError('--etcd-endpoints', `must be https:// when ${flag} is given`);
  }
  if (o.etcdCertFile !== undefined && o.etcdKeyFile === undefined) {
    throw new ConfigError('--etcd-key-file', 'is required with --etcd-cert-file');
  }
  if (o.etcdKeyFile !== undefined && o.etcdCertFile === undefined) {
    throw new ConfigError('--etcd-cert-file', 'is required with --etcd-key-file');
  }
  for (const [name, file] of files) {
    if (file === undefined) continue;
    if (file === '') throw new ConfigError(name, 'must not be empty');
    try {
      if (!statSync(file).isFile()) throw new ConfigError(name, `${file} is not a regular file`);
      accessSync(file, fsConstants.R_OK);
    } catch (err) {
      if (err instanceof ConfigError) throw err;
      throw new ConfigError(name, `cannot read ${file}: ${(err as Error).message}`);
    }
  }
}
