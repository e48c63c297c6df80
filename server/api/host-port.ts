/** Listen addresses: `host:port`, with IPv6 hosts in brackets. */
import { ConfigError } from '../../common/errors.js';

/**
 * Parses "host:port" ("[::1]:7443" for IPv6); port 0 picks a free port.
 * @throws ConfigError naming `field` when the value is not host:port.
 */
export function parseHostPort(value: string, field: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(field, `${JSON.stringify(value)} is not host:port`);
  return { host: (m[1] ?? m[2])!, port };
}
