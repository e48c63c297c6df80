#!/usr/bin/env node
/**
 * citadelctl: the operator CLI for Citadel's TaskService and AdminService. Exit status 0 on
 * success, 1 when the server or the connection fails, 2 for usage errors, including flags
 * refused before any call.
 */

import { Command } from 'commander';

import { productVersion } from '../common/version.js';
import { registerAdminCommands } from './commands/admin.js';
import { registerExecutionCommands } from './commands/execution.js';
import { registerServiceCertCommands } from './commands/service-cert.js';
import { registerTaskCommands } from './commands/task.js';
import { registerWorkerCommands } from './commands/worker.js';
import { addGlobalOptions, reportError } from './session.js';

function buildProgram(): Command {
  const program = new Command('citadelctl')
    .description(
      'Operate a Citadel cluster: tasks, their executions, users, API keys, service ' +
        'certificates, worker bootstrap tokens and workers.',
    )
    .version(productVersion(), '-V, --version')
    // Settings inherited by subcommands must come before they are added.
    .exitOverride()
    .showHelpAfterError('(add --help for usage)')
    // Global options are parsed before the subcommand by the program and after it by each leaf,
    // so that `task create --timeout` can mean the task's timeout rather than the call deadline.
    .enablePositionalOptions();
  addGlobalOptions(program);
  program.addHelpText(
    'after',
    `
Connection settings come from flags, then CITADEL_SERVER, CITADEL_CA, CITADEL_API_KEY,
CITADEL_API_KEY_FILE, CITADEL_INSECURE, CITADEL_CERT and CITADEL_KEY, then the config file
(keys server, ca, apiKeyFile, insecure, cert, key). The server writes its cluster CA to
<data-dir>/ca.crt and the first admin key to <data-dir>/admin.key. A client certificate from
service-cert issue (--cert and --key) authenticates instead of an API key.`,
  );
  registerTaskCommands(program);
  registerExecutionCommands(program);
  registerAdminCommands(program);
  registerServiceCertCommands(program);
  registerWorkerCommands(program);
  return program;
}

// `citadelctl execution watch | head` closes the pipe early; that is the reader's choice.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

// No top-level await: the single executable is CommonJS.
buildProgram()
  .parseAsync(process.argv)
  .catch((err: unknown) => {
    process.exitCode = reportError(err);
  });
