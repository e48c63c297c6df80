// The sandbox's create options for an image that declares volumes: which paths get a tmpfs
// (cleaned as Docker cleans them, or no tmpfs would take the volume's place) and which refuse
// the image. The real engine's side is in test/integration/agent-container-runner.test.ts.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  containerConfig,
  DEFAULT_LIMITS,
  imageVolumePaths,
  type RunSpec,
} from '../../agent/run-spec.js';

const spec: RunSpec = {
  executionId: 'ex_1',
  image: 'citadel/task-executor:latest',
  argv: ['true'],
  env: {},
  timeoutMs: 1000,
  ...DEFAULT_LIMITS,
  tmpfsBytes: 1024,
};

void describe('imageVolumePaths', () => {
  void test('no volumes, as the engine reports them (null) or as an empty object', () => {
    assert.deepEqual(imageVolumePaths(null), { ok: true, paths: [] });
    assert.deepEqual(imageVolumePaths({}), { ok: true, paths: [] });
  });

  void test('paths are cleaned like Go filepath.Clean and listed once', () => {
    const volumes = { '/data': {}, '/x/../data2/': {}, '/data//sub': {}, '/data/': {}, '/tmp': {} };
    assert.deepEqual(imageVolumePaths(volumes), {
      ok: true,
      paths: ['/data', '/data/sub', '/data2', '/tmp'],
    });
  });

  void test('a relative path or the root refuses the image', () => {
    for (const declared of ['data', './data', '/', '//', '/data/..']) {
      const r = imageVolumePaths({ '/ok': {}, [declared]: {} });
      assert.equal(r.ok, false, declared);
      assert.ok(!r.ok && r.reason.includes(JSON.stringify(declared)), `names ${declared}`);
    }
  });
});

void describe('containerConfig', () => {
  void test('creates from the image id; each volume path gets a tmpfs like /tmp', () => {
    const c = containerConfig(spec, 'w_1', { id: 'sha256:abc', volumePaths: ['/data', '/tmp'] });
    assert.equal(c.Image, 'sha256:abc');
    assert.deepEqual(c.HostConfig?.Tmpfs, {
      '/tmp': 'rw,noexec,nosuid,nodev,size=1024',
      '/data': 'rw,noexec,nosuid,nodev,size=1024',
    });
    assert.equal(c.HostConfig?.ReadonlyRootfs, true);
    assert.equal(c.HostConfig?.Binds, undefined, 'no bind mounts');
    assert.equal(c.HostConfig?.Mounts, undefined, 'no other mounts');
  });
});
