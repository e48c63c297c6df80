/**
 * One citadel-server replica: connects to (or starts) etcd, bootstraps or loads the cluster,
 * serves the gRPC API with TLS, health and reflection, campaigns for leadership, and shuts all
 * of it down in order.
 */
import 'reflect-metadata';
import { mkdir, readFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import path from 'node:path';
import type { Server as HttpServer } from 'node:http';
import { Server, ServerCredentials } from '@grpc/grpc-js';
import { loadFileDescriptorSetFromBuffer, loadSync } from '@grpc/proto-loader';
import { ReflectionService } from '@grpc/reflection';
import { Etcd3, type IOptions } from 'etcd3';
import { HealthImplementation, protoPath as healthProtoPath } from 'grpc-health-check';
import type { Logger } from 'pino';
import { ConfigError } from '../common/errors.js';
import { descriptorSet } from './api/descriptor-set.js';
import { randomBase32 } from '../common/ids.js';
import { AdminServiceService } from '../gen/citadel/v1/admin_service.js';
import { JoinServiceService } from '../gen/citadel/v1/join_service.js';
import { TaskServiceService } from '../gen/citadel/v1/task_service.js';
import { WorkerServiceService } from '../gen/citadel/v1/worker_service.js';
import { adminService } from './admin/admin-service.js';
import { ApiKeyTable, KeyUsage } from './auth/api-keys.js';
import { AuthFailureGuard } from './auth/auth-failures.js';
import { Authenticator } from './auth/authentication.js';
import { JwtVerifier } from './auth/jwt-verifier.js';
import { bootstrapCluster, writePrivateFile, type ClusterMaterial } from './cluster/bootstrap.js';
import { startEmbeddedEtcd, type EmbeddedEtcd } from './cluster/embedded-etcd.js';
import { LeaderElection } from './store/leader-election.js';
import { loadMasterKey } from './crypto/master-key.js';
import { Metrics } from './metrics.js';
import { Scheduler } from './tasks/scheduler.js';
import { parseHostPort, type ServerOptions } from './server-options.js';
import { Store } from './store/store.js';
import { ExecutionEngine } from './tasks/execution-engine.js';
import { TaskEngine } from './tasks/task-engine.js';
import { taskService } from './tasks/task-service.js';
import { TimeoutWatcher } from './tasks/timeout-watcher.js';
import { UserTable } from './auth/users.js';
import { caFingerprint, issueServerCert } from './tls/ca.js';
import { publicApiCredentials, workerEndpointCredentials } from './tls/server-credentials.js';
import { CertRegistry } from './auth/cert-registry.js';
import { HeartbeatVerifier } from './workers/heartbeat-verifier.js';
import { joinService } from './workers/join-service.js';
import { WorkerLiveness } from './workers/worker-liveness.js';
import { WorkerReaper } from './tasks/worker-reaper.js';
import { Dispatcher } from './tasks/dispatcher.js';
import { workerService } from './workers/worker-service.js';
import { WorkerTable } from './workers/worker-table.js';

type EtcdCredentials = NonNullable<IOptions['credentials']>;

/**
 * The etcd3 client's TLS credentials for an external etcd, from --etcd-ca-file,
 * --etcd-cert-file and --etcd-key-file; undefined if none is set (https endpoints then
 * verify etcd against the system's CAs).
 */
async function externalEtcdCredentials(
  options: Readonly<ServerOptions>,
): Promise<EtcdCredentials | undefined> {
  const { etcdCaFile, etcdCertFile, etcdKeyFile } = options;
  if (etcdCaFile === undefined && etcdCertFile === undefined) return undefined;
  const read = (file: string | undefined) =>
    file === undefined ? Promise.resolve(undefined) : readFile(file);
  const [rootCertificate, certChain, privateKey] = await Promise.all(
    [etcdCaFile, etcdCertFile, etcdKeyFile].map(read),
  );
  return {
    // etcd3 types it as required but hands it to grpc's createSsl, where null means the
    // system's CAs.
    rootCertificate: rootCertificate ?? (null as unknown as Buffer),
    certChain,
    privateKey,
  };
}

export class CitadelServer {
  private constructor(
    readonly options: Readonly<ServerOptions>,
    readonly port: number,
    readonly caPem: string,
    readonly caPath: string,
    readonly election: LeaderElection,
    readonly store: Store,
    readonly engine: TaskEngine,
    readonly executions: ExecutionEngine,
    /** Set only on the replica that created the cluster. */
    readonly adminKey: string | undefined,
    readonly metricsPort: number | undefined,
    /** Port of the mutual-TLS worker endpoint. */
    readonly workerPort: number,
    private readonly parts: {
      grpc: Server;
      workerGrpc: Server;
      liveness: WorkerLiveness;
      tables: { stop(): Promise<void> }[];
      health: HealthImplementation;
      shutdown: AbortController;
      apiKeys: ApiKeyTable;
      users: UserTable;
      client: Etcd3;
      etcd?: EmbeddedEtcd;
      metricsServer?: HttpServer;
      logger: Logger;
    },
  ) {}

  /** Starts a replica. Resolves once it serves; leadership is campaigned for in the background. */
  static async start(options: Readonly<ServerOptions>, logger: Logger): Promise<CitadelServer> {
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    let etcd: EmbeddedEtcd | undefined;
    let endpoints = options.etcdEndpoints;
    let credentials: EtcdCredentials | undefined;
    let grpcOptions: IOptions['grpcOptions'];
    if (endpoints.length === 0) {
      // Always mutual TLS: on plaintext loopback any local user could rewrite the cluster.
      etcd = await startEmbeddedEtcd({
        dataDir: path.join(options.dataDir, 'etcd'),
        tls: { dir: path.join(options.dataDir, 'etcd-tls') },
        onLog: (line) => logger.trace({ etcd: line }, 'etcd'),
      });
      endpoints = [etcd.endpoint];
      const tls = etcd.tls!; // always set when started with a TLS dir
      credentials = tls.credentials;
      grpcOptions = { 'grpc.ssl_target_name_override': tls.serverName };
      if (etcd.tlsRenewed !== undefined) {
        logger.info({ reason: etcd.tlsRenewed }, 'embedded etcd TLS certificates issued');
      }
      logger.info({ endpoint: etcd.endpoint, clientCertAuth: true }, 'embedded etcd started');
    } else {
      credentials = await externalEtcdCredentials(options);
    }
    const client = new Etcd3({ hosts: endpoints, dialTimeout: 5000, credentials, grpcOptions });
    try {
      return await CitadelServer.startOn(options, logger, client, etcd);
    } catch (err) {
      client.close();
      await etcd?.stop();
      throw err;
    }
  }

  private static async startOn(
    options: Readonly<ServerOptions>,
    logger: Logger,
    client: Etcd3,
    etcd: EmbeddedEtcd | undefined,
  ): Promise<CitadelServer> {
    const replicaId = randomBase32(8);
    const store = new Store({ client, prefix: options.etcdPrefix, replicaId });
    const embedded = options.etcdEndpoints.length === 0;
    const master = await loadMasterKey({
      envValue: options.masterKeyEnv,
      file: options.masterKeyFile,
      dataDir: options.dataDir,
      // Only the embedded default makes its own key: replicas of a shared etcd must all be
      // given the cluster's key, or one host's disk would silently hold the only copy.
      createIfMissing: embedded,
    }).catch((err: unknown) => {
      if (embedded || options.masterKeyEnv !== undefined || options.masterKeyFile !== undefined) {
        throw err;
      }
      throw new ConfigError(
        'CITADEL_MASTER_KEY',
        'with --etcd-endpoints every replica needs the cluster master key: set CITADEL_MASTER_KEY ' +
          '(base64 of 32 random bytes, e.g. from `openssl rand -base64 32`) or --master-key-file',
      );
    });
    const cluster = await bootstrapCluster(
      store,
      master.key,
      path.join(options.dataDir, 'admin.key'),
    );
    const caPath = path.join(options.dataDir, 'ca.crt');
    await writePrivateFile(caPath, cluster.ca.certPem);

    const metrics = new Metrics();
    const apiKeys = new ApiKeyTable(store, logger);
    const users = new UserTable(store, logger);
    const certs = new CertRegistry(store, logger);
    const workers = new WorkerTable(store, logger);
    const tables = [apiKeys, users, certs, workers];
    await Promise.all(tables.map((t) => t.start()));
    try {
      return await CitadelServer.serve(options, logger, {
        store,
        cluster,
        caPath,
        replicaId,
        metrics,
        apiKeys,
        users,
        certs,
        workers,
        client,
        etcd,
      });
    } catch (err) {
      await Promise.all(tables.map((t) => t.stop()));
      throw err;
    }
  }

  /** Binds the API and metrics endpoints and starts campaigning; undoes its binds on failure. */
  private static async serve(
    options: Readonly<ServerOptions>,
    logger: Logger,
    parts: {
      store: Store;
      cluster: ClusterMaterial;
      caPath: string;
      replicaId: string;
      metrics: Metrics;
      apiKeys: ApiKeyTable;
      users: UserTable;
      certs: CertRegistry;
      workers: WorkerTable;
      client: Etcd3;
      etcd: EmbeddedEtcd | undefined;
    },
  ): Promise<CitadelServer> {
    const { store, cluster, caPath, replicaId, metrics, apiKeys, users, client, etcd } = parts;
    const { certs, workers } = parts;
    const executions = new ExecutionEngine(store);
    const liveness = new WorkerLiveness({
      store,
      ttlSeconds: options.workerLeaseTtlSeconds,
      logger,
    });
    const engine = new TaskEngine(store, cluster.keyring, {
      missedRunThresholdMs: options.missedRunThresholdMs,
    });
    const election = new LeaderElection({
      store,
      ttlSeconds: options.leaderTtlSeconds,
      logger,
      components: [
        new Scheduler(store, engine, logger, metrics),
        new TimeoutWatcher(store, executions, options.timeoutGraceMs, logger),
        new WorkerReaper(store, executions, logger),
        new Dispatcher(store, executions, users, logger, metrics),
      ],
      onChange: (leading) => metrics.leader.set(leading ? 1 : 0),
    });

    const grpc = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
    const shutdown = new AbortController();
    const jwt =
      options.jwtJwksFile !== undefined || options.jwtJwksUrl !== undefined
        ? await JwtVerifier.create({
            jwksFile: options.jwtJwksFile,
            jwksUrl: options.jwtJwksUrl,
            issuer: options.jwtIssuer!,
            audience: options.jwtAudience!,
            roleClaim: options.jwtRoleClaim,
            leewaySeconds: options.jwtLeewaySeconds,
            jwksCooldownMs: options.jwtJwksCooldownMs,
          })
        : undefined;
    const failures = new AuthFailureGuard(store, logger, {
      maxFailures: options.authFailureLimit,
      windowMs: options.authFailureWindowMs,
    });
    const authenticator = new Authenticator({
      apiKeys,
      users,
      certs,
      keyUsage: new KeyUsage(store, logger),
      failures,
      store,
      logger,
      jwt,
      autoProvision: options.jwtAutoProvision,
    });
    const deps = {
      authenticator,
      apiKeys,
      users,
      logger,
      metrics,
      store,
      engine,
      executions,
      keyring: cluster.keyring,
      shutdown: shutdown.signal,
      workers,
      certs,
      liveness,
      ca: cluster.ca,
    };
    const { host: workerHost, port: workerPortWanted } = parseHostPort(
      options.workerListen,
      '--worker-listen',
    );
    let workerPort = workerPortWanted;
    grpc.addService(TaskServiceService, taskService(deps));
    grpc.addService(AdminServiceService, adminService(deps));
    grpc.addService(
      JoinServiceService,
      joinService({
        store,
        logger,
        metrics,
        failures,
        ca: cluster.ca,
        workerCertTtlMs: options.workerCertTtlMs,
        workerPort: () => workerPort,
        heartbeatIntervalMs: options.heartbeatIntervalMs,
        leaseTtlMs: options.workerLeaseTtlSeconds * 1000,
      }),
    );
    const workerGrpc = new Server({ 'grpc.max_receive_message_length': 1024 * 1024 });
    workerGrpc.addService(
      WorkerServiceService,
      workerService({
        store,
        executions,
        keyring: cluster.keyring,
        logger,
        metrics,
        workers,
        certs,
        liveness,
        verifier: new HeartbeatVerifier({ maxSkewMs: options.heartbeatMaxSkewMs }),
        failures,
        ca: cluster.ca,
        shutdown: shutdown.signal,
        options: {
          workerCertTtlMs: options.workerCertTtlMs,
          heartbeatIntervalMs: options.heartbeatIntervalMs,
          leaseTtlMs: options.workerLeaseTtlSeconds * 1000,
          heartbeatRefusalLimit: options.heartbeatRefusalLimit,
          heartbeatRefusalWindowMs: options.heartbeatRefusalWindowMs,
        },
      }),
    );
    const health = new HealthImplementation({
      '': 'NOT_SERVING',
      'citadel.v1.TaskService': 'NOT_SERVING',
      'citadel.v1.AdminService': 'NOT_SERVING',
    });
    health.addToServer(grpc);
    const descriptors = loadFileDescriptorSetFromBuffer(await descriptorSet());
    const healthDef = loadSync(healthProtoPath);
    new ReflectionService({ ...descriptors, ...healthDef }).addToServer(grpc);

    const { host, port } = parseHostPort(options.listen, '--listen');
    const sans = ['localhost', hostname(), ...options.tlsSans];
    const serving = await issueServerCert(cluster.ca, {
      commonName: 'citadel-server',
      dnsNames: [...new Set(sans.filter((s) => isIP(s) === 0))],
      ipAddresses: [...new Set(['127.0.0.1', '::1', ...sans.filter((s) => isIP(s) !== 0)])],
    });
    let credentials: ServerCredentials;
    if (options.insecure) {
      logger.warn(
        '--insecure: serving PLAINTEXT gRPC; credentials travel unencrypted. Never use this outside local debugging.',
      );
      credentials = ServerCredentials.createInsecure();
    } else {
      credentials = publicApiCredentials(serving, cluster.ca.certPem);
    }
    const bind = (server: Server, h: string, p: number, creds: ServerCredentials) =>
      new Promise<number>((resolve, reject) => {
        server.bindAsync(`${h.includes(':') ? `[${h}]` : h}:${p}`, creds, (err, bound) =>
          err ? reject(err) : resolve(bound),
        );
      });
    const bound = await bind(grpc, host, port, credentials);
    try {
      workerPort = await bind(
        workerGrpc,
        workerHost,
        workerPortWanted,
        workerEndpointCredentials(serving, cluster.ca.certPem),
      );
    } catch (err) {
      grpc.forceShutdown();
      throw err;
    }

    let metricsServer: HttpServer | undefined;
    let metricsPort: number | undefined;
    if (options.metricsAddr !== '') {
      const m = parseHostPort(options.metricsAddr, '--metrics-addr');
      try {
        ({ server: metricsServer, port: metricsPort } = await metrics.listen(m.host, m.port));
      } catch (err) {
        grpc.forceShutdown(); // release the ports bound above
        workerGrpc.forceShutdown();
        throw err;
      }
    }

    election.start();
    health.setStatus('', 'SERVING');
    health.setStatus('citadel.v1.TaskService', 'SERVING');
    health.setStatus('citadel.v1.AdminService', 'SERVING');
    logger.info(
      {
        listen: `${host}:${bound}`,
        workerListen: `${workerHost}:${workerPort}`,
        tls: !options.insecure,
        caFile: caPath,
        caFingerprint: caFingerprint(cluster.ca.certPem),
        clusterId: cluster.clusterId,
        replicaId,
        metricsPort,
      },
      'citadel-server ready',
    );
    return new CitadelServer(
      options,
      bound,
      cluster.ca.certPem,
      caPath,
      election,
      store,
      engine,
      executions,
      cluster.adminKey,
      metricsPort,
      workerPort,
      {
        grpc,
        workerGrpc,
        liveness,
        tables: [apiKeys, users, certs, workers],
        health,
        shutdown,
        apiKeys,
        users,
        client,
        etcd,
        metricsServer,
        logger,
      },
    );
  }

  /**
   * Graceful shutdown: report NOT_SERVING, resign leadership, let in-flight calls finish (up to
   * the shutdown grace), then close etcd connections and stop the embedded etcd.
   */
  async stop(): Promise<void> {
    const { grpc, workerGrpc, liveness, tables, health, shutdown, client, etcd } = this.parts;
    const { metricsServer, logger } = this.parts;
    health.setStatus('', 'NOT_SERVING');
    health.setStatus('citadel.v1.TaskService', 'NOT_SERVING');
    health.setStatus('citadel.v1.AdminService', 'NOT_SERVING');
    // etcd may hang rather than fail: no step of shutdown waits on it past the grace period.
    await withDeadline(this.election.stop(), this.options.shutdownGraceMs);
    shutdown.abort(); // ends open watch streams, which would otherwise hold tryShutdown open
    const drain = (server: Server) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, this.options.shutdownGraceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    await Promise.all([drain(grpc), drain(workerGrpc)]);
    await liveness.stop();
    await withDeadline(Promise.all(tables.map((t) => t.stop())), this.options.shutdownGraceMs);
    client.close();
    await etcd?.stop();
    await new Promise<void>((resolve) =>
      metricsServer ? metricsServer.close(() => resolve()) : resolve(),
    );
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
