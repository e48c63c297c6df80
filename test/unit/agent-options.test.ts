import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { availableParallelism } from 'node:os';
import {
  compileJoinOptions,
  compileRunOptions,
  defaultTaskMaxima,
  resolveDataDir,
} from '../../agent/agent-options.js';
import { beyondMaxima } from '../../agent/run-spec.js';
import {
  formatServerAddress,
  parseServerAddress,
  parseServerList,
  tlsChannelOptions,
} from '../../agent/server-address.js';
import { InvalidArgumentError } from '../../common/errors.js';

const HASH = `sha256:${'ab'.repeat(32)}`;

void describe('parseServerAddress', () => {
  void it('reads names, IPv4 and bracketed IPv6, and formats them back', () => {
    for (const text of ['citadel.example.com:7443', '10.0.0.5:7444', '[::1]:7443', '[fe80::1]:1']) {
      assert.equal(formatServerAddress(parseServerAddress(text, 'f')), text);
    }
    assert.deepEqual(parseServerAddress('[::1]:7443', 'f'), { host: '::1', port: 7443 });
  });

  void it('refuses missing ports, bad ports and bare IPv6', () => {
    for (const text of [
      'localhost',
      'localhost:',
      'localhost:0',
      'localhost:70000',
      '::1:7443',
      '[nothex]:1',
      ':7443',
    ]) {
      assert.throws(() => parseServerAddress(text, '--server'), InvalidArgumentError, text);
    }
  });

  void it('splits comma-separated lists', () => {
    assert.deepEqual(parseServerList('a:1, b:2,,', 'f').map(formatServerAddress), ['a:1', 'b:2']);
    assert.throws(() => parseServerList(' , ', 'f'), InvalidArgumentError);
  });

  void it('checks the certificate against localhost when dialling an IP literal', () => {
    assert.deepEqual(tlsChannelOptions(parseServerAddress('127.0.0.1:1', 'f')), {
      'grpc.ssl_target_name_override': 'localhost',
      'grpc.default_authority': 'localhost',
    });
    assert.deepEqual(tlsChannelOptions(parseServerAddress('[::1]:1', 'f')), {
      'grpc.ssl_target_name_override': 'localhost',
      'grpc.default_authority': 'localhost',
    });
    assert.deepEqual(tlsChannelOptions(parseServerAddress('db.example:1', 'f')), {});
  });
});

void describe('compileJoinOptions', () => {
  void it('applies defaults and normalizes the CA hash', () => {
    const o = compileJoinOptions({
      server: 'h:7443',
      token: 'cbt_x',
      caHash: HASH.toUpperCase().replace('SHA256', 'sha256'),
    });
    assert.equal(o.caHash, HASH);
    assert.equal(o.keyType, 'p256');
    assert.equal(o.dataDir, '/var/lib/citadel-agent');
    assert.equal(o.force, false);
    assert.ok(o.hostname.length > 0, 'o.hostname.length > 0');
  });

  void it('names the missing or bad flag', () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ token: 't', caHash: HASH }, /--server/],
      [{ server: 'h:1', caHash: HASH }, /--token/],
      [{ server: 'h:1', token: 't' }, /--ca-hash/],
      [{ server: 'h:1', token: 't', caHash: HASH, keyType: 'rsa' }, /--key-type/],
    ];
    for (const [input, field] of cases) {
      assert.throws(
        () => compileJoinOptions(input),
        (err: unknown) => {
          assert.ok(err instanceof InvalidArgumentError, 'err instanceof InvalidArgumentError');
          assert.match(err.message, field);
          return true;
        },
      );
    }
  });
});

void describe('data folder and run options', () => {
  void it('takes the flag, then CITADEL_AGENT_DATA_DIR, then the default', () => {
    assert.equal(resolveDataDir('/a', { CITADEL_AGENT_DATA_DIR: '/b' }), '/a');
    assert.equal(resolveDataDir(undefined, { CITADEL_AGENT_DATA_DIR: '/b' }), '/b');
    assert.equal(resolveDataDir(undefined, {}), '/var/lib/citadel-agent');
  });

  void it('compiles --server lists, log levels and slots', () => {
    const o = compileRunOptions({ servers: 'a:1,b:2', logLevel: 'DEBUG', slots: '3' });
    assert.deepEqual(o.servers?.map(formatServerAddress), ['a:1', 'b:2']);
    assert.equal(o.logLevel, 'debug');
    assert.equal(o.slots, 3);
    assert.equal(compileRunOptions({}).servers, undefined);
    assert.throws(() => compileRunOptions({ logLevel: 'loud' }), InvalidArgumentError);
    assert.throws(() => compileRunOptions({ slots: '-1' }), InvalidArgumentError);
  });

  void it('compiles the most a task may ask for, with defaults and bounds', () => {
    const o = compileRunOptions({ maxTaskMemoryMb: '512', maxTaskCpus: '1.5', maxTaskPids: 100 });
    assert.deepEqual(o.taskMaxima, {
      memoryBytes: 512 * 1024 * 1024,
      nanoCpus: 1_500_000_000,
      pidsLimit: 100,
    });
    assert.deepEqual(compileRunOptions({}).taskMaxima, defaultTaskMaxima());
    assert.equal(defaultTaskMaxima().memoryBytes, 4096 * 1024 * 1024);
    assert.equal(defaultTaskMaxima().nanoCpus, availableParallelism() * 1e9);
    for (const bad of [
      { maxTaskMemoryMb: '5' },
      { maxTaskMemoryMb: '1.5' },
      { maxTaskMemoryMb: '' },
      { maxTaskCpus: '0' },
      { maxTaskCpus: 'many' },
      { maxTaskPids: '0' },
    ]) {
      assert.throws(
        () => compileRunOptions(bad),
        (err: unknown) => err instanceof InvalidArgumentError && /--max-task-/.test(err.message),
        JSON.stringify(bad),
      );
    }
  });

  void it("says which of a task's limits is over the maxima, naming the flag", () => {
    const maxima = { memoryBytes: 64 * 1024 * 1024, nanoCpus: 2e9, pidsLimit: 100 };
    assert.equal(beyondMaxima({}, maxima), undefined);
    assert.equal(
      beyondMaxima({ memoryBytes: 64 * 1024 * 1024, pidsLimit: 100 }, maxima),
      undefined,
    );
    assert.match(
      beyondMaxima({ memoryBytes: 65 * 1024 * 1024 }, maxima) ?? '',
      /asks for 65 MiB of memory; this worker allows at most 64 \(--max-task-memory-mb\)/,
    );
    assert.match(
      beyondMaxima({ nanoCpus: 3e9 }, maxima) ?? '',
      /3 CPUs.*at most 2 \(--max-task-cpus\)/,
    );
    assert.match(beyondMaxima({ pidsLimit: 101 }, maxima) ?? '', /101 processes.*--max-task-pids/);
  });
});
