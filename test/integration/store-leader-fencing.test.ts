/**
 * Leader fencing (docs/architecture.md, "Leader election and fencing"): the leader A of two
 * replica processes is paused (SIGSTOP) while an every-second cron task fires, until its lease
 * lapses and B leads. Resumed, A must write nothing (every store write carries an audit record
 * keyed with the writer's replica id, so any write by A would show), step down, and campaign
 * again as a follower; every firing is still created exactly once.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Etcd3, IKeyValue } from 'etcd3';
import {
  assertEveryFiringOnce,
  listAllExecutions,
  readExecutions,
  startCronCluster,
} from '../helpers/cluster.js';
import { eventually } from '../helpers/eventually.js';
import type { ServerProcess } from '../helpers/server.js';

interface AuditEntry {
  key: string;
  replicaId: string;
  createRevision: number;
  eventType: string;
  executionId: string | undefined;
}

/** Every audit record (at `revision`); keys are `audit/<ms:13>-<replicaId>-<seq:6>`. */
async function readAudit(kv: Etcd3, prefix: string, revision: number): Promise<AuditEntry[]> {
  const res = await kv.getAll().prefix(`${prefix}audit/`).revision(revision).exec();
  return res.kvs.map((e) => {
    const key = e.key.toString().slice(`${prefix}audit/`.length);
    const match = /^(\d{13})-([^-]+)-(\d{6})$/.exec(key);
    assert.ok(match, `audit key ${key} has the form <ms:13>-<replicaId>-<seq:6>`);
    const value = JSON.parse(e.value.toString()) as { event_type: string; execution_id?: string };
    return {
      key,
      replicaId: match[2]!,
      createRevision: Number(e.create_revision),
      eventType: value.event_type,
      executionId: value.execution_id,
    };
  });
}

/** The current etcd revision. */
async function currentRevision(kv: Etcd3, prefix: string): Promise<number> {
  const res = await kv.kv.range({ key: Buffer.from(`${prefix}cluster`) });
  return Number(res.header.revision);
}

const isAlive = (s: ServerProcess) => s.child.exitCode === null && s.child.signalCode === null;

void test(
  'a paused leader deposed by its lease writes nothing when it resumes, and steps down',
  { timeout: 60_000 },
  async (t) => {
    const cluster = await startCronCluster(t, 'test.fencing');
    const { kv, prefix, client, md, taskId, defer } = cluster;
    // A leads and will be paused; the client talks to B.
    const a = cluster.leader;
    const b = cluster.follower;
    assert.notEqual(a.replicaId, b.replicaId);

    // A's election key, and the revision at which etcd deletes it when A's lease lapses: from
    // then on every fenced write of A must fail.
    const leaderKeys = await kv.getAll().prefix(`${prefix}leader/`).exec();
    const aKey = leaderKeys.kvs.find((e) => e.value.toString() === a.replicaId)?.key.toString();
    assert.ok(aKey, "A's election key exists while it leads");
    const aKeyWatch = await kv.watch().key(aKey).create();
    defer(() => aKeyWatch.cancel());
    const aKeyDeleted = new Promise<number>((resolve) =>
      aKeyWatch.once('delete', (e: IKeyValue) => resolve(Number(e.mod_revision))),
    );

    a.child.kill('SIGSTOP');
    const stoppedAt = Date.now();
    const bLeads = await b.waitForLog((l) => l.msg === 'became leader', 10_000);
    const revisionAtHandover = await currentRevision(kv, prefix);
    const fenceRevision = await aKeyDeleted;
    console.log(
      `fencing: A (${a.replicaId}) stopped; B (${b.replicaId}) led ` +
        `${Number(bLeads.receivedAt) - stoppedAt} ms later; A's key deleted at revision ` +
        `${fenceRevision}, revision at handover ${revisionAtHandover}`,
    );
    assert.ok(fenceRevision <= revisionAtHandover, "A's key was deleted before B led");

    // Every change to the cluster's keys from A's deposition on, to check that none is A's.
    const history: { revision: number; type: 'put' | 'delete'; key: string; value: string }[] = [];
    const historyWatch = await kv
      .watch()
      .prefix(prefix)
      .startRevision(String(fenceRevision + 1))
      .create();
    defer(() => historyWatch.cancel());
    const record = (type: 'put' | 'delete') => (e: IKeyValue) =>
      history.push({
        revision: Number(e.mod_revision),
        type,
        key: e.key.toString().slice(prefix.length),
        value: e.value.toString(),
      });
    historyWatch.on('put', record('put')).on('delete', record('delete'));

    a.child.kill('SIGCONT');
    const ended = await a.waitForLog((l) => l.msg === 'leadership ended', 10_000);
    console.log(`fencing: A resumed and stepped down (reason: ${String(ended.reason)})`);
    assert.ok(
      ended.reason === 'lease lost' || ended.reason === 'fenced off',
      `A stepped down for reason ${String(ended.reason)}`,
    );

    // A campaigns again, now behind B.
    await a.waitForLog((l) => l.msg === 'campaigning' && a.logs.indexOf(l) > a.logs.indexOf(ended));
    await eventually(
      async () => {
        const res = await kv.getAll().prefix(`${prefix}leader/`).exec();
        const candidates = res.kvs
          .map((e) => ({ replica: e.value.toString(), rev: Number(e.create_revision) }))
          .sort((x, y) => x.rev - y.rev);
        assert.deepEqual(
          candidates.map((c) => c.replica),
          [b.replicaId, a.replicaId],
          'B leads (oldest key) and A is a candidate behind it',
        );
      },
      { timeoutMs: 5_000, intervalMs: 100, message: 'A campaigns again behind B' },
    );

    // A few more firings, created by B.
    const countAfterStepDown = (await readExecutions(kv, prefix, taskId)).length;
    await eventually(
      async () => (await readExecutions(kv, prefix, taskId)).length >= countAfterStepDown + 2,
      { timeoutMs: 10_000, intervalMs: 100, message: 'B creates 2 more executions' },
    );

    assert.ok(isAlive(a), 'A is still running (as a follower)');
    assert.ok(isAlive(b), 'B is still running');
    assert.equal(a.logs.filter((l) => l.msg === 'became leader').length, 1, 'A did not lead again');
    assert.ok(
      !b.logs.some((l) => l.msg === 'leadership ended'),
      'B kept its leadership throughout',
    );

    // The checks below read one snapshot: B keeps firing meanwhile.
    const endRevision = await currentRevision(kv, prefix);
    const audit = await readAudit(kv, prefix, endRevision);
    const stored = await readExecutions(kv, prefix, taskId, endRevision);

    // A wrote nothing once deposed: no audit record of A after its key was deleted.
    const byA = audit.filter((e) => e.replicaId === a.replicaId);
    assert.ok(
      byA.some((e) => e.eventType === 'execution_created' && e.createRevision < fenceRevision),
      'A created executions while it led',
    );
    assert.deepEqual(
      byA.filter((e) => e.createRevision > fenceRevision).map((e) => `${e.key} ${e.eventType}`),
      [],
      'audit records written by A after it was deposed',
    );
    assert.deepEqual(
      byA.filter((e) => e.createRevision > revisionAtHandover).map((e) => e.key),
      [],
      'audit records written by A after B led',
    );

    // Beyond the audit trail: every etcd revision since A's key was deleted is a store commit
    // of B (it carries B's audit record) or a change of an election key (A's new candidacy).
    await eventually(() => history.some((h) => h.revision >= endRevision), {
      timeoutMs: 5_000,
      message: `the history watch reaches revision ${endRevision}`,
    });
    const revisions = new Map<number, typeof history>();
    for (const h of history) {
      if (h.revision > endRevision) continue;
      revisions.set(h.revision, [...(revisions.get(h.revision) ?? []), h]);
    }
    const unexplained: string[] = [];
    for (const [revision, events] of revisions) {
      const byB = events.some(
        (h) => h.type === 'put' && h.key.startsWith(`audit/`) && h.key.includes(`-${b.replicaId}-`),
      );
      const election = events.every((h) => h.key.startsWith('leader/'));
      if (!byB && !election) {
        unexplained.push(`${revision}: ${events.map((h) => `${h.type} ${h.key}`).join(', ')}`);
      }
    }
    assert.deepEqual(unexplained, [], "changes after A was deposed that are not B's");
    assert.ok(
      history.some(
        (h) => h.type === 'put' && h.key.startsWith('leader/') && h.value === a.replicaId,
      ),
      'the history shows A campaigning again',
    );

    // Each execution was created by whoever led at its revision, as its audit record says.
    const creator = new Map<string, AuditEntry>();
    for (const e of audit) {
      if (e.eventType !== 'execution_created' || e.executionId === undefined) continue;
      assert.ok(!creator.has(e.executionId), `execution ${e.executionId} created twice`);
      creator.set(e.executionId, e);
    }
    for (const e of stored) {
      const rec = creator.get(e.id);
      assert.ok(rec, `execution ${e.id} has an execution_created audit record`);
      assert.equal(rec.createRevision, e.createRevision, `${e.id}: audited in the same txn`);
      assert.equal(
        rec.replicaId,
        e.createRevision < fenceRevision ? a.replicaId : b.replicaId,
        `${e.id} (revision ${e.createRevision}) was created by the leader of its time`,
      );
    }
    assert.ok(
      stored.some((e) => e.createRevision > fenceRevision),
      'B created executions after the handover',
    );

    // Through the API (later than the snapshot, so possibly with newer firings).
    const executions = await listAllExecutions(client, md, taskId);
    const listed = new Set(executions.map((e) => e.id));
    assert.deepEqual(
      stored.filter((e) => !listed.has(e.id)).map((e) => e.id),
      [],
      'stored executions missing from ListExecutions',
    );
    const times = assertEveryFiringOnce(executions);
    assert.ok(times[0]! < stoppedAt, 'firings before the pause are included');
    console.log(
      `fencing: ${executions.length} executions, runs 1..${executions.length}, ` +
        `${byA.length} audit records by A, none after revision ${fenceRevision}`,
    );
  },
);
