/**
 * `citadelctl service-cert ...`: client certificates for service identities. `issue` makes the
 * key pair here, writes the private key (it never leaves this machine), sends only a CSR to
 * AdminService.IssueServiceCertificate and writes the certificate next to the key. The pure
 * parts are in service-cert-requests.ts, re-exported here.
 */

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import type { Command } from 'commander';
import { KeyObject, webcrypto } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { unlink, writeFile } from 'node:fs/promises';

import { InvalidArgumentError } from '../../common/errors.js';
import {
  type IssueServiceCertificateResponse,
  RevokeServiceCertificateResponse,
} from '../../gen/citadel/v1/admin_service.js';
import { formatTimestamp, renderDetails, sanitize } from '../format.js';
import {
  addGlobalOptions,
  printJson,
  printLine,
  printNote,
  printResult,
  readGlobalFlags,
  withSession,
} from '../session.js';
import {
  buildIssueServiceCertificateRequest,
  buildRevokeServiceCertificateRequest,
  type IssueServiceCertFlags,
  planServiceCertificate,
  type ServiceCertPlan,
  type ServiceKeyType,
} from './service-cert-requests.js';

export * from './service-cert-requests.js';

const ALGORITHMS = {
  p256: {
    key: { name: 'ECDSA', namedCurve: 'P-256' },
    signing: { name: 'ECDSA', hash: 'SHA-256' },
  },
  ed25519: { key: { name: 'Ed25519' }, signing: { name: 'Ed25519' } },
} as const;

/** A fresh private key and the CSR it signed. */
export interface ServiceKeyMaterial {
  /** PKCS#8 PEM. Secret. */
  readonly keyPem: string;
  /** PKCS#10 PEM, subject CN=<user id>. */
  readonly csrPem: string;
}

/**
 * Generates a key pair with WebCrypto and a PKCS#10 request signed with it. The subject names
 * the user for people reading the CSR; the server ignores it and names the certificate itself.
 */
export async function generateServiceKey(
  userId: string,
  keyType: ServiceKeyType,
): Promise<ServiceKeyMaterial> {
  const algorithm = ALGORITHMS[keyType];
  const keys = (await webcrypto.subtle.generateKey(algorithm.key, true, [
    'sign',
    'verify',
  ])) as webcrypto.CryptoKeyPair;
  const csr = await x509.Pkcs10CertificateRequestGenerator.create(
    { name: `CN=${userId}`, keys, signingAlgorithm: algorithm.signing },
    webcrypto,
  );
  const keyPem = KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' });
  return { keyPem: keyPem.toString(), csrPem: csr.toString('pem') };
}

/** Adds `service-cert` and its subcommands to `program`. */
export function registerServiceCertCommands(program: Command): void {
  const serviceCert = program
    .command('service-cert')
    .description(
      'issue and revoke client certificates for service identities (needs an admin key)',
    );

  addGlobalOptions(
    serviceCert
      .command('issue')
      .description(
        'make a key pair here and get a certificate that authenticates as USER_ID over mutual TLS',
      )
      .argument('<user-id>', 'the user the service authenticates as; must exist and be enabled')
      .option('--out-dir <dir>', 'where <user-id>.key, <user-id>.crt and ca.crt go [.]')
      .option('--validity <duration>', 'certificate lifetime, 60s to 365d [90d]')
      .option('--key-type <type>', 'p256|ed25519 [p256]'),
  )
    .addHelpText(
      'after',
      `
Existing <user-id>.key and <user-id>.crt files are never overwritten. The service then connects
with the certificate instead of an API key, e.g.:
  citadelctl --cert alice.crt --key alice.key --ca ca.crt task list`,
    )
    .action(async (userId: string, flags: IssueServiceCertFlags, cmd: Command) => {
      const plan = planServiceCertificate(userId, flags);
      checkOutputFiles(plan);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const material = await generateServiceKey(plan.userId, plan.keyType);
        await writeNew(plan.keyFile, material.keyPem, 0o600);
        let response: IssueServiceCertificateResponse;
        try {
          response = await client.admin.issueServiceCertificate(
            buildIssueServiceCertificateRequest(plan, material.csrPem),
          );
        } catch (err) {
          // Nothing was issued for this key: remove it so the same command can be run again.
          await unlink(plan.keyFile).catch(() => undefined);
          throw err;
        }
        try {
          await writeNew(plan.certFile, response.certificatePem, 0o644);
        } catch (err) {
          printNote(
            `certificate ${sanitize(response.serial)} was issued but not saved; revoke it with ` +
              `citadelctl service-cert revoke ${sanitize(response.serial)}`,
          );
          throw err;
        }
        const ca = await writeCaIfAbsent(plan.caFile, response.caCertificatePem);
        if (globals.output === 'json') {
          printJson({
            userId: plan.userId,
            serial: response.serial,
            expireTime: response.expireTime?.toISOString(),
            keyFile: plan.keyFile,
            certificateFile: plan.certFile,
            ...(ca !== 'none' && { caFile: plan.caFile }),
          });
        } else {
          printLine(
            renderDetails([
              ['user', plan.userId],
              ['serial', sanitize(response.serial)],
              ['expires', formatTimestamp(response.expireTime)],
              ['key', plan.keyFile],
              ['certificate', plan.certFile],
              ['ca', ca === 'none' ? '-' : `${plan.caFile}${ca === 'existing' ? ' (kept)' : ''}`],
            ]),
          );
        }
        printNote(`keep ${plan.keyFile} private: whoever holds it acts as ${plan.userId}`);
      });
    });

  addGlobalOptions(
    serviceCert
      .command('revoke')
      .description('revoke a service certificate by serial: it is refused at once'),
  )
    .argument('<serial>', 'serial in hexadecimal, as service-cert issue prints it')
    .action(async (serial: string, _flags: object, cmd: Command) => {
      const request = buildRevokeServiceCertificateRequest(serial);
      const globals = readGlobalFlags(cmd);
      await withSession(globals, async ({ client }) => {
        const response = await client.admin.revokeServiceCertificate(request);
        printResult(
          globals.output,
          RevokeServiceCertificateResponse.toJSON(response),
          () => `revoked service certificate ${request.serial}`,
        );
      });
    });
}

/**
 * Refuses, before any key is made or call sent, an output directory that is missing or a key
 * or certificate file that exists already.
 * @throws InvalidArgumentError naming --out-dir.
 */
function checkOutputFiles(plan: ServiceCertPlan): void {
  if (statSync(plan.outDir, { throwIfNoEntry: false })?.isDirectory() !== true) {
    throw new InvalidArgumentError('--out-dir', `"${plan.outDir}" is not an existing directory`);
  }
  for (const file of [plan.keyFile, plan.certFile]) {
    if (statSync(file, { throwIfNoEntry: false }) !== undefined) {
      throw new InvalidArgumentError(
        '--out-dir',
        `"${file}" exists; refusing to overwrite it: move it away or choose another --out-dir`,
      );
    }
  }
}

/**
 * Creates `path` with `data`, failing if it exists (O_EXCL), so a file that appeared since
 * checkOutputFiles is not overwritten either.
 */
async function writeNew(path: string, data: string, mode: number): Promise<void> {
  try {
    await writeFile(path, data, { flag: 'wx', mode });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new InvalidArgumentError('--out-dir', `"${path}" exists; refusing to overwrite it`);
    }
    throw err;
  }
}

/**
 * Writes the CA certificate unless the file exists, and says so if an existing one differs.
 * Returns what happened; `none` when the server sent no CA.
 */
async function writeCaIfAbsent(
  path: string,
  pem: string,
): Promise<'written' | 'existing' | 'none'> {
  if (pem === '') return 'none';
  try {
    await writeFile(path, pem, { flag: 'wx', mode: 0o644 });
    return 'written';
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  if (readFileSync(path, 'utf8').trim() !== pem.trim()) {
    printNote(`${path} exists and is not the cluster CA the server sent; left unchanged`);
  }
  return 'existing';
}
