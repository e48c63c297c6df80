/**
 * Mutual-TLS material of the embedded etcd, kept in one folder readable by its owner only: a
 * private etcd CA (not the cluster CA, which lives inside etcd), a certificate etcd serves and
 * peers with (127.0.0.1 / localhost), and a client certificate for citadel-server. Made on the
 * first start and reused while it is whole and valid for more than 30 more days; otherwise the
 * whole set is made afresh. The CA's private key is never written: it only lives while a set is
 * issued, so nothing on disk can sign another certificate etcd would trust.
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { writePrivateFile } from './bootstrap.js';
import { createCa, issueClientCert, issueServerCert, type CaMaterial } from '../tls/ca.js';

/** What an etcd client needs to reach an etcd that requires client certificates. */
export interface EtcdClientTls {
  /** PEM file of the CA that signed etcd's serving certificate. */
  caFile: string;
  /** PEM file of the client certificate. */
  certFile: string;
  /** PEM file of the client certificate's private key (PKCS#8). Secret. */
  keyFile: string;
  /** The same material, as the etcd3 client's `credentials` option takes it. */
  credentials: { rootCertificate: Buffer; certChain: Buffer; privateKey: Buffer };
  /**
   * The DNS name to verify etcd's certificate against (and send as SNI) rather than the IP in
   * the endpoint: grpc option `grpc.ssl_target_name_override`. Node deprecates IP server names.
   */
  serverName: string;
}

/** The files etcd itself is started with (`--trusted-ca-file`, `--cert-file`, `--key-file`). */
export interface EtcdServerTls {
  caFile: string;
  certFile: string;
  keyFile: string;
}

export interface EmbeddedEtcdTls {
  server: EtcdServerTls;
  client: EtcdClientTls;
  /** Why a new set was made on this call (e.g. "server.crt is missing"); undefined if reused. */
  renewed: string | undefined;
}

/** The client certificate's identity (URI SAN); its CN is `citadel-server`. */
export const ETCD_CLIENT_URI = 'citadel://service/citadel-server';

const CA_VALIDITY_DAYS = 3650;
const LEAF_VALIDITY_DAYS = 825;
/** A set is made afresh when any certificate expires within this. */
const RENEW_BEFORE_MS = 30 * 24 * 60 * 60 * 1000;
const CLOCK_SKEW_MS = 5 * 60 * 1000;
const SERVER_DNS_NAMES = ['localhost'];
const SERVER_IPS = ['127.0.0.1'];

interface Paths {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

function pathsIn(dir: string): Paths {
  return {
    ca: path.join(dir, 'ca.crt'),
    serverCert: path.join(dir, 'server.crt'),
    serverKey: path.join(dir, 'server.key'),
    clientCert: path.join(dir, 'client.crt'),
    clientKey: path.join(dir, 'client.key'),
  };
}

/**
 * Returns the embedded etcd's TLS material in `dir` (created with mode 0700; every file 0600),
 * making a new set if a file is missing, readable by others, mismatched, or a certificate
 * expires within 30 days.
 * @param now The time the existing set is judged at (tests move it forward). @default Date.now()
 */
export async function ensureEtcdTls(dir: string, now = Date.now()): Promise<EmbeddedEtcdTls> {
  const folder = path.resolve(dir);
  await fs.mkdir(folder, { recursive: true, mode: 0o700 });
  await fs.chmod(folder, 0o700);
  const files = pathsIn(folder);
  let renewed: string | undefined;
  let loaded = await load(files, now);
  if (typeof loaded === 'string') {
    renewed = loaded;
    await issueSet(files);
    loaded = await load(files, Date.now());
    if (typeof loaded === 'string') {
      throw new Error(`the etcd TLS material just written to ${folder} is unusable: ${loaded}`);
    }
  }
  return {
    server: { caFile: files.ca, certFile: files.serverCert, keyFile: files.serverKey },
    client: {
      caFile: files.ca,
      certFile: files.clientCert,
      keyFile: files.clientKey,
      credentials: {
        rootCertificate: loaded.ca,
        certChain: loaded.clientCert,
        privateKey: loaded.clientKey,
      },
      serverName: SERVER_DNS_NAMES[0]!,
    },
    renewed,
  };
}

/** The files' contents if the set is usable, else why not. */
async function load(
  files: Paths,
  now: number,
): Promise<{ ca: Buffer; clientCert: Buffer; clientKey: Buffer } | string> {
  const content: Partial<Record<keyof Paths, Buffer>> = {};
  for (const [name, file] of Object.entries(files) as [keyof Paths, string][]) {
    try {
      const stat = await fs.lstat(file);
      if (!stat.isFile()) return `${path.basename(file)} is not a regular file`;
      // All are written 0600: a looser mode means someone changed it, and a key others could
      // read may have been copied.
      if ((stat.mode & 0o077) !== 0) return `${path.basename(file)} is readable by others`;
      content[name] = await fs.readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return `${path.basename(file)} is missing`;
      }
      throw err;
    }
  }
  const { ca, serverCert, serverKey, clientCert, clientKey } = content as Record<
    keyof Paths,
    Buffer
  >;
  let caCert: X509Certificate;
  const certs: [string, X509Certificate, Buffer][] = [];
  try {
    caCert = new X509Certificate(ca);
    certs.push(['server.crt', new X509Certificate(serverCert), serverKey]);
    certs.push(['client.crt', new X509Certificate(clientCert), clientKey]);
  } catch (err) {
    return `a certificate does not parse (${(err as Error).message})`;
  }
  if (!caCert.ca) return 'ca.crt is not a CA certificate';
  for (const [name, cert] of [['ca.crt', caCert], ...certs] as const) {
    if (Date.parse(cert.validFrom) > now + CLOCK_SKEW_MS) return `${name} is not valid yet`;
    if (Date.parse(cert.validTo) - now < RENEW_BEFORE_MS) return `${name} expires within 30 days`;
  }
  for (const [name, cert, key] of certs) {
    if (!cert.checkIssued(caCert) || !cert.verify(caCert.publicKey)) {
      return `${name} is not signed by ca.crt`;
    }
    try {
      if (!cert.checkPrivateKey(createPrivateKey(key))) return `${name} does not match its key`;
    } catch (err) {
      return `the key of ${name} does not parse (${(err as Error).message})`;
    }
  }
  const server = certs[0]![1];
  if (SERVER_IPS.some((ip) => server.checkIP(ip) === undefined)) {
    return `server.crt does not name ${SERVER_IPS.join(', ')}`;
  }
  return { ca, clientCert, clientKey };
}

/** Makes a new CA and both certificates; the CA file goes last, so a torn write never loads. */
async function issueSet(files: Paths): Promise<void> {
  const ca = await createCa({
    commonName: 'Citadel embedded etcd CA',
    validityDays: CA_VALIDITY_DAYS,
  });
  const server = await issueServingCert(ca);
  const client = await issueClientCert(ca, {
    uri: ETCD_CLIENT_URI,
    commonName: 'citadel-server',
    validityMs: LEAF_VALIDITY_DAYS * 24 * 60 * 60 * 1000,
  });
  await writePrivateFile(files.serverKey, server.keyPem);
  await writePrivateFile(files.serverCert, server.certPem);
  await writePrivateFile(files.clientKey, client.keyPem!);
  await writePrivateFile(files.clientCert, client.certPem);
  await writePrivateFile(files.ca, ca.certPem);
}

/**
 * etcd's own certificate. It needs clientAuth besides serverAuth: etcd's HTTP gateway dials
 * etcd's gRPC port presenting it, and a peer would present it too.
 */
function issueServingCert(ca: CaMaterial): Promise<{ certPem: string; keyPem: string }> {
  return issueServerCert(ca, {
    commonName: 'citadel embedded etcd',
    dnsNames: [...SERVER_DNS_NAMES],
    ipAddresses: [...SERVER_IPS],
    validityDays: LEAF_VALIDITY_DAYS,
    alsoClientAuth: true,
  });
}
