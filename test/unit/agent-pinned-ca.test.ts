import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import * as tls from 'node:tls';

import { caHash, fetchPinnedCa, parseCaHash } from '../../agent/pinned-ca.js';
import { InvalidArgumentError, UnauthenticatedError } from '../../common/errors.js';
import { caFingerprint, createCa, issueServerCert } from '../../server/tls/ca.js';

/** A TLS server that counts connections and the application bytes it receives. */
async function startTlsServer(opts: { key: string; cert: string }) {
  const received: Buffer[] = [];
  let connections = 0;
  const server = tls.createServer({ ...opts, ALPNProtocols: ['h2'] }, (socket) => {
    socket.on('data', (chunk: Buffer) => received.push(chunk));
    socket.on('error', () => {});
  });
  server.on('connection', () => connections++);
  server.on('tlsClientError', () => {});
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as AddressInfo).port,
    received,
    connections: () => connections,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

void describe('fetchPinnedCa', () => {
  let ca: Awaited<ReturnType<typeof createCa>>;
  let withChain: Awaited<ReturnType<typeof startTlsServer>>;
  let leafOnly: Awaited<ReturnType<typeof startTlsServer>>;

  before(async () => {
    ca = await createCa();
    const serving = await issueServerCert(ca, {
      commonName: 'citadel',
      dnsNames: ['localhost'],
      ipAddresses: ['127.0.0.1'],
    });
    // As the Citadel server does: the CA certificate appended to the served chain.
    withChain = await startTlsServer({ key: serving.keyPem, cert: serving.certPem + ca.certPem });
    leafOnly = await startTlsServer({ key: serving.keyPem, cert: serving.certPem });
  });

  after(async () => {
    await withChain.close();
    await leafOnly.close();
  });

  void it('returns the CA certificate when its hash matches, by IP or by name', async () => {
    const expected = caFingerprint(ca.certPem);
    for (const host of ['127.0.0.1', 'localhost']) {
      const pinned = await fetchPinnedCa({ host, port: withChain.port }, expected);
      assert.equal(pinned.hash, expected);
      assert.equal(pinned.pem.trim(), ca.certPem.trim());
    }
  });

  void it('stops after the handshake on a mismatch, having sent nothing', async () => {
    const wrong = `sha256:${'ab'.repeat(32)}`;
    const before = withChain.connections();
    await assert.rejects(
      fetchPinnedCa({ host: '127.0.0.1', port: withChain.port }, wrong),
      (err: unknown) => {
        assert.ok(err instanceof UnauthenticatedError, 'err instanceof UnauthenticatedError');
        assert.equal(
          err.message,
          `CA hash mismatch: expected ${wrong}, server presented ${caFingerprint(ca.certPem)}`,
        );
        return true;
      },
    );
    // Let the server see the close; still no application data.
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(withChain.connections(), before + 1);
    assert.equal(Buffer.concat(withChain.received).length, 0);

    // Control: the meter does see bytes a client sends.
    const client = tls.connect({
      host: '127.0.0.1',
      port: withChain.port,
      rejectUnauthorized: false,
    });
    await once(client, 'secureConnect');
    client.end('hello');
    await once(client, 'close');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(Buffer.concat(withChain.received).toString(), 'hello');
  });

  void it('refuses a server whose chain carries no self-signed CA', async () => {
    await assert.rejects(
      fetchPinnedCa({ host: '127.0.0.1', port: leafOnly.port }, caFingerprint(ca.certPem)),
      /did not present a self-signed CA certificate/,
    );
  });

  void it('fails as unavailable when nothing listens', async () => {
    await assert.rejects(
      fetchPinnedCa({ host: '127.0.0.1', port: 1 }, caFingerprint(ca.certPem)),
      (err: unknown) => (err as Error).name === 'UnavailableError',
    );
  });
});

void describe('parseCaHash', () => {
  void it('normalizes hex to lowercase and requires the sha256: prefix', () => {
    const hex = 'AB'.repeat(32);
    assert.equal(parseCaHash(`sha256:${hex}`, 'f'), `sha256:${hex.toLowerCase()}`);
    assert.throws(() => parseCaHash(hex, 'f'), InvalidArgumentError);
    assert.throws(() => parseCaHash(`sha1:${hex}`, 'f'), InvalidArgumentError);
    assert.throws(() => parseCaHash(`sha256:${hex}00`, 'f'), InvalidArgumentError);
  });

  void it('agrees with the fingerprint the server publishes', async () => {
    const ca = await createCa();
    const der = new (await import('node:crypto')).X509Certificate(ca.certPem).raw;
    assert.equal(caHash(der), caFingerprint(ca.certPem));
  });
});
