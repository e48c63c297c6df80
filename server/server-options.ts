/**
 * Server options: applies the table's defaults and validates, once at start, into a readonly
 * object (options/option-table.ts declares the options). Only the binary's entry (server/main.ts
 * with server/options/option-flags.ts) reads flags, environment and the config file.
 */
import { constants as fsConstants, accessSync, statSync } from 'node:fs';
import { ConfigError } from '../common/errors.js';
import { parseHostPort } from './api/host-port.js';
import {
  SERVER_OPTION_ROWS,
  type OptionRow,
  type ServerOptions,
  type ServerOptionsInput,
} from './options/option-table.js';

export type { ServerOptions, ServerOptionsInput } from './options/option-table.js';

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

function intInRange(value: number, field: string, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(field, `must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** The per-field rules a row declares: non-empty, host:port, integer bounds. */
function checkField(row: OptionRow, value: unknown): void {
  const field = 'flag' in row ? row.flag : row.env;
  switch (row.kind) {
    case 'string':
      if (row.nonEmpty === true && value === '') throw new ConfigError(field, 'must not be empty');
      return;
    case 'hostPort':
      if (row.emptyDisables !== true || value !== '') parseHostPort(value as string, field);
      return;
    case 'int':
    case 'seconds':
    case 'duration':
      intInRange(value as number, field, row.min, row.max);
      return;
    case 'list':
    case 'boolean':
      return;
  }
}

/**
 * Applies defaults and validates: first each field against its row, then the rules that
 * involve several fields or a format.
 * @throws ConfigError naming the bad option (by its flag).
 */
export function compileServerOptions(input: ServerOptionsInput): Readonly<ServerOptions> {
  const compiled: Record<string, unknown> = {};
  for (const [name, row] of SERVER_OPTION_ROWS) {
    const fallback = 'default' in row ? row.default : undefined;
    compiled[name] = input[name] ?? (typeof fallback === 'object' ? [...fallback] : fallback);
    checkField(row, compiled[name]);
  }
  const o = compiled as unknown as ServerOptions;
  for (const e of o.etcdEndpoints) {
    if (!/^https?:\/\/[^/\s]+$/.test(e)) {
      throw new ConfigError('--etcd-endpoints', `${JSON.stringify(e)} is not http(s)://host:port`);
    }
  }
  checkEtcdTls(o);
  if (!/^\/[A-Za-z0-9._/-]*\/$/.test(o.etcdPrefix)) {
    throw new ConfigError('--etcd-prefix', 'must start and end with "/" (for example /citadel/)');
  }
  checkJwt(o);
  if (!/^[A-Za-z0-9_:./-]{1,100}$/.test(o.jwtRoleClaim)) {
    throw new ConfigError('--jwt-role-claim', 'must be a claim name');
  }
  if (o.workerLeaseTtlSeconds * 1000 < 2 * o.heartbeatIntervalMs) {
    throw new ConfigError(
      '--worker-lease-ttl',
      'must be at least two heartbeat intervals, or one late heartbeat deregisters a worker',
    );
  }
  if (!LOG_LEVELS.includes(o.logLevel)) {
    throw new ConfigError('--log-level', `must be one of ${LOG_LEVELS.join(', ')}`);
  }
  return Object.freeze(o);
}

/** JWT settings: one JWKS source, then issuer and audience; none of them without a JWKS. */
function checkJwt(o: ServerOptions): void {
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
