import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';

import { ConfigError, InvalidArgumentError } from '../../common/errors.js';
import { parseConfig, serverOptionsInput } from '../../server/options/option-flags.js';
import { SERVER_OPTION_ROWS } from '../../server/options/option-table.js';
import { compileServerOptions } from '../../server/server-options.js';

// Literal values on purpose: these pin what users see, not what the option table says.

/** The ConfigError (or InvalidArgumentError) `fn` throws, checked for field and message. */
function throwsField(fn: () => unknown, field: string, message: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      err instanceof ConfigError || err instanceof InvalidArgumentError,
      `expected a ConfigError, got ${String(err)}`,
    );
    assert.equal(err.field, field);
    assert.equal(err.message, message);
    return true;
  });
}

void describe('compileServerOptions', () => {
  void it('applies the documented defaults', () => {
    const o = compileServerOptions({});
    const set = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
    assert.deepEqual(set, {
      dataDir: '.citadel',
      listen: '127.0.0.1:7443',
      etcdEndpoints: [],
      etcdPrefix: '/citadel/',
      leaderTtlSeconds: 5,
      missedRunThresholdMs: 15_000,
      timeoutGraceMs: 30_000,
      insecure: false,
      tlsSans: [],
      metricsAddr: '127.0.0.1:9464',
      logLevel: 'info',
      shutdownGraceMs: 10_000,
      authFailureLimit: 20,
      authFailureWindowMs: 60_000,
      jwtRoleClaim: 'citadel_role',
      jwtLeewaySeconds: 30,
      jwtJwksCooldownMs: 30_000,
      jwtAutoProvision: false,
      workerListen: '127.0.0.1:7444',
      workerCertTtlMs: 3_600_000,
      heartbeatIntervalMs: 2000,
      workerLeaseTtlSeconds: 10,
      heartbeatMaxSkewMs: 30_000,
      heartbeatRefusalLimit: 5,
      heartbeatRefusalWindowMs: 60_000,
    });
    assert.equal(o.etcdCaFile, undefined);
    assert.equal(o.masterKeyEnv, undefined);
    assert.ok(Object.isFrozen(o), 'the compiled options are frozen');
  });

  void it('refuses values out of bounds, naming the flag', () => {
    throwsField(
      () => compileServerOptions({ leaderTtlSeconds: 1 }),
      '--leader-ttl',
      '--leader-ttl: must be an integer from 2 to 60',
    );
    throwsField(
      () => compileServerOptions({ workerCertTtlMs: 31 * 86_400_000 }),
      '--worker-cert-ttl',
      '--worker-cert-ttl: must be an integer from 10000 to 2592000000',
    );
    throwsField(
      () => compileServerOptions({ heartbeatIntervalMs: 2.5 }),
      '--heartbeat-interval',
      '--heartbeat-interval: must be an integer from 100 to 60000',
    );
    assert.equal(compileServerOptions({ timeoutGraceMs: 0 }).timeoutGraceMs, 0);
  });

  void it('checks host:port, allowing "" only for the metrics address', () => {
    throwsField(
      () => compileServerOptions({ listen: 'localhost' }),
      '--listen',
      '--listen: "localhost" is not host:port',
    );
    assert.equal(compileServerOptions({ metricsAddr: '' }).metricsAddr, '');
    throwsField(
      () => compileServerOptions({ workerListen: '' }),
      '--worker-listen',
      '--worker-listen: "" is not host:port',
    );
  });

  void it('keeps the rules across fields after the per-field checks', () => {
    throwsField(
      () => compileServerOptions({ workerLeaseTtlSeconds: 3, heartbeatIntervalMs: 2000 }),
      '--worker-lease-ttl',
      '--worker-lease-ttl: must be at least two heartbeat intervals, or one late heartbeat deregisters a worker',
    );
    throwsField(
      () => compileServerOptions({ jwtIssuer: 'https://issuer.example' }),
      '--jwt-jwks-file',
      '--jwt-jwks-file: JWT settings need --jwt-jwks-file or --jwt-jwks-url',
    );
  });
});

void describe('server command line and config file', () => {
  let dir = '';
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'citadel-server-options-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const configFile = async (name: string, yaml: string) => {
    const file = join(dir, name);
    await writeFile(file, yaml);
    return file;
  };

  void it('reads flags under their flag names', () => {
    const input = serverOptionsInput(
      ['--leader-ttl', '7', '--missed-run-threshold', '1m', '--tls-san', 'a,b', '--tls-san', 'c'],
      {},
    );
    assert.deepEqual(input, {
      leaderTtlSeconds: 7,
      missedRunThresholdMs: 60_000,
      tlsSans: ['a', 'b', 'c'],
    });
    assert.deepEqual(serverOptionsInput(['--insecure', '--jwt-auto-provision'], {}), {
      insecure: true,
      jwtAutoProvision: true,
    });
  });

  void it('parses durations in the config file', async () => {
    const file = await configFile(
      'durations.yaml',
      'missedRunThreshold: 2m30s\nheartbeatInterval: 500ms\nworkerCertTtl: 1d\n',
    );
    assert.deepEqual(serverOptionsInput(['--config', file], {}), {
      missedRunThresholdMs: 150_000,
      heartbeatIntervalMs: 500,
      workerCertTtlMs: 86_400_000,
    });
    throwsField(
      () => parseConfig({ timeoutGrace: '30' }, 'c.yaml'),
      'c.yaml: timeoutGrace',
      'c.yaml: timeoutGrace: "30" has no unit; write 30s, 30m or 30h (units: ms, s, m, h, d)',
    );
  });

  void it('lets flags win over the config file', async () => {
    const file = await configFile(
      'flags-win.yaml',
      'leaderTtlSeconds: 6\nlisten: 0.0.0.0:7443\ntlsSans: [from-file]\nshutdownGrace: 20s\n',
    );
    const input = serverOptionsInput(
      ['--config', file, '--leader-ttl', '9', '--tls-san', 'from-flag', '--shutdown-grace', '1s'],
      {},
    );
    assert.deepEqual(input, {
      leaderTtlSeconds: 9,
      listen: '0.0.0.0:7443',
      tlsSans: ['from-flag'],
      shutdownGraceMs: 1000,
    });
    const o = compileServerOptions(input);
    assert.equal(o.leaderTtlSeconds, 9);
    assert.equal(o.listen, '0.0.0.0:7443');
  });

  void it('refuses unknown config keys, flag spellings and the environment-only key', () => {
    for (const key of ['bogus', 'leaderTtl', 'missedRunThresholdMs', 'masterKeyEnv']) {
      let known: string[] = [];
      assert.throws(
        () => parseConfig({ [key]: 1 }, 'c.yaml'),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, `${key}: expected a ConfigError`);
          assert.equal(err.field, `c.yaml: ${key}`);
          assert.match(err.message, new RegExp(`^c\\.yaml: ${key}: unknown key \\(known: `));
          known = /\(known: (.*)\)$/.exec(err.message)?.[1]?.split(', ') ?? [];
          return true;
        },
      );
      assert.equal(known.length, 33, `${key}: every config key is listed`);
      assert.equal(known[0], 'dataDir');
      assert.ok(known.includes('missedRunThreshold'), `${key}: config keys, not option names`);
      assert.ok(!known.includes('masterKeyEnv'), `${key}: the master key is environment-only`);
    }
  });

  void it('checks the types of config values', () => {
    throwsField(
      () => parseConfig({ dataDir: 5 }, 'c.yaml'),
      'c.yaml: dataDir',
      'c.yaml: dataDir: must be a string',
    );
    throwsField(
      () => parseConfig({ etcdEndpoints: 'http://a:2379' }, 'c.yaml'),
      'c.yaml: etcdEndpoints',
      'c.yaml: etcdEndpoints: must be a list of strings',
    );
    throwsField(
      () => parseConfig(['dataDir'], 'c.yaml'),
      '--config',
      '--config: must be a YAML mapping',
    );
    assert.deepEqual(parseConfig(null, 'c.yaml'), {});
  });

  void it('takes the master key from the environment only', () => {
    assert.deepEqual(serverOptionsInput([], { CITADEL_MASTER_KEY: 'a2V5' }), {
      masterKeyEnv: 'a2V5',
    });
    assert.deepEqual(serverOptionsInput([], {}), {});
  });
});

void describe('the option table', () => {
  void it('gives every flag and config key to one option only', () => {
    const flags = SERVER_OPTION_ROWS.flatMap(([, row]) => ('flag' in row ? [row.flag] : []));
    const keys = SERVER_OPTION_ROWS.flatMap(([, row]) => ('flag' in row ? [row.configKey] : []));
    assert.equal(new Set(flags).size, flags.length, 'flags are unique');
    assert.equal(new Set(keys).size, keys.length, 'config keys are unique');
  });
});
