/**
 * citadel-server's command line: turns argv, the YAML config file and the environment into
 * ServerOptionsInput (flags win over the file). Flags, config keys and --help all derive from
 * the option table.
 */
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError as CommanderArgError, Option } from 'commander';
import { parse as parseYaml } from 'yaml';
import { formatDuration, parseDuration } from '../../common/duration.js';
import { ConfigError } from '../../common/errors.js';
import { productVersion } from '../../common/version.js';
import {
  SERVER_OPTION_ROWS,
  type OptionKind,
  type OptionRow,
  type ServerOptionsInput,
} from './option-table.js';

/** A row the command line and the config file can set. */
type CliRow = Extract<OptionRow, { flag: string }>;

const CLI_ROWS = SERVER_OPTION_ROWS.filter(
  (entry): entry is [(typeof entry)[0], CliRow] => 'flag' in entry[1],
);

/** Config-file key to option name. */
const CONFIG_KEYS = new Map(CLI_ROWS.map(([name, row]) => [row.configKey, name]));

/** The --help placeholder of a kind, unless the row names its own. */
const ARG_OF_KIND: Record<OptionKind, string> = {
  string: 'value',
  hostPort: 'host:port',
  list: 'value',
  boolean: '',
  int: 'n',
  seconds: 'seconds',
  duration: 'duration',
};

const collect = (v: string, prev: string[] = []) => [...prev, ...v.split(',').filter(Boolean)];

const duration = (field: string) => (v: string) => {
  try {
    return parseDuration(v, field);
  } catch (err) {
    throw new CommanderArgError(err instanceof Error ? err.message : String(err));
  }
};

/** The " (default ...)" hint of --help; none for empty lists, booleans and unset options. */
function defaultHint(row: CliRow): string {
  switch (row.kind) {
    case 'string':
      return row.default === undefined ? '' : ` (default ${JSON.stringify(row.default)})`;
    case 'hostPort':
      return ` (default ${JSON.stringify(row.default)})`;
    case 'int':
    case 'seconds':
      return ` (default ${row.default})`;
    case 'duration':
      return ` (default ${formatDuration(row.default)})`;
    case 'list':
      return row.default.length === 0 ? '' : ` (default ${row.default.join(',')})`;
    case 'boolean':
      return '';
  }
}

/** The commander option of a row, with the parser of its kind. */
function flagOption(row: CliRow): Option {
  const help = row.help + defaultHint(row);
  if (row.kind === 'boolean') return new Option(row.flag, help);
  const option = new Option(`${row.flag} <${row.arg ?? ARG_OF_KIND[row.kind]}>`, help);
  switch (row.kind) {
    case 'list':
      return option.argParser(collect);
    case 'int':
    case 'seconds':
      return option.argParser((v) => Number(v));
    case 'duration':
      return option.argParser(duration(row.flag));
    case 'string':
    case 'hostPort':
      return option;
  }
}

/** Parses `argv` (the arguments after the script) and exits on --help, --version or a bad flag. */
function parseFlags(argv: readonly string[]): { config?: string; input: ServerOptionsInput } {
  const program = new Command('citadel-server')
    .description(
      'Citadel control plane replica: gRPC API, scheduler and leader election over etcd.',
    )
    .version(productVersion())
    .option('--config <file>', 'YAML config file (keys as in the README); flags override it');
  const options = CLI_ROWS.map(([name, row]) => [name, flagOption(row)] as const);
  for (const [, option] of options) program.addOption(option);
  program.parse([...argv], { from: 'user' });
  const given = program.opts<Record<string, unknown>>();
  const input: Record<string, unknown> = {};
  for (const [name, option] of options) {
    const value = given[option.attributeName()];
    if (value !== undefined) input[name] = value;
  }
  return { config: given.config as string | undefined, input };
}

/** One config-file value, as its row's kind reads it; `field` is `<file>: <key>`. */
function configValue(row: CliRow, value: unknown, field: string): unknown {
  const str = () => {
    if (typeof value !== 'string') throw new ConfigError(field, 'must be a string');
    return value;
  };
  switch (row.kind) {
    case 'string':
    case 'hostPort':
      return str();
    case 'list':
      if (!Array.isArray(value) || value.some((x) => typeof x !== 'string')) {
        throw new ConfigError(field, 'must be a list of strings');
      }
      return value as string[];
    case 'int':
    case 'seconds':
      // As before the table: any YAML value goes through Number(); the bounds check refuses NaN.
      return Number(value);
    case 'duration':
      return parseDuration(str(), field);
    case 'boolean':
      // As before the table: only YAML `true` switches a boolean on.
      return value === true;
  }
}

/** Reads the YAML config file into option inputs; unknown keys are an error. */
export function readConfigFile(file: string): ServerOptionsInput {
  let doc: unknown;
  try {
    doc = parseYaml(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError('--config', `cannot read ${file}: ${(err as Error).message}`);
  }
  return parseConfig(doc, file);
}

/** Turns a parsed YAML document into option inputs; `file` names the fields of errors. */
export function parseConfig(doc: unknown, file: string): ServerOptionsInput {
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) {
    throw new ConfigError('--config', 'must be a YAML mapping');
  }
  const raw = doc as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!CONFIG_KEYS.has(key)) {
      const known = [...CONFIG_KEYS.keys()].join(', ');
      throw new ConfigError(`${file}: ${key}`, `unknown key (known: ${known})`);
    }
  }
  const input: Record<string, unknown> = {};
  for (const [name, row] of CLI_ROWS) {
    const value = raw[row.configKey];
    if (value !== undefined) input[name] = configValue(row, value, `${file}: ${row.configKey}`);
  }
  return input;
}

/**
 * The option inputs of a citadel-server command line: the config file (`--config`), overridden
 * by flags, plus the options only the environment sets. Exits on --help, --version or a bad flag.
 * @param argv the arguments after the script (`process.argv.slice(2)`).
 * @throws ConfigError (or InvalidArgumentError for a bad duration) naming `<file>: <key>`.
 */
export function serverOptionsInput(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
): ServerOptionsInput {
  const { config, input: fromFlags } = parseFlags(argv);
  const fromFile = config ? readConfigFile(config) : {};
  const fromEnv: Record<string, unknown> = {};
  for (const [name, row] of SERVER_OPTION_ROWS) {
    if ('env' in row && env[row.env] !== undefined) fromEnv[name] = env[row.env];
  }
  return { ...fromFile, ...fromFlags, ...fromEnv };
}
