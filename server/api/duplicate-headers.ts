/**
 * Keeps every `authorization` header a client sent. Node's HTTP/2 layer treats `authorization`
 * as a single-value header and silently keeps the first of several, so a request carrying two
 * credentials would be admitted with whichever came first. Raw headers still hold them all: a
 * listener that runs before grpc-js's own puts every value back, and authentication then refuses
 * the ambiguous request (auth/authentication.ts).
 */
import type {
  Http2SecureServer,
  Http2Server,
  IncomingHttpHeaders,
  ServerHttp2Stream,
} from 'node:http2';
import type { Server } from '@grpc/grpc-js';

/** Headers Node keeps one value of, but of which a second value must not go unseen. */
const WATCHED = new Set(['authorization']);

/**
 * Installs the listener on every HTTP/2 server a bound grpc-js server runs.
 * @throws Error if grpc-js no longer keeps its HTTP/2 servers where this looks (an upgrade
 * changed its internals): refusing to start beats admitting ambiguous credentials.
 */
export function keepDuplicateHeaders(server: Server): void {
  const http2Servers = (server as unknown as { http2Servers?: unknown }).http2Servers;
  if (!(http2Servers instanceof Map) || http2Servers.size === 0) {
    throw new Error('cannot reach the HTTP/2 servers of @grpc/grpc-js to check duplicate headers');
  }
  for (const http2 of http2Servers.keys() as Iterable<Http2Server | Http2SecureServer>) {
    http2.prependListener(
      'stream',
      (
        _stream: ServerHttp2Stream,
        headers: IncomingHttpHeaders,
        _flags: number,
        rawHeaders: string[],
      ) => {
        const seen = new Map<string, string[]>();
        for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
          const name = rawHeaders[i]!.toLowerCase();
          if (WATCHED.has(name)) seen.set(name, [...(seen.get(name) ?? []), rawHeaders[i + 1]!]);
        }
        for (const [name, values] of seen) {
          if (values.length > 1) (headers as Record<string, string[]>)[name] = values;
        }
      },
    );
  }
}
