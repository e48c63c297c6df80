/**
 * Server addresses as the agent takes them (`HOST:PORT`, `[IPv6]:PORT`) and the gRPC channel
 * settings each one needs to be dialled over TLS.
 */
import type { ChannelOptions } from '@grpc/grpc-js';
import { isIP } from 'node:net';

import { InvalidArgumentError } from '../common/errors.js';

/** A parsed `HOST:PORT`. `host` holds an IPv6 literal without its brackets. */
export interface ServerAddress {
  readonly host: string;
  readonly port: number;
}

/**
 * The name checked against the server certificate when the agent dials an IP literal. Every
 * Citadel serving certificate names `localhost`; trust itself comes from the pinned cluster CA.
 */
export const IP_TLS_SERVER_NAME = 'localhost';

/**
 * Parses `HOST:PORT` or `[IPV6]:PORT`.
 *
 * @param field the flag or state key the text came from, named in the error.
 * @throws InvalidArgumentError when the host or port is missing or the port is not 1-65535.
 */
export function parseServerAddress(text: string, field: string): ServerAddress {
  const input = text.trim();
  const match = /^(?:\[([^\]\s]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(input);
  if (match === null) {
    throw new InvalidArgumentError(
      field,
      `"${input}" is not HOST:PORT (for example "citadel.example.com:7443" or "[::1]:7443")`,
    );
  }
  const host = match[1] ?? match[2]!;
  if (match[1] !== undefined && isIP(host) !== 6) {
    throw new InvalidArgumentError(field, `"${host}" in brackets is not an IPv6 address`);
  }
  const port = Number(match[3]);
  if (port < 1 || port > 65_535) {
    throw new InvalidArgumentError(field, `port ${port} is out of range (1-65535)`);
  }
  return { host, port };
}

/**
 * Parses a comma-separated list of addresses.
 *
 * @throws InvalidArgumentError when the list is empty or an address is malformed.
 */
export function parseServerList(text: string, field: string): ServerAddress[] {
  const parts = text
    .split(',')
    .map((p) => p.trim())
    .filter((p) => p !== '');
  if (parts.length === 0) throw new InvalidArgumentError(field, 'no server address given');
  return parts.map((p) => parseServerAddress(p, field));
}

/** Formats an address back to `HOST:PORT`, bracketing IPv6 literals. */
export function formatServerAddress(address: ServerAddress): string {
  return isIP(address.host) === 6
    ? `[${address.host}]:${address.port}`
    : `${address.host}:${address.port}`;
}

/** Whether the host is an IP literal (so TLS cannot use it as the server name). */
export function isIpHost(host: string): boolean {
  return isIP(host) !== 0;
}

/**
 * Channel options for dialling `address` over TLS. For an IP literal the certificate is checked
 * against {@link IP_TLS_SERVER_NAME}, which also keeps Node from warning about an IP used as
 * a TLS server name (DEP0123).
 */
export function tlsChannelOptions(address: ServerAddress): ChannelOptions {
  if (!isIpHost(address.host)) return {};
  return {
    'grpc.ssl_target_name_override': IP_TLS_SERVER_NAME,
    'grpc.default_authority': IP_TLS_SERVER_NAME,
  };
}
