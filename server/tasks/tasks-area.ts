/**
 * The tasks area's registration: the task and execution engines, TaskService on the public
 * port, the execution half of WorkerService (Connect, StartExecution, ReportResult) on the
 * worker endpoint, and the leader components that drive executions: the scheduler (cron and
 * one-time firings), the timeout watcher, the dead-worker reaper and the dispatcher.
 */
import type { Logger } from 'pino';
import type { TaskServiceServer } from '../../gen/citadel/v1/task_service.js';
import type { WorkerServiceServer } from '../../gen/citadel/v1/worker_service.js';
import type { AuthArea } from '../auth/auth-area.js';
import type { Keyring } from '../crypto/sealer.js';
import type { Metrics } from '../metrics.js';
import type { LeaderComponent } from '../store/leader-election.js';
import type { Store } from '../store/store.js';
import type { WorkersArea } from '../workers/workers-area.js';
import { Dispatcher } from './dispatcher.js';
import { ExecutionEngine } from './execution-engine.js';
import { Scheduler } from './scheduler.js';
import { TaskEngine } from './task-engine.js';
import { taskService } from './task-service.js';
import { TimeoutWatcher } from './timeout-watcher.js';
import { WorkerReaper } from './worker-reaper.js';
import { workerExecutionService } from './worker-execution-service.js';

/** The server options this area reads (rows of server-options.ts). */
export interface TasksOptions {
  missedRunThresholdMs: number;
  timeoutGraceMs: number;
}

export interface TasksArea {
  engine: TaskEngine;
  executions: ExecutionEngine;
  taskService: TaskServiceServer;
  executionService: Pick<WorkerServiceServer, 'connect' | 'startExecution' | 'reportResult'>;
  /** Started and stopped with leadership, in this order (stopped in reverse). */
  leaderComponents: LeaderComponent[];
}

export function createTasks(
  deps: {
    store: Store;
    logger: Logger;
    metrics: Metrics;
    keyring: Keyring;
    auth: AuthArea;
    workers: WorkersArea;
    /** Aborted at shutdown: ends open watch and Connect streams. */
    shutdown: AbortSignal;
  },
  options: Readonly<TasksOptions>,
): TasksArea {
  const { store, logger, metrics, keyring, auth, workers, shutdown } = deps;
  const executions = new ExecutionEngine(store);
  const engine = new TaskEngine(store, keyring, {
    missedRunThresholdMs: options.missedRunThresholdMs,
  });
  return {
    engine,
    executions,
    taskService: taskService({
      authenticator: auth.authenticator,
      apiKeys: auth.apiKeys,
      users: auth.users,
      certs: auth.certs,
      store,
      logger,
      metrics,
      engine,
      executions,
      keyring,
      shutdown,
    }),
    executionService: workerExecutionService({
      store,
      logger,
      metrics,
      executions,
      keyring,
      workers: workers.table,
      certs: auth.certs,
      failures: auth.failures,
      liveness: workers.liveness,
      shutdown,
    }),
    leaderComponents: [
      new Scheduler(store, engine, logger, metrics),
      new TimeoutWatcher(store, executions, options.timeoutGraceMs, logger),
      new WorkerReaper(store, executions, logger),
      new Dispatcher(store, executions, auth.users, logger, metrics),
    ],
  };
}
