/**
 * `citadelctl token ...` and `citadelctl worker ...`: bootstrap tokens that let worker hosts
 * join, and the workers that joined, through AdminService (needs an admin key). Requests are
 * built by the pure functions in worker-requests.ts, re-exported here.
 */

import type { Command } from 'commander';

import {
  BlockWorkerResponse,
  CreateBootstrapTokenResponse,
  DeregisterWorkerResponse,
  GetWorkerResponse,
  ListBootstrapTokensResponse,
  ListWorkersResponse,
  RevokeBootstrapTokenResponse,
} from '../../gen/citadel/v1/admin_service.js';
import type { Worker } from '../../gen/citadel/v1/worker.js';
import { parseNonEmpty } from '../flags.js';
import { formatTimestamp, sanitize } from '../format.js';
import {
  addGlobalOptions,
  collect,
  fetchPages,
  printJson,
  printLine,
  printNote,
  printResult,
  readGlobalFlags,
  withSession,
} from '../session.js';
import { tokenCreatedNotes, tokensTable, workerDetails, workersTable } from '../worker-format.js';
import {
  buildBlockWorkerRequest,
  buildCreateBootstrapTokenRequest,
  buildDeregisterWorkerRequest,
  buildListBootstrapTokensRequest,
  buildListWorkersRequest,
  type CreateTokenFlags,
  type ListTokensFlags,
  type ListWorkersFlags,
  type WorkerReasonFlags,
} from './worker-requests.js';

export * from './worker-requests.js';

/** Adds `token` and `worker` and their subcommands to `program`. */
export function registerWorkerCommands(program: Command): void {
  registerTokenCommands(program);
  registerWorkerAdminCommands(program);
}

function registerTokenCommands(program: Command): void {
  const token = program
    .command('token')
    .description(
      'create, list and revoke bootstrap tokens for joining workers (needs an admin key)',
    );

  addGlobalOptions(
    token
      .command('create')
      .description('create a bootstrap token and print it, once: it cannot be shown again')
      .option(
        '--expires <when>',
        'required: when the token stops working, a duration such as 24h or an ISO 8601 time; ' +
          'at most 7 days ahead',
      )
      .option('--uses <n>', 'how many workers may join with it, 1-1000 [1]')
      .option('--label <key=value>', 'label every joining worker gets (repeatable)', collect)
      .option('--description <text>', 'what the token is for; at most 200 characters'),
  )
    .addHelpText(
      'after',
      `
In table output the token alone goes to standard output, so it can be saved or piped; the
ready citadel-agent join command goes to standard error:
  citadelctl token create --expires 24h --label zone=eu-1 > join.token`,
    )
    .action(async (flags: CreateTokenFlags, cmd: Command) => {
      const request = buildCreateBootstrapTokenRequest(flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client, settings }) => {
        const response = await client.admin.createBootstrapToken(request);
        if (response.token === '') throw new Error('the server response carried no token');
        // The token alone on standard output in table mode, so `> file` saves just the token.
        if (globals.output === 'json') printJson(CreateBootstrapTokenResponse.toJSON(response));
        else printLine(sanitize(response.token));
        for (const note of tokenCreatedNotes(response, settings.server)) printNote(note);
      });
    });

  addGlobalOptions(
    token
      .command('list')
      .description('list active bootstrap tokens, newest first (never the tokens themselves)')
      .option('--all', 'include revoked, used-up and expired tokens'),
  ).action(async (flags: ListTokensFlags, cmd: Command) => {
    const request = buildListBootstrapTokensRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const response = await client.admin.listBootstrapTokens(request);
      printResult(globals.output, ListBootstrapTokensResponse.toJSON(response), () =>
        tokensTable(response.bootstrapTokens),
      );
    });
  });

  addGlobalOptions(
    token.command('revoke').description('revoke a bootstrap token: joins with it are refused'),
  )
    .argument('<id>', 'token id, e.g. bt_5m2q8x0c1vtr')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.revokeBootstrapToken(request);
        printResult(globals.output, RevokeBootstrapTokenResponse.toJSON(response), () => {
          const at = formatTimestamp(response.bootstrapToken?.revokeTime);
          return `revoked bootstrap token ${sanitize(request.id)}${at === '-' ? '' : ` at ${at}`}`;
        });
      });
    });
}

function registerWorkerAdminCommands(program: Command): void {
  const worker = program
    .command('worker')
    .description('list, show, block and retire worker hosts (needs an admin key)');

  addGlobalOptions(
    worker
      .command('list')
      .description('list workers in id order')
      .option('--include-inactive', 'include blocked and retired workers')
      .option('--page-size <n>', 'workers per page, 1-1000 [100]')
      .option('--page-token <token>', 'continue from an earlier page')
      .option('--all', 'follow next_page_token until the last page'),
  ).action(async (flags: ListWorkersFlags & { all?: boolean }, cmd: Command) => {
    const request = buildListWorkersRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const pages = await fetchPages(request.pageToken, flags.all === true, (pageToken) =>
        client.admin.listWorkers({ ...request, pageToken }),
      );
      const merged: ListWorkersResponse = {
        workers: pages.flatMap((p) => p.workers),
        nextPageToken: pages.at(-1)?.nextPageToken ?? '',
      };
      printResult(globals.output, ListWorkersResponse.toJSON(merged), () =>
        workersTable(merged.workers),
      );
      if (globals.output === 'table' && merged.nextPageToken !== '') {
        printNote(`more workers: --page-token ${merged.nextPageToken}, or --all`);
      }
    });
  });

  addGlobalOptions(worker.command('get').description('show a worker'))
    .argument('<id>', 'worker id, e.g. w_5m2q8x0c1vtr3k7a')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.getWorker(request);
        printResult(globals.output, GetWorkerResponse.toJSON(response), () =>
          workerDetails(requireWorker(response)),
        );
      });
    });

  addGlobalOptions(
    worker
      .command('block')
      .description(
        'block a worker: revoke its certificates and bootstrap token and cut its streams; terminal',
      )
      .option('--reason <text>', 'required: why, for the audit record; at most 200 characters'),
  )
    .argument('<id>', 'worker id')
    .action(async (id: string, flags: WorkerReasonFlags, cmd: Command) => {
      const request = buildBlockWorkerRequest(id, flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.blockWorker(request);
        printResult(
          globals.output,
          BlockWorkerResponse.toJSON(response),
          () =>
            `blocked worker ${sanitize(request.id)}; its certificates and bootstrap token are ` +
            'revoked and its calls refused',
        );
      });
    });

  addGlobalOptions(
    worker
      .command('deregister')
      .description('retire a worker: revoke its certificates and end its lease; terminal')
      .option('--reason <text>', 'why, for the audit record; at most 200 characters'),
  )
    .argument('<id>', 'worker id')
    .action(async (id: string, flags: WorkerReasonFlags, cmd: Command) => {
      const request = buildDeregisterWorkerRequest(id, flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.deregisterWorker(request);
        printResult(
          globals.output,
          DeregisterWorkerResponse.toJSON(response),
          () =>
            `retired worker ${sanitize(request.id)}; the host must join again with a new token ` +
            'to run work',
        );
      });
    });
}

function requireWorker(response: { worker?: Worker | undefined }): Worker {
  if (response.worker === undefined) throw new Error('the server response carried no worker');
  return response.worker;
}
