/**
 * Leader components on a real etcd (docs/architecture.md, "Leader election and fencing"): one
 * that fails to start is logged, retried with backoff while the replica leads, and reported by
 * `citadel_leader_component_up`; the others run meanwhile and leadership is kept.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { createLogger } from '../../common/logger.js';
import { Metrics } from '../../server/metrics.js';
import { LeaderElection, type LeaderComponent } from '../../server/store/leader-election.js';
import { Store } from '../../server/store/store.js';
import { startTestEtcd } from '../helpers/etcd.js';
import { eventually } from '../helpers/eventually.js';
import { freshPrefix } from '../helpers/server.js';

/** The gauge's value for `component` (undefined before it was ever set). */
async function componentUp(metrics: Metrics, component: string): Promise<number | undefined> {
  const { values } = await metrics.leaderComponentUp.get();
  return values.find((v) => v.labels.component === component)?.value;
}

void test('a leader component that fails to start is retried; the others keep running', async (t) => {
  const etcd = await startTestEtcd();
  t.after(() => etcd.stop());
  const client = new Etcd3({ hosts: etcd.endpoint });
  t.after(() => client.close());
  const store = new Store({ client, prefix: freshPrefix(), replicaId: 'test' });
  const metrics = new Metrics();

  const steady = { starts: 0, stops: 0 };
  const steadyComponent: LeaderComponent = {
    name: 'steady',
    start: () => void steady.starts++,
    stop: () => void steady.stops++,
  };
  let flakyStarts = 0;
  const flakyComponent: LeaderComponent = {
    name: 'flaky',
    start: () => {
      // Fails twice, e.g. a read etcd refused, then starts.
      if (++flakyStarts <= 2) throw new Error(`flaky start ${flakyStarts} failed`);
    },
    stop: () => undefined,
  };
  const leadership: boolean[] = [];
  const election = new LeaderElection({
    store,
    ttlSeconds: 2,
    components: [flakyComponent, steadyComponent],
    logger: createLogger({ name: 'test', level: process.env.CITADEL_TEST_LOG ?? 'silent' }),
    onChange: (leading) => leadership.push(leading),
    onComponentChange: (component, up) => metrics.leaderComponentUp.set({ component }, up ? 1 : 0),
    componentRetryMinMs: 200,
    componentRetryMaxMs: 1000,
  });
  election.start();
  t.after(() => election.stop());

  // The component after the failing one starts at once; the failing one is reported down.
  await eventually(async () => (await componentUp(metrics, 'steady')) === 1, {
    message: 'the steady component runs while the flaky one is retried',
  });
  assert.equal(await componentUp(metrics, 'flaky'), 0, 'the failing component is reported down');
  assert.ok(flakyStarts >= 1 && flakyStarts <= 2, `flaky start tried (${flakyStarts})`);

  await eventually(async () => (await componentUp(metrics, 'flaky')) === 1, {
    message: 'the flaky component is up after its retries',
  });
  assert.equal(flakyStarts, 3, 'two failed starts, then one that succeeded');
  assert.deepEqual(leadership, [true], 'leadership was kept throughout');
  assert.equal(steady.starts, 1, 'the steady component was started once');
  assert.equal(steady.stops, 0, 'the steady component was never stopped');
  assert.ok(election.isLeader, 'the replica still leads');

  await election.stop();
  assert.equal(await componentUp(metrics, 'flaky'), 0, 'down after stepping down');
  assert.equal(await componentUp(metrics, 'steady'), 0, 'down after stepping down');
  assert.equal(steady.stops, 1, 'stopped once on stepping down');
});
