/**
 * The running agent: one session at a time with a worker endpoint, signed heartbeats on it,
 * the Connect stream held open, the certificate renewed before half its life, and on any
 * failure the next endpoint after a jittered backoff. Its state is an explicit union.
 */
import type { Logger } from '../common/logger.js';
import { Backoff, type BackoffPolicy, RECONNECT_BACKOFF, slowRetryDelayMs } from './backoff.js';
import { type CallFailure, classifyFailure } from './call-failure.js';
import { type FailureContext, FailureLog } from './failure-log.js';
import { HeartbeatSequence, signedHeartbeat } from './heartbeat.js';
import type { WorkerIdentity } from './identity.js';
import { renewalDelayMs, renewalRetryDelayMs, renewCertificate } from './renewal.js';
import { type ServerAddress, formatServerAddress } from './server-address.js';
import { Executor, type Runner } from './executor.js';
import type { TaskMaxima } from './run-spec.js';
import { defaultTaskMaxima } from './agent-options.js';
import { WorkerSession } from './session.js';
import type { DataPaths } from './state.js';
import { StatusRecorder } from './status-recorder.js';

/** Where the agent is. `server` is always `HOST:PORT`. */
export type AgentState =
  | { readonly kind: 'idle' }
  | { readonly kind: 'connecting'; readonly server: string }
  | { readonly kind: 'connected'; readonly server: string; readonly replicaId?: string }
  | {
      readonly kind: 'backoff';
      /** The endpoint the next attempt goes to. */
      readonly server: string;
      readonly delayMs: number;
      readonly failure: CallFailure;
    }
  | { readonly kind: 'stopped' };

/** What the agent runs with: state.json, flags and the data folder, compiled. */
export interface AgentConfig {
  readonly paths: DataPaths;
  readonly workerId: string;
  /** Worker endpoints, tried in turn. Not empty. */
  readonly servers: readonly ServerAddress[];
  /** Until the server says otherwise in a HeartbeatResponse. */
  readonly heartbeatIntervalMs: number;
  readonly leaseTtlMs: number;
  /** Executions the agent offers to run at once. */
  readonly slots: number;
  /** Pause between tries while the server refuses the worker. @default 30000 */
  readonly refusedRetryMs?: number;
  /** @default RECONNECT_BACKOFF (100 ms doubling to 5 s) */
  readonly backoff?: BackoffPolicy;
  /** @default Math.random */
  readonly random?: () => number;
  /** Called on every state change. */
  readonly onStateChange?: (state: AgentState) => void;
  /** Runs assigned executions; without one the agent offers no slots. */
  readonly runner?: Runner;
  /** The most a task may ask for. @default defaultTaskMaxima() */
  readonly taskMaxima?: TaskMaxima;
}

/** How long a stopping agent spends withdrawing its slots and reporting what it ran. */
const DRAIN_TIMEOUT_MS = 5_000;
/** How long it then waits for the runner to remove containers the drain did not end. */
const STOP_GRACE_MS = 3_000;

/** The agent's run loop. `start()` once, `stop()` once. */
export class Agent {
  #state: AgentState = { kind: 'idle' };
  #identity: WorkerIdentity;
  readonly #sequence = new HeartbeatSequence();
  readonly #backoff: Backoff;
  readonly #random: () => number;
  #intervalMs: number;
  #renewAtMs = 0;
  #renewAttempts = 0;
  #session: WorkerSession | undefined;
  #replicaId: string | undefined;
  #loop: Promise<void> | undefined;
  #stopping = false;
  readonly #wakers = new Set<() => void>();
  readonly #failures: FailureLog;
  readonly #status: StatusRecorder;
  #heartbeatOk = false;
  #expiryLogged = false;
  readonly #executor: Executor | undefined;

  constructor(
    private readonly config: AgentConfig,
    identity: WorkerIdentity,
    private readonly logger: Logger,
  ) {
    this.#identity = identity;
    this.#random = config.random ?? Math.random;
    this.#backoff = new Backoff(config.backoff ?? RECONNECT_BACKOFF, this.#random);
    this.#intervalMs = config.heartbeatIntervalMs;
    this.#failures = new FailureLog(logger);
    this.#status = new StatusRecorder(config.paths, config.workerId, logger);
    this.#executor =
      config.runner &&
      new Executor(
        config.runner,
        () => (this.#state.kind === 'connected' ? this.#session?.connection : undefined),
        logger,
        config.taskMaxima ?? defaultTaskMaxima(),
      );
  }

  /** The current state. */
  get state(): AgentState {
    return this.#state;
  }

  /** The identity in use (it changes on renewal). */
  get identity(): WorkerIdentity {
    return this.#identity;
  }

  /** Starts the loop. Call once. */
  start(): void {
    if (this.#loop !== undefined) return;
    const renewInMs = this.#scheduleRenewal();
    this.logger.info(
      {
        workerId: this.config.workerId,
        servers: this.config.servers.map(formatServerAddress),
        keyType: this.#identity.keyType,
        certificateSerial: this.#identity.serial,
        certificateNotAfter: this.#identity.notAfter.toISOString(),
        renewInMs,
      },
      'agent starting',
    );
    this.#loop = this.#run();
  }

  /**
   * Stops the agent: the call in flight ends (each has a deadline), the session drains (see
   * #drain), then the stream is cancelled and the channel closed. Resolves once the loop has
   * ended.
   */
  async stop(): Promise<void> {
    this.#stopping = true;
    this.#wakeAll();
    try {
      await this.#loop;
    } finally {
      // Whatever the drain did not end: abort it and give the runner a moment to remove it.
      await this.#executor?.stop(STOP_GRACE_MS);
      this.#setState({ kind: 'stopped' });
    }
  }

  /** Resolves when the loop has ended (after `stop()`); rejects if it crashed. */
  whenStopped(): Promise<void> {
    return this.#loop ?? Promise.resolve();
  }

  async #run(): Promise<void> {
    const servers = this.config.servers;
    let index = 0;
    try {
      while (!this.#stopping) {
        const { server, failure } = await this.#runSession(servers[index % servers.length]!);
        if (this.#stopping) break;
        index++;
        const next = formatServerAddress(servers[index % servers.length]!);
        const delayMs = this.#retryDelayMs(failure);
        this.#reportFailure(failure, { server, nextServer: next, retryInMs: delayMs });
        this.#setState({ kind: 'backoff', server: next, delayMs, failure });
        await this.#sleep(delayMs);
      }
    } finally {
      this.#setState({ kind: 'stopped' });
      await this.#status.stopped(this.#identity);
      this.logger.info({ workerId: this.config.workerId }, 'agent stopped');
    }
  }

  /** Runs one session until it fails (or the agent stops) and says why it ended. */
  async #runSession(address: ServerAddress): Promise<{ server: string; failure: CallFailure }> {
    const session: WorkerSession = new WorkerSession(address, this.#identity, {
      onConnected: (event) => this.#onConnected(session, event),
      onAssignment: (a) => this.#executor?.onAssignment(a),
      onCancelled: (id) => this.#executor?.onCancelled(id),
    });
    this.#session = session;
    this.#replicaId = undefined;
    this.#setState({ kind: 'connecting', server: session.server });
    // A failure ends the session at once: pending calls are cancelled and the loop wakes.
    void session.failed.then(() => {
      if (this.#session === session) this.#wakeAll();
    });
    session.open();
    try {
      while (!this.#stopping && session.failure === undefined) {
        if (Date.now() >= this.#renewAtMs) await this.#renew(session);
        if (session.failure !== undefined || this.#stopping) break;
        const outcome = await this.#heartbeat(session);
        if (typeof outcome !== 'number') {
          session.fail(outcome);
          break;
        }
        const untilRenewal = Math.max(0, this.#renewAtMs - Date.now());
        if (session.failure === undefined) await this.#sleep(Math.min(outcome, untilRenewal));
      }
      if (this.#stopping && session.failure === undefined) await this.#drain(session);
    } finally {
      session.close();
      this.#session = undefined;
    }
    return { server: session.server, failure: session.failure! };
  }

  /**
   * Leaves the cluster's work in order before the session closes, within DRAIN_TIMEOUT_MS: a
   * heartbeat offering no slots, so the dispatcher stops assigning here at once; then what runs
   * is aborted and reported lost, so it is retried now rather than when the lease lapses.
   */
  async #drain(session: WorkerSession): Promise<void> {
    if (!this.#executor) return;
    const started = Date.now();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), DRAIN_TIMEOUT_MS);
    });
    try {
      const beat = await Promise.race([this.#heartbeat(session, { draining: true }), deadline]);
      const running = this.#executor.runningIds().length;
      // Without an answer to the heartbeat there is no connection to report on: stop() aborts.
      const drained =
        typeof beat !== 'number'
          ? 'timeout'
          : await Promise.race([this.#executor.drain(), deadline]);
      this.logger.info(
        {
          slotsWithdrawn: typeof beat === 'number',
          running,
          allReported: drained !== 'timeout',
          tookMs: Date.now() - started,
        },
        'drained',
      );
    } finally {
      clearTimeout(timer);
    }
  }

  /** Sends one heartbeat; the delay until the next, or why it failed. */
  async #heartbeat(
    session: WorkerSession,
    { draining = false }: { draining?: boolean } = {},
  ): Promise<number | CallFailure> {
    const identity = this.#identity;
    const sequence = this.#sequence.next();
    const running = this.#executor?.runningIds() ?? [];
    const slots = this.#executor && !draining ? this.config.slots : 0;
    const request = signedHeartbeat(
      {
        workerId: this.config.workerId,
        sequence,
        sendTime: new Date(),
        certificateSerial: identity.serial,
        runningExecutionIds: running,
        freeSlots: Math.max(0, slots - running.length),
        totalSlots: slots,
      },
      identity.privateKey,
    );
    const deadlineMs = Math.max(1_000, Math.min(this.#intervalMs, this.config.leaseTtlMs / 2));
    let nextMs: number;
    try {
      const response = await session.connection.heartbeat(request, deadlineMs);
      nextMs =
        response.nextHeartbeatMs > 0 ? response.nextHeartbeatMs : this.config.heartbeatIntervalMs;
    } catch (err) {
      return classifyFailure('heartbeat', err);
    }
    this.#intervalMs = Math.max(50, nextMs);
    this.#backoff.reset();
    const fields = { server: session.server, sequence, nextHeartbeatMs: this.#intervalMs };
    const failuresBefore = this.#failures.succeeded();
    if (this.#heartbeatOk) this.logger.debug(fields, 'heartbeat');
    else this.logger.info({ ...fields, failuresBefore }, 'heartbeat accepted');
    this.#heartbeatOk = true;
    this.#expiryLogged = false;
    if (this.#state.kind !== 'connected') this.#setConnected(session.server);
    await this.#status.heartbeat(session.server, identity, this.#state.kind);
    return this.#intervalMs;
  }

  #onConnected(
    session: WorkerSession,
    event: { server: string; replicaId: string; workerId: string },
  ): void {
    if (session !== this.#session || this.#stopping) return;
    this.#replicaId = event.replicaId;
    this.logger.info({ server: event.server, replicaId: event.replicaId }, 'connected');
    this.#setConnected(event.server);
  }

  #setConnected(server: string): void {
    this.#setState(
      this.#replicaId === undefined
        ? { kind: 'connected', server }
        : { kind: 'connected', server, replicaId: this.#replicaId },
    );
  }

  /** Renews the certificate on the session's connection; on failure, schedules a retry. */
  async #renew(session: WorkerSession): Promise<void> {
    const current = this.#identity;
    const deadlineMs = Math.max(2_000, Math.min(15_000, this.config.leaseTtlMs / 2));
    try {
      // On success the session moves its channel and stream to the new certificate.
      const outcome = await session.renew(
        (connection) =>
          renewCertificate(connection, this.config.paths, current, {
            commonName: this.config.workerId,
            deadlineMs,
          }),
        (result) => result.identity,
      );
      this.#identity = outcome.identity;
      this.#renewAttempts = 0;
      const renewInMs = this.#scheduleRenewal();
      if (outcome.storeError !== undefined) {
        this.logger.error(
          { err: outcome.storeError },
          'renewed certificate not stored; keeping it in memory until the next renewal',
        );
      }
      this.logger.info(
        {
          serial: outcome.identity.serial,
          notAfter: outcome.identity.notAfter.toISOString(),
          renewInMs,
        },
        'certificate renewed',
      );
    } catch (err) {
      const now = Date.now();
      const retryInMs = renewalRetryDelayMs(this.#renewAttempts++, current.notAfter.getTime(), now);
      this.#renewAtMs = now + retryInMs;
      // A renewal cut short by the session ending is not news; the session's failure is.
      if (this.#stopping || session.failure !== undefined) return;
      const failure = classifyFailure('renew', err);
      this.logger.warn(
        { server: session.server, code: failure.codeName, details: failure.details, retryInMs },
        'certificate renewal failed',
      );
    }
  }

  /** Sets the next renewal time from the current certificate; returns the delay. */
  #scheduleRenewal(): number {
    const now = Date.now();
    const delayMs = renewalDelayMs(this.#identity, now, this.#random);
    this.#renewAtMs = now + delayMs;
    return delayMs;
  }

  #retryDelayMs(failure: CallFailure): number {
    if (failure.refused || this.#certificateExpired()) {
      return slowRetryDelayMs(this.config.refusedRetryMs ?? 30_000, this.#random);
    }
    return this.#backoff.next();
  }

  #certificateExpired(): boolean {
    return Date.now() >= this.#identity.notAfter.getTime();
  }

  #reportFailure(failure: CallFailure, context: FailureContext): void {
    this.#heartbeatOk = false;
    if (this.#certificateExpired() && !this.#expiryLogged) {
      this.#expiryLogged = true;
      this.logger.error(
        { notAfter: this.#identity.notAfter.toISOString() },
        'certificate expired; the worker must join again',
      );
    }
    this.#failures.failed(failure, context);
  }

  #setState(state: AgentState): void {
    if (this.#state.kind === 'stopped') return;
    this.#state = state;
    this.config.onStateChange?.(state);
  }

  /** Waits `ms`, or less if the session fails or the agent stops. */
  /** Waits `ms`, or less if woken; not at all once the agent is stopping. */
  #sleep(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wakers.add(done);
    });
  }

  #wakeAll(): void {
    for (const wake of [...this.#wakers]) wake();
  }
}
