/** Prometheus metrics of one replica, served over HTTP at /metrics. */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();
  readonly rpcTotal = new Counter({
    name: 'citadel_rpc_total',
    help: 'RPCs handled, by method and status code.',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });
  readonly rpcSeconds = new Histogram({
    name: 'citadel_rpc_duration_seconds',
    help: 'RPC latency by method.',
    labelNames: ['method'] as const,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
    registers: [this.registry],
  });
  readonly leader = new Gauge({
    name: 'citadel_leader',
    help: '1 while this replica is the leader.',
    registers: [this.registry],
  });
  readonly leaderComponentUp = new Gauge({
    name: 'citadel_leader_component_up',
    help: '1 while this leader runs the component; 0 while it is down or being retried.',
    labelNames: ['component'] as const,
    registers: [this.registry],
  });
  readonly firingLateness = new Histogram({
    name: 'citadel_firing_lateness_seconds',
    help: 'How late the scheduler created executions relative to their due time.',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5, 30],
    registers: [this.registry],
  });

  readonly securityAlerts = new Counter({
    name: 'citadel_security_alerts_total',
    help: 'Security alerts raised, by kind (e.g. a worker blocked after heartbeat refusals).',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly heartbeats = new Counter({
    name: 'citadel_worker_heartbeats_total',
    help: 'Worker heartbeats handled, by result (accepted or the refusal reason).',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });

  readonly dispatched = new Counter({
    name: 'citadel_executions_dispatched_total',
    help: 'Executions assigned to workers by this replica while it led.',
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'citadel_' });
  }

  /** Serves /metrics on host:port; resolves with the bound port. */
  async listen(host: string, port: number): Promise<{ server: Server; port: number }> {
    const server = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end();
        return;
      }
      this.registry
        .metrics()
        .then((body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body))
        .catch(() => res.writeHead(500).end());
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    const address = server.address();
    return { server, port: typeof address === 'object' && address ? address.port : port };
  }
}
