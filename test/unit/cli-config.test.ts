import assert from 'node:assert/strict';
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
        assert.ok(err instanceof ConfigError);
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
