/**
 * The dispatcher's queue index and its fair choice (docs/dispatch.md, "The dispatcher"):
 * priorities high to low, owners round-robin with a rotating cursor, due order within an owner,
 * owners at their limit passed over unread, entries of older versions held until their owner
 * is known, and the timer's next due time.
 */
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { keys, type PriorityRank } from '../../server/store/keys.js';
import { parseQueueKey, QueueIndex } from '../../server/tasks/queue-index.js';

const NOW = 1_800_000_000_000;
const unlimited = (_owner: string): number => Infinity;

/** An index holding `[owner, count]` entries per owner, due one ms apart from `from`. */
function indexOf(
  owners: [string, number][],
  opts: { priority?: PriorityRank; from?: number; index?: QueueIndex } = {},
): QueueIndex {
  const index = opts.index ?? new QueueIndex();
  for (const [owner, count] of owners) {
    for (let i = 0; i < count; i++) {
      index.add({
        id: `${owner}-p${opts.priority ?? 2}-${String(i).padStart(4, '0')}`,
        priority: opts.priority ?? 2,
        dueMs: (opts.from ?? NOW - 10_000) + i,
        owner,
      });
    }
  }
  return index;
}

/** Chooses and removes what was chosen, as the dispatcher does once it has assigned them. */
function pass(index: QueueIndex, slots: number, allowance = unlimited): string[] {
  const { picks } = index.select(NOW, slots, allowance);
  for (const p of picks) index.remove(p.id);
  return picks.map((p) => p.id);
}

void describe('queue keys', () => {
  void test('a queue key parses back to its priority, due time and execution id', () => {
    const id = 't_0123456789abcdef-00000001-01';
    assert.deepEqual(parseQueueKey(keys.queue(3, 1234, id)), { id, priority: 3, dueMs: 1234 });
    assert.equal(parseQueueKey(`queue/4/000000000001234/${id}`), undefined);
    assert.equal(parseQueueKey(`inflight/${id}`), undefined);
    assert.equal(parseQueueKey('queue/1/x/y'), undefined);
  });
});

void describe('the fair choice', () => {
  void test("one owner's entries go in due order, whatever order they arrived in", () => {
    const index = new QueueIndex();
    for (const due of [5, 1, 4, 2, 3]) {
      index.add({ id: `a-${due}`, priority: 2, dueMs: NOW - 100 + due, owner: 'a' });
    }
    assert.deepEqual(pass(index, 10), ['a-1', 'a-2', 'a-3', 'a-4', 'a-5']);
    assert.equal(index.size, 0);
  });

  void test('priorities win across levels; owners share a level one entry per round', () => {
    const index = indexOf([['z', 2]], { priority: 3 });
    indexOf(
      [
        ['a', 3],
        ['b', 1],
        ['c', 2],
      ],
      { priority: 2, index },
    );
    indexOf([['y', 1]], { priority: 1, index });
    assert.deepEqual(pass(index, 7), [
      'y-p1-0000',
      'a-p2-0000',
      'b-p2-0000',
      'c-p2-0000',
      'a-p2-0001',
      'c-p2-0001',
      'a-p2-0002',
    ]);
    assert.deepEqual(pass(index, 7), ['z-p3-0000', 'z-p3-0001']);
  });

  void test('with one slot at a time the cursor rotates: no owner gets a second turn first', () => {
    const index = indexOf([
      ['a', 100],
      ['b', 2],
      ['c', 100],
    ]);
    const owners = Array.from({ length: 8 }, () => pass(index, 1)[0]!.slice(0, 1));
    assert.deepEqual(owners, ['a', 'b', 'c', 'a', 'b', 'c', 'a', 'c']);
  });

  void test('a pass that ends mid-round resumes after the last owner served', () => {
    const index = indexOf([
      ['a', 10],
      ['b', 10],
      ['c', 10],
    ]);
    assert.deepEqual(pass(index, 2), ['a-p2-0000', 'b-p2-0000']);
    assert.deepEqual(pass(index, 2), ['c-p2-0000', 'a-p2-0001']);
    // An owner arriving between passes takes its place in the ring by id.
    indexOf([['bb', 1]], { index });
    assert.deepEqual(pass(index, 3), ['b-p2-0001', 'bb-p2-0000', 'c-p2-0001']);
  });

  void test('an owner at its limit with a long backlog costs the others nothing, unread', () => {
    const index = indexOf([['alice', 600]], { from: NOW - 60_000 });
    indexOf([['bob', 1]], { index });
    const asked: string[] = [];
    const allowance = (owner: string) => {
      asked.push(owner);
      return owner === 'alice' ? 1 : Infinity;
    };
    assert.deepEqual(pass(index, 4, allowance), ['alice-p2-0000', 'bob-p2-0000']);
    assert.deepEqual(asked.sort(), ['alice', 'bob'], 'each owner is asked once');
    const atLimit = (owner: string) => (owner === 'alice' ? 0 : Infinity);
    assert.deepEqual(pass(index, 4, atLimit), [], 'nothing of hers while she is at her limit');
    assert.equal(index.size, 599);
  });

  void test("an owner's limit counts what it takes in every priority of the pass", () => {
    const index = indexOf([['a', 2]], { priority: 1 });
    indexOf([['a', 2]], { priority: 3, index });
    indexOf([['b', 1]], { priority: 3, index });
    const allowance = (owner: string) => (owner === 'a' ? 3 : Infinity);
    assert.deepEqual(pass(index, 10, allowance), [
      'a-p1-0000',
      'a-p1-0001',
      'a-p3-0000',
      'b-p3-0000',
    ]);
  });

  void test('entries not yet due wait, and the earliest of them is the next due time', () => {
    const index = new QueueIndex();
    index.add({ id: 'a-due', priority: 2, dueMs: NOW - 1, owner: 'a' });
    index.add({ id: 'a-later', priority: 2, dueMs: NOW + 500, owner: 'a' });
    index.add({ id: 'b-later', priority: 3, dueMs: NOW + 300, owner: 'b' });
    index.add({ id: 'c-latest', priority: 1, dueMs: NOW + 900, owner: 'c' });
    const { picks, nextDueMs } = index.select(NOW, 10, unlimited);
    assert.deepEqual(
      picks.map((p) => p.id),
      ['a-due'],
    );
    assert.equal(nextDueMs, NOW + 300);
    index.remove('b-later');
    assert.equal(index.select(NOW, 0, unlimited).nextDueMs, NOW + 500);
    assert.equal(new QueueIndex().select(NOW, 1, unlimited).nextDueMs, Infinity);
  });

  void test('an entry of an older version (no owner) waits until its owner is known', () => {
    const index = new QueueIndex();
    index.addOwnerless({ id: 'old-1', priority: 2, dueMs: NOW - 5 });
    index.addOwnerless({ id: 'old-2', priority: 2, dueMs: NOW - 4 });
    index.add({ id: 'new-1', priority: 2, dueMs: NOW - 1, owner: 'b' });
    assert.deepEqual(
      index.ownerlessEntries(10).map((p) => p.id),
      ['old-1', 'old-2'],
    );
    assert.deepEqual(pass(index, 10), ['new-1'], 'no owner, no turn; it blocks nobody');
    index.setOwner('old-1', 'a');
    assert.ok(index.remove('old-2'), 'an ownerless entry can be removed');
    assert.equal(index.ownerlessCount, 0);
    assert.deepEqual(pass(index, 10), ['old-1']);
    assert.equal(index.remove('old-1'), false, 'removed once assigned');
  });

  void test('removing from the middle and re-adding keeps order; clear empties everything', () => {
    const index = indexOf([['a', 5]]);
    assert.ok(index.remove('a-p2-0002'), 'a middle entry is removed');
    assert.equal(index.remove('a-p2-0002'), false, 'only once');
    index.add({ id: 'a-p2-0002', priority: 2, dueMs: NOW - 10_000 + 2, owner: 'a' });
    assert.deepEqual(pass(index, 3), ['a-p2-0000', 'a-p2-0001', 'a-p2-0002']);
    index.clear();
    assert.equal(index.size, 0);
    assert.deepEqual(pass(index, 3), []);
  });

  void test('a long backlog drained from the head stays in order through compaction', () => {
    const index = indexOf([['a', 5000]]);
    const taken: string[] = [];
    while (index.size > 0) taken.push(...pass(index, 700));
    assert.equal(taken.length, 5000);
    assert.deepEqual(
      taken,
      taken.map((_, i) => `a-p2-${String(i).padStart(4, '0')}`),
    );
  });
});
