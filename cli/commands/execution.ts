/**
 * `citadelctl execution ...`: list, show, cancel and watch executions.
 */

import { status } from '@grpc/grpc-js';
import type { Command } from 'commander';

import type { Execution } from '../../gen/citadel/v1/execution.js';
import {
  CancelExecutionResponse,
  GetExecutionResponse,
  ListExecutionsRequest,
  ListExecutionsResponse,
  WatchExecutionsRequest,
  WatchExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import { type CitadelClient, isServiceError } from '../client.js';
import { parseExecutionStates, parseInteger, parseNonEmpty } from '../flags.js';
import { executionDetails, executionsTable, watchEventLine } from '../format.js';
import {
  addGlobalOptions,
  collect,
  fetchPages,
  type OutputFormat,
  printLine,
  printResult,
  printNote,
  readGlobalFlags,
  withSession,
} from '../session.js';

/** Flags of `execution list`. */
export interface ListExecutionsFlags {
  task?: string;
  /** Repeated, each possibly comma-separated. */
  state?: string[];
  pageSize?: string;
  pageToken?: string;
}

/** Flags of `execution watch`. */
export interface WatchExecutionsFlags {
  task?: string;
  afterRevision?: string;
}

/**
 * Builds ListExecutionsRequest.
 * @throws InvalidArgumentError for an unknown --state or a bad --page-size.
 */
export function buildListExecutionsRequest(flags: ListExecutionsFlags): ListExecutionsRequest {
  return ListExecutionsRequest.fromPartial({
    taskId: flags.task === undefined ? '' : parseNonEmpty(flags.task, '--task'),
    states: parseExecutionStates(flags.state ?? []),
    pageSize:
      flags.pageSize === undefined ? 0 : parseInteger(flags.pageSize, '--page-size', 1, 1000),
    pageToken: flags.pageToken ?? '',
  });
}

/**
 * Builds WatchExecutionsRequest.
 * @throws InvalidArgumentError for a bad --after-revision.
 */
export function buildWatchExecutionsRequest(flags: WatchExecutionsFlags): WatchExecutionsRequest {
  return WatchExecutionsRequest.fromPartial({
    taskId: flags.task === undefined ? '' : parseNonEmpty(flags.task, '--task'),
    afterRevision:
      flags.afterRevision === undefined
        ? 0
        : parseInteger(flags.afterRevision, '--after-revision', 0, Number.MAX_SAFE_INTEGER),
  });
}

/** Adds `execution` and its subcommands to `program`. */
export function registerExecutionCommands(program: Command): void {
  const execution = program.command('execution').description('inspect and cancel executions');

  addGlobalOptions(
    execution
      .command('list')
      .description('list executions, by task, run and attempt')
      .option('--task <id>', 'only executions of this task')
      .option('--state <state>', 'only in this state, e.g. running,timed_out (repeatable)', collect)
      .option('--page-size <n>', 'executions per page, 1-1000 [100]')
      .option('--page-token <token>', 'continue from an earlier page')
      .option('--all', 'follow next_page_token until the last page'),
  ).action(async (flags: ListExecutionsFlags & { all?: boolean }, cmd: Command) => {
    const request = buildListExecutionsRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const pages = await fetchPages(request.pageToken, flags.all === true, (pageToken) =>
        client.listExecutions({ ...request, pageToken }),
      );
      const merged: ListExecutionsResponse = {
        executions: pages.flatMap((p) => p.executions),
        nextPageToken: pages.at(-1)?.nextPageToken ?? '',
      };
      printResult(globals.output, ListExecutionsResponse.toJSON(merged), () =>
        executionsTable(merged.executions),
      );
      if (globals.output === 'table' && merged.nextPageToken !== '') {
        printNote(`more executions: --page-token ${merged.nextPageToken}, or --all`);
      }
    });
  });

  addGlobalOptions(execution.command('get').description('show an execution and its output'))
    .argument('<id>', 'execution id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.getExecution(request);
        printResult(globals.output, GetExecutionResponse.toJSON(response), () =>
          executionDetails(requireExecution(response)),
        );
      });
    });

  addGlobalOptions(
    execution.command('cancel').description('cancel a pending, assigned or running execution'),
  )
    .argument('<id>', 'execution id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.cancelExecution(request);
        printResult(globals.output, CancelExecutionResponse.toJSON(response), () =>
          executionDetails(requireExecution(response)),
        );
      });
    });

  addGlobalOptions(
    execution
      .command('watch')
      .description('stream execution changes until Ctrl-C (JSON lines with -o json)')
      .option('--task <id>', 'only executions of this task')
      .option('--after-revision <n>', 'resume after this revision from an earlier -o json event'),
  ).action(async (flags: WatchExecutionsFlags, cmd: Command) => {
    const request = buildWatchExecutionsRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, ({ client }) => watch(client, request, globals.output));
  });
}

/**
 * Prints each event until the server ends the stream or SIGINT/SIGTERM arrives; the latter is a
 * clean end, not an error. A second Ctrl-C falls through to Node's default and exits at once.
 */
function watch(
  client: CitadelClient,
  request: WatchExecutionsRequest,
  output: OutputFormat,
): Promise<void> {
  return new Promise((resolve, reject) => {
    const call = client.watchExecutions(request);
    let stopping = false;
    const stop = (): void => {
      stopping = true;
      call.cancel();
    };
    const done = (err?: Error): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      if (err === undefined) resolve();
      else reject(err);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
    call.on('data', (event: WatchExecutionsResponse) => {
      printLine(
        output === 'json'
          ? JSON.stringify(WatchExecutionsResponse.toJSON(event))
          : watchEventLine(event),
      );
    });
    call.on('end', () => done());
    call.on('error', (err: Error) => {
      const cancelled = stopping && isServiceError(err) && err.code === status.CANCELLED;
      done(cancelled ? undefined : err);
    });
  });
}

function requireExecution(response: { execution?: Execution | undefined }): Execution {
  if (response.execution === undefined) {
    throw new Error('the server response carried no execution');
  }
  return response.execution;
}
