/**
 * The leader's in-memory index of the dispatch queue and the fair choice a dispatch pass makes
 * from it (docs/dispatch.md, "The dispatcher"): per priority, per owner, the owner's pending
 * executions in due order (ids and due times only), served round-robin with a rotating cursor
 * per priority. Pure: the dispatcher feeds it from a range read and a watch of `queue/`.
 */
import { keys, type PriorityRank } from '../store/keys.js';

/** A pending execution as the index holds it: what dispatch decides on, nothing more. */
export interface QueuedExecution {
  readonly id: string;
  readonly priority: PriorityRank;
  readonly dueMs: number;
  readonly owner: string;
}

/** Where a queue key places an execution (its owner is in the value). */
export type QueuePlace = Omit<QueuedExecution, 'owner'>;

/** What one pass chose. */
export interface Selection {
  /** The entries to assign, in the order chosen (at most the slots offered). */
  picks: QueuedExecution[];
  /** The earliest due time after `now` of any entry, in any priority; Infinity if none. */
  nextDueMs: number;
}

const RANKS: readonly PriorityRank[] = [1, 2, 3];

/** Parses `queue/<p>/<dueMs:15>/<executionId>`; undefined for any other key. */
export function parseQueueKey(key: string): QueuePlace | undefined {
  if (!key.startsWith(keys.queuePrefix)) return undefined;
  const [p, due, id, ...rest] = key.slice(keys.queuePrefix.length).split('/');
  const priority = Number(p);
  const dueMs = Number(due);
  if (priority !== 1 && priority !== 2 && priority !== 3) return undefined;
  if (!Number.isSafeInteger(dueMs) || !id || rest.length > 0) return undefined;
  return { id, priority, dueMs };
}

/** Queue key order within a priority: due time, then id. */
function precedes(a: QueuePlace, b: QueuePlace): boolean {
  return a.dueMs < b.dueMs || (a.dueMs === b.dueMs && a.id < b.id);
}

/** One owner's entries in one priority, in due order. Taking the head costs O(1). */
class OwnerQueue {
  private items: QueuedExecution[] = [];
  /** Every entry here shares this one string: entries parsed from etcd each bring a copy. */
  constructor(readonly owner: string) {}

  /** Entries before this index have been removed (compacted away now and then). */
  private head = 0;

  get size(): number {
    return this.items.length - this.head;
  }

  /** The `i`th entry in due order. */
  at(i: number): QueuedExecution | undefined {
    return i < this.size ? this.items[this.head + i] : undefined;
  }

  insert(entry: QueuedExecution): void {
    const last = this.items[this.items.length - 1];
    // New runs are mostly due after everything queued: append without a search.
    if (this.size === 0 || precedes(last!, entry)) this.items.push(entry);
    else this.items.splice(this.lowerBound(entry), 0, entry);
  }

  /** Removes `entry` (found by due time and id); false if it is not here. */
  remove(entry: QueuePlace): boolean {
    const i = this.lowerBound(entry);
    if (this.items[i]?.id !== entry.id || i >= this.items.length) return false;
    if (i === this.head) this.head++;
    else this.items.splice(i, 1);
    if (this.size === 0) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return true;
  }

  /** The earliest due time after `now`, or Infinity. */
  firstDueAfter(now: number): number {
    let lo = this.head;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.items[mid]!.dueMs <= now) lo = mid + 1;
      else hi = mid;
    }
    return lo < this.items.length ? this.items[lo]!.dueMs : Infinity;
  }

  /** The first position at or after the head whose entry does not precede `entry`. */
  private lowerBound(entry: QueuePlace): number {
    let lo = this.head;
    let hi = this.items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (precedes(this.items[mid]!, entry)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}

/** One priority: its owners' queues, the ring of owners (sorted by id) and the cursor. */
interface Level {
  readonly queues: Map<string, OwnerQueue>;
  readonly ring: string[];
  /** The owner served last; the next round starts with the owner after it. */
  cursor: string | undefined;
}

/** Index of the first element of the sorted `ring` greater than `owner`. */
function upperBound(ring: readonly string[], owner: string): number {
  let lo = 0;
  let hi = ring.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ring[mid]! <= owner) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The queue, by priority and owner, and the round-robin choice of what to assign. */
export class QueueIndex {
  private readonly levels = new Map<PriorityRank, Level>(
    RANKS.map((rank) => [rank, { queues: new Map(), ring: [], cursor: undefined }]),
  );
  private readonly byId = new Map<string, QueuedExecution>();
  /** Entries written by older versions (empty value): owner not known yet, arrival order. */
  private readonly ownerless = new Map<string, QueuePlace>();

  /** Entries held, with or without a known owner. */
  get size(): number {
    return this.byId.size + this.ownerless.size;
  }

  /** Entries whose owner is not known yet. */
  get ownerlessCount(): number {
    return this.ownerless.size;
  }

  /** Adds an entry (replacing one with the same execution id). */
  add(entry: QueuedExecution): void {
    this.remove(entry.id);
    const level = this.levels.get(entry.priority)!;
    let queue = level.queues.get(entry.owner);
    if (!queue) {
      queue = new OwnerQueue(entry.owner);
      level.queues.set(entry.owner, queue);
      level.ring.splice(upperBound(level.ring, entry.owner), 0, entry.owner);
    }
    const held: QueuedExecution = {
      id: entry.id,
      priority: entry.priority,
      dueMs: entry.dueMs,
      owner: queue.owner,
    };
    queue.insert(held);
    this.byId.set(held.id, held);
  }

  /** Adds an entry whose owner is not known yet; it is not chosen until {@link setOwner}. */
  addOwnerless(place: QueuePlace): void {
    this.remove(place.id);
    this.ownerless.set(place.id, place);
  }

  /** Up to `limit` entries whose owner is not known yet, oldest arrival first. */
  ownerlessEntries(limit: number): QueuePlace[] {
    const out: QueuePlace[] = [];
    for (const place of this.ownerless.values()) {
      if (out.length >= limit) break;
      out.push(place);
    }
    return out;
  }

  /** Gives an ownerless entry its owner (learnt from its execution record). */
  setOwner(id: string, owner: string): void {
    const place = this.ownerless.get(id);
    if (place) this.add({ ...place, owner });
  }

  /** Removes the entry of execution `id`; false if the index does not hold it. */
  remove(id: string): boolean {
    if (this.ownerless.delete(id)) return true;
    const entry = this.byId.get(id);
    if (!entry) return false;
    this.byId.delete(id);
    const level = this.levels.get(entry.priority)!;
    const queue = level.queues.get(entry.owner)!;
    queue.remove(entry);
    if (queue.size === 0) {
      level.queues.delete(entry.owner);
      level.ring.splice(upperBound(level.ring, entry.owner) - 1, 1);
    }
    return true;
  }

  /** Forgets every entry and resets the cursors (the dispatcher reloads from etcd). */
  clear(): void {
    for (const level of this.levels.values()) {
      level.queues.clear();
      level.ring.length = 0;
      level.cursor = undefined;
    }
    this.byId.clear();
    this.ownerless.clear();
  }

  /**
   * Chooses up to `slots` entries due at `now` (docs/dispatch.md, "The dispatcher"):
   * priorities high to low; within one, owners round-robin from the one after the cursor, one
   * entry per owner per round, each owner's in due order. Advances the cursors. Removes
   * nothing: the caller removes what it assigns.
   * @param allowance how many more executions the owner may have in flight (Infinity: no
   *   limit); asked at most once per owner and call. An owner with none is passed over
   *   without looking at its entries.
   */
  select(now: number, slots: number, allowance: (owner: string) => number): Selection {
    const left = new Map<string, number>();
    const room = (owner: string): number => {
      let n = left.get(owner);
      if (n === undefined) left.set(owner, (n = allowance(owner)));
      return n;
    };
    const picks: QueuedExecution[] = [];
    for (const rank of RANKS) {
      if (picks.length >= slots) break;
      this.serve(this.levels.get(rank)!, now, slots, picks, room, left);
    }
    return { picks, nextDueMs: this.nextDue(now) };
  }

  /** Round-robin over one priority's owners, adding to `picks` until `slots` are taken. */
  private serve(
    level: Level,
    now: number,
    slots: number,
    picks: QueuedExecution[],
    room: (owner: string) => number,
    left: Map<string, number>,
  ): void {
    const n = level.ring.length;
    if (n === 0) return;
    const start = level.cursor === undefined ? 0 : upperBound(level.ring, level.cursor) % n;
    // The owners that can take an entry now, in ring order from the cursor; no more than the
    // slots left, since the first round gives each of them one.
    let turn: { owner: string; queue: OwnerQueue; taken: number }[] = [];
    for (let k = 0; k < n && turn.length < slots - picks.length; k++) {
      const owner = level.ring[(start + k) % n]!;
      if (room(owner) <= 0) continue;
      const queue = level.queues.get(owner)!;
      if (queue.at(0)!.dueMs <= now) turn.push({ owner, queue, taken: 0 });
    }
    while (turn.length > 0 && picks.length < slots) {
      const again: typeof turn = [];
      for (const t of turn) {
        if (picks.length >= slots) break;
        picks.push(t.queue.at(t.taken)!);
        t.taken++;
        left.set(t.owner, room(t.owner) - 1);
        level.cursor = t.owner;
        const next = t.queue.at(t.taken);
        if (next !== undefined && next.dueMs <= now && room(t.owner) > 0) again.push(t);
      }
      turn = again;
    }
  }

  /** The earliest due time after `now` over every owner and priority. */
  private nextDue(now: number): number {
    let earliest = Infinity;
    for (const level of this.levels.values()) {
      for (const queue of level.queues.values()) {
        earliest = Math.min(earliest, queue.firstDueAfter(now));
      }
    }
    return earliest;
  }
}
