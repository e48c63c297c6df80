import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import assert from 'node:assert/strict';
import { KeyObject, webcrypto } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { resolveConnection } from '../../cli/config.js';
import { ConfigError } from '../../common/errors.js';

void describe('resolveConnection', () => {
  let dir = '';
  let home = '';
  let configFile = '';
  const path = (name: string): string => join(dir, name);

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'citadelctl-config-'));
    home = join(dir, 'home');
    mkdirSync(home);
    for (const name of ['file-ca.crt', 'env-ca.crt', 'flag-ca.crt']) {
      writeFileSync(path(name), `PEM ${name}`);
    }
    writeFileSync(path('file.key'), 'sk_live_file\n');
    writeFileSync(path('env.key'), '  sk_live_envfile \n');
    writeFileSync(path('flag.key'), 'sk_live_flag');
    writeFileSync(path('empty.key'), ' \n');
    configFile = path('config.yaml');
    // Relative paths in the file resolve against the file's directory.
    writeFileSync(
      configFile,
      'server: file-host:1\nca: file-ca.crt\napiKeyFile: ./file.key\ninsecure: false\n',
    );
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  void it('uses the config file when nothing else is set', () => {
    const s = resolveConnection({ config: configFile }, {}, home);
    assert.equal(s.server, 'file-host:1');
    assert.equal(s.caFile, path('file-ca.crt'));
    assert.equal(s.caPem?.toString(), 'PEM file-ca.crt');
    assert.equal(s.apiKey, 'sk_live_file');
    assert.equal(s.apiKeySource, path('file.key'));
    assert.equal(s.insecure, false);
    assert.equal(s.configFile, configFile);
  });

  void it('lets the environment override the file', () => {
    const env = {
      CITADEL_SERVER: 'env-host:2',
      CITADEL_CA: path('env-ca.crt'),
      CITADEL_API_KEY_FILE: path('env.key'),
    };
    const s = resolveConnection({ config: configFile }, env, home);
    assert.equal(s.server, 'env-host:2');
    assert.equal(s.caFile, path('env-ca.crt'));
    assert.equal(s.apiKey, 'sk_live_envfile');
    assert.equal(s.apiKeySource, path('env.key'));
  });

  void it('takes CITADEL_API_KEY over CITADEL_API_KEY_FILE, trimmed', () => {
    const env = { CITADEL_API_KEY: ' sk_live_env\n', CITADEL_API_KEY_FILE: path('env.key') };
    const s = resolveConnection({ config: configFile }, env, home);
    assert.equal(s.apiKey, 'sk_live_env');
    assert.equal(s.apiKeySource, 'CITADEL_API_KEY');
  });

  void it('lets flags override the environment and the file', () => {
    const env = {
      CITADEL_SERVER: 'env-host:2',
      CITADEL_CA: path('env-ca.crt'),
      CITADEL_API_KEY: 'sk_live_env',
    };
    const s = resolveConnection(
      {
        config: configFile,
        server: 'flag-host:3',
        ca: path('flag-ca.crt'),
        apiKeyFile: path('flag.key'),
      },
      env,
      home,
    );
    assert.equal(s.server, 'flag-host:3');
    assert.equal(s.caPem?.toString(), 'PEM flag-ca.crt');
    assert.equal(s.apiKey, 'sk_live_flag');
  });

  void it('finds the default config under XDG_CONFIG_HOME, else ~/.config', () => {
    const xdg = join(dir, 'xdg');
    mkdirSync(join(xdg, 'citadel'), { recursive: true });
    writeFileSync(
      join(xdg, 'citadel', 'config.yaml'),
      `server: xdg-host:4\napiKeyFile: ${path('file.key')}\n`,
    );
    assert.equal(resolveConnection({}, { XDG_CONFIG_HOME: xdg }, home).server, 'xdg-host:4');

    mkdirSync(join(home, '.config', 'citadel'), { recursive: true });
    writeFileSync(
      join(home, '.config', 'citadel', 'config.yaml'),
      'server: home-host:5\napiKeyFile: ~/../file.key\n',
    );
    const s = resolveConnection({}, {}, home);
    assert.equal(s.server, 'home-host:5');
    assert.equal(s.apiKey, 'sk_live_file');
  });

  void it('defaults to localhost:7443 and the system trust store without a config file', () => {
    const s = resolveConnection(
      {},
      { XDG_CONFIG_HOME: join(dir, 'none'), CITADEL_API_KEY: 'k' },
      home,
    );
    assert.equal(s.server, 'localhost:7443');
    assert.equal(s.caFile, undefined);
    assert.equal(s.insecure, false);
    assert.equal(s.configFile, undefined);
  });

  void it('adds the default port to a bare host', () => {
    const env = { CITADEL_API_KEY: 'k', XDG_CONFIG_HOME: join(dir, 'none') };
    assert.equal(
      resolveConnection({ server: 'citadel.internal' }, env, home).server,
      'citadel.internal:7443',
    );
    assert.equal(resolveConnection({ server: '[::1]' }, env, home).server, '[::1]:7443');
    assert.equal(resolveConnection({ server: '10.0.0.1:9000' }, env, home).server, '10.0.0.1:9000');
  });

  void it('reads insecure from flag, CITADEL_INSECURE and the file, and then needs no CA', () => {
    const env = { CITADEL_API_KEY: 'k', XDG_CONFIG_HOME: join(dir, 'none') };
    assert.equal(
      resolveConnection({ insecure: true, ca: path('missing.crt') }, env, home).insecure,
      true,
    );
    assert.equal(resolveConnection({}, { ...env, CITADEL_INSECURE: '1' }, home).insecure, true);
    const insecureFile = path('insecure.yaml');
    writeFileSync(insecureFile, 'insecure: true\n');
    assert.equal(resolveConnection({ config: insecureFile }, env, home).insecure, true);
    assert.equal(
      resolveConnection({ config: insecureFile }, { ...env, CITADEL_INSECURE: '0' }, home).insecure,
      false,
    );
  });

  void it('explains a missing API key and where the first admin key is', () => {
    assert.throws(
      () => resolveConnection({}, { XDG_CONFIG_HOME: join(dir, 'none') }, home),
      (err: unknown) =>
        err instanceof ConfigError &&
        err.message.includes('no API key: set CITADEL_API_KEY or --api-key-file') &&
        err.message.includes('<data-dir>/admin.key'),
    );
  });

  void it('names the source of a missing CA, key or config file, and an empty key', () => {
    const env = { CITADEL_API_KEY: 'k', XDG_CONFIG_HOME: join(dir, 'none') };
    const fails = (fn: () => unknown, field: string, message: RegExp): void => {
      assert.throws(fn, (err: unknown) => {
        assert.ok(err instanceof ConfigError, 'err instanceof ConfigError');
        assert.equal(err.field, field);
        assert.match(err.message, message);
        return true;
      });
    };
    fails(
      () => resolveConnection({ ca: path('missing.crt') }, env, home),
      '--ca',
      /does not exist/,
    );
    fails(
      () => resolveConnection({}, { ...env, CITADEL_CA: path('missing.crt') }, home),
      'CITADEL_CA',
      /missing\.crt/,
    );
    fails(
      () => resolveConnection({ apiKeyFile: path('missing.key') }, env, home),
      '--api-key-file',
      /does not exist/,
    );
    fails(
      () => resolveConnection({ apiKeyFile: path('empty.key') }, env, home),
      '--api-key-file',
      /empty/,
    );
    fails(
      () => resolveConnection({ config: path('missing.yaml') }, env, home),
      '--config',
      /does not exist/,
    );
    fails(
      () => resolveConnection({}, { ...env, CITADEL_INSECURE: 'yes' }, home),
      'CITADEL_INSECURE',
      /1 or 0/,
    );
  });

  void it('refuses unknown keys and the key itself in the config file', () => {
    const env = { CITADEL_API_KEY: 'k' };
    const bad = path('bad.yaml');
    writeFileSync(bad, 'sever: typo:1\n');
    assert.throws(() => resolveConnection({ config: bad }, env, home), /sever: unknown key/);
    writeFileSync(bad, 'apiKey: sk_live_oops\n');
    assert.throws(() => resolveConnection({ config: bad }, env, home), /apiKeyFile/);
    writeFileSync(bad, 'insecure: "yes"\n');
    assert.throws(
      () => resolveConnection({ config: bad }, env, home),
      /insecure: must be a non-empty boolean/,
    );
    writeFileSync(bad, '- a\n- b\n');
    assert.throws(() => resolveConnection({ config: bad }, env, home), ConfigError);
  });
});

void describe('resolveConnection with a client certificate', () => {
  let dir = '';
  const path = (name: string): string => join(dir, name);
  const noConfig = (): Record<string, string> => ({ XDG_CONFIG_HOME: join(dir, 'none') });

  /** A self-signed certificate and its PKCS#8 key, as PEM files `<name>.crt` and `<name>.key`. */
  async function writeIdentity(name: string): Promise<void> {
    const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, [
      'sign',
      'verify',
    ]);
    const cert = await x509.X509CertificateGenerator.createSelfSigned(
      {
        serialNumber: '01',
        name: `CN=${name}`,
        notBefore: new Date(Date.now() - 60_000),
        notAfter: new Date(Date.now() + 3_600_000),
        keys,
        signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      },
      webcrypto,
    );
    writeFileSync(path(`${name}.crt`), cert.toString('pem'));
    const keyPem = KeyObject.from(keys.privateKey).export({ type: 'pkcs8', format: 'pem' });
    writeFileSync(path(`${name}.key`), keyPem);
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'citadelctl-cert-'));
    await writeIdentity('svc');
    await writeIdentity('other');
    writeFileSync(path('not.pem'), 'hello');
    writeFileSync(path('api.key'), 'sk_live_file\n');
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  void it('needs no API key with --cert and --key, and reads both', () => {
    const s = resolveConnection({ cert: path('svc.crt'), key: path('svc.key') }, noConfig(), dir);
    assert.equal(s.certFile, path('svc.crt'));
    assert.equal(s.keyFile, path('svc.key'));
    assert.match(s.certPem?.toString() ?? '', /BEGIN CERTIFICATE/);
    assert.match(s.keyPem?.toString() ?? '', /BEGIN PRIVATE KEY/);
    assert.equal(s.apiKey, undefined);
    assert.equal(s.apiKeySource, undefined);
  });

  void it('still reads an API key given with the certificate', () => {
    const env = { ...noConfig(), CITADEL_API_KEY: 'sk_live_env' };
    const s = resolveConnection({ cert: path('svc.crt'), key: path('svc.key') }, env, dir);
    assert.equal(s.apiKey, 'sk_live_env');
    assert.equal(s.certFile, path('svc.crt'));
  });

  void it('takes CITADEL_CERT and CITADEL_KEY, and flags over them', () => {
    const env = {
      ...noConfig(),
      CITADEL_CERT: path('other.crt'),
      CITADEL_KEY: path('other.key'),
    };
    assert.equal(resolveConnection({}, env, dir).certFile, path('other.crt'));
    const s = resolveConnection({ cert: path('svc.crt'), key: path('svc.key') }, env, dir);
    assert.equal(s.certFile, path('svc.crt'));
    assert.equal(s.keyFile, path('svc.key'));
  });

  void it('reads cert and key from the config file, relative to it', () => {
    mkdirSync(path('conf'));
    const config = path('conf/config.yaml');
    writeFileSync(config, 'server: file-host:1\ncert: ../svc.crt\nkey: ../svc.key\n');
    const s = resolveConnection({ config }, {}, dir);
    assert.equal(s.certFile, path('svc.crt'));
    assert.equal(s.keyFile, path('svc.key'));
    assert.equal(s.apiKey, undefined);
  });

  void it('still requires an API key without a certificate', () => {
    assert.throws(
      () => resolveConnection({}, noConfig(), dir),
      (err: unknown) =>
        err instanceof ConfigError && err.message.includes('or a client certificate with --cert'),
    );
  });

  void it('refuses half an identity, insecure, unreadable files and a mismatched key', () => {
    const fails = (fn: () => unknown, field: string, message: RegExp): void => {
      assert.throws(fn, (err: unknown) => {
        assert.ok(err instanceof ConfigError, String(err));
        assert.equal(err.field, field);
        assert.match(err.message, message);
        return true;
      });
    };
    const env = noConfig();
    fails(() => resolveConnection({ cert: path('svc.crt') }, env, dir), '--cert', /--key/);
    fails(
      () => resolveConnection({}, { ...env, CITADEL_KEY: path('svc.key') }, dir),
      'CITADEL_KEY',
      /--cert/,
    );
    fails(
      () =>
        resolveConnection(
          { cert: path('svc.crt'), key: path('svc.key'), insecure: true },
          env,
          dir,
        ),
      '--cert',
      /needs TLS/,
    );
    fails(
      () => resolveConnection({ cert: path('missing.crt'), key: path('svc.key') }, env, dir),
      '--cert',
      /does not exist/,
    );
    fails(
      () => resolveConnection({ cert: path('not.pem'), key: path('svc.key') }, env, dir),
      '--cert',
      /not a PEM certificate/,
    );
    fails(
      () => resolveConnection({ cert: path('svc.crt'), key: path('not.pem') }, env, dir),
      '--key',
      /not an unencrypted PEM private key/,
    );
    fails(
      () => resolveConnection({ cert: path('svc.crt'), key: path('other.key') }, env, dir),
      '--key',
      /not the private key of/,
    );
    // A broken API key file is still an error, certificate or not.
    fails(
      () =>
        resolveConnection(
          { cert: path('svc.crt'), key: path('svc.key'), apiKeyFile: path('missing.key') },
          env,
          dir,
        ),
      '--api-key-file',
      /does not exist/,
    );
  });
});
