/**
 * The table of citadel-server options: each option declared once (flag, config key, kind,
 * default, bounds, help), and the ServerOptions type derived from it. server-options.ts
 * validates against it; option-flags.ts derives the flags and config keys from it. The bottom
 * of the server: it imports nothing of server/.
 */

/** The environment variable holding the base64 master key; never a flag or config key. */
export const MASTER_KEY_ENV = 'CITADEL_MASTER_KEY';

/**
 * How an option is written and checked: `string`; `hostPort` ("host:port", "[::1]:port");
 * `list` of strings (a flag repeats or takes a comma-separated list); `boolean` (a bare flag);
 * `int` and `seconds` (integers, between `min` and `max`); `duration` (whole milliseconds,
 * written "30s", "1m" in flags and the config file, between `min` and `max`).
 */
export type OptionKind = OptionRow['kind'];

/** Where a user sets an option: a flag and a config key, or only the environment. */
type OptionSource =
  | {
      /** The flag, e.g. `--leader-ttl`; also the field named by validation errors. */
      readonly flag: `--${string}`;
      /** The flag's placeholder in --help (`--listen <host:port>`); by default from the kind. */
      readonly arg?: string;
      /** The key in the YAML config file. */
      readonly configKey: string;
      /** The --help description; the "(default ...)" hint is added from `default`. */
      readonly help: string;
    }
  | { /** The environment variable. */ readonly env: string };

type Numeric = { readonly kind: 'int' | 'seconds' | 'duration'; readonly default: number };

/** One option. A row without `default` is optional (undefined when not given). */
export type OptionRow = OptionSource &
  (
    | { readonly kind: 'string'; readonly default?: string; readonly nonEmpty?: boolean }
    | { readonly kind: 'hostPort'; readonly default: string; readonly emptyDisables?: boolean }
    | { readonly kind: 'list'; readonly default: readonly string[] }
    | { readonly kind: 'boolean'; readonly default: boolean }
    | (Numeric & { readonly min: number; readonly max: number })
  );

/** citadel-server's options, in --help order. Each key is the option's name in ServerOptions. */
export const SERVER_OPTION_TABLE = {
  /** Folder for the embedded etcd, the master key, ca.crt and admin.key. */
  dataDir: {
    kind: 'string',
    flag: '--data-dir',
    arg: 'dir',
    configKey: 'dataDir',
    default: '.citadel',
    nonEmpty: true,
    help: 'data folder: embedded etcd, master key, ca.crt, admin.key',
  },
  /** Address of the gRPC API. */
  listen: {
    kind: 'hostPort',
    flag: '--listen',
    configKey: 'listen',
    default: '127.0.0.1:7443',
    help: 'gRPC API address',
  },
  /** External etcd endpoints (http(s)://host:port). Empty starts the embedded etcd. */
  etcdEndpoints: {
    kind: 'list',
    flag: '--etcd-endpoints',
    arg: 'urls',
    configKey: 'etcdEndpoints',
    default: [],
    help: 'external etcd, comma-separated http(s)://host:port; none starts the embedded etcd',
  },
  /** Prefix of every key in etcd; lets clusters share an etcd. */
  etcdPrefix: {
    kind: 'string',
    flag: '--etcd-prefix',
    arg: 'prefix',
    configKey: 'etcdPrefix',
    default: '/citadel/',
    help: 'key prefix in etcd',
  },
  /** External etcd: PEM CA that signed etcd's certificate. Unset: the system's CAs. */
  etcdCaFile: {
    kind: 'string',
    flag: '--etcd-ca-file',
    arg: 'file',
    configKey: 'etcdCaFile',
    help: "external etcd over https: PEM CA of etcd's certificate (default: the system's CAs)",
  },
  /** External etcd: PEM client certificate (with its chain) to present; needs etcdKeyFile. */
  etcdCertFile: {
    kind: 'string',
    flag: '--etcd-cert-file',
    arg: 'file',
    configKey: 'etcdCertFile',
    help: 'external etcd: PEM client certificate to present (with --etcd-key-file)',
  },
  /** External etcd: PEM private key of etcdCertFile. */
  etcdKeyFile: {
    kind: 'string',
    flag: '--etcd-key-file',
    arg: 'file',
    configKey: 'etcdKeyFile',
    help: 'external etcd: PEM private key of --etcd-cert-file',
  },
  /** Leader lease TTL in seconds. */
  leaderTtlSeconds: {
    kind: 'seconds',
    flag: '--leader-ttl',
    configKey: 'leaderTtlSeconds',
    default: 5,
    min: 2,
    max: 60,
    help: 'leader lease TTL, 2-60',
  },
  /** Firings later than this (ms) are "missed". */
  missedRunThresholdMs: {
    kind: 'duration',
    flag: '--missed-run-threshold',
    configKey: 'missedRunThreshold',
    default: 15_000,
    min: 1000,
    max: 86_400_000,
    help: 'firings later than this are missed',
  },
  /** Extra time (ms) past a timeout before an unreported execution is timed out. */
  timeoutGraceMs: {
    kind: 'duration',
    flag: '--timeout-grace',
    configKey: 'timeoutGrace',
    default: 30_000,
    min: 0,
    max: 3_600_000,
    help: 'extra time past a timeout before timed_out',
  },
  /** Serve plaintext gRPC (local debugging only). */
  insecure: {
    kind: 'boolean',
    flag: '--insecure',
    configKey: 'insecure',
    default: false,
    help: 'serve plaintext gRPC, for local debugging only',
  },
  /** Extra DNS names or IPs for the serving certificate. */
  tlsSans: {
    kind: 'list',
    flag: '--tls-san',
    arg: 'name',
    configKey: 'tlsSans',
    default: [],
    help: 'extra DNS name or IP in the serving certificate (repeatable)',
  },
  /** Address of the Prometheus endpoint, or "" to disable. */
  metricsAddr: {
    kind: 'hostPort',
    flag: '--metrics-addr',
    configKey: 'metricsAddr',
    default: '127.0.0.1:9464',
    emptyDisables: true,
    help: 'Prometheus endpoint, "" to disable',
  },
  /** Log level (fatal, error, warn, info, debug, trace; silent). */
  logLevel: {
    kind: 'string',
    flag: '--log-level',
    arg: 'level',
    configKey: 'logLevel',
    default: 'info',
    help: 'fatal, error, warn, info, debug or trace',
  },
  /** File holding the base64 master key. Unset: CITADEL_MASTER_KEY or <dataDir>/master.key. */
  masterKeyFile: {
    kind: 'string',
    flag: '--master-key-file',
    arg: 'file',
    configKey: 'masterKeyFile',
    help: `file holding the base64 master key (or set ${MASTER_KEY_ENV})`,
  },
  /** Base64 master key from the environment (CITADEL_MASTER_KEY). */
  masterKeyEnv: { kind: 'string', env: MASTER_KEY_ENV },
  /** How long (ms) SIGTERM waits for in-flight calls. */
  shutdownGraceMs: {
    kind: 'duration',
    flag: '--shutdown-grace',
    configKey: 'shutdownGrace',
    default: 10_000,
    min: 0,
    max: 600_000,
    help: 'how long SIGTERM waits for in-flight calls',
  },
  /** Failed authentications allowed per peer (and per credential) in a window. */
  authFailureLimit: {
    kind: 'int',
    flag: '--auth-failure-limit',
    configKey: 'authFailureLimit',
    default: 20,
    min: 1,
    max: 1_000_000,
    help: 'failed authentications per peer (and per credential) before throttling',
  },
  /** That window (ms). */
  authFailureWindowMs: {
    kind: 'duration',
    flag: '--auth-failure-window',
    configKey: 'authFailureWindow',
    default: 60_000,
    min: 1000,
    max: 86_400_000,
    help: 'window of that limit',
  },
  /** OAuth 2.0 JWTs: a JWKS file. Setting it (or the URL) switches JWTs on. */
  jwtJwksFile: {
    kind: 'string',
    flag: '--jwt-jwks-file',
    arg: 'file',
    configKey: 'jwtJwksFile',
    help: 'accept OAuth 2.0 JWTs signed by keys in this JWKS file',
  },
  /** OAuth 2.0 JWTs: a JWKS https URL. */
  jwtJwksUrl: {
    kind: 'string',
    flag: '--jwt-jwks-url',
    arg: 'url',
    configKey: 'jwtJwksUrl',
    help: 'accept OAuth 2.0 JWTs signed by keys from this https JWKS URL',
  },
  /** Required `iss` of tokens. */
  jwtIssuer: {
    kind: 'string',
    flag: '--jwt-issuer',
    arg: 'iss',
    configKey: 'jwtIssuer',
    help: 'required token issuer',
  },
  /** Required `aud` of tokens. */
  jwtAudience: {
    kind: 'string',
    flag: '--jwt-audience',
    arg: 'aud',
    configKey: 'jwtAudience',
    help: 'required token audience',
  },
  /** Claim naming the caller's role. */
  jwtRoleClaim: {
    kind: 'string',
    flag: '--jwt-role-claim',
    arg: 'name',
    configKey: 'jwtRoleClaim',
    default: 'citadel_role',
    help: 'claim holding the role',
  },
  /** Clock skew tolerated on exp / nbf, seconds. */
  jwtLeewaySeconds: {
    kind: 'seconds',
    flag: '--jwt-leeway',
    configKey: 'jwtLeewaySeconds',
    default: 30,
    min: 0,
    max: 300,
    help: 'clock skew allowed on exp/nbf',
  },
  /** Create unknown token subjects as viewers. */
  jwtAutoProvision: {
    kind: 'boolean',
    flag: '--jwt-auto-provision',
    configKey: 'jwtAutoProvision',
    default: false,
    help: 'create unknown token subjects as viewers',
  },
  /** Least time (ms) between two fetches of the JWKS URL (unknown key ids refetch). */
  jwtJwksCooldownMs: {
    kind: 'duration',
    flag: '--jwt-jwks-cooldown',
    configKey: 'jwtJwksCooldown',
    default: 30_000,
    min: 1000,
    max: 3_600_000,
    help: 'least time between two fetches of the JWKS URL',
  },
  /** Address of the worker endpoint (mutual TLS only). */
  workerListen: {
    kind: 'hostPort',
    flag: '--worker-listen',
    configKey: 'workerListen',
    default: '127.0.0.1:7444',
    help: 'worker endpoint, mutual TLS',
  },
  /** Lifetime (ms) of worker certificates. */
  workerCertTtlMs: {
    kind: 'duration',
    flag: '--worker-cert-ttl',
    configKey: 'workerCertTtl',
    default: 3_600_000,
    min: 10_000,
    max: 30 * 86_400_000,
    help: 'lifetime of worker certificates',
  },
  /** How often (ms) agents send heartbeats. */
  heartbeatIntervalMs: {
    kind: 'duration',
    flag: '--heartbeat-interval',
    configKey: 'heartbeatInterval',
    default: 2000,
    min: 100,
    max: 60_000,
    help: 'how often agents send heartbeats',
  },
  /** A worker's lease TTL in seconds; must exceed two heartbeat intervals. */
  workerLeaseTtlSeconds: {
    kind: 'seconds',
    flag: '--worker-lease-ttl',
    configKey: 'workerLeaseTtlSeconds',
    default: 10,
    min: 2,
    max: 300,
    help: 'worker lease TTL, 2-300',
  },
  /** Largest difference (ms) allowed between a heartbeat's send time and the server's clock. */
  heartbeatMaxSkewMs: {
    kind: 'duration',
    flag: '--heartbeat-max-skew',
    configKey: 'heartbeatMaxSkew',
    default: 30_000,
    min: 1000,
    max: 3_600_000,
    help: 'clock skew allowed on heartbeat send times',
  },
  /** Refused heartbeats of one worker within the window that block it. */
  heartbeatRefusalLimit: {
    kind: 'int',
    flag: '--heartbeat-refusal-limit',
    configKey: 'heartbeatRefusalLimit',
    default: 5,
    min: 1,
    max: 1_000_000,
    help: 'refused heartbeats in the window that block a worker',
  },
  /** That window (ms). */
  heartbeatRefusalWindowMs: {
    kind: 'duration',
    flag: '--heartbeat-refusal-window',
    configKey: 'heartbeatRefusalWindow',
    default: 60_000,
    min: 1000,
    max: 86_400_000,
    help: 'window of that limit',
  },
} as const satisfies Record<string, OptionRow>;

type Table = typeof SERVER_OPTION_TABLE;
type Name = keyof Table;
interface KindValue {
  string: string;
  hostPort: string;
  list: string[];
  boolean: boolean;
  int: number;
  seconds: number;
  duration: number;
}
type Values = { -readonly [K in keyof Table]: KindValue[Table[K]['kind']] };
type WithDefault = { [K in Name]: Table[K] extends { default: unknown } ? K : never }[Name];

/**
 * The compiled options, one property per table row (its JSDoc is the row's): a row with a
 * `default` gives a required property, one without an optional one.
 */
export type ServerOptions = Pick<Values, WithDefault> &
  Partial<Pick<Values, Exclude<Name, WithDefault>>>;

export type ServerOptionsInput = Partial<ServerOptions>;

/** The table's rows as [name, row] pairs, in table order. */
export const SERVER_OPTION_ROWS = Object.entries(SERVER_OPTION_TABLE) as [Name, OptionRow][];
