import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import {
  buildBlockWorkerRequest,
  buildCreateBootstrapTokenRequest,
  buildDeregisterWorkerRequest,
  buildListBootstrapTokensRequest,
  buildListWorkersRequest,
} from '../../cli/commands/worker.js';
import {
  isLoopback,
  joinCommand,
  tokenCreatedNotes,
  tokensTable,
  workerDetails,
  workerStateName,
  workersTable,
} from '../../cli/worker-format.js';
import { InvalidArgumentError } from '../../common/errors.js';
import {
  CreateBootstrapTokenRequest,
  CreateBootstrapTokenResponse,
} from '../../gen/citadel/v1/admin_service.js';
import { BootstrapToken, Worker, WorkerState } from '../../gen/citadel/v1/worker.js';

/** Asserts that `fn` throws InvalidArgumentError for `field`. */
function throwsFor(fn: () => unknown, field: string, message?: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(
      err instanceof InvalidArgumentError,
      `expected InvalidArgumentError, got ${String(err)}`,
    );
    assert.equal(err.field, field);
    if (message) assert.match(err.message, message);
    return true;
  });
}

const NOW = new Date('2026-11-24T10:00:00Z');
const CA_HASH = 'sha256:' + 'ab'.repeat(32);
const TOKEN = 'cbt_' + 'x'.repeat(43);

void describe('buildCreateBootstrapTokenRequest', () => {
  void it('reads --expires as a duration from now and defaults to one use', () => {
    assert.deepEqual(
      buildCreateBootstrapTokenRequest({ expires: '24h' }, NOW),
      CreateBootstrapTokenRequest.fromPartial({
        bootstrapToken: { maxUses: 1, expireTime: new Date('2026-11-25T10:00:00Z') },
      }),
    );
  });

  void it('sets every field from its flag', () => {
    const { bootstrapToken } = buildCreateBootstrapTokenRequest(
      {
        expires: '2026-11-30T00:00:00Z',
        uses: '25',
        label: ['zone=eu-1', 'tier=batch', 'empty='],
        description: '  rack 4 ',
      },
      NOW,
    );
    assert.deepEqual(bootstrapToken?.labels, { zone: 'eu-1', tier: 'batch', empty: '' });
    assert.equal(bootstrapToken?.maxUses, 25);
    assert.equal(bootstrapToken?.description, 'rack 4');
    assert.deepEqual(bootstrapToken?.expireTime, new Date('2026-11-30T00:00:00Z'));
  });

  void it('accepts 7d even when rounding to a whole second overshoots the limit', () => {
    const at = new Date('2026-11-24T10:00:00.250Z');
    const { bootstrapToken } = buildCreateBootstrapTokenRequest({ expires: '7d' }, at);
    assert.deepEqual(bootstrapToken?.expireTime, new Date('2026-12-01T10:00:00Z'));
    const ahead = (bootstrapToken?.expireTime?.getTime() ?? Infinity) - at.getTime();
    assert.ok(ahead <= 7 * 86_400_000, 'ahead <= 7 * 86_400_000');
  });

  void it('refuses bad flags, naming each', () => {
    throwsFor(() => buildCreateBootstrapTokenRequest({}, NOW), '--expires', /required/);
    throwsFor(() => buildCreateBootstrapTokenRequest({ expires: '8d' }, NOW), '--expires', /7 d/);
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '7d1s' }, NOW),
      '--expires',
      /at most 7 days/,
    );
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '2026-11-01T00:00:00Z' }, NOW),
      '--expires',
      /future/,
    );
    throwsFor(() => buildCreateBootstrapTokenRequest({ expires: 'soon' }, NOW), '--expires');
    throwsFor(() => buildCreateBootstrapTokenRequest({ expires: '1h', uses: '0' }, NOW), '--uses');
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '1h', uses: '1001' }, NOW),
      '--uses',
    );
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '1h', label: ['zone'] }, NOW),
      '--label',
      /key=value/,
    );
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '1h', label: ['zone=eu 1'] }, NOW),
      '--label',
      /value of "zone"/,
    );
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '1h', label: ['a=1', 'a=2'] }, NOW),
      '--label',
      /twice/,
    );
    const many = Array.from({ length: 33 }, (_, i) => `k${i}=v`);
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '1h', label: many }, NOW),
      '--label',
      /at most 32/,
    );
    throwsFor(
      () => buildCreateBootstrapTokenRequest({ expires: '1h', description: 'd'.repeat(201) }, NOW),
      '--description',
    );
  });
});

void describe('other token and worker requests', () => {
  void it('buildListBootstrapTokensRequest reads --all as include_inactive', () => {
    assert.deepEqual(buildListBootstrapTokensRequest({}), { includeInactive: false });
    assert.deepEqual(buildListBootstrapTokensRequest({ all: true }), { includeInactive: true });
  });

  void it('buildListWorkersRequest maps paging and --include-inactive', () => {
    assert.deepEqual(buildListWorkersRequest({}), {
      pageSize: 0,
      pageToken: '',
      includeInactive: false,
    });
    assert.deepEqual(
      buildListWorkersRequest({ pageSize: '50', pageToken: 'p2', includeInactive: true }),
      { pageSize: 50, pageToken: 'p2', includeInactive: true },
    );
    throwsFor(() => buildListWorkersRequest({ pageSize: '0' }), '--page-size');
    throwsFor(() => buildListWorkersRequest({ pageSize: '1001' }), '--page-size');
  });

  void it('buildBlockWorkerRequest requires a reason of at most 200 characters', () => {
    assert.deepEqual(buildBlockWorkerRequest(' w_1 ', { reason: ' stolen disk ' }), {
      id: 'w_1',
      reason: 'stolen disk',
    });
    throwsFor(() => buildBlockWorkerRequest('w_1', {}), '--reason', /required/);
    throwsFor(() => buildBlockWorkerRequest('w_1', { reason: '  ' }), '--reason', /required/);
    throwsFor(() => buildBlockWorkerRequest('w_1', { reason: 'r'.repeat(201) }), '--reason');
    throwsFor(() => buildBlockWorkerRequest('', { reason: 'x' }), 'ID');
  });

  void it('buildDeregisterWorkerRequest takes an optional reason', () => {
    assert.deepEqual(buildDeregisterWorkerRequest('w_1', {}), { id: 'w_1', reason: '' });
    assert.deepEqual(buildDeregisterWorkerRequest('w_1', { reason: 'decommissioned' }), {
      id: 'w_1',
      reason: 'decommissioned',
    });
    throwsFor(() => buildDeregisterWorkerRequest('w_1', { reason: 'r'.repeat(201) }), '--reason');
    throwsFor(() => buildDeregisterWorkerRequest(' ', {}), 'ID');
  });
});

void describe('worker output', () => {
  const active = Worker.fromPartial({
    id: 'w_5m2q8x0c1vtr3k7a',
    labels: { zone: 'eu-1', arch: 'arm64' },
    state: WorkerState.WORKER_STATE_ACTIVE,
    online: true,
    bootstrapTokenId: 'bt_5m2q8x0c1vtr',
    joinTime: new Date('2026-11-20T08:00:00Z'),
    registerTime: new Date('2026-11-24T09:00:00Z'),
    certificateSerial: '51bbb5ffa9325a29',
    certificateExpireTime: new Date('2026-11-24T10:30:00Z'),
  });
  const blocked = Worker.fromPartial({
    id: 'w_2',
    state: WorkerState.WORKER_STATE_BLOCKED,
    stateReason: 'heartbeat_refusals\x1b[2J',
    stateChangeTime: new Date('2026-11-23T00:00:00Z'),
  });

  void it('names states in lower case', () => {
    assert.equal(workerStateName(WorkerState.WORKER_STATE_ACTIVE), 'active');
    assert.equal(workerStateName(WorkerState.WORKER_STATE_RETIRED), 'retired');
    assert.equal(workerStateName(WorkerState.UNRECOGNIZED), 'unknown');
  });

  void it('fills the worker table columns', () => {
    const [header, row, row2] = workersTable([active, blocked]).split('\n');
    assert.deepEqual(header?.split(/\s{2,}/), [
      'ID',
      'STATE',
      'ONLINE',
      'LABELS',
      'JOINED',
      'CERT EXPIRES',
    ]);
    assert.deepEqual(row?.split(/\s{2,}/), [
      'w_5m2q8x0c1vtr3k7a',
      'active',
      'true',
      'arch=arm64,zone=eu-1',
      '2026-11-20T08:00:00Z',
      '2026-11-24T10:30:00Z',
    ]);
    assert.deepEqual(row2?.split(/\s{2,}/), ['w_2', 'blocked', 'false', '-', '-', '-']);
  });

  void it('prints a worker as a key: value block, server text sanitized', () => {
    const out = workerDetails(active);
    assert.match(out, /^id: +w_5m2q8x0c1vtr3k7a$/m);
    assert.match(out, /^bootstrap token: +bt_5m2q8x0c1vtr$/m);
    assert.match(out, /^registered: +2026-11-24T09:00:00Z$/m);
    assert.match(out, /^state reason: +-$/m);
    assert.match(out, /^cert serial: +51bbb5ffa9325a29$/m);
    const out2 = workerDetails(blocked);
    assert.match(out2, /^state: +blocked$/m);
    assert.match(out2, /^state reason: +heartbeat_refusals\\x1b\[2J$/m);
    assert.match(out2, /^state changed: +2026-11-23T00:00:00Z$/m);
  });
});

void describe('bootstrap token output', () => {
  void it('fills the token table columns, uses out of the maximum', () => {
    const tokens = [
      BootstrapToken.fromPartial({
        id: 'bt_1',
        description: 'rack 4',
        labels: { zone: 'eu-1' },
        maxUses: 3,
        uses: 2,
        expireTime: new Date('2026-12-01T10:00:00Z'),
        revokeTime: new Date('2026-11-24T11:00:00Z'),
        createdBy: 'alice',
      }),
      BootstrapToken.fromPartial({ id: 'bt_2', expireTime: new Date('2026-11-25T10:00:00Z') }),
    ];
    const [header, row, row2] = tokensTable(tokens).split('\n');
    assert.deepEqual(header?.split(/\s{2,}/), [
      'ID',
      'DESCRIPTION',
      'USES',
      'EXPIRES',
      'REVOKED',
      'LABELS',
      'CREATED BY',
    ]);
    assert.deepEqual(row?.split(/\s{2,}/), [
      'bt_1',
      'rack 4',
      '2/3',
      '2026-12-01T10:00:00Z',
      '2026-11-24T11:00:00Z',
      'zone=eu-1',
      'alice',
    ]);
    // An unset maximum means one use, as the contract says.
    assert.deepEqual(row2?.split(/\s{2,}/), [
      'bt_2',
      '-',
      '0/1',
      '2026-11-25T10:00:00Z',
      '-',
      '-',
      '-',
    ]);
  });

  void it('builds the join command, quoting only what a shell would read', () => {
    assert.equal(
      joinCommand('citadel.internal:7443', TOKEN, CA_HASH),
      `citadel-agent join --server citadel.internal:7443 --token ${TOKEN} --ca-hash ${CA_HASH}`,
    );
    assert.equal(
      joinCommand('[fd00::1]:7443', "x'y", CA_HASH),
      `citadel-agent join --server '[fd00::1]:7443' --token 'x'\\''y' --ca-hash ${CA_HASH}`,
    );
  });

  void it('notes the id, expiry, uses, the join command and the warning', () => {
    const response = CreateBootstrapTokenResponse.fromPartial({
      bootstrapToken: { id: 'bt_1', maxUses: 3, expireTime: new Date('2026-11-25T10:00:00Z') },
      token: TOKEN,
      caHash: CA_HASH,
    });
    const notes = tokenCreatedNotes(response, 'citadel.internal:7443');
    assert.equal(notes[0], 'created bootstrap token bt_1: expires 2026-11-25T10:00:00Z, 3 joins');
    assert.equal(
      notes[1],
      'join a worker host with:\n  citadel-agent join --server citadel.internal:7443 ' +
        `--token ${TOKEN} --ca-hash ${CA_HASH}`,
    );
    assert.match(notes[2] ?? '', /^WARNING: store the token now/);
    assert.equal(notes.length, 3);

    const local = tokenCreatedNotes(response, 'localhost:7443');
    assert.equal(local.length, 4);
    assert.match(local[2] ?? '', /loopback address/);
  });

  void it('tells loopback addresses from others', () => {
    for (const server of [
      'localhost:7443',
      '127.0.0.1:7443',
      '[::1]:7443',
      'dns:///localhost:7443',
      'ipv4:127.0.0.2:1',
    ]) {
      assert.equal(isLoopback(server), true, server);
    }
    for (const server of ['citadel.internal:7443', '10.0.0.1:7443', '[fd00::1]:7443']) {
      assert.equal(isLoopback(server), false, server);
    }
  });
});
