#!/usr/bin/env node
/**
 * citadel-agent: the worker binary. `join` gives the host a worker identity, `run` keeps it
 * registered (heartbeats, the Connect stream, certificate renewal), `status` shows what the
 * data folder records. The only module that reads flags and environment. Exit status 0 on
 * success, 1 when the server, the connection or the data folder fails, 2 for usage errors.
 */
import { ContainerRunner } from './container-runner.js';
import { Command, CommanderError, Option } from 'commander';

import { CitadelError, InvalidArgumentError } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { productVersion } from '../common/version.js';
import { Agent } from './agent.js';
import { compileJoinOptions, compileRunOptions, resolveDataDir } from './agent-options.js';
import { isServiceError, statusName } from './call-failure.js';
import { loadIdentity } from './identity.js';
import { joinCluster } from './join.js';
import { parseServerAddress } from './server-address.js';
import { dataPaths, readJoinState } from './state.js';
import { formatStatusReport, readStatusReport } from './status.js';

const DATA_DIR_HELP = 'data folder (env CITADEL_AGENT_DATA_DIR; default /var/lib/citadel-agent)';

interface JoinFlags {
  server?: string;
  token?: string;
  caHash?: string;
  dataDir?: string;
  keyType?: string;
  hostname?: string;
  force?: boolean;
}

async function joinCommand(flags: JoinFlags): Promise<void> {
  const options = compileJoinOptions(
    { ...flags, token: flags.token ?? process.env.CITADEL_JOIN_TOKEN },
    process.env,
  );
  const result = await joinCluster(options);
  if (result.dataDirWarning !== undefined) printNote(`warning: ${result.dataDirWarning}`);
  process.stdout.write(
    `joined as ${result.workerId}; run: citadel-agent run --data-dir ${result.dataDir}\n`,
  );
}

interface RunFlags {
  dataDir?: string;
  server?: string;
  logLevel?: string;
  slots?: string;
  maxTaskMemoryMb?: string;
  maxTaskCpus?: string;
  maxTaskPids?: string;
}

async function runCommand(flags: RunFlags): Promise<void> {
  const options = compileRunOptions(
    {
      dataDir: flags.dataDir,
      servers: flags.server,
      logLevel: flags.logLevel,
      slots: flags.slots,
      maxTaskMemoryMb: flags.maxTaskMemoryMb,
      maxTaskCpus: flags.maxTaskCpus,
      maxTaskPids: flags.maxTaskPids,
    },
    process.env,
  );
  const paths = dataPaths(options.dataDir);
  const state = await readJoinState(paths);
  const identity = await loadIdentity(paths);
  const servers =
    options.servers ?? state.servers.map((s) => parseServerAddress(s, `${paths.state}: servers`));
  const logger = createLogger({ name: 'citadel-agent', level: options.logLevel });
  const runner = new ContainerRunner({ workerId: state.workerId, logger });
  // Nothing runs yet: every container this worker labelled is an orphan of an earlier run.
  const orphans = await runner.reconcile(new Set());
  if (orphans.length > 0) logger.warn({ executionIds: orphans }, 'removed orphaned containers');
  const agent = new Agent(
    {
      paths,
      workerId: state.workerId,
      servers,
      heartbeatIntervalMs: state.heartbeatIntervalMs,
      leaseTtlMs: state.leaseTtlMs,
      slots: options.slots,
      taskMaxima: options.taskMaxima,
      runner,
    },
    identity,
    logger,
  );

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    logger.info({ signal }, 'shutting down');
    agent.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  agent.start();
  try {
    await agent.whenStopped();
  } catch (err) {
    logger.fatal({ err }, 'agent loop crashed');
    process.exit(1);
  }
}

async function statusCommand(flags: { dataDir?: string; output?: string }): Promise<void> {
  const paths = dataPaths(resolveDataDir(flags.dataDir, process.env));
  const report = await readStatusReport(paths);
  if (flags.output === 'json') {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    process.stdout.write(`${formatStatusReport(report)}\n`);
  }
}

function buildProgram(): Command {
  const program = new Command('citadel-agent')
    .description('The Citadel worker agent: join a cluster, then run as one of its workers.')
    .version(productVersion(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(add --help for usage)');

  program
    .command('join')
    .description('Join a cluster with a bootstrap token; writes the worker identity')
    .requiredOption('--server <host:port>', 'public API address of any replica')
    .option('--token <token>', 'bootstrap token, cbt_... (env CITADEL_JOIN_TOKEN)')
    .requiredOption('--ca-hash <sha256:hex>', 'SHA-256 of the cluster CA certificate (pinned)')
    .option('--data-dir <dir>', DATA_DIR_HELP)
    .addOption(
      new Option('--key-type <type>', 'worker key type')
        .choices(['p256', 'ed25519'])
        .default('p256'),
    )
    .option('--hostname <name>', 'host name reported to the server (default: os hostname)')
    .option('--force', 'join again over an identity already in the data folder')
    .action(joinCommand);

  program
    .command('run')
    .description('Run the agent: heartbeats, the event stream, certificate renewal')
    .option('--data-dir <dir>', DATA_DIR_HELP)
    .option('--server <host:port,...>', 'worker endpoints to use instead of the one learnt at join')
    .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
    .option('--slots <n>', 'executions to run at once (default: CPU count)')
    .option('--max-task-memory-mb <n>', 'most memory a task may ask for, MiB (default: 4096)')
    .option('--max-task-cpus <n>', 'most CPUs a task may ask for (default: CPU count)')
    .option('--max-task-pids <n>', 'most processes a task may ask for (default: 1024)')
    .action(runCommand);

  program
    .command('status')
    .description("Show this worker's identity, certificate and last heartbeat")
    .option('--data-dir <dir>', DATA_DIR_HELP)
    .addOption(
      new Option('-o, --output <format>', 'output format')
        .choices(['text', 'json'])
        .default('text'),
    )
    .action(statusCommand);

  return program;
}

function printNote(text: string): void {
  process.stderr.write(`citadel-agent: ${text}\n`);
}

/** Reports `err` on standard error and returns the exit code. */
function reportError(err: unknown): number {
  if (err instanceof CommanderError) {
    // Commander has already printed its message.
    return err.exitCode === 0 ? 0 : 2;
  }
  if (err instanceof InvalidArgumentError) {
    printNote(err.message);
    return 2;
  }
  if (isServiceError(err)) {
    printNote(err.details === '' ? statusName(err.code) : err.details);
    return 1;
  }
  if (err instanceof CitadelError) {
    printNote(err.message);
    return 1;
  }
  const errno = err as NodeJS.ErrnoException;
  if (typeof errno.code === 'string' && typeof errno.message === 'string') {
    printNote(errno.message); // EACCES, ENOSPC, ...: Node names the file
    return 1;
  }
  printNote(`unexpected error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  return 1;
}

// No top-level await: the single-executable build bundles this file as CommonJS.
buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    process.exitCode = reportError(err);
  });
