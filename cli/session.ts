/**
 * What every citadelctl command shares: the global options, the connection opened from them,
 * output helpers, and the one place that turns an error into a message and an exit code.
 */

import { type Command, CommanderError, Option } from 'commander';

import { parseDuration } from '../common/duration.js';
import { ConfigError, InvalidArgumentError } from '../common/errors.js';
import { type CitadelClient, createCitadelClient, isServiceError, statusName } from './client.js';
import { type ConnectionSettings, resolveConnection } from './config.js';
import { sanitize } from './format.js';

/** Output format chosen with `-o`. */
export type OutputFormat = 'table' | 'json';

/** The global options, merged over the command chain. */
export interface GlobalFlags {
  server?: string;
  ca?: string;
  apiKeyFile?: string;
  insecure?: boolean;
  tlsServerName?: string;
  config?: string;
  /** Client certificate to present, e.g. a service certificate. */
  cert?: string;
  /** Private key of `cert`. */
  key?: string;
  output: OutputFormat;
  /** Deadline of each unary call in milliseconds. @default 30000 */
  deadlineMs: number;
}

const GLOBAL_KEYS = [
  'server',
  'ca',
  'apiKeyFile',
  'insecure',
  'tlsServerName',
  'config',
  'cert',
  'key',
  'output',
  'timeout',
] as const;

/** Commands on which `--timeout` is the call deadline (elsewhere it may be a task field). */
const deadlineCommands = new WeakSet<Command>();

/**
 * Adds the global options to `cmd`. They go on the program (before the subcommand) and on every
 * leaf command (after it), so `citadelctl -o json task list` and `citadelctl task list -o json`
 * both work. Pass `callTimeout: false` where `--timeout` means something else, as on
 * `task create`; the call deadline is then given before the subcommand.
 */
export function addGlobalOptions(cmd: Command, opts: { callTimeout?: boolean } = {}): Command {
  const options = [
    new Option('--server <host:port>', 'server address (env CITADEL_SERVER) [localhost:7443]'),
    new Option(
      '--ca <file>',
      "cluster CA certificate, the server's <data-dir>/ca.crt (env CITADEL_CA)",
    ),
    new Option(
      '--api-key-file <file>',
      'file holding the API key (env CITADEL_API_KEY_FILE, or the key itself in CITADEL_API_KEY)',
    ),
    new Option(
      '--insecure',
      'plaintext without TLS, for local development (env CITADEL_INSECURE=1)',
    ),
    new Option('--tls-server-name <name>', 'verify the server certificate for this name instead'),
    new Option(
      '--cert <file>',
      'client certificate to authenticate with, e.g. from service-cert issue (env CITADEL_CERT)',
    ),
    new Option('--key <file>', 'private key of --cert (env CITADEL_KEY)'),
    new Option('--config <file>', 'config file [$XDG_CONFIG_HOME/citadel/config.yaml]'),
    new Option('-o, --output <format>', 'output format [table]').choices(['table', 'json']),
  ];
  if (opts.callTimeout !== false) {
    options.push(new Option('--timeout <duration>', 'deadline of each call [30s]'));
    deadlineCommands.add(cmd);
  }
  for (const option of options) cmd.addOption(option.helpGroup('Global Options:'));
  return cmd;
}

/**
 * Reads the global options of `cmd` and its ancestors; a value given nearer the leaf wins.
 * @throws InvalidArgumentError for a bad `--timeout`.
 */
export function readGlobalFlags(cmd: Command): GlobalFlags {
  const chain: Command[] = [];
  for (let c: Command | null = cmd; c !== null; c = c.parent) chain.unshift(c);
  const raw: Partial<Record<(typeof GLOBAL_KEYS)[number], unknown>> = {};
  for (const c of chain) {
    for (const key of GLOBAL_KEYS) {
      if (key === 'timeout' && !deadlineCommands.has(c)) continue;
      if (c.getOptionValueSource(key) === 'cli') raw[key] = c.getOptionValue(key);
    }
  }
  const text = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
  const timeout = text(raw.timeout);
  return {
    server: text(raw.server),
    ca: text(raw.ca),
    apiKeyFile: text(raw.apiKeyFile),
    insecure: raw.insecure === true,
    tlsServerName: text(raw.tlsServerName),
    config: text(raw.config),
    cert: text(raw.cert),
    key: text(raw.key),
    output: raw.output === 'json' ? 'json' : 'table',
    deadlineMs: timeout === undefined ? 30_000 : positiveDuration(timeout, '--timeout'),
  };
}

function positiveDuration(text: string, flag: string): number {
  const ms = parseDuration(text, flag);
  if (ms <= 0) throw new InvalidArgumentError(flag, 'must be longer than 0s');
  return ms;
}

/** An open connection for one command. */
export interface Session {
  readonly client: CitadelClient;
  readonly output: OutputFormat;
  readonly settings: ConnectionSettings;
}

// Hints for the operator, keyed by the error they explain; printed after its message.
const hints = new WeakMap<object, string>();

/**
 * Resolves the connection from the global flags and the environment, runs `fn` with a client,
 * and closes the client afterwards.
 * @throws ConfigError when the connection settings are unusable; whatever `fn` throws.
 */
export async function withSession<T>(
  globals: GlobalFlags,
  fn: (session: Session) => Promise<T>,
): Promise<T> {
  const settings = resolveConnection(globals, process.env);
  const client = createCitadelClient(settings, { deadlineMs: globals.deadlineMs });
  try {
    return await fn({ client, output: globals.output, settings });
  } catch (err) {
    const hint = isServiceError(err) ? hintFor(err.code, settings) : undefined;
    if (hint !== undefined) hints.set(err as object, hint);
    throw err;
  } finally {
    client.close();
  }
}

function hintFor(code: number, settings: ConnectionSettings): string | undefined {
  switch (statusName(code)) {
    case 'UNAVAILABLE':
      return !settings.insecure && settings.caFile === undefined
        ? `is the server up at ${settings.server}? Its cluster CA is <data-dir>/ca.crt; ` +
            'pass it with --ca or CITADEL_CA'
        : `is the server up at ${settings.server}?`;
    case 'UNAUTHENTICATED': {
      const credentials = [
        settings.apiKeySource === undefined ? '' : `the API key from ${settings.apiKeySource}`,
        settings.certFile === undefined ? '' : `the client certificate ${settings.certFile}`,
      ].filter((c) => c !== '');
      return `the server refused ${credentials.join(' or ')}`;
    }
    default:
      return undefined;
  }
}

/** Writes a line to standard output. */
export function printLine(text: string): void {
  process.stdout.write(`${text}\n`);
}

/** Writes `value` as pretty-printed JSON to standard output. */
export function printJson(value: unknown): void {
  printLine(JSON.stringify(value, protoDurations, 2));
}

/** Fields of the contract that are google.protobuf.Duration. */
const DURATION_FIELDS = new Set(['timeout', 'initialBackoff', 'maxBackoff', 'catchUpWindow']);

/**
 * JSON.stringify replacer: Durations as proto3 JSON strings ("90s", "0.250s"), as grpcurl and
 * other clients print them, rather than ts-proto's `{seconds, nanos}` objects.
 */
export function protoDurations(this: unknown, key: string, value: unknown): unknown {
  if (!DURATION_FIELDS.has(key) || value === null || typeof value !== 'object') return value;
  const { seconds, nanos } = value as { seconds?: unknown; nanos?: unknown };
  const s = Number(seconds ?? 0);
  const n = Number(nanos ?? 0);
  if (!Number.isFinite(s) || !Number.isFinite(n)) return value;
  return n === 0 ? `${s}s` : `${s}.${String(Math.abs(n)).padStart(9, '0').replace(/0+$/, '')}s`;
}

/** Prints `json` with `-o json`, otherwise the text `table` renders. */
export function printResult(output: OutputFormat, json: unknown, table: () => string): void {
  if (output === 'json') printJson(json);
  else printLine(table());
}

/** Writes a note for the operator to standard error, keeping standard output parseable. */
export function printNote(text: string): void {
  process.stderr.write(`citadelctl: ${text}\n`);
}

/**
 * Reports `err` on standard error and returns the exit code: 0 for help and version, 2 for
 * usage errors (commander's, and flags refused locally), 1 for everything else.
 */
export function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    // Commander has already printed its message.
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof InvalidArgumentError) {
    printNote(err.message);
    return 2;
  }
  if (err instanceof ConfigError) {
    printNote(err.message);
    return 1;
  }
  if (isServiceError(err)) {
    const details = err.details === '' ? '' : `: ${sanitize(err.details)}`;
    printNote(`${statusName(err.code)}${details}`);
    const hint = hints.get(err);
    if (hint !== undefined) process.stderr.write(`  hint: ${hint}\n`);
    return 1;
  }
  printNote(`unexpected error: ${err instanceof Error ? err.message : String(err)}`);
  return 1;
}

/**
 * Fetches one page from `firstToken`, or with `all` every page from there on, following
 * next_page_token until it comes back empty.
 */
export async function fetchPages<Page extends { nextPageToken: string }>(
  firstToken: string,
  all: boolean,
  fetchPage: (pageToken: string) => Promise<Page>,
): Promise<Page[]> {
  const pages: Page[] = [];
  const seen = new Set<string>([firstToken]);
  let token = firstToken;
  for (;;) {
    const page = await fetchPage(token);
    pages.push(page);
    if (!all || page.nextPageToken === '') return pages;
    // A token seen before would loop forever; better to stop with what we have.
    if (seen.has(page.nextPageToken)) throw new Error('the server repeated a page token');
    seen.add(page.nextPageToken);
    token = page.nextPageToken;
  }
}

/** Collects a repeatable option's values. */
export function collect(value: string, previous: string[] | undefined): string[] {
  return [...(previous ?? []), value];
}
