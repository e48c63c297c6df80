/**
 * Resolves how citadelctl reaches and authenticates to the server. Each setting comes from the
 * first source that has it: flags, then environment, then the config file, then the default.
 *
 * The API key itself is only ever read from a file or from CITADEL_API_KEY, never from a flag:
 * command lines are visible to every local user through `ps`. A client certificate (a service
 * certificate from `citadelctl service-cert issue`) authenticates too; with one, the API key is
 * optional.
 */

import { type KeyObject, X509Certificate, createPrivateKey } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join, resolve } from 'node:path';

import { parse as parseYaml } from 'yaml';

import { ConfigError } from '../common/errors.js';

/** Default server address. */
export const DEFAULT_SERVER = 'localhost:7443';
const DEFAULT_PORT = '7443';

/** Connection flags as given on the command line; all optional. */
export interface ConnectionFlags {
  server?: string;
  ca?: string;
  apiKeyFile?: string;
  insecure?: boolean;
  config?: string;
  /** Name to verify the server certificate against, when it differs from the dialled host. */
  tlsServerName?: string;
  /** Client certificate (PEM) to present in the TLS handshake. */
  cert?: string;
  /** Private key (PEM, unencrypted) of `cert`. */
  key?: string;
}

/** The environment variables consulted; `process.env` fits. */
export type ConnectionEnv = Readonly<Record<string, string | undefined>>;

/** Settings a client needs, fully resolved and read. */
export interface ConnectionSettings {
  /** `host:port` to dial. @default "localhost:7443" */
  readonly server: string;
  /** Plaintext instead of TLS. @default false */
  readonly insecure: boolean;
  /** Path of the CA bundle, if one was configured; unset means the system trust store. */
  readonly caFile?: string;
  /** Contents of `caFile`. */
  readonly caPem?: Buffer;
  /** Bearer token, trimmed; unset only when a client certificate authenticates instead. */
  readonly apiKey?: string;
  /** Where the key came from, for messages: "CITADEL_API_KEY" or a file path. Never the key. */
  readonly apiKeySource?: string;
  /** Path of the client certificate presented in the handshake, if one was configured. */
  readonly certFile?: string;
  /** Contents of `certFile`. */
  readonly certPem?: Buffer;
  /** Path of the private key of `certFile`. */
  readonly keyFile?: string;
  /** Contents of `keyFile`. Secret. */
  readonly keyPem?: Buffer;
  readonly tlsServerName?: string;
  /** The config file that was read, if any. */
  readonly configFile?: string;
}

/** Keys of the YAML config file. */
interface FileConfig {
  server?: string;
  ca?: string;
  apiKeyFile?: string;
  insecure?: boolean;
  cert?: string;
  key?: string;
}

const FILE_KEYS: Readonly<Record<keyof FileConfig, 'string' | 'boolean'>> = {
  server: 'string',
  ca: 'string',
  apiKeyFile: 'string',
  insecure: 'boolean',
  cert: 'string',
  key: 'string',
};

/** A file setting and where it came from: a flag, a variable or a config file key. */
interface FileSource {
  /** For messages: "--cert", "CITADEL_CERT" or "<config file>: cert". */
  readonly name: string;
  readonly path: string;
}

/**
 * The config file to read: `--config` if given (it must exist), otherwise
 * `$XDG_CONFIG_HOME/citadel/config.yaml` or `~/.config/citadel/config.yaml` if present.
 */
export function configFilePath(
  flags: ConnectionFlags,
  env: ConnectionEnv,
  homeDir: string = homedir(),
): { path: string; explicit: boolean } {
  if (flags.config !== undefined) return { path: resolve(flags.config), explicit: true };
  const base = nonEmpty(env.XDG_CONFIG_HOME) ?? join(homeDir, '.config');
  return { path: join(base, 'citadel', 'config.yaml'), explicit: false };
}

/**
 * Resolves and reads the connection settings.
 *
 * @param flags command-line values.
 * @param env environment, e.g. `process.env`: CITADEL_SERVER, CITADEL_CA, CITADEL_API_KEY,
 *   CITADEL_API_KEY_FILE (CITADEL_API_KEY wins if both are set), CITADEL_INSECURE=1,
 *   CITADEL_CERT, CITADEL_KEY, XDG_CONFIG_HOME.
 * @param homeDir home directory for the default config path and `~/` in the config file.
 * @throws ConfigError naming the flag, variable or config key at fault: an unreadable config
 *   file or CA, a bad config key, a missing or empty API key (missing is fine with a client
 *   certificate), a certificate without its key or the other way round, a certificate with
 *   insecure, or a key that is not the certificate's.
 */
export function resolveConnection(
  flags: ConnectionFlags,
  env: ConnectionEnv,
  homeDir: string = homedir(),
): ConnectionSettings {
  const { path: configPath, explicit } = configFilePath(flags, env, homeDir);
  const haveFile = explicit || existsSync(configPath);
  const file = haveFile ? readConfigFile(configPath, homeDir) : {};
  // Relative paths in the config file are relative to the file, as in kubeconfig.
  const fromFile = (p: string | undefined): string | undefined =>
    p === undefined ? undefined : resolve(dirname(configPath), p);

  const server = normaliseServer(
    nonEmpty(flags.server) ?? nonEmpty(env.CITADEL_SERVER) ?? file.server ?? DEFAULT_SERVER,
  );
  const insecure =
    flags.insecure === true || (parseEnvBool(env, 'CITADEL_INSECURE') ?? file.insecure ?? false);

  // Each file setting from its flag, else its variable, else its config file key.
  const source = (
    flag: '--ca' | '--cert' | '--key',
    envName: string,
    fileKey: 'ca' | 'cert' | 'key',
  ): FileSource | undefined => {
    const fromFlag = flags[fileKey];
    if (fromFlag !== undefined) return { name: flag, path: fromFlag };
    const fromEnv = nonEmpty(env[envName]);
    if (fromEnv !== undefined) return { name: envName, path: fromEnv };
    const path = fromFile(file[fileKey]);
    return path === undefined ? undefined : { name: `${configPath}: ${fileKey}`, path };
  };

  let caFile: string | undefined;
  let caPem: Buffer | undefined;
  if (!insecure) {
    const ca = source('--ca', 'CITADEL_CA', 'ca');
    if (ca !== undefined) {
      caFile = ca.path;
      caPem = readRequired(ca.name, ca.path, 'CA certificate');
    }
  }
  const identity = readClientIdentity(
    source('--cert', 'CITADEL_CERT', 'cert'),
    source('--key', 'CITADEL_KEY', 'key'),
    insecure,
  );

  const key = readApiKey(flags, env, fromFile(file.apiKeyFile), configPath, identity !== undefined);
  const tlsServerName = nonEmpty(flags.tlsServerName);
  return {
    server,
    insecure,
    ...(key !== undefined && { apiKey: key.value, apiKeySource: key.source }),
    ...(caFile !== undefined && { caFile, caPem }),
    ...identity,
    ...(tlsServerName !== undefined && { tlsServerName }),
    ...(haveFile && { configFile: configPath }),
  };
}

/**
 * Reads the client certificate and its key, which come together or not at all, and checks
 * locally that the key is the certificate's, so a mix-up fails here rather than in the handshake.
 */
function readClientIdentity(
  cert: FileSource | undefined,
  key: FileSource | undefined,
  insecure: boolean,
): Pick<ConnectionSettings, 'certFile' | 'certPem' | 'keyFile' | 'keyPem'> | undefined {
  if (cert === undefined) {
    if (key === undefined) return undefined;
    throw new ConfigError(
      key.name,
      'a private key needs its certificate: set --cert or CITADEL_CERT',
    );
  }
  if (key === undefined) {
    throw new ConfigError(
      cert.name,
      'a client certificate needs its private key: set --key or CITADEL_KEY',
    );
  }
  if (insecure) {
    throw new ConfigError(
      cert.name,
      'a client certificate needs TLS; turn off insecure (--insecure, CITADEL_INSECURE, config)',
    );
  }
  const certPem = readRequired(cert.name, cert.path, 'client certificate');
  const keyPem = readRequired(key.name, key.path, 'private key');
  let parsed: X509Certificate;
  try {
    parsed = new X509Certificate(certPem);
  } catch {
    throw new ConfigError(cert.name, `"${cert.path}" is not a PEM certificate`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch {
    throw new ConfigError(key.name, `"${key.path}" is not an unencrypted PEM private key`);
  }
  if (!parsed.checkPrivateKey(privateKey)) {
    throw new ConfigError(key.name, `"${key.path}" is not the private key of "${cert.path}"`);
  }
  return { certFile: cert.path, certPem, keyFile: key.path, keyPem };
}

function readApiKey(
  flags: ConnectionFlags,
  env: ConnectionEnv,
  fileKeyPath: string | undefined,
  configPath: string,
  optional: boolean,
): { value: string; source: string } | undefined {
  const envKey = nonEmpty(env.CITADEL_API_KEY);
  const envKeyFile = nonEmpty(env.CITADEL_API_KEY_FILE);
  let name: string;
  let path: string;
  if (flags.apiKeyFile !== undefined) {
    [name, path] = ['--api-key-file', flags.apiKeyFile];
  } else if (envKey !== undefined) {
    return { value: envKey, source: 'CITADEL_API_KEY' };
  } else if (envKeyFile !== undefined) {
    [name, path] = ['CITADEL_API_KEY_FILE', envKeyFile];
  } else if (fileKeyPath !== undefined) {
    [name, path] = [`${configPath}: apiKeyFile`, fileKeyPath];
  } else if (optional) {
    // A client certificate authenticates the calls instead.
    return undefined;
  } else {
    throw new ConfigError(
      '--api-key-file',
      'no API key: set CITADEL_API_KEY or --api-key-file, or a client certificate with ' +
        '--cert and --key; the server wrote the first admin key to <data-dir>/admin.key',
    );
  }
  const value = readRequired(name, path, 'API key file').toString('utf8').trim();
  if (value === '') throw new ConfigError(name, `API key file "${path}" is empty`);
  return { value, source: path };
}

function readRequired(name: string, path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'does not exist' : `cannot be read (${code ?? String(err)})`;
    throw new ConfigError(name, `${what} "${path}" ${reason}`);
  }
}

function readConfigFile(path: string, homeDir: string): FileConfig {
  const text = readRequired('--config', path, 'config file').toString('utf8');
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(path, `not valid YAML: ${err instanceof Error ? err.message : ''}`);
  }
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError(path, `must be a YAML mapping of ${Object.keys(FILE_KEYS).join(', ')}`);
  }
  const config: Record<string, string | boolean> = {};
  for (const [key, value] of Object.entries(doc)) {
    if (key === 'apiKey') {
      throw new ConfigError(
        `${path}: apiKey`,
        'the key itself does not belong in the config file; put it in its own file and set apiKeyFile',
      );
    }
    const type = (FILE_KEYS as Record<string, string | undefined>)[key];
    if (type === undefined) {
      const known = Object.keys(FILE_KEYS).join(', ');
      throw new ConfigError(`${path}: ${key}`, `unknown key; known keys are ${known}`);
    }
    if (typeof value !== type || value === '') {
      throw new ConfigError(`${path}: ${key}`, `must be a non-empty ${type}`);
    }
    config[key] = type === 'string' ? expandHome(value as string, homeDir) : (value as boolean);
  }
  return config;
}

function expandHome(path: string, homeDir: string): string {
  if (path === '~') return homeDir;
  return path.startsWith('~/') && !isAbsolute(path) ? join(homeDir, path.slice(2)) : path;
}

function parseEnvBool(env: ConnectionEnv, name: string): boolean | undefined {
  const raw = env[name]?.trim().toLowerCase();
  if (raw === undefined || raw === '') return undefined;
  if (raw === '1' || raw === 'true') return true;
  if (raw === '0' || raw === 'false') return false;
  throw new ConfigError(name, `"${env[name]}" is not 1 or 0`);
}

/** Adds the default port to a bare host, so `localhost` dials `localhost:7443`. */
function normaliseServer(address: string): string {
  if (address.includes('://') || address.startsWith('unix:') || /:\d+$/.test(address)) {
    return address;
  }
  // A bare name or a bracketed IPv6 literal; anything else is left for grpc-js to judge.
  if (!address.includes(':') || /^\[.*\]$/.test(address)) return `${address}:${DEFAULT_PORT}`;
  return address;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === '' ? undefined : value.trim();
}
