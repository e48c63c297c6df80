#!/usr/bin/env node
/**
 * citadel-server entry point: compiles the options of the command line, the config file and the
 * environment (options/option-flags.ts), starts a replica, and shuts it down gracefully on SIGTERM /
 * SIGINT.
 */
import path from 'node:path';
import { CitadelError } from '../common/errors.js';
import { createLogger } from '../common/logger.js';
import { CitadelServer } from './server.js';
import { serverOptionsInput } from './options/option-flags.js';
import { MASTER_KEY_ENV } from './options/option-table.js';
import { compileServerOptions } from './server-options.js';

async function main(): Promise<void> {
  const options = compileServerOptions(serverOptionsInput(process.argv.slice(2), process.env));
  // Read once; children (the embedded etcd) must not inherit it through their environment.
  delete process.env[MASTER_KEY_ENV];
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
