// The sandboxed container runtime against the real Docker engine and the real default image
// (built by scripts/build-task-image.sh): exit codes, output caps, timeout, cancellation, OOM,
// the pids limit, no network, a read-only root, an unprivileged user without capabilities, an
// image's VOLUME kept off the worker's disk, and the reconciler. An unreachable engine fails the
// suite; it is never skipped.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as net from 'node:net';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

import Dockerode from 'dockerode';

import {
  ContainerRunner,
  DEFAULT_IMAGE,
  DEFAULT_LIMITS,
  LABELS,
  containerName,
  type RunResult,
  type RunSpec,
} from '../../agent/container-runner.js';
import {
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
} from '../../common/errors.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const MiB = 1024 * 1024;

const docker = new Dockerode();
const workerId = `w_test_${randomBytes(4).toString('hex')}`;
const runner = new ContainerRunner({ docker, workerId });

before(async () => {
  // Fails (never skips) the suite when the engine is not there.
  await docker.ping().catch((err: unknown) => {
    throw new Error('the Docker engine is not reachable: run scripts/setup.sh as root', {
      cause: err,
    });
  });
  await promisify(execFile)('bash', [path.join(REPO_ROOT, 'scripts/build-task-image.sh')], {
    cwd: REPO_ROOT,
  });
});

/**
 * An image built on the default one that declares `VOLUME /data`, with /data writable by the task's
 * user as an image made for it would have it. Built here, as no registry can be reached;
 * labelled so CI removes one an interrupted run left (scripts/setup.sh).
 */
const VOLUME_IMAGE = `citadel/test-volume:${randomBytes(4).toString('hex')}`;

/** Builds `tag` from the default image and `steps`, with no build context and no network. */
async function buildOnDefaultImage(tag: string, steps: string[]): Promise<void> {
  const dockerfile = [`FROM ${DEFAULT_IMAGE}`, ...steps, 'LABEL org.citadel.test=true'];
  const build = promisify(execFile)('docker', [
    'build',
    '--quiet',
    '--network=none',
    '--force-rm',
    '--tag',
    tag,
    '-',
  ]);
  build.child.stdin?.end(dockerfile.join('\n'));
  await build;
}

before(async () => {
  await buildOnDefaultImage(VOLUME_IMAGE, [
    'USER 0:0',
    'RUN mkdir -m 1777 /data',
    'USER 65534:65534',
    'VOLUME /data',
  ]);
});

after(async () => {
  await runner.reconcile(new Set());
  await docker.getImage(VOLUME_IMAGE).remove();
});

function spec(argv: string[], overrides: Partial<RunSpec> = {}): RunSpec {
  return {
    executionId: `ex_${randomBytes(6).toString('hex')}`,
    image: DEFAULT_IMAGE,
    argv,
    env: {},
    timeoutMs: 20_000,
    ...DEFAULT_LIMITS,
    ...overrides,
  };
}

/** Containers carrying an execution's label, stopped ones included. */
async function containersOf(executionId: string): Promise<Dockerode.ContainerInfo[]> {
  return docker.listContainers({
    all: true,
    filters: { label: [`${LABELS.execution}=${executionId}`] },
  });
}

/** Runs `s` and checks, as after every run, that its container is gone. */
async function runAndCheck(s: RunSpec, options?: Parameters<ContainerRunner['run']>[1]) {
  const result = await runner.run(s, options);
  assert.deepEqual(await containersOf(s.executionId), [], 'the container is removed');
  return result;
}

const text = (b: Buffer) => b.toString('utf8');

/**
 * The host's own IPv4 address on Docker's default bridge: the engine names the interface, the
 * host gives its address. Not the network's IPAM gateway: a dockerd that created its bridge at
 * this start reports only the subnet (the gateway shows after a restart that found the bridge
 * with its address). Not os.networkInterfaces() either: it leaves out a link without carrier,
 * which the bridge is while no container is attached.
 */
async function bridgeHostAddress(): Promise<string> {
  const network = await docker.getNetwork('bridge').inspect();
  const name: unknown = network.Options?.['com.docker.network.bridge.name'];
  assert.ok(typeof name === 'string' && name !== '', 'the bridge network names its interface');
  const { stdout } = await promisify(execFile)('ip', ['-json', '-4', 'addr', 'show', 'dev', name]);
  const links = JSON.parse(stdout) as { addr_info?: { local?: string }[] }[];
  const address = links[0]?.addr_info?.[0]?.local;
  assert.ok(address, `the host has an IPv4 address on ${name}: ${stdout}`);
  const subnet = network.IPAM?.Config?.[0]?.Subnet ?? '';
  const [base = '', prefix = ''] = subnet.split('/');
  assert.ok(net.isIPv4(base) && prefix !== '', `the bridge has an IPv4 subnet: ${subnet}`);
  const inSubnet = new net.BlockList();
  inSubnet.addSubnet(base, Number(prefix));
  assert.ok(inSubnet.check(address), `${address} is in the bridge's subnet ${subnet}`);
  return address;
}

function describeResult(r: RunResult): string {
  return JSON.stringify({ ...r, stdout: text(r.stdout), stderr: text(r.stderr) });
}

void describe('ContainerRunner.run', () => {
  void test('echo hello succeeds with its output, and onStarted is called once', async (t) => {
    const starts: Date[] = [];
    const begun = performance.now();
    const r = await runAndCheck(spec(['echo', 'hello']), { onStarted: (d) => starts.push(d) });
    t.diagnostic(`echo run, create to removal: ${Math.round(performance.now() - begun)} ms`);
    assert.equal(r.state, 'succeeded', describeResult(r));
    assert.equal(r.exitCode, 0);
    assert.equal(text(r.stdout), 'hello\n');
    assert.equal(text(r.stderr), '');
    assert.equal(r.stdoutTruncated, false);
    assert.equal(r.oomKilled, false);
    assert.equal(r.timedOut, false);
    assert.equal(starts.length, 1);
    assert.equal(r.startedAt, starts[0]);
  });

  void test('argv is run without a shell; env is passed', async () => {
    const r = await runAndCheck(
      spec(['sh', '-c', 'echo "$GREETING"; echo "$0" >&2', '$HOME; a b'], {
        env: { GREETING: 'hi there' },
      }),
    );
    assert.equal(r.state, 'succeeded', describeResult(r));
    assert.equal(text(r.stdout), 'hi there\n');
    assert.equal(text(r.stderr), '$HOME; a b\n');
  });

  void test('a non-zero exit fails with its code', async () => {
    const r = await runAndCheck(spec(['sh', '-c', 'exit 3']));
    assert.equal(r.state, 'failed', describeResult(r));
    assert.equal(r.exitCode, 3);
    assert.match(r.message, /exited with code 3/);
  });

  void test('a program missing from the image fails without starting', async () => {
    const r = await runAndCheck(spec(['no-such-program']));
    assert.equal(r.state, 'failed', describeResult(r));
    assert.equal(r.exitCode, null);
    assert.equal(r.startedAt, null);
    assert.match(r.message, /did not start/);
  });

  void test('an image missing on the worker fails with a clear message and is not pulled', async () => {
    const s = spec(['true'], { image: `citadel/no-such-image:${randomBytes(4).toString('hex')}` });
    const r = await runAndCheck(s);
    assert.equal(r.state, 'failed');
    assert.equal(r.exitCode, null);
    assert.equal(r.message, `image ${s.image} is not present on this worker; build or load it`);
    await assert.rejects(docker.getImage(s.image).inspect(), { statusCode: 404 });
  });

  void test('sleep 30 is killed at a 1 s timeout', async (t) => {
    const begun = performance.now();
    const r = await runAndCheck(spec(['sleep', '30'], { timeoutMs: 1000 }));
    t.diagnostic(`timeout run, create to removal: ${Math.round(performance.now() - begun)} ms`);
    assert.equal(r.state, 'timed_out', describeResult(r));
    assert.equal(r.timedOut, true);
    assert.equal(r.exitCode, 137);
    assert.ok(r.durationMs >= 1000 && r.durationMs < 5000, `durationMs ${r.durationMs}`);
  });

  void test('aborting cancels a running sleep 30', async () => {
    const controller = new AbortController();
    const r = await runAndCheck(spec(['sleep', '30']), {
      signal: controller.signal,
      onStarted: () => controller.abort(),
    });
    assert.equal(r.state, 'cancelled', describeResult(r));
    assert.equal(r.exitCode, 137);
    assert.equal(r.timedOut, false);
    assert.ok(r.durationMs < 5000, `durationMs ${r.durationMs}`);
  });

  void test('an aborted signal cancels before anything is created', async () => {
    const s = spec(['true']);
    const r = await runAndCheck(s, { signal: AbortSignal.abort() });
    assert.equal(r.state, 'cancelled');
    assert.equal(r.startedAt, null);
  });

  void test('allocating past the memory limit is OOM-killed', async () => {
    // The shell keeps 80 MB of command substitution in memory, against a 16 MiB limit.
    const r = await runAndCheck(
      spec(['sh', '-c', 'x=$(head -c 80000000 /dev/zero | tr "\\0" a); echo ${#x}'], {
        memoryBytes: 16 * MiB,
      }),
    );
    assert.equal(r.oomKilled, true, describeResult(r));
    assert.equal(r.state, 'failed');
    assert.match(r.message, /out of memory/);
    assert.equal(text(r.stdout), '');
  });

  void test('a child killed at the memory limit is OOM even when the task exits 0', async () => {
    // sort holds its one 80 MB line in memory and is the OOM killer's pick; the shell goes on.
    const r = await runAndCheck(
      spec(
        ['sh', '-c', 'head -c 80000000 /dev/zero | tr "\\0" a | sort >/dev/null; echo "sort=$?"'],
        {
          memoryBytes: 16 * MiB,
        },
      ),
    );
    assert.equal(r.oomKilled, true, describeResult(r));
    assert.equal(r.state, 'failed');
    assert.match(r.message, /out of memory/);
  });

  void test('the pids limit stops a process flood', async () => {
    // Only `sleep` forks: every other command is a shell builtin. With 32 pids, the shell and
    // at most 31 sleeps fit; the next fork fails and the non-interactive shell exits.
    const script =
      'i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); echo $i; done; wait; echo finished';
    const r = await runAndCheck(spec(['sh', '-c', script], { pidsLimit: 32 }));
    assert.equal(r.state, 'failed', describeResult(r));
    assert.notEqual(r.exitCode, 0);
    assert.match(text(r.stderr), /can't fork/);
    const started = text(r.stdout).trim().split('\n').map(Number);
    const last = started.at(-1) ?? 0;
    assert.ok(last > 0 && last < 32, `${last} sleeps started`);
  });

  void test('a fork bomb hits the pids limit, is killed at its timeout, and the host is fine', async () => {
    // busybox ash refuses `:` as a function name, so the classic bomb is spelt with `f`. It
    // runs in a background subshell while the container's first process is `sleep`, which
    // needs no fork, so only the timeout ends it.
    const bomb = 'f(){ f|f& }; (while :; do f; done) & exec sleep 30';
    const r = await runAndCheck(spec(['sh', '-c', bomb], { pidsLimit: 32, timeoutMs: 3000 }));
    assert.equal(r.state, 'timed_out', describeResult(r));
    assert.match(text(r.stderr), /can't fork/);
    await promisify(execFile)('true');
    const next = await runAndCheck(spec(['echo', 'ok']));
    assert.equal(text(next.stdout), 'ok\n');
  });

  void test('no network: neither the host loopback nor the docker bridge is reachable', async () => {
    const bridge = await bridgeHostAddress();
    const accepted: string[] = [];
    const listen = async (host: string) => {
      const server = net.createServer((socket) => {
        accepted.push(host);
        socket.destroy();
      });
      await new Promise<void>((resolve) => server.listen(0, host, resolve));
      return { server, port: (server.address() as net.AddressInfo).port };
    };
    const loopback = await listen('127.0.0.1');
    const onBridge = await listen(bridge);
    try {
      const script = [
        `nc -w 2 127.0.0.1 ${loopback.port} </dev/null; echo "loopback=$?"`,
        `nc -w 2 ${bridge} ${onBridge.port} </dev/null; echo "bridge=$?"`,
        `cat /proc/net/dev`,
      ].join('; ');
      const r = await runAndCheck(spec(['sh', '-c', script]));
      const out = text(r.stdout);
      assert.match(out, /loopback=1\n/, describeResult(r));
      assert.match(out, /bridge=1\n/);
      // Refused by the container's own loopback; no route at all to the bridge.
      assert.match(text(r.stderr), /127\.0\.0\.1.*refused/i);
      assert.match(text(r.stderr), /unreachable/i);
      const interfaces = out.split('\n').filter((l) => l.includes(':') && !l.includes('='));
      assert.deepEqual(
        interfaces.map((l) => l.split(':')[0]?.trim()),
        ['lo'],
        'the only interface is lo',
      );
      assert.deepEqual(accepted, [], 'no connection reached a listener');
    } finally {
      loopback.server.close();
      onBridge.server.close();
    }
  });

  void test('the root is read-only; /tmp is writable but not executable', async () => {
    const script = [
      'touch /x; echo "root=$?"',
      'touch /tmp/y; echo "tmp=$?"',
      'cp /bin/busybox /tmp/b; /tmp/b true; echo "exec=$?"',
    ].join('; ');
    const r = await runAndCheck(spec(['sh', '-c', script]));
    const out = text(r.stdout);
    assert.match(out, /root=1\n/, describeResult(r));
    assert.match(out, /tmp=0\n/);
    assert.match(out, /exec=126\n/);
    assert.match(text(r.stderr), /Read-only file system/);
  });

  void test('an image VOLUME is a capped tmpfs, not a volume on the worker’s disk', async () => {
    const s = spec(
      [
        'sh',
        '-c',
        [
          'grep " /data " /proc/mounts',
          'echo small >/data/small; echo "small=$?"',
          'cat /data/small',
          'head -c 100000000 /dev/zero >/data/big; echo "big=$?"',
          'wc -c </data/big',
          'cp /bin/busybox /data/b; /data/b true; echo "exec=$?"',
        ].join('; '),
      ],
      { image: VOLUME_IMAGE },
    );
    let mounts: Promise<Dockerode.ContainerInspectInfo['Mounts']> | undefined;
    const r = await runAndCheck(s, {
      // While the container exists: what Docker mounted for it.
      onStarted: () => {
        mounts = docker
          .getContainer(containerName(s.executionId))
          .inspect()
          .then((info) => info.Mounts);
      },
    });
    const out = text(r.stdout);
    const lines = out.split('\n');
    assert.match(lines[0] ?? '', /^tmpfs \/data tmpfs \S*\bnosuid\b/, describeResult(r));
    const size = `size=${DEFAULT_LIMITS.tmpfsBytes / 1024}k`;
    assert.match(lines[0] ?? '', new RegExp(`\\bnodev\\b.*\\bnoexec\\b.*\\b${size}\\b`), lines[0]);
    assert.deepEqual(lines.slice(1, 3), ['small=0', 'small'], 'a task can write to /data');
    assert.match(out, /\nbig=1\n/, 'writing 100 MB into /data fails');
    assert.match(text(r.stderr), /No space left on device/);
    const written = Number(lines[4]);
    assert.ok(written <= DEFAULT_LIMITS.tmpfsBytes, `${written} bytes fit in /data's cap`);
    assert.match(out, /\nexec=126\n/, '/data is not executable');
    assert.ok(mounts, 'the container was inspected while it ran');
    const volumes = (await mounts).filter((m) => m.Type === 'volume');
    assert.deepEqual(volumes, [], 'Docker created no volume for /data');
  });

  void test('an image VOLUME at a path no tmpfs can cover refuses the image', async () => {
    // Docker gives a relative path a volume too, but refuses a tmpfs there.
    const image = `citadel/test-volume-relative:${randomBytes(4).toString('hex')}`;
    await buildOnDefaultImage(image, ['VOLUME data']);
    try {
      const r = await runAndCheck(spec(['true'], { image }));
      assert.equal(r.state, 'failed', describeResult(r));
      assert.equal(r.startedAt, null);
      assert.match(r.message, /declares a volume at "data".*; refused$/);
    } finally {
      await docker.getImage(image).remove();
    }
  });

  void test('output past the cap is truncated to the cap and flagged', async () => {
    const r = await runAndCheck(spec(['sh', '-c', 'yes | head -c 200000; echo done >&2']));
    assert.equal(r.state, 'succeeded', describeResult(r));
    assert.equal(r.stdout.length, DEFAULT_LIMITS.outputCapBytes);
    assert.equal(r.stdoutTruncated, true);
    assert.equal(text(r.stdout), 'y\n'.repeat(DEFAULT_LIMITS.outputCapBytes / 2));
    assert.equal(text(r.stderr), 'done\n');
    assert.equal(r.stderrTruncated, false);
  });

  void test('the task runs as uid 65534 with no capabilities and no new privileges', async () => {
    const r = await runAndCheck(spec(['sh', '-c', 'id -u; id -g; cat /proc/self/status']));
    const [uid, gid] = text(r.stdout).split('\n');
    assert.equal(uid, '65534', describeResult(r));
    assert.equal(gid, '65534');
    for (const field of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) {
      assert.match(text(r.stdout), new RegExp(`${field}:\\s+0{16}\\n`), field);
    }
    assert.match(text(r.stdout), /NoNewPrivs:\s+1\n/);
  });

  void test('a container holding the name already is FailedPreconditionError', async () => {
    const s = spec(['true']);
    const holder = await docker.createContainer({
      name: containerName(s.executionId),
      Image: DEFAULT_IMAGE,
      Cmd: ['true'],
    });
    try {
      await assert.rejects(runner.run(s), FailedPreconditionError);
    } finally {
      await holder.remove({ force: true });
    }
  });

  void test('a malformed spec is refused before anything is created', async () => {
    await assert.rejects(runner.run(spec([])), InvalidArgumentError);
    await assert.rejects(runner.run(spec(['true'], { timeoutMs: 0 })), /spec\.timeoutMs/);
    await assert.rejects(runner.run(spec(['true'], { memoryBytes: MiB })), /spec\.memoryBytes/);
    await assert.rejects(runner.run(spec(['true'], { env: { 'A=B': 'c' } })), /spec\.env/);
    await assert.rejects(runner.run(spec(['echo', 'a\0b'])), /spec\.argv/);
    await assert.rejects(runner.run(spec(['true'], { timeoutMs: NaN })), /spec\.timeoutMs/);
  });

  void test('container names keep Docker-safe ids and hash rewritten ones apart', () => {
    assert.equal(containerName('ex_01.a-b'), 'citadel-ex_01.a-b');
    const slash = containerName('ex/1');
    const colon = containerName('ex:1');
    assert.match(slash, /^citadel-ex_1-[0-9a-f]{12}$/);
    assert.notEqual(slash, colon);
    assert.notEqual(slash, containerName('ex_1'));
  });

  void test('an unreachable engine is UnavailableError', async () => {
    const gone = new ContainerRunner({
      docker: new Dockerode({ socketPath: '/nonexistent/docker.sock' }),
      workerId,
    });
    await assert.rejects(gone.run(spec(['true'])), UnavailableError);
    await assert.rejects(gone.reconcile(new Set()), UnavailableError);
  });
});

void describe('ContainerRunner.reconcile', () => {
  void test('removes this worker’s untracked containers, running or not, and keeps the rest', async () => {
    const create = async (executionId: string, worker: string, argv = ['true']) =>
      docker.createContainer({
        name: containerName(executionId),
        Image: DEFAULT_IMAGE,
        Cmd: argv,
        Labels: {
          [LABELS.managed]: 'true',
          [LABELS.worker]: worker,
          [LABELS.execution]: executionId,
        },
      });
    const id = (name: string) => `ex_${name}_${randomBytes(4).toString('hex')}`;
    const [stopped, running, tracked, foreign] = [
      id('stopped'),
      id('running'),
      id('tracked'),
      id('foreign'),
    ];
    await create(stopped, workerId);
    await (await create(running, workerId, ['sleep', '60'])).start();
    await create(tracked, workerId);
    const other = await create(foreign, `${workerId}_other`);
    try {
      const removed = await runner.reconcile(new Set([tracked]));
      assert.deepEqual(removed.sort(), [running, stopped].sort());
      assert.deepEqual(await containersOf(stopped), []);
      assert.deepEqual(await containersOf(running), []);
      assert.equal((await containersOf(tracked)).length, 1);
      assert.equal((await containersOf(foreign)).length, 1, 'another worker’s is kept');
      assert.deepEqual(await runner.reconcile(new Set([tracked])), []);
    } finally {
      await other.remove({ force: true });
      await runner.reconcile(new Set());
    }
  });

  void test('removes the anonymous volumes of the containers it removes', async () => {
    // Created as an older agent would have, without a tmpfs at the image's VOLUME: Docker gives
    // /data an anonymous volume on the worker's disk.
    const executionId = `ex_volume_${randomBytes(4).toString('hex')}`;
    const container = await docker.createContainer({
      name: containerName(executionId),
      Image: VOLUME_IMAGE,
      Cmd: ['true'],
      Labels: {
        [LABELS.managed]: 'true',
        [LABELS.worker]: workerId,
        [LABELS.execution]: executionId,
      },
    });
    const { Mounts } = await container.inspect();
    const volumes = Mounts.filter((m) => m.Type === 'volume').map((m) => m.Name ?? '');
    assert.equal(volumes.length, 1, `Docker gave /data a volume: ${JSON.stringify(Mounts)}`);
    assert.deepEqual(await runner.reconcile(new Set()), [executionId]);
    for (const name of volumes) {
      await assert.rejects(docker.getVolume(name).inspect(), { statusCode: 404 }, name);
    }
  });
});
