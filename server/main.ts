#!/usr/bin/env node
/**
 * citadel-server entry point: reads flags, environment and the config file (flags win), starts
 * a replica, and shuts it down gracefully on SIGTERM / SIGINT.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { productVersion } from '../common/version.js';
import { Command, InvalidArgumentError as CommanderArgError } from 'commander';
import { parse as parseYaml } from 'yaml';
import { parseDuration } from '../common/duration.js';
import { CitadelError, ConfigError } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { CitadelServer } from './server.js';
import { compileServerOptions, type ServerOptionsInput } from './server-options.js';

const CONFIG_KEYS = new Set([
  'jwtJwksCooldown',
  'workerListen',
  'workerCertTtl',
  'heartbeatInterval',
  'workerLeaseTtlSeconds',
  'heartbeatMaxSkew',
  'heartbeatRefusalLimit',
  'heartbeatRefusalWindow',
  'dataDir',
  'listen',
  'etcdEndpoints',
  'etcdPrefix',
  'etcdCaFile',
  'etcdCertFile',
  'etcdKeyFile',
  'leaderTtlSeconds',
  'missedRunThreshold',
  'timeoutGrace',
  'insecure',
  'tlsSans',
  'metricsAddr',
  'logLevel',
  'masterKeyFile',
  'shutdownGrace',
  'authFailureLimit',
  'authFailureWindow',
  'jwtJwksFile',
  'jwtJwksUrl',
  'jwtIssuer',
  'jwtAudience',
  'jwtRoleClaim',
  'jwtLeewaySeconds',
  'jwtAutoProvision',
]);

const duration = (field: string) => (v: string) => {
  try {
    return parseDuration(v, field);
  } catch (err) {
    throw new CommanderArgError(err instanceof Error ? err.message : String(err));
  }
};

const collect = (v: string, prev: string[] = []) => [...prev, ...v.split(',').filter(Boolean)];

/** Reads the YAML config file into option inputs; unknown keys are an error. */
function readConfigFile(file: string): ServerOptionsInput {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${file}: ${(err as Error).message}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc))
    throw new ConfigError('--config', 'must be a YAML mapping');
  const raw = doc as Record<string, unknown>;
  for (const k of Object.keys(raw)) {
    if (!CONFIG_KEYS.has(k))
      throw new ConfigError(`${file}: ${k}`, `unknown key (known: ${[...CONFIG_KEYS].join(', ')})`);
  }
  const out: ServerOptionsInput = {};
  const str = (k: string) => {
    if (raw[k] === undefined) return undefined;
    if (typeof raw[k] !== 'string') throw new ConfigError(`${file}: ${k}`, 'must be a string');
    return raw[k];
  };
  const list = (k: string) => {
    const v = raw[k];
    if (v === undefined) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))
      throw new ConfigError(`${file}: ${k}`, 'must be a list of strings');
    return v as string[];
  };
  out.dataDir = str('dataDir');
  out.listen = str('listen');
  out.etcdEndpoints = list('etcdEndpoints');
  out.etcdPrefix = str('etcdPrefix');
  out.etcdCaFile = str('etcdCaFile');
  out.etcdCertFile = str('etcdCertFile');
  out.etcdKeyFile = str('etcdKeyFile');
  if (raw.leaderTtlSeconds !== undefined) out.leaderTtlSeconds = Number(raw.leaderTtlSeconds);
  const mrt = str('missedRunThreshold');
  if (mrt !== undefined)
    out.missedRunThresholdMs = parseDuration(mrt, `${file}: missedRunThreshold`);
  const tg = str('timeoutGrace');
  if (tg !== undefined) out.timeoutGraceMs = parseDuration(tg, `${file}: timeoutGrace`);
  if (raw.insecure !== undefined) out.insecure = raw.insecure === true;
  out.tlsSans = list('tlsSans');
  out.metricsAddr = str('metricsAddr');
  out.logLevel = str('logLevel');
  out.masterKeyFile = str('masterKeyFile');
  const sg = str('shutdownGrace');
  if (sg !== undefined) out.shutdownGraceMs = parseDuration(sg, `${file}: shutdownGrace`);
  if (raw.authFailureLimit !== undefined) out.authFailureLimit = Number(raw.authFailureLimit);
  out.jwtJwksFile = str('jwtJwksFile');
  out.jwtJwksUrl = str('jwtJwksUrl');
  out.jwtIssuer = str('jwtIssuer');
  out.jwtAudience = str('jwtAudience');
  out.jwtRoleClaim = str('jwtRoleClaim');
  if (raw.jwtLeewaySeconds !== undefined) out.jwtLeewaySeconds = Number(raw.jwtLeewaySeconds);
  if (raw.jwtAutoProvision !== undefined) out.jwtAutoProvision = raw.jwtAutoProvision === true;
  const afw = str('authFailureWindow');
  if (afw !== undefined) out.authFailureWindowMs = parseDuration(afw, `${file}: authFailureWindow`);
  out.workerListen = str('workerListen');
  const jc = str('jwtJwksCooldown');
  if (jc !== undefined) out.jwtJwksCooldownMs = parseDuration(jc, `${file}: jwtJwksCooldown`);
  const durationKey = (k: string) => {
    const v = str(k);
    return v === undefined ? undefined : parseDuration(v, `${file}: ${k}`);
  };
  out.workerCertTtlMs = durationKey('workerCertTtl');
  out.heartbeatIntervalMs = durationKey('heartbeatInterval');
  out.heartbeatMaxSkewMs = durationKey('heartbeatMaxSkew');
  out.heartbeatRefusalWindowMs = durationKey('heartbeatRefusalWindow');
  if (raw.workerLeaseTtlSeconds !== undefined) {
    out.workerLeaseTtlSeconds = Number(raw.workerLeaseTtlSeconds);
  }
  if (raw.heartbeatRefusalLimit !== undefined) {
    out.heartbeatRefusalLimit = Number(raw.heartbeatRefusalLimit);
  }
  return Object.fromEntries(Object.entries(out).filter(([, v]) => v !== undefined));
}

interface Flags {
  config?: string;
  dataDir?: string;
  listen?: string;
  etcdEndpoints?: string[];
  etcdPrefix?: string;
  etcdCaFile?: string;
  etcdCertFile?: string;
  etcdKeyFile?: string;
  leaderTtl?: number;
  missedRunThreshold?: number;
  timeoutGrace?: number;
  insecure?: boolean;
  tlsSan?: string[];
  metricsAddr?: string;
  logLevel?: string;
  masterKeyFile?: string;
  shutdownGrace?: number;
  authFailureLimit?: number;
  authFailureWindow?: number;
  jwtJwksFile?: string;
  jwtJwksUrl?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  jwtRoleClaim?: string;
  jwtLeeway?: number;
  jwtAutoProvision?: boolean;
  jwtJwksCooldown?: number;
  workerListen?: string;
  workerCertTtl?: number;
  heartbeatInterval?: number;
  workerLeaseTtl?: number;
  heartbeatMaxSkew?: number;
  heartbeatRefusalLimit?: number;
  heartbeatRefusalWindow?: number;
}

async function main(): Promise<void> {
  const program = new Command('citadel-server')
    .description(
      'Citadel control plane replica: gRPC API, scheduler and leader election over etcd.',
    )
    .version(productVersion())
    .option('--config <file>', 'YAML config file (keys as in the README); flags override it')
    .option(
      '--data-dir <dir>',
      'data folder: embedded etcd, master key, ca.crt, admin.key (default ".citadel")',
    )
    .option('--listen <host:port>', 'gRPC API address (default "127.0.0.1:7443")')
    .option(
      '--etcd-endpoints <urls>',
      'external etcd, comma-separated http(s)://host:port; none starts the embedded etcd',
      collect,
    )
    .option('--etcd-prefix <prefix>', 'key prefix in etcd (default "/citadel/")')
    .option(
      '--etcd-ca-file <file>',
      "external etcd over https: PEM CA of etcd's certificate (default: the system's CAs)",
    )
    .option(
      '--etcd-cert-file <file>',
      'external etcd: PEM client certificate to present (with --etcd-key-file)',
    )
    .option('--etcd-key-file <file>', 'external etcd: PEM private key of --etcd-cert-file')
    .option('--leader-ttl <seconds>', 'leader lease TTL, 2-60 (default 5)', (v) => Number(v))
    .option(
      '--missed-run-threshold <duration>',
      'firings later than this are missed (default 15s)',
      duration('--missed-run-threshold'),
    )
    .option(
      '--timeout-grace <duration>',
      'extra time past a timeout before timed_out (default 30s)',
      duration('--timeout-grace'),
    )
    .option('--insecure', 'serve plaintext gRPC, for local debugging only')
    .option(
      '--tls-san <name>',
      'extra DNS name or IP in the serving certificate (repeatable)',
      collect,
    )
    .option(
      '--metrics-addr <host:port>',
      'Prometheus endpoint, "" to disable (default "127.0.0.1:9464")',
    )
    .option('--log-level <level>', 'fatal, error, warn, info, debug or trace (default "info")')
    .option(
      '--master-key-file <file>',
      'file holding the base64 master key (or set CITADEL_MASTER_KEY)',
    )
    .option(
      '--shutdown-grace <duration>',
      'how long SIGTERM waits for in-flight calls (default 10s)',
      duration('--shutdown-grace'),
    )
    .option(
      '--auth-failure-limit <n>',
      'failed authentications per peer (and per credential) before throttling (default 20)',
      (v) => Number(v),
    )
    .option(
      '--auth-failure-window <duration>',
      'window of that limit (default 1m)',
      duration('--auth-failure-window'),
    )
    .option('--jwt-jwks-file <file>', 'accept OAuth 2.0 JWTs signed by keys in this JWKS file')
    .option('--jwt-jwks-url <url>', 'accept OAuth 2.0 JWTs signed by keys from this https JWKS URL')
    .option('--jwt-issuer <iss>', 'required token issuer')
    .option('--jwt-audience <aud>', 'required token audience')
    .option('--jwt-role-claim <name>', 'claim holding the role (default "citadel_role")')
    .option('--jwt-leeway <seconds>', 'clock skew allowed on exp/nbf (default 30)', (v) =>
      Number(v),
    )
    .option('--jwt-auto-provision', 'create unknown token subjects as viewers')
    .option(
      '--jwt-jwks-cooldown <duration>',
      'least time between two fetches of the JWKS URL (default 30s)',
      duration('--jwt-jwks-cooldown'),
    )
    .option('--worker-listen <host:port>', 'worker endpoint, mutual TLS (default "127.0.0.1:7444")')
    .option(
      '--worker-cert-ttl <duration>',
      'lifetime of worker certificates (default 1h)',
      duration('--worker-cert-ttl'),
    )
    .option(
      '--heartbeat-interval <duration>',
      'how often agents send heartbeats (default 2s)',
      duration('--heartbeat-interval'),
    )
    .option('--worker-lease-ttl <seconds>', 'worker lease TTL, 2-300 (default 10)', (v) =>
      Number(v),
    )
    .option(
      '--heartbeat-max-skew <duration>',
      'clock skew allowed on heartbeat send times (default 30s)',
      duration('--heartbeat-max-skew'),
    )
    .option(
      '--heartbeat-refusal-limit <n>',
      'refused heartbeats in the window that block a worker (default 5)',
      (v) => Number(v),
    )
    .option(
      '--heartbeat-refusal-window <duration>',
      'window of that limit (default 1m)',
      duration('--heartbeat-refusal-window'),
    );
  program.parse();
  const flags = program.opts<Flags>();

  const fromFile = flags.config ? readConfigFile(flags.config) : {};
  const fromFlags: ServerOptionsInput = Object.fromEntries(
    Object.entries({
      dataDir: flags.dataDir,
      listen: flags.listen,
      etcdEndpoints: flags.etcdEndpoints,
      etcdPrefix: flags.etcdPrefix,
      etcdCaFile: flags.etcdCaFile,
      etcdCertFile: flags.etcdCertFile,
      etcdKeyFile: flags.etcdKeyFile,
      leaderTtlSeconds: flags.leaderTtl,
      missedRunThresholdMs: flags.missedRunThreshold,
      timeoutGraceMs: flags.timeoutGrace,
      insecure: flags.insecure,
      tlsSans: flags.tlsSan,
      metricsAddr: flags.metricsAddr,
      logLevel: flags.logLevel,
      masterKeyFile: flags.masterKeyFile,
      shutdownGraceMs: flags.shutdownGrace,
      authFailureLimit: flags.authFailureLimit,
      authFailureWindowMs: flags.authFailureWindow,
      jwtJwksFile: flags.jwtJwksFile,
      jwtJwksUrl: flags.jwtJwksUrl,
      jwtIssuer: flags.jwtIssuer,
      jwtAudience: flags.jwtAudience,
      jwtRoleClaim: flags.jwtRoleClaim,
      jwtLeewaySeconds: flags.jwtLeeway,
      jwtAutoProvision: flags.jwtAutoProvision,
      jwtJwksCooldownMs: flags.jwtJwksCooldown,
      workerListen: flags.workerListen,
      workerCertTtlMs: flags.workerCertTtl,
      heartbeatIntervalMs: flags.heartbeatInterval,
      workerLeaseTtlSeconds: flags.workerLeaseTtl,
      heartbeatMaxSkewMs: flags.heartbeatMaxSkew,
      heartbeatRefusalLimit: flags.heartbeatRefusalLimit,
      heartbeatRefusalWindowMs: flags.heartbeatRefusalWindow,
    }).filter(([, v]) => v !== undefined),
  );
  const options = compileServerOptions({
    ...fromFile,
    ...fromFlags,
    masterKeyEnv: process.env.CITADEL_MASTER_KEY,
  });
  // Read once; children (the embedded etcd) must not inherit it through their environment.
  delete process.env.CITADEL_MASTER_KEY;
  const logger = createLogger({ name: 'citadel-server', level: options.logLevel });
  const server = await CitadelServer.start(options, logger);
  if (server.adminKey) {
    // Shown once, on stderr rather than in the JSON log, so log shipping never carries it.
    const keyPath = path.join(options.dataDir, 'admin.key');
    process.stderr.write(
      `\nCitadel cluster created. Admin API key (shown once; also saved to ${keyPath}, mode 0600):\n\n  ${server.adminKey}\n\n`,
    );
  }

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  if (err instanceof CitadelError) {
    process.stderr.write(`citadel-server: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(
    `citadel-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
  );
  process.exit(1);
});
