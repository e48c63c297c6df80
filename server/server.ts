/**
 * One citadel-server replica: the composition of the areas (docs/architecture.md). It connects
 * to (or starts) etcd, opens the cluster, builds each area from the bottom of the stack up,
 * serves their services on the listeners, campaigns for leadership with their leader
 * components, and shuts all of it down in the reverse order.
 */
import 'reflect-metadata';
import { setMaxListeners } from 'node:events';
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import { AdminServiceService } from '../gen/citadel/v1/admin_service.js';
import { JoinServiceService } from '../gen/citadel/v1/join_service.js';
import { TaskServiceService } from '../gen/citadel/v1/task_service.js';
import { WorkerServiceService } from '../gen/citadel/v1/worker_service.js';
import { createAdmin } from './admin/admin-area.js';
import { parseHostPort } from './api/host-port.js';
import { startListeners, type Listeners } from './api/listeners.js';
import { createAuth, type AuthArea } from './auth/auth-area.js';
import { openCluster, type ClusterArea } from './cluster/cluster-area.js';
import { connectEtcd, type EtcdConnection } from './cluster/etcd-client.js';
import { Metrics } from './metrics.js';
import type { ServerOptions } from './server-options.js';
import { LeaderElection } from './store/leader-election.js';
import type { Store } from './store/store.js';
import { createTasks, type TasksArea } from './tasks/tasks-area.js';
import { caFingerprint } from './tls/ca.js';
import { createWorkers, type WorkersArea } from './workers/workers-area.js';

/** What a running replica holds, to stop it in order. */
interface Parts {
  etcd: EtcdConnection;
  listeners: Listeners;
  /** Areas with something to stop, from the top of the stack down. */
  areas: { stop(): Promise<void> }[];
  shutdown: AbortController;
  logger: Logger;
}

export class CitadelServer {
  private constructor(
    readonly options: Readonly<ServerOptions>,
    readonly port: number,
    readonly caPem: string,
    readonly caPath: string,
    readonly election: LeaderElection,
    readonly store: Store,
    readonly engine: TasksArea['engine'],
    readonly executions: TasksArea['executions'],
    /** Set only on the replica that created the cluster. */
    readonly adminKey: string | undefined,
    readonly metricsPort: number | undefined,
    /** Port of the mutual-TLS worker endpoint. */
    readonly workerPort: number,
    private readonly parts: Parts,
  ) {}

  /** Starts a replica. Resolves once it serves; leadership is campaigned for in the background. */
  static async start(options: Readonly<ServerOptions>, logger: Logger): Promise<CitadelServer> {
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    const etcd = await connectEtcd(options, logger);
    try {
      const cluster = await openCluster(etcd.client, options);
      return await CitadelServer.serve(options, logger, etcd, cluster);
    } catch (err) {
      await etcd.close();
      throw err;
    }
  }

  /** Builds the areas, binds the listeners and starts campaigning; undoes it all on failure. */
  private static async serve(
    options: Readonly<ServerOptions>,
    logger: Logger,
    etcd: EtcdConnection,
    cluster: ClusterArea,
  ): Promise<CitadelServer> {
    const { store, material } = cluster;
    const metrics = new Metrics();
    const shutdown = new AbortController();
    setMaxListeners(0, shutdown.signal); // one listener per open stream: no leak warning
    // Join answers name it: the configured port until the endpoint is bound (0 picks one).
    let workerPort = parseHostPort(options.workerListen, '--worker-listen').port;
    const started: { stop(): Promise<void> }[] = [];
    try {
      const auth: AuthArea = await createAuth({ store, logger }, options);
      started.unshift(auth);
      const workers: WorkersArea = await createWorkers(
        { store, logger, metrics, auth, ca: material.ca, workerPort: () => workerPort },
        options,
      );
      started.unshift(workers);
      const tasks = createTasks(
        {
          store,
          logger,
          metrics,
          keyring: material.keyring,
          auth,
          workers,
          shutdown: shutdown.signal,
        },
        options,
      );
      const admin = createAdmin({ store, logger, metrics, auth, workers, ca: material.ca });

      const election = new LeaderElection({
        store,
        ttlSeconds: options.leaderTtlSeconds,
        logger,
        components: [...tasks.leaderComponents],
        onChange: (leading) => metrics.leader.set(leading ? 1 : 0),
        onComponentChange: (component, up) =>
          metrics.leaderComponentUp.set({ component }, up ? 1 : 0),
      });
      const listeners = await startListeners(
        {
          ca: material.ca,
          metrics,
          logger,
          publicServices: [
            {
              name: 'citadel.v1.TaskService',
              definition: TaskServiceService,
              implementation: tasks.taskService,
              health: true,
            },
            {
              name: 'citadel.v1.AdminService',
              definition: AdminServiceService,
              implementation: admin.adminService,
              health: true,
            },
            {
              name: 'citadel.v1.JoinService',
              definition: JoinServiceService,
              implementation: workers.joinService,
            },
          ],
          workerServices: [
            {
              name: 'citadel.v1.WorkerService',
              definition: WorkerServiceService,
              implementation: { ...workers.identityService, ...tasks.executionService },
            },
          ],
          onWorkerPort: (port) => (workerPort = port),
        },
        options,
      );

      election.start();
      listeners.setServing(true);
      logger.info(
        {
          listen: `${parseHostPort(options.listen, '--listen').host}:${listeners.port}`,
          workerListen: `${parseHostPort(options.workerListen, '--worker-listen').host}:${listeners.workerPort}`,
          tls: !options.insecure,
          caFile: cluster.caPath,
          caFingerprint: caFingerprint(material.ca.certPem),
          clusterId: material.clusterId,
          replicaId: cluster.replicaId,
          metricsPort: listeners.metricsPort,
        },
        'citadel-server ready',
      );
      return new CitadelServer(
        options,
        listeners.port,
        material.ca.certPem,
        cluster.caPath,
        election,
        store,
        tasks.engine,
        tasks.executions,
        material.adminKey,
        listeners.metricsPort,
        listeners.workerPort,
        { etcd, listeners, areas: started, shutdown, logger },
      );
    } catch (err) {
      for (const area of started) await area.stop();
      throw err;
    }
  }

  /**
   * Graceful shutdown: report NOT_SERVING, resign leadership, let in-flight calls finish (up to
   * the shutdown grace), then stop the areas, close etcd connections and stop the embedded etcd.
   */
  async stop(): Promise<void> {
    const { etcd, listeners, areas, shutdown, logger } = this.parts;
    const grace = this.options.shutdownGraceMs;
    listeners.setServing(false);
    // etcd may hang rather than fail: no step of shutdown waits on it past the grace period.
    await withDeadline(this.election.stop(), grace);
    shutdown.abort(); // ends open watch streams, which would otherwise hold tryShutdown open
    await listeners.drain(grace);
    for (const area of areas) await withDeadline(area.stop(), grace);
    await etcd.close();
    await listeners.closeMetrics();
    logger.info('citadel-server stopped');
  }
}

/** Waits for `work` at most `ms`; shutdown goes on either way. */
async function withDeadline(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    work.catch(() => undefined),
    new Promise<void>((resolve) => (timer = setTimeout(resolve, ms))),
  ]);
  clearTimeout(timer);
}
