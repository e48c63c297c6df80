// The `container` task type's payload check (server/tasks/container-task.ts): what it accepts, what
// it refuses with which field named, and the ContainerSpec it makes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { InvalidArgumentError } from '../../common/errors.js';
import { containerSpec, DEFAULT_TASK_IMAGE } from '../../server/tasks/container-task.js';

const refused = (payload: Record<string, unknown> | undefined, field: RegExp) =>
  assert.throws(
    () => containerSpec(payload),
    (err: unknown) => err instanceof InvalidArgumentError && field.test(err.message),
  );

void test('a minimal payload gets the default image and no limits of its own', () => {
  assert.deepEqual(containerSpec({ argv: ['echo', 'hi'] }), {
    image: DEFAULT_TASK_IMAGE,
    argv: ['echo', 'hi'],
    env: {},
    memoryBytes: 0,
    nanoCpus: 0,
    pidsLimit: 0,
  });
});

void test('image, env and resources are carried over, resources in the units Docker takes', () => {
  const spec = containerSpec({
    image: 'registry.local:5000/team/job:1.2@sha256:' + 'a'.repeat(64),
    argv: ['run'],
    env: { MODE: 'fast', _X1: '' },
    resources: { memoryMb: 512, cpus: 0.5, pids: 100 },
  });
  assert.equal(spec.image, 'registry.local:5000/team/job:1.2@sha256:' + 'a'.repeat(64));
  assert.deepEqual(spec.env, { MODE: 'fast', _X1: '' });
  assert.equal(spec.memoryBytes, 512 * 1024 * 1024);
  assert.equal(spec.nanoCpus, 500_000_000);
  assert.equal(spec.pidsLimit, 100);
});

void test('each bad field is refused by name', () => {
  refused(undefined, /task\.payload.*is required/);
  refused({ argv: ['x'], command: 'sh' }, /task\.payload\.command.*not a field/);
  refused({ argv: [] }, /task\.payload\.argv/);
  refused({ argv: 'echo hi' }, /task\.payload\.argv/);
  refused({ argv: [1] }, /task\.payload\.argv/);
  refused({ argv: ['x'], image: 'Not An Image' }, /task\.payload\.image/);
  refused({ argv: ['x'], env: ['A=1'] }, /task\.payload\.env/);
  refused({ argv: ['x'], env: { '1A': 'x' } }, /task\.payload\.env/);
  refused({ argv: ['x'], env: { A: 1 } }, /task\.payload\.env\.A/);
  refused({ argv: ['x'], resources: 'big' }, /task\.payload\.resources.*object/);
  refused({ argv: ['x'], resources: { disk: 1 } }, /task\.payload\.resources\.disk/);
  refused({ argv: ['x'], resources: { constructor: 1 } }, /resources\.constructor.*not a resource/);
  refused({ argv: ['x'], resources: { memoryMb: 5 } }, /resources\.memoryMb.*6 to 65536/);
  refused({ argv: ['x'], resources: { memoryMb: 64.5 } }, /resources\.memoryMb.*integer/);
  refused({ argv: ['x'], resources: { cpus: 0 } }, /resources\.cpus.*0\.01 to 64/);
  refused({ argv: ['x'], resources: { cpus: '1' } }, /resources\.cpus/);
  refused({ argv: ['x'], resources: { pids: 5000 } }, /resources\.pids.*1 to 4096/);
});
