/**
 * `citadelctl task ...`: create, read, list, update, delete, pause, resume and run tasks.
 * Requests are built by the pure functions in task-requests.ts, re-exported here.
 */

import type { Command } from 'commander';

import type { Task } from '../../gen/citadel/v1/task.js';
import {
  CreateTaskResponse,
  DeleteTaskResponse,
  GetTaskResponse,
  ListTasksResponse,
  PauseTaskResponse,
  ResumeTaskResponse,
  RunTaskResponse,
  UpdateTaskResponse,
} from '../../gen/citadel/v1/task_service.js';
import { parseNonEmpty } from '../flags.js';
import { executionDetails, formatTimestamp, taskDetails, tasksTable } from '../format.js';
import {
  addGlobalOptions,
  collect,
  fetchPages,
  printResult,
  printNote,
  readGlobalFlags,
  withSession,
} from '../session.js';
import {
  buildCreateTaskRequest,
  buildListTasksRequest,
  type CreateTaskFlags,
  type ListTasksFlags,
  parseTaskUpdate,
  toUpdateTaskRequest,
  type UpdateTaskFlags,
  updateNeedsCurrentTask,
} from './task-requests.js';

export * from './task-requests.js';

const DEADLINE_NOTE = `
--timeout here is the task's run timeout. To set the call deadline, put it before the command:
  citadelctl --timeout 1m task ...`;

/** Adds `task` and its subcommands to `program`. */
export function registerTaskCommands(program: Command): void {
  const task = program.command('task').description('create and manage tasks');

  const create = task
    .command('create')
    .description('create a task; without --run-at or --cron it runs once, now')
    .requiredOption('--type <type>', 'task type, e.g. container.run');
  addTaskFieldOptions(create).option(
    '--idempotency-key <key>',
    'makes the create safe to retry: a repeat returns the first task',
  );
  addGlobalOptions(create, { callTimeout: false })
    .addHelpText('after', DEADLINE_NOTE)
    .action(async (flags: CreateTaskFlags, cmd: Command) => {
      const request = buildCreateTaskRequest(flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.createTask(request);
        if (!response.created) {
          printNote('a task with this idempotency key already exists; showing it');
        }
        printResult(globals.output, CreateTaskResponse.toJSON(response), () =>
          taskDetails(requireTask(response)),
        );
      });
    });

  addGlobalOptions(
    task.command('get').description('show a task').argument('<id>', 'task id'),
  ).action(async (id: string, _flags: object, cmd: Command) => {
    const request = { id: parseNonEmpty(id, 'ID') };
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const response = await client.getTask(request);
      printResult(globals.output, GetTaskResponse.toJSON(response), () =>
        taskDetails(requireTask(response)),
      );
    });
  });

  addGlobalOptions(
    task
      .command('list')
      .description('list tasks in id order')
      .option('--type <type>', 'only tasks of this type')
      .option('--label <key=value>', 'only tasks with this label (repeatable)', collect)
      .option('--enabled', 'only enabled tasks')
      .option('--paused', 'only paused tasks')
      .option('--owner <principal>', 'only tasks created by this principal')
      .option('--page-size <n>', 'tasks per page, 1-1000 [100]')
      .option('--page-token <token>', 'continue from an earlier page')
      .option('--all', 'follow next_page_token until the last page'),
  ).action(async (flags: ListTasksFlags & { all?: boolean }, cmd: Command) => {
    const request = buildListTasksRequest(flags);
    const globals = readGlobalFlags(cmd);
    await withSession(globals, async ({ client }) => {
      const pages = await fetchPages(request.pageToken, flags.all === true, (pageToken) =>
        client.listTasks({ ...request, pageToken }),
      );
      const merged: ListTasksResponse = {
        tasks: pages.flatMap((p) => p.tasks),
        nextPageToken: pages.at(-1)?.nextPageToken ?? '',
      };
      printResult(globals.output, ListTasksResponse.toJSON(merged), () => tasksTable(merged.tasks));
      if (globals.output === 'table' && merged.nextPageToken !== '') {
        printNote(`more tasks: --page-token ${merged.nextPageToken}, or --all`);
      }
    });
  });

  const update = task
    .command('update')
    .description('change the fields given by flags; nothing else changes')
    .argument('<id>', 'task id')
    .option('--type <type>', 'task type');
  addTaskFieldOptions(update).option(
    '--etag <etag>',
    'update only if the task still has this etag (from task get)',
  );
  addGlobalOptions(update, { callTimeout: false })
    .addHelpText(
      'after',
      `${DEADLINE_NOTE}\n\n--label replaces all labels. Cron and retry flags not given keep their values.`,
    )
    .action(async (id: string, flags: UpdateTaskFlags, cmd: Command) => {
      const update = parseTaskUpdate(id, flags);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const current = updateNeedsCurrentTask(update)
          ? requireTask(await client.getTask({ id: update.id }))
          : undefined;
        const response = await client.updateTask(toUpdateTaskRequest(update, current));
        printResult(globals.output, UpdateTaskResponse.toJSON(response), () =>
          taskDetails(requireTask(response)),
        );
      });
    });

  addGlobalOptions(
    task.command('delete').description('delete a task; cancels its active executions'),
  )
    .argument('<id>', 'task id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.deleteTask(request);
        printResult(globals.output, DeleteTaskResponse.toJSON(response), () => {
          const n = response.cancelledExecutions;
          return `deleted task ${id}; cancelled ${n} active execution${n === 1 ? '' : 's'}`;
        });
      });
    });

  addGlobalOptions(task.command('pause').description("stop a task's schedule"))
    .argument('<id>', 'task id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.pauseTask(request);
        printResult(globals.output, PauseTaskResponse.toJSON(response), () => `paused task ${id}`);
      });
    });

  addGlobalOptions(task.command('resume').description("restart a paused task's schedule from now"))
    .argument('<id>', 'task id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.resumeTask(request);
        printResult(globals.output, ResumeTaskResponse.toJSON(response), () => {
          const next = formatTimestamp(response.task?.nextRunTime);
          return `resumed task ${id}; next run ${next === '-' ? 'none' : next}`;
        });
      });
    });

  addGlobalOptions(task.command('run').description('start an execution now, outside the schedule'))
    .argument('<id>', 'task id')
    .action(async (id: string, _flags: object, cmd: Command) => {
      const request = { id: parseNonEmpty(id, 'ID') };
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.runTask(request);
        printResult(globals.output, RunTaskResponse.toJSON(response), () =>
          response.execution === undefined ? '-' : executionDetails(response.execution),
        );
      });
    });
}

/** The task-field flags shared by create and update. */
function addTaskFieldOptions(cmd: Command): Command {
  return cmd
    .option('--payload <json>', 'payload, a JSON object')
    .option('--payload-file <file>', "read the payload from a file ('-' for standard input)")
    .option('--run-at <time>', 'run once at an ISO 8601 time with zone, or "now"')
    .option('--cron <expr>', 'run on a cron expression, e.g. "*/5 * * * *" or @hourly')
    .option('--tz <zone>', 'IANA time zone of the cron expression [UTC]')
    .option('--overlap <policy>', 'allow|forbid|replace: a firing while a run is active [allow]')
    .option('--missed <policy>', 'skip|catch-up: firings missed during an outage [skip]')
    .option('--catch-up-window <duration>', 'with --missed catch-up: oldest firing to run [1h]')
    .option('--priority <level>', 'high|medium|low [medium]')
    .option('--timeout <duration>', 'longest an attempt may run, e.g. 30m [1h]')
    .option('--max-attempts <n>', 'attempts including the first, 1-100 [1]')
    .option('--backoff <duration>', 'delay before the first retry [1s]')
    .option('--max-backoff <duration>', 'upper bound on the retry delay [5m]')
    .option('--backoff-multiplier <x>', 'growth of the delay per retry, 1-10 [2]')
    .option('--jitter <x>', 'fraction of each delay randomised away, 0-1 [0]')
    .option('--label <key=value>', 'label (repeatable)', collect);
}

function requireTask(response: { task?: Task | undefined }): Task {
  if (response.task === undefined) throw new Error('the server response carried no task');
  return response.task;
}
