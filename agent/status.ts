/**
 * `citadel-agent status`: what the data folder says about this worker (identity, servers,
 * certificate) and the last heartbeat the running agent recorded, as text or JSON.
 */
import { X509Certificate } from 'node:crypto';
import * as fs from 'node:fs/promises';

import { ConfigError } from '../common/errors.js';
import { formatDuration } from '../common/duration.js';
import { certificateSerial } from './identity.js';
import { type AgentStatus, type DataPaths, readAgentStatus, readJoinState } from './state.js';

/** Everything `status` reports. */
export interface StatusReport {
  workerId: string;
  servers: string[];
  keyType: string;
  joinedAt: string;
  certificate: { serial: string; notAfter: string; expired: boolean };
  /** Undefined when no agent has recorded a heartbeat yet. */
  lastHeartbeat?: {
    at: string;
    /** Milliseconds between the heartbeat and the report. */
    ageMs: number;
    server: string;
    /** The agent's state when it wrote status.json. */
    state: string;
  };
}

/**
 * Reads the report from the data folder.
 *
 * @throws FailedPreconditionError when the folder holds no join.
 * @throws ConfigError when state.json or worker.crt is unreadable.
 */
export async function readStatusReport(
  paths: DataPaths,
  nowMs = Date.now(),
): Promise<StatusReport> {
  const state = await readJoinState(paths);
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(await fs.readFile(paths.cert));
  } catch (err) {
    throw new ConfigError(paths.cert, `cannot read: ${(err as Error).message}`);
  }
  const notAfter = new Date(cert.validTo);
  const status: AgentStatus | undefined = await readAgentStatus(paths);
  const report: StatusReport = {
    workerId: state.workerId,
    servers: state.servers,
    keyType: state.keyType,
    joinedAt: state.joinedAt,
    certificate: {
      serial: certificateSerial(cert),
      notAfter: notAfter.toISOString(),
      expired: notAfter.getTime() <= nowMs,
    },
  };
  if (status !== undefined && status.lastHeartbeatAt) {
    report.lastHeartbeat = {
      at: status.lastHeartbeatAt,
      ageMs: Math.max(0, nowMs - Date.parse(status.lastHeartbeatAt)),
      server: status.server,
      state: status.state,
    };
  }
  return report;
}

/** Formats the report for a terminal, one `key: value` per line. */
export function formatStatusReport(report: StatusReport, nowMs = Date.now()): string {
  const expiry = Date.parse(report.certificate.notAfter);
  const expiresIn = report.certificate.expired
    ? `EXPIRED ${formatDuration(nowMs - expiry)} ago; join again`
    : `in ${formatDuration(roundToSecond(expiry - nowMs))}`;
  const heartbeat =
    report.lastHeartbeat === undefined
      ? 'never (is citadel-agent run going?)'
      : `${report.lastHeartbeat.at} (${formatDuration(roundToSecond(report.lastHeartbeat.ageMs))} ago) ` +
        `via ${report.lastHeartbeat.server}, agent ${report.lastHeartbeat.state}`;
  const rows: [string, string][] = [
    ['worker id', report.workerId],
    ['servers', report.servers.join(', ')],
    ['key type', report.keyType],
    ['certificate', report.certificate.serial],
    ['expires', `${report.certificate.notAfter} (${expiresIn})`],
    ['joined', report.joinedAt],
    ['last heartbeat', heartbeat],
  ];
  return rows.map(([k, v]) => `${`${k}:`.padEnd(16)}${v}`).join('\n');
}

function roundToSecond(ms: number): number {
  return Math.round(ms / 1000) * 1000;
}
