/**
 * One mutual-TLS channel to one worker endpoint, with promise-returning unary calls that
 * always carry a deadline and the Connect event stream.
 */
import { type ClientReadableStream, Metadata, credentials } from '@grpc/grpc-js';

import {
  type ConnectResponse,
  type HeartbeatRequest,
  type HeartbeatResponse,
  type RenewCertificateRequest,
  type RenewCertificateResponse,
  type ReportResultRequest,
  type StartExecutionRequest,
  WorkerServiceClient,
} from '../gen/citadel/v1/worker_service.js';
import { type ServerAddress, formatServerAddress, tlsChannelOptions } from './server-address.js';

/** The PEM material of a worker's mutual-TLS identity. */
export interface MutualTlsMaterial {
  readonly caPem: string;
  readonly keyPem: string;
  readonly certPem: string;
}

/**
 * A WorkerService client bound to one server and one certificate. A renewed certificate needs
 * a new connection: credentials are fixed when the channel is made. Nothing is dialled until
 * the first call.
 */
export class WorkerConnection {
  /** `HOST:PORT` of the server, for logs and status. */
  readonly server: string;
  readonly #client: WorkerServiceClient;
  #closed = false;

  constructor(address: ServerAddress, tlsMaterial: MutualTlsMaterial) {
    this.server = formatServerAddress(address);
    this.#client = new WorkerServiceClient(
      this.server,
      credentials.createSsl(
        Buffer.from(tlsMaterial.caPem),
        Buffer.from(tlsMaterial.keyPem),
        Buffer.from(tlsMaterial.certPem),
      ),
      tlsChannelOptions(address),
    );
  }

  /** Sends one heartbeat. Rejects with the grpc-js ServiceError. */
  heartbeat(request: HeartbeatRequest, deadlineMs: number): Promise<HeartbeatResponse> {
    return new Promise((resolve, reject) => {
      this.#client.heartbeat(
        request,
        new Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err, res) => (err ? reject(err) : resolve(res)),
      );
    });
  }

  /** Asks for a certificate for a new key. Rejects with the grpc-js ServiceError. */
  renewCertificate(
    request: RenewCertificateRequest,
    deadlineMs: number,
  ): Promise<RenewCertificateResponse> {
    return new Promise((resolve, reject) => {
      this.#client.renewCertificate(
        request,
        new Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err, res) => (err ? reject(err) : resolve(res)),
      );
    });
  }

  /** Acknowledges an assignment. Rejects with the grpc-js ServiceError. */
  startExecution(request: StartExecutionRequest, deadlineMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#client.startExecution(
        request,
        new Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /** Reports how an execution ended. Rejects with the grpc-js ServiceError. */
  reportResult(request: ReportResultRequest, deadlineMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#client.reportResult(
        request,
        new Metadata(),
        { deadline: Date.now() + deadlineMs },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /** Opens the worker's event stream. It has no deadline; cancel it or close the connection. */
  connect(): ClientReadableStream<ConnectResponse> {
    return this.#client.connect({});
  }

  /** Closes the channel; calls still pending fail with CANCELLED. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }
}
