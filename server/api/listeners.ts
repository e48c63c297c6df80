/**
 * The replica's listeners: the public gRPC API (TLS, client certificates requested but not
 * required; with health and reflection), the worker endpoint (mutual TLS required at the
 * handshake) and the Prometheus endpoint. Binds all or none, and drains them at shutdown.
 */
import { hostname } from 'node:os';
import { isIP } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import {
  Server,
  ServerCredentials,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { Metrics } from '../metrics.js';
import { issueServerCert, type CaMaterial } from '../tls/ca.js';
import { publicApiCredentials, workerEndpointCredentials } from '../tls/server-credentials.js';
import { keepDuplicateHeaders } from './duplicate-headers.js';
import { parseHostPort } from './host-port.js';
import { addReflection } from './reflection.js';
import { withTolerantDecoding } from './request-decoding.js';

/** A gRPC service and its handlers. */
export interface ServiceRegistration {
  /** Full name, e.g. `citadel.v1.TaskService`. */
  name: string;
  definition: ServiceDefinition;
  implementation: UntypedServiceImplementation;
  /** Whether the health service reports it (SERVING while the replica serves). */
  health?: boolean;
}

/** The server options this module reads (rows of server-options.ts). */
export interface ListenerOptions {
  listen: string;
  workerListen: string;
  insecure: boolean;
  tlsSans: string[];
  metricsAddr: string;
}

export interface Listeners {
  port: number;
  workerPort: number;
  metricsPort?: number;
  /** Reports the replica (and each health-checked service) SERVING or NOT_SERVING. */
  setServing(serving: boolean): void;
  /** Lets in-flight calls finish for up to `graceMs`, then cuts the rest. */
  drain(graceMs: number): Promise<void>;
  /** Closes the Prometheus endpoint. */
  closeMetrics(): Promise<void>;
}

/** The largest request the public API accepts: a 1 MiB payload and its envelope. */
const PUBLIC_MAX_RECEIVE = 4 * 1024 * 1024;
/** Workers send heartbeats, reports and CSRs: outputs are capped well below this. */
const WORKER_MAX_RECEIVE = 1024 * 1024;

function bind(
  server: Server,
  address: string,
  field: string,
  creds: ServerCredentials,
): Promise<number> {
  const { host, port } = parseHostPort(address, field);
  return new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, bound) =>
      err ? reject(err) : resolve(bound),
    );
  });
}

/** Issues this replica's serving certificate from the cluster CA for its names and addresses. */
async function servingCertificate(ca: CaMaterial, tlsSans: string[]) {
  const sans = ['localhost', hostname(), ...tlsSans];
  return issueServerCert(ca, {
    commonName: 'citadel-server',
    dnsNames: [...new Set(sans.filter((s) => isIP(s) === 0))],
    ipAddresses: [...new Set(['127.0.0.1', '::1', ...sans.filter((s) => isIP(s) !== 0)])],
  });
}

/**
 * Registers the services, then binds the public API, the worker endpoint and the metrics
 * endpoint; a failure releases whatever was bound. Everything starts NOT_SERVING.
 * @param onWorkerPort told the worker endpoint's port as soon as it is bound.
 */
export async function startListeners(
  deps: {
    ca: CaMaterial;
    metrics: Metrics;
    logger: Logger;
    publicServices: ServiceRegistration[];
    workerServices: ServiceRegistration[];
    onWorkerPort(port: number): void;
  },
  options: Readonly<ListenerOptions>,
): Promise<Listeners> {
  const { ca, metrics, logger } = deps;
  const grpc = new Server({ 'grpc.max_receive_message_length': PUBLIC_MAX_RECEIVE });
  const workerGrpc = new Server({ 'grpc.max_receive_message_length': WORKER_MAX_RECEIVE });
  for (const s of deps.publicServices) {
    grpc.addService(withTolerantDecoding(s.definition), s.implementation);
  }
  for (const s of deps.workerServices) {
    workerGrpc.addService(withTolerantDecoding(s.definition), s.implementation);
  }
  const checked = ['', ...deps.publicServices.filter((s) => s.health).map((s) => s.name)];
  const health = new HealthImplementation(
    Object.fromEntries(checked.map((name) => [name, 'NOT_SERVING'])),
  );
  health.addToServer(grpc);
  await addReflection(
    grpc,
    deps.publicServices.map((s) => s.name),
  );

  const serving = await servingCertificate(ca, options.tlsSans);
  let credentials: ServerCredentials;
  if (options.insecure) {
    logger.warn(
      '--insecure: serving PLAINTEXT gRPC; credentials travel unencrypted. Never use this outside local debugging.',
    );
    credentials = ServerCredentials.createInsecure();
  } else {
    credentials = publicApiCredentials(serving, ca.certPem);
  }
  const port = await bind(grpc, options.listen, '--listen', credentials);
  let workerPort: number;
  let metricsServer: HttpServer | undefined;
  let metricsPort: number | undefined;
  try {
    keepDuplicateHeaders(grpc);
    workerPort = await bind(
      workerGrpc,
      options.workerListen,
      '--worker-listen',
      workerEndpointCredentials(serving, ca.certPem),
    );
    deps.onWorkerPort(workerPort);
    if (options.metricsAddr !== '') {
      const m = parseHostPort(options.metricsAddr, '--metrics-addr');
      ({ server: metricsServer, port: metricsPort } = await metrics.listen(m.host, m.port));
    }
  } catch (err) {
    grpc.forceShutdown(); // release the ports bound above
    workerGrpc.forceShutdown();
    throw err;
  }

  const drainOne = (server: Server, graceMs: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  return {
    port,
    workerPort,
    metricsPort,
    setServing: (on) => {
      for (const name of checked) health.setStatus(name, on ? 'SERVING' : 'NOT_SERVING');
    },
    drain: async (graceMs) => {
      await Promise.all([drainOne(grpc, graceMs), drainOne(workerGrpc, graceMs)]);
    },
    closeMetrics: () =>
      new Promise<void>((resolve) =>
        metricsServer ? metricsServer.close(() => resolve()) : resolve(),
      ),
  };
}
