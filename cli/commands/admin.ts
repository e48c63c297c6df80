/**
 * `citadelctl user ...` and `citadelctl apikey ...`: manage users and their API keys through
 * AdminService, which needs an admin key. Requests are built by the pure functions in
 * admin-requests.ts, re-exported here.
 */

import type { Command } from 'commander';

import type { ApiKey, User } from '../../gen/citadel/v1/admin.js';
import {
  CreateApiKeyResponse,
  CreateUserResponse,
  DisableUserResponse,
  EnableUserResponse,
  GetUserResponse,
  ListApiKeysResponse,
  ListUsersResponse,
  RevokeApiKeyResponse,
  UpdateUserResponse,
} from '../../gen/citadel/v1/admin_service.js';
import { parseNonEmpty } from '../flags.js';
import { apiKeysTable, formatTimestamp, sanitize, userDetails, usersTable } from '../format.js';
import {
  addGlobalOptions,
  fetchPages,
  printJson,
  printLine,
  printNote,
  printResult,
  readGlobalFlags,
  withSession,
} from '../session.js';
import {
  buildCreateApiKeyRequest,
  buildCreateUserRequest,
  buildDisableUserRequest,
  buildListApiKeysRequest,
  buildListUsersRequest,
  buildUpdateUserRequest,
  type CreateApiKeyFlags,
  type DisableUserFlags,
  type ListApiKeysFlags,
  type ListUsersFlags,
  type UserFlags,
} from './admin-requests.js';

export * from './admin-requests.js';

/** Adds `user` and `apikey` and their subcommands to `program`. */
export function registerAdminCommands(program: Command): void {
  registerUserCommands(program);
  registerApiKeyCommands(program);
}

function registerUserCommands(program: Command): void {
  const user = program.command('user').description('create and manage users (needs an admin key)');

  const create = user
    .command('create')
    .description('create a user')
    .argument('<id>', "user id: 1-63 lowercase letters, digits, '.', '_', '@' or '-'")
    .requiredOption('--role <role>', 'admin|scheduler|executor|viewer');
  addGlobalOptions(addUserFieldOptions(create)).action(
    async (id: string, flags: UserFlags, cmd: Command) => {
      const request = buildCreateUserRequest(id, flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.createUser(request);
        printResult(globals.output, CreateUserResponse.toJSON(response), () =>
          userDetails(requireUser(response)),
        );
      });
    },
  );

  addGlobalOptions(user.command('get').description('show a user'))
    .argument('<id>', 'user id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.getUser(request);
        printResult(globals.output, GetUserResponse.toJSON(response), () =>
          userDetails(requireUser(response)),
        );
      });
    });

  addGlobalOptions(
    user
      .command('list')
      .description('list users in id order')
      .option('--page-size <n>', 'users per page, 1-1000 [100]')
      .option('--page-token <token>', 'continue from an earlier page')
      .option('--all', 'follow next_page_token until the last page'),
  ).action(async (flags: ListUsersFlags & { all?: boolean }, cmd: Command) => {
    const request = buildListUsersRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const pages = await fetchPages(request.pageToken, flags.all === true, (pageToken) =>
        client.admin.listUsers({ ...request, pageToken }),
      );
      const merged: ListUsersResponse = {
        users: pages.flatMap((p) => p.users),
        nextPageToken: pages.at(-1)?.nextPageToken ?? '',
      };
      printResult(globals.output, ListUsersResponse.toJSON(merged), () => usersTable(merged.users));
      if (globals.output === 'table' && merged.nextPageToken !== '') {
        printNote(`more users: --page-token ${merged.nextPageToken}, or --all`);
      }
    });
  });

  const update = user
    .command('update')
    .description('change the fields given by flags; nothing else changes')
    .argument('<id>', 'user id')
    .option('--role <role>', 'admin|scheduler|executor|viewer');
  addGlobalOptions(addUserFieldOptions(update))
    .addHelpText(
      'after',
      `
--allowed-types '' and --allowed-priorities '' clear the list (any is then allowed);
--max-tasks 0 and --max-concurrent 0 remove the limit.`,
    )
    .action(async (id: string, flags: UserFlags, cmd: Command) => {
      const request = buildUpdateUserRequest(id, flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.updateUser(request);
        printResult(globals.output, UpdateUserResponse.toJSON(response), () =>
          userDetails(requireUser(response)),
        );
      });
    });

  addGlobalOptions(
    user
      .command('disable')
      .description('disable a user: their API keys are refused at once; idempotent')
      .option('--reason <text>', 'why, for the audit record; at most 200 characters'),
  )
    .argument('<id>', 'user id')
    .action(async (id: string, flags: DisableUserFlags, cmd: Command) => {
      const request = buildDisableUserRequest(id, flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.disableUser(request);
        printResult(
          globals.output,
          DisableUserResponse.toJSON(response),
          () => `disabled user ${sanitize(request.id)}; their API keys are refused`,
        );
      });
    });

  addGlobalOptions(user.command('enable').description('enable a disabled user; idempotent'))
    .argument('<id>', 'user id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.enableUser(request);
        printResult(
          globals.output,
          EnableUserResponse.toJSON(response),
          () => `enabled user ${sanitize(request.id)}`,
        );
      });
    });
}

function registerApiKeyCommands(program: Command): void {
  const apikey = program
    .command('apikey')
    .description("create, list and revoke users' API keys (needs an admin key)");

  addGlobalOptions(
    apikey
      .command('create')
      .description('create an API key and print it, once: it cannot be shown again')
      .requiredOption('--user <id>', 'the user the key authenticates as')
      .option('--description <text>', 'what the key is for; at most 200 characters')
      .option(
        '--expires <when>',
        'when the key stops working: a duration such as 90d, or an ISO 8601 time [never]',
      ),
  )
    .addHelpText(
      'after',
      `
In table output the key alone goes to standard output, so it can be saved directly:
  citadelctl apikey create --user alice > alice.key`,
    )
    .action(async (flags: CreateApiKeyFlags, cmd: Command) => {
      const request = buildCreateApiKeyRequest(flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.createApiKey(request);
        if (response.key === '') throw new Error('the server response carried no key');
        // The key alone on standard output in table mode, so `> file` saves just the key.
        if (globals.output === 'json') printJson(CreateApiKeyResponse.toJSON(response));
        else printLine(sanitize(response.key));
        const key = response.apiKey;
        const expires = key?.expireTime === undefined ? 'never' : formatTimestamp(key.expireTime);
        printNote(
          `created API key ${sanitize(key?.id ?? '?')} for user ${sanitize(request.userId)} ` +
            `(expires ${expires})`,
        );
        printNote('WARNING: store the key now; it is not stored and will not be shown again');
      });
    });

  addGlobalOptions(
    apikey
      .command('list')
      .description("list a user's API keys, oldest first (never the keys themselves)")
      .requiredOption('--user <id>', 'whose keys'),
  ).action(async (flags: ListApiKeysFlags, cmd: Command) => {
    const request = buildListApiKeysRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const response = await client.admin.listApiKeys(request);
      printResult(globals.output, ListApiKeysResponse.toJSON(response), () =>
        apiKeysTable(response.apiKeys),
      );
    });
  });

  addGlobalOptions(apikey.command('revoke').description('revoke an API key; refused at once'))
    .argument('<key-id>', 'key id, e.g. key_5m2q8x0c1vtr')
    .action(async (keyId: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(keyId, 'KEY_ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.revokeApiKey(request);
        printResult(globals.output, RevokeApiKeyResponse.toJSON(response), () =>
          revokedLine(request.id, response.apiKey),
        );
      });
    });
}

/** The user-field flags shared by create and update; --role is added by each. */
function addUserFieldOptions(cmd: Command): Command {
  return cmd
    .option('--allowed-types <list>', "task types the user may use, comma-separated; '' for any")
    .option('--allowed-priorities <list>', "e.g. high,low; '' for any")
    .option('--max-tasks <n>', 'most tasks the user may own; 0 for no limit [0]')
    .option(
      '--max-concurrent <n>',
      "most of the user's executions running at once; 0 for no limit [0]",
    )
    .option('--scope <scope>', 'own|all: the tasks a non-admin user sees [own]');
}

function revokedLine(id: string, key: ApiKey | undefined): string {
  const owner = key === undefined || key.userId === '' ? '' : ` of user ${sanitize(key.userId)}`;
  return `revoked API key ${sanitize(id)}${owner}`;
}

function requireUser(response: { user?: User | undefined }): User {
  if (response.user === undefined) throw new Error('the server response carried no user');
  return response.user;
}
