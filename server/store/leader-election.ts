/**
 * Leader election on etcd with fencing (docs/architecture.md, "Leader election and fencing").
 * Each replica puts `leader/<leaseId>` under its own lease; the lowest create revision leads.
 * The leader's `Fence` makes every leader write conditional on that key still standing. A leader
 * component that fails to start is retried with backoff while this replica leads; the others
 * run meanwhile, so one failing part never leaves the cluster without a scheduler.
 */
import type { Lease, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { prefixEnd, type Fence, type Store } from './store.js';
import { keys } from './keys.js';

/** Components that run only on the leader. */
export interface LeaderComponent {
  readonly name: string;
  start(fence: Fence): Promise<void> | void;
  stop(): Promise<void> | void;
}

export interface LeaderElectionOptions {
  store: Store;
  /** Lease TTL in seconds. etcd rounds 1 up to 2. @default 5 */
  ttlSeconds: number;
  /** Started on gaining leadership, stopped (in reverse order) on losing it. */
  components: LeaderComponent[];
  logger: Logger;
  /** Called with true/false whenever leadership changes (metrics). */
  onChange?: (leading: boolean) => void;
  /** Called when a component starts (true) or stops or fails to start (false) (metrics). */
  onComponentChange?: (component: string, up: boolean) => void;
  /** First delay before retrying a component that failed to start, ms. @default 500 */
  componentRetryMinMs?: number;
  /** Longest delay between retries of a component, ms. @default 30000 */
  componentRetryMaxMs?: number;
}

export class LeaderElection {
  private lease: Lease | undefined;
  private watcher: Watcher | undefined;
  private leading = false;
  private stopped = false;
  private term = 0;
  /** Serialises campaign / step-down so they never interleave. */
  private chain: Promise<void> = Promise.resolve();
  /** Components started in the current term, in start order. */
  private readonly running = new Set<LeaderComponent>();
  /** Pending retries of components that failed to start. */
  private readonly retries = new Set<NodeJS.Timeout>();

  constructor(private readonly options: LeaderElectionOptions) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /** Begins campaigning; returns at once. */
  start(): void {
    this.enqueue(() => this.campaign());
  }

  /** Stops leader components, resigns (deletes the key) and stops campaigning. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.enqueue(() => this.stepDown('shutdown', true));
    await this.chain;
  }

  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err: unknown) => {
      this.options.logger.error({ err }, 'leader election step failed');
      if (!this.stopped) this.retryLater();
    });
  }

  /**
   * After a failed step, starts over: drop the lease (and any leadership) and campaign again.
   * Campaigning again alone would keep a stale lease and key that nobody re-checks.
   */
  private retryLater(): void {
    const timer = setTimeout(
      () => this.enqueue(() => this.stepDown('election step failed', false)),
      500 + Math.random() * 500,
    );
    timer.unref();
  }

  private async campaign(): Promise<void> {
    if (this.stopped || this.lease) return;
    const { store, ttlSeconds, logger } = this.options;
    const term = ++this.term;
    const lease = store.client.lease(ttlSeconds, { autoKeepAlive: true });
    this.lease = lease;
    lease.on('lost', (err) => {
      logger.warn({ err: err.message }, 'leader lease lost');
      this.enqueue(() => this.stepDownIfTerm(term, 'lease lost'));
    });
    let key: string;
    let myRevision: number;
    try {
      const leaseId = await lease.grant();
      key = `${keys.leaderPrefix}${leaseId}`;
      const put = await lease
        .put(store.prefix + key)
        .value(store.replicaId)
        .exec();
      myRevision = Number(put.header.revision);
    } catch (err) {
      this.lease = undefined;
      lease.removeAllListeners('lost');
      await lease.revoke().catch(() => undefined);
      throw err;
    }
    logger.debug({ key, revision: myRevision }, 'campaigning');
    await this.waitForTurn(term, key, myRevision);
  }

  /** Leads if no older candidate remains; otherwise watches the one just ahead of us. */
  private async waitForTurn(term: number, key: string, myRevision: number): Promise<void> {
    if (this.term !== term || this.stopped) return;
    const { store } = this.options;
    const res = await store.client.kv.range({
      key: store.full(keys.leaderPrefix),
      range_end: prefixEnd(store.full(keys.leaderPrefix)),
      keys_only: true,
    });
    const ahead = res.kvs
      .map((kv) => ({ key: store.relative(kv.key), rev: Number(kv.create_revision) }))
      .filter((c) => c.rev < myRevision)
      .sort((a, b) => b.rev - a.rev)[0];
    if (!ahead) {
      const mine = res.kvs.some((kv) => store.relative(kv.key) === key);
      if (!mine) {
        // Our key vanished (lease expired while we waited): start over.
        await this.stepDown('campaign key lost', false);
        return;
      }
      await this.becomeLeader(term, { key, createRevision: myRevision });
      return;
    }
    const watcher = await store.client
      .watch()
      .key(store.prefix + ahead.key)
      .startRevision(String(Number(res.header.revision) + 1))
      .create();
    this.watcher = watcher;
    const recheck = () => {
      watcher.removeAllListeners();
      void watcher.cancel().catch(() => undefined);
      if (this.watcher === watcher) this.watcher = undefined;
      this.enqueue(() => this.waitForTurn(term, key, myRevision));
    };
    watcher.once('delete', recheck);
    // A watch cancelled by etcd (for example a compacted resume revision after a reconnect)
    // must not leave us waiting forever: look again.
    watcher.once('error', recheck);
  }

  private async becomeLeader(
    term: number,
    at: { key: string; createRevision: number },
  ): Promise<void> {
    const { logger, components } = this.options;
    const fence: Fence = {
      key: at.key,
      createRevision: at.createRevision,
      lost: () => this.enqueue(() => this.stepDownIfTerm(term, 'fenced off')),
    };
    this.leading = true;
    logger.info({ key: at.key }, 'became leader');
    this.options.onChange?.(true);
    for (const c of components) {
      await this.startComponent(term, c, fence, 0);
      if (!this.leading || this.term !== term) return;
    }
  }

  /**
   * Starts one component. On failure it is logged with its cause, cleaned up and retried with
   * capped exponential backoff while this term lasts; the other components keep running (a
   * step-down here would hand the failure to the next replica and leave nobody scheduling).
   */
  private async startComponent(
    term: number,
    c: LeaderComponent,
    fence: Fence,
    attempt: number,
  ): Promise<void> {
    if (!this.leading || this.term !== term || this.running.has(c)) return;
    const { logger } = this.options;
    try {
      await c.start(fence);
      this.running.add(c);
      this.options.onComponentChange?.(c.name, true);
      if (attempt > 0) logger.info({ component: c.name, attempt }, 'leader component started');
      return;
    } catch (err) {
      const min = this.options.componentRetryMinMs ?? 500;
      const delayMs = Math.min(min * 2 ** attempt, this.options.componentRetryMaxMs ?? 30_000);
      logger.error(
        { err, component: c.name, attempt, retryInMs: delayMs },
        'a leader component failed to start; retrying',
      );
      this.options.onComponentChange?.(c.name, false);
      // Undo a partial start, so the retry begins clean.
      await Promise.resolve()
        .then(() => c.stop())
        .catch((e: unknown) => logger.warn({ err: e, component: c.name }, 'cleanup failed'));
      const timer = setTimeout(() => {
        this.retries.delete(timer);
        this.enqueue(() => this.startComponent(term, c, fence, attempt + 1));
      }, delayMs);
      timer.unref();
      this.retries.add(timer);
    }
  }

  /**
   * Steps down only if `term` is still current when this runs: an event queued behind a
   * step-down and a new campaign must not end the new campaign.
   */
  private async stepDownIfTerm(term: number, reason: string): Promise<void> {
    if (this.term === term) await this.stepDown(reason, false);
  }

  /** Stops leader components and drops the lease; campaigns again unless stopping. */
  private async stepDown(reason: string, resign: boolean): Promise<void> {
    const { logger, components } = this.options;
    const wasLeading = this.leading;
    this.leading = false;
    this.term++;
    for (const timer of this.retries) clearTimeout(timer);
    this.retries.clear();
    if (wasLeading) {
      logger.warn({ reason }, 'leadership ended');
      this.options.onChange?.(false);
      for (const c of [...components].reverse()) {
        if (!this.running.delete(c)) continue;
        try {
          await c.stop();
        } catch (err) {
          logger.error({ err, component: c.name }, 'stopping leader component failed');
        }
      }
      for (const c of components) this.options.onComponentChange?.(c.name, false);
    }
    const watcher = this.watcher;
    this.watcher = undefined;
    if (watcher) await watcher.cancel().catch(() => undefined);
    const lease = this.lease;
    this.lease = undefined;
    if (lease) {
      lease.removeAllListeners('lost');
      // Revoking deletes our key at once, so a successor need not wait for the TTL.
      if (resign || !lease.revoked()) await lease.revoke().catch(() => undefined);
    }
    if (!this.stopped) this.enqueue(() => this.campaign());
  }
}
