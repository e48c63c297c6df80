/**
 * Renders workers and bootstrap tokens for people: the list tables, the `worker get` block, and
 * the ready `citadel-agent join` command printed when a token is created. Server-supplied text
 * goes through `sanitize`, as in format.ts.
 */

import type { CreateBootstrapTokenResponse } from '../gen/citadel/v1/admin_service.js';
import {
  type BootstrapToken,
  type Worker,
  type WorkerState,
  workerStateToJSON,
} from '../gen/citadel/v1/worker.js';
import { formatLabels, formatTimestamp, renderDetails, renderTable, sanitize } from './format.js';

/** Lower-case state without the enum prefix: `active`, `blocked`, `retired`. */
export function workerStateName(state: WorkerState): string {
  const json = workerStateToJSON(state);
  return json === 'UNRECOGNIZED' ? 'unknown' : json.replace('WORKER_STATE_', '').toLowerCase();
}

/** The worker list table. */
export function workersTable(workers: readonly Worker[]): string {
  return renderTable(
    ['ID', 'STATE', 'ONLINE', 'LABELS', 'JOINED', 'CERT EXPIRES'],
    workers.map((w) => [
      sanitize(w.id),
      workerStateName(w.state),
      String(w.online),
      formatLabels(w.labels),
      formatTimestamp(w.joinTime),
      formatTimestamp(w.certificateExpireTime),
    ]),
  );
}

/** The block `worker get`, `worker block` and `worker deregister` print. */
export function workerDetails(worker: Worker): string {
  return renderDetails([
    ['id', sanitize(worker.id)],
    ['state', workerStateName(worker.state)],
    ['online', String(worker.online)],
    ['labels', formatLabels(worker.labels)],
    ['bootstrap token', sanitize(worker.bootstrapTokenId) || '-'],
    ['joined', formatTimestamp(worker.joinTime)],
    ['registered', formatTimestamp(worker.registerTime)],
    ['state changed', formatTimestamp(worker.stateChangeTime)],
    ['state reason', sanitize(worker.stateReason) || '-'],
    ['cert serial', sanitize(worker.certificateSerial) || '-'],
    ['cert expires', formatTimestamp(worker.certificateExpireTime)],
  ]);
}

/** `2/5`: joins used out of those allowed. An unset maximum reads 1, as the contract defines. */
function tokenUses(token: BootstrapToken): string {
  return `${token.uses}/${token.maxUses === 0 ? 1 : token.maxUses}`;
}

/** The bootstrap token list table; REVOKED is the revocation time or `-`. */
export function tokensTable(tokens: readonly BootstrapToken[]): string {
  return renderTable(
    ['ID', 'DESCRIPTION', 'USES', 'EXPIRES', 'REVOKED', 'LABELS', 'CREATED BY'],
    tokens.map((t) => [
      sanitize(t.id),
      sanitize(t.description) || '-',
      tokenUses(t),
      formatTimestamp(t.expireTime),
      formatTimestamp(t.revokeTime),
      formatLabels(t.labels),
      sanitize(t.createdBy) || '-',
    ]),
  );
}

/**
 * The command that joins a worker host with a new token, its values quoted for a POSIX shell
 * where they need it.
 */
export function joinCommand(server: string, token: string, caHash: string): string {
  return [
    'citadel-agent join',
    `--server ${shellWord(server)}`,
    `--token ${shellWord(token)}`,
    `--ca-hash ${shellWord(caHash)}`,
  ].join(' ');
}

/**
 * The lines `token create` writes to standard error after the token itself: what was created,
 * the join command for `server` (the address this CLI dialled), and the warnings.
 */
export function tokenCreatedNotes(
  response: CreateBootstrapTokenResponse,
  server: string,
): string[] {
  const token = response.bootstrapToken;
  const uses = token === undefined ? 1 : token.maxUses || 1;
  const notes = [
    `created bootstrap token ${sanitize(token?.id ?? '?')}: ` +
      `expires ${formatTimestamp(token?.expireTime)}, ${uses} join${uses === 1 ? '' : 's'}`,
    `join a worker host with:\n  ${joinCommand(server, response.token, response.caHash)}`,
  ];
  if (isLoopback(server)) {
    notes.push(
      `${sanitize(server)} is this machine's loopback address: on the worker host, use an ` +
        'address of the server that host can reach',
    );
  }
  notes.push('WARNING: store the token now; it is not stored and will not be shown again');
  return notes;
}

/** Whether the host of `host:port` (or a bare host) is this machine. */
export function isLoopback(server: string): boolean {
  const host = server
    // grpc-js target schemes: dns:host, dns:///host, dns://resolver/host, ipv4:, ipv6:.
    .replace(/^dns:(\/\/[^/]*\/)?/i, '')
    .replace(/^ipv[46]:/i, '')
    .replace(/:\d+$/, '')
    .replace(/^\[(.*)\]$/, '$1')
    .toLowerCase();
  return host === 'localhost' || host === '::1' || /^127(\.\d{1,3}){3}$/.test(host);
}

/** `text`, single-quoted unless it is made only of characters no shell treats specially. */
function shellWord(text: string): string {
  const safe = sanitize(text);
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(safe)) return safe;
  return `'${safe.replaceAll("'", `'\\''`)}'`;
}
