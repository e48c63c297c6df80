/**
 * Worker liveness (docs/workers.md, "Liveness"): each online worker holds one etcd lease, kept
 * alive only by its valid heartbeats. Any replica can renew any worker's lease: keep-alives go
 * by lease id over this replica's one shared keep-alive stream. A worker with no live lease is
 * registered again: a new lease, `live/<id>` written under it with a create-only compare, and
 * `online: true` with an audit record if it was offline. A heartbeat whose `total_slots` differs
 * from the live record's rewrites the record under the same lease (an agent that stops sends 0).
 */
import type { IDuplexStream } from 'etcd3';
import type { ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3/lib/rpc.js';
import type { Logger } from 'pino';
import { ConflictError, UnauthenticatedError, UnavailableError } from '../../common/errors.js';
import { keys } from '../store/keys.js';
import { Tx, type Store } from '../store/store.js';
import type { LiveRecord, WorkerRecord } from './worker-table.js';

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** How long a keep-alive may wait for etcd's answer. */
const KEEPALIVE_TIMEOUT_MS = 3000;

export interface WorkerLivenessOptions {
  store: Store;
  /** Lease TTL in seconds. @default 10 */
  ttlSeconds: number;
  logger: Logger;
}

export class WorkerLiveness {
  /** Lease id of each worker this replica renewed or registered. */
  private readonly leases = new Map<string, string>();
  /** Slots in each worker's live record, as this replica last wrote or read them. */
  private readonly slots = new Map<string, number>();
  private stream: Promise<KeepAliveStream> | undefined;
  /** Callers waiting for etcd's answer to a keep-alive, by lease id, in request order. */
  private readonly waiting = new Map<string, ((ttl: number | Error) => void)[]>();

  constructor(private readonly options: WorkerLivenessOptions) {}

  /**
   * Renews `worker`'s lease, or registers it if it has none.
   * @param sequence the heartbeat's sequence, stored as a floor when registering.
   * @returns whether the worker was (re)registered by this call.
   * @throws UnavailableError if etcd does not answer.
   */
  async renew(worker: WorkerRecord, sequence: number, totalSlots = 0): Promise<boolean> {
    let leaseId = this.leases.get(worker.id);
    if (leaseId === undefined) {
      const live = await this.options.store.getJson<LiveRecord>(keys.live(worker.id));
      leaseId = live?.value.leaseId;
    }
    if (leaseId !== undefined && (await this.keepAlive(leaseId)) > 0) {
      this.leases.set(worker.id, leaseId);
      if (this.slots.get(worker.id) !== totalSlots) {
        await this.updateSlots(worker.id, leaseId, totalSlots, sequence);
      }
      return false;
    }
    this.leases.delete(worker.id);
    this.slots.delete(worker.id);
    return this.register(worker.id, sequence, totalSlots);
  }

  /**
   * A new session of `workerId` reached this replica (a Connect stream): what it knew of the
   * worker's slots may be stale (another replica may have written them since), so the next
   * heartbeat compares with `live/<id>` again.
   */
  forgetSlots(workerId: string): void {
    this.slots.delete(workerId);
  }

  /**
   * Rewrites the live record's slots under its lease, unless it is gone, already says so, or
   * was set by a later heartbeat (one that reached another replica first).
   */
  private async updateSlots(
    workerId: string,
    leaseId: string,
    totalSlots: number,
    sequence: number,
  ): Promise<void> {
    const { store, logger } = this.options;
    const live = await store.getJson<LiveRecord>(keys.live(workerId));
    if (!live || live.value.leaseId !== leaseId) return;
    if ((live.value.totalSlots ?? 0) !== totalSlots) {
      if (sequence <= (live.value.slotsSequence ?? live.value.sequence)) return;
      const next: LiveRecord = { ...live.value, totalSlots, slotsSequence: sequence };
      const tx = new Tx().expect(live.key, live.modRevision).putJson(live.key, next, leaseId);
      try {
        await store.commit(tx);
      } catch (err) {
        if (err instanceof ConflictError) return; // another replica changed it: the next beat says
        throw err;
      }
      logger.info(
        { workerId, totalSlots, was: live.value.totalSlots ?? 0 },
        'worker slots changed',
      );
    }
    this.slots.set(workerId, totalSlots);
  }

  /** The live record's sequence floor, for a replica that has not seen this worker yet. */
  async sequenceFloor(workerId: string): Promise<number> {
    const live = await this.options.store.getJson<LiveRecord>(keys.live(workerId));
    return live?.value.sequence ?? 0;
  }

  /** Ends a worker's lease (blocked, retired), deleting `live/<id>` with it. */
  async revoke(workerId: string, leaseId: string | undefined): Promise<void> {
    this.leases.delete(workerId);
    this.slots.delete(workerId);
    if (leaseId === undefined) return;
    await this.options.store.client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
  }

  /** Closes the keep-alive stream; pending renewals fail. */
  async stop(): Promise<void> {
    const stream = this.stream;
    this.stream = undefined;
    this.failAll(new UnavailableError('the replica is stopping'));
    if (stream) (await stream.catch(() => undefined))?.end();
  }

  private async register(workerId: string, sequence: number, totalSlots: number): Promise<boolean> {
    const { store, ttlSeconds, logger } = this.options;
    const grant = await store.client.leaseClient.leaseGrant({ TTL: ttlSeconds });
    const leaseId = grant.ID;
    for (let attempt = 0; attempt < 3; attempt++) {
      const worker = await store.getJson<WorkerRecord>(keys.worker(workerId));
      if (!worker || worker.value.state !== 'active') {
        await store.client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
        throw new UnauthenticatedError(`worker ${workerId} is ${worker?.value.state ?? 'unknown'}`);
      }
      const now = Date.now();
      const live: LiveRecord = {
        leaseId,
        registeredAt: now,
        replicaId: store.replicaId,
        sequence,
        totalSlots,
      };
      const tx = new Tx()
        .expect(keys.live(workerId), 0)
        .expect(worker.key, worker.modRevision)
        .putJson(keys.live(workerId), live, leaseId)
        .putJson(worker.key, { ...worker.value, online: true, lastRegisteredAt: now })
        .record({
          eventType: 'worker_registration',
          action: 'register',
          result: 'success',
          workerId,
          details: {
            lease_ttl_s: ttlSeconds,
            replica: store.replicaId,
            rejoin: worker.value.online === false,
          },
        });
      try {
        await store.commit(tx);
        this.leases.set(workerId, leaseId);
        this.slots.set(workerId, totalSlots);
        logger.info({ workerId, leaseId }, 'worker registered');
        return true;
      } catch (err) {
        if (!(err instanceof ConflictError)) throw err;
        // Another replica registered it meanwhile: renew that lease instead of ours.
        const other = await store.getJson<LiveRecord>(keys.live(workerId));
        if (other && (await this.keepAlive(other.value.leaseId)) > 0) {
          this.leases.set(workerId, other.value.leaseId);
          await store.client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
          return false;
        }
      }
    }
    await store.client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
    throw new ConflictError(`could not register worker ${workerId}; retry`);
  }

  /** Sends one keep-alive for `leaseId`; resolves with the remaining TTL (0: the lease is gone). */
  private async keepAlive(leaseId: string): Promise<number> {
    const stream = await this.openStream();
    return new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => {
        // A stream that stalls without an error would fail every renewal: start a new one.
        if (this.stream) {
          void this.stream.then((s) => s.end()).catch(() => undefined);
          this.stream = undefined;
        }
        settle(new UnavailableError('etcd did not answer a lease keep-alive'));
      }, KEEPALIVE_TIMEOUT_MS);
      const settle = (ttl: number | Error) => {
        clearTimeout(timer);
        const queue = this.waiting.get(leaseId);
        const i = queue?.indexOf(settle) ?? -1;
        if (i >= 0) queue!.splice(i, 1);
        if (queue?.length === 0) this.waiting.delete(leaseId);
        if (ttl instanceof Error) reject(ttl);
        else resolve(ttl);
      };
      const queue = this.waiting.get(leaseId) ?? [];
      queue.push(settle);
      this.waiting.set(leaseId, queue);
      stream.write({ ID: leaseId });
    });
  }

  private openStream(): Promise<KeepAliveStream> {
    this.stream ??= this.options.store.client.leaseClient.leaseKeepAlive().then(
      (stream) => {
        stream.on('data', (res: ILeaseKeepAliveResponse) => {
          this.waiting.get(res.ID)?.[0]?.(Number(res.TTL));
        });
        stream.on('error', (err: Error) => {
          this.options.logger.warn({ err: err.message }, 'lease keep-alive stream failed');
          this.stream = undefined;
          this.failAll(new UnavailableError('the lease keep-alive stream failed', { cause: err }));
        });
        stream.on('end', () => {
          this.stream = undefined;
          this.failAll(new UnavailableError('the lease keep-alive stream ended'));
        });
        return stream;
      },
      (err: unknown) => {
        this.stream = undefined;
        throw new UnavailableError('could not open a lease keep-alive stream', { cause: err });
      },
    );
    return this.stream;
  }

  private failAll(err: Error): void {
    for (const queue of [...this.waiting.values()]) for (const settle of [...queue]) settle(err);
  }
}
