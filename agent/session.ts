/**
 * A session with one worker endpoint: the mutual-TLS connection, the Connect stream held open
 * on it, and a single signal that the session has failed. A certificate renewal swaps in a new
 * connection (a new generation) without ending the session; events from an older generation's
 * stream are ignored, since the server cuts it once the old certificate is retired.
 */
import { type ClientReadableStream, type StatusObject, status } from '@grpc/grpc-js';

import type { Assignment, ConnectResponse } from '../gen/citadel/v1/worker_service.js';
import { type CallFailure, classifyFailure, streamEnded } from './call-failure.js';
import type { ServerAddress } from './server-address.js';
import { type MutualTlsMaterial, WorkerConnection } from './worker-client.js';

/** Callbacks of a session. */
export interface SessionHooks {
  /** The Connect stream of a generation delivered its `connected` event. */
  onConnected(event: { server: string; replicaId: string; workerId: string }): void;
  /** An execution assigned to this worker (possibly again, after a reconnect). */
  onAssignment?(assignment: Assignment): void;
  /** An assignment withdrawn: stop running it. */
  onCancelled?(executionId: string): void;
}

/** One worker endpoint, one Connect stream at a time, failing as a whole. */
export class WorkerSession {
  /** `HOST:PORT` of the endpoint. */
  readonly server: string;
  /** Settles with the first failure of the session (a CANCELLED one from `close()`). */
  readonly failed: Promise<CallFailure>;

  #connection: WorkerConnection;
  #stream: ClientReadableStream<ConnectResponse> | undefined;
  #generation = 0;
  #failure: CallFailure | undefined;
  #holdStreamEnd = false;
  #heldFailure: CallFailure | undefined;
  #settle!: (failure: CallFailure) => void;

  constructor(
    private readonly address: ServerAddress,
    material: MutualTlsMaterial,
    private readonly hooks: SessionHooks,
  ) {
    this.#connection = new WorkerConnection(address, material);
    this.server = this.#connection.server;
    this.failed = new Promise((resolve) => {
      this.#settle = resolve;
    });
  }

  /** The connection unary calls should use now. */
  get connection(): WorkerConnection {
    return this.#connection;
  }

  /** The failure that ended the session, if it has ended. */
  get failure(): CallFailure | undefined {
    return this.#failure;
  }

  /** Opens the Connect stream on the current connection. */
  open(): void {
    this.#openStream();
  }

  /**
   * Ends the session with `failure`: the stream is cancelled and the channel closed, so calls
   * still pending fail at once (CANCELLED). Only the first call counts.
   */
  fail(failure: CallFailure): void {
    if (this.#failure !== undefined) return;
    this.#failure = failure;
    this.#generation++;
    this.#stream?.cancel();
    this.#stream = undefined;
    this.#connection.close();
    this.#settle(failure);
  }

  /**
   * Runs a certificate renewal on the current connection and, if it succeeds, moves the
   * session to the new credentials: a new connection and Connect stream, then the old stream
   * cancelled and the old channel closed. The server ends the old stream as soon as it
   * retires the old certificate, which can be before the renewal's answer arrives; so an end
   * of the stream while `work` runs is held back, dropped on success and applied on failure.
   *
   * @throws whatever `work` throws.
   */
  async renew<T>(
    work: (connection: WorkerConnection) => Promise<T>,
    materialOf: (result: T) => MutualTlsMaterial,
  ): Promise<T> {
    this.#holdStreamEnd = true;
    try {
      const result = await work(this.#connection);
      this.#heldFailure = undefined;
      if (this.#failure === undefined) this.#replaceCredentials(materialOf(result));
      return result;
    } finally {
      this.#holdStreamEnd = false;
      const held = this.#heldFailure;
      this.#heldFailure = undefined;
      if (held !== undefined) this.fail(held);
    }
  }

  /** Ends the session (if it has not failed) with a CANCELLED failure. */
  close(): void {
    this.fail(
      classifyFailure(
        'connect',
        statusError({ code: status.CANCELLED, details: 'session closed' }),
      ),
    );
  }

  #replaceCredentials(material: MutualTlsMaterial): void {
    const old = this.#connection;
    const oldStream = this.#stream;
    this.#connection = new WorkerConnection(this.address, material);
    this.#openStream();
    oldStream?.cancel();
    old.close();
  }

  #openStream(): void {
    const generation = ++this.#generation;
    const current = () => generation === this.#generation;
    const stream = this.#connection.connect();
    this.#stream = stream;
    let connected = false;
    stream.on('data', (message: ConnectResponse) => {
      if (!current()) return;
      const event = message.event;
      if (event?.$case === 'assignment') this.hooks.onAssignment?.(event.value);
      else if (event?.$case === 'cancelled') this.hooks.onCancelled?.(event.value.executionId);
      else if (event?.$case === 'connected' && !connected) {
        connected = true;
        this.hooks.onConnected({
          server: this.server,
          replicaId: event.value.replicaId,
          workerId: event.value.workerId,
        });
      }
    });
    // 'status' always comes last, with the code, after 'error' for a non-OK status.
    stream.on('error', () => {});
    stream.on('status', (s: StatusObject) => {
      if (!current()) return;
      const failure =
        s.code === status.OK ? streamEnded() : classifyFailure('connect', statusError(s));
      if (this.#holdStreamEnd) this.#heldFailure ??= failure;
      else this.fail(failure);
    });
  }
}

function statusError(
  s: Pick<StatusObject, 'code' | 'details'>,
): Error & { code: number; details: string } {
  return Object.assign(new Error(s.details), { code: s.code, details: s.details });
}
