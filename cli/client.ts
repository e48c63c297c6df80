/**
 * The gRPC TaskService and AdminService clients citadelctl talks through: TLS against the
 * cluster CA (presenting a client certificate when one is configured), the bearer token attached
 * to every call, a deadline on every unary call, and promise-returning methods.
 */

import {
  type CallOptions,
  type ChannelOptions,
  type ClientReadableStream,
  type ServiceError,
  credentials,
  Metadata,
} from '@grpc/grpc-js';

import {
  AdminServiceClient,
  type BlockWorkerRequest,
  type BlockWorkerResponse,
  type CreateApiKeyRequest,
  type CreateApiKeyResponse,
  type CreateBootstrapTokenRequest,
  type CreateBootstrapTokenResponse,
  type CreateUserRequest,
  type CreateUserResponse,
  type DeregisterWorkerRequest,
  type DeregisterWorkerResponse,
  type DisableUserRequest,
  type DisableUserResponse,
  type EnableUserRequest,
  type EnableUserResponse,
  type GetUserRequest,
  type GetUserResponse,
  type GetWorkerRequest,
  type GetWorkerResponse,
  type IssueServiceCertificateRequest,
  type IssueServiceCertificateResponse,
  type ListApiKeysRequest,
  type ListApiKeysResponse,
  type ListBootstrapTokensRequest,
  type ListBootstrapTokensResponse,
  type ListUsersRequest,
  type ListUsersResponse,
  type ListWorkersRequest,
  type ListWorkersResponse,
  type RevokeApiKeyRequest,
  type RevokeApiKeyResponse,
  type RevokeBootstrapTokenRequest,
  type RevokeBootstrapTokenResponse,
  type RevokeServiceCertificateRequest,
  type RevokeServiceCertificateResponse,
  type UpdateUserRequest,
  type UpdateUserResponse,
} from '../gen/citadel/v1/admin_service.js';
import {
  type CancelExecutionRequest,
  type CancelExecutionResponse,
  type CreateTaskRequest,
  type CreateTaskResponse,
  type DeleteTaskRequest,
  type DeleteTaskResponse,
  type GetExecutionRequest,
  type GetExecutionResponse,
  type GetTaskRequest,
  type GetTaskResponse,
  type ListExecutionsRequest,
  type ListExecutionsResponse,
  type ListTasksRequest,
  type ListTasksResponse,
  type PauseTaskRequest,
  type PauseTaskResponse,
  type ResumeTaskRequest,
  type ResumeTaskResponse,
  type RunTaskRequest,
  type RunTaskResponse,
  TaskServiceClient,
  type UpdateTaskRequest,
  type UpdateTaskResponse,
  type WatchExecutionsRequest,
  type WatchExecutionsResponse,
} from '../gen/citadel/v1/task_service.js';
import type { ConnectionSettings } from './config.js';

/** Promise-based TaskService. Unary calls reject with the grpc-js ServiceError. */
export interface CitadelClient {
  createTask(request: CreateTaskRequest): Promise<CreateTaskResponse>;
  getTask(request: GetTaskRequest): Promise<GetTaskResponse>;
  listTasks(request: ListTasksRequest): Promise<ListTasksResponse>;
  updateTask(request: UpdateTaskRequest): Promise<UpdateTaskResponse>;
  deleteTask(request: DeleteTaskRequest): Promise<DeleteTaskResponse>;
  pauseTask(request: PauseTaskRequest): Promise<PauseTaskResponse>;
  resumeTask(request: ResumeTaskRequest): Promise<ResumeTaskResponse>;
  runTask(request: RunTaskRequest): Promise<RunTaskResponse>;
  listExecutions(request: ListExecutionsRequest): Promise<ListExecutionsResponse>;
  getExecution(request: GetExecutionRequest): Promise<GetExecutionResponse>;
  cancelExecution(request: CancelExecutionRequest): Promise<CancelExecutionResponse>;
  /** Opens the change stream. It has no deadline: it runs until cancelled. */
  watchExecutions(request: WatchExecutionsRequest): ClientReadableStream<WatchExecutionsResponse>;
  /** AdminService, on the same server, credentials and channel options. */
  readonly admin: AdminClient;
  /** Closes the channels; pending calls fail with CANCELLED. */
  close(): void;
}

/** Promise-based AdminService. Unary calls reject with the grpc-js ServiceError. */
export interface AdminClient {
  createUser(request: CreateUserRequest): Promise<CreateUserResponse>;
  getUser(request: GetUserRequest): Promise<GetUserResponse>;
  listUsers(request: ListUsersRequest): Promise<ListUsersResponse>;
  updateUser(request: UpdateUserRequest): Promise<UpdateUserResponse>;
  disableUser(request: DisableUserRequest): Promise<DisableUserResponse>;
  enableUser(request: EnableUserRequest): Promise<EnableUserResponse>;
  createApiKey(request: CreateApiKeyRequest): Promise<CreateApiKeyResponse>;
  listApiKeys(request: ListApiKeysRequest): Promise<ListApiKeysResponse>;
  revokeApiKey(request: RevokeApiKeyRequest): Promise<RevokeApiKeyResponse>;
  createBootstrapToken(request: CreateBootstrapTokenRequest): Promise<CreateBootstrapTokenResponse>;
  listBootstrapTokens(request: ListBootstrapTokensRequest): Promise<ListBootstrapTokensResponse>;
  revokeBootstrapToken(request: RevokeBootstrapTokenRequest): Promise<RevokeBootstrapTokenResponse>;
  listWorkers(request: ListWorkersRequest): Promise<ListWorkersResponse>;
  getWorker(request: GetWorkerRequest): Promise<GetWorkerResponse>;
  blockWorker(request: BlockWorkerRequest): Promise<BlockWorkerResponse>;
  deregisterWorker(request: DeregisterWorkerRequest): Promise<DeregisterWorkerResponse>;
  issueServiceCertificate(
    request: IssueServiceCertificateRequest,
  ): Promise<IssueServiceCertificateResponse>;
  revokeServiceCertificate(
    request: RevokeServiceCertificateRequest,
  ): Promise<RevokeServiceCertificateResponse>;
}

/** Per-process client options. */
export interface ClientOptions {
  /** Deadline of each unary call, in milliseconds. @default 30000 */
  deadlineMs?: number;
  /** Where warnings go. @default a line on standard error */
  warn?: (message: string) => void;
}

/** Default deadline of a unary call. */
export const DEFAULT_DEADLINE_MS = 30_000;

type Callback<Res> = (error: ServiceError | null, response: Res) => void;

/**
 * Creates a client for `settings.server`. Nothing is dialled until the first call.
 * With `settings.insecure` the channel is plaintext, and a warning says so. With a client
 * certificate the handshake presents it and it is the only credential: the server refuses a
 * call that carries both, so no API key is sent then.
 */
export function createCitadelClient(
  settings: ConnectionSettings,
  options: ClientOptions = {},
): CitadelClient {
  const deadlineMs = options.deadlineMs ?? DEFAULT_DEADLINE_MS;
  const warn = options.warn ?? ((m: string) => process.stderr.write(`citadelctl: warning: ${m}\n`));

  if (settings.insecure) {
    warn(`connecting to ${settings.server} without TLS; the API key travels in cleartext`);
  }
  const channelCredentials = settings.insecure
    ? credentials.createInsecure()
    : credentials.createSsl(
        settings.caPem ?? null,
        settings.keyPem ?? null,
        settings.certPem ?? null,
      );
  const channelOptions: ChannelOptions = {
    // A page of tasks carries their payloads (up to 1 MiB each); the 4 MiB default is too small.
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  };
  if (settings.tlsServerName !== undefined) {
    // Only when the certificate does not name the dialled host (e.g. dialling an IP address).
    channelOptions['grpc.ssl_target_name_override'] = settings.tlsServerName;
    channelOptions['grpc.default_authority'] = settings.tlsServerName;
  }
  const client = new TaskServiceClient(settings.server, channelCredentials, channelOptions);
  // Same target, credentials and options: grpc-js shares the connection between the two.
  const admin = new AdminServiceClient(settings.server, channelCredentials, channelOptions);

  const metadata = (): Metadata => {
    const md = new Metadata();
    if (settings.apiKey !== undefined && settings.certPem === undefined) {
      md.set('authorization', `Bearer ${settings.apiKey}`);
    }
    return md;
  };
  const unary = <Res>(
    invoke: (md: Metadata, opts: Partial<CallOptions>, callback: Callback<Res>) => unknown,
  ): Promise<Res> =>
    new Promise((resolve, reject) => {
      invoke(metadata(), { deadline: Date.now() + deadlineMs }, (error, response) => {
        if (error) reject(error);
        else resolve(response);
      });
    });

  return {
    createTask: (req) => unary((md, o, cb) => client.createTask(req, md, o, cb)),
    getTask: (req) => unary((md, o, cb) => client.getTask(req, md, o, cb)),
    listTasks: (req) => unary((md, o, cb) => client.listTasks(req, md, o, cb)),
    updateTask: (req) => unary((md, o, cb) => client.updateTask(req, md, o, cb)),
    deleteTask: (req) => unary((md, o, cb) => client.deleteTask(req, md, o, cb)),
    pauseTask: (req) => unary((md, o, cb) => client.pauseTask(req, md, o, cb)),
    resumeTask: (req) => unary((md, o, cb) => client.resumeTask(req, md, o, cb)),
    runTask: (req) => unary((md, o, cb) => client.runTask(req, md, o, cb)),
    listExecutions: (req) => unary((md, o, cb) => client.listExecutions(req, md, o, cb)),
    getExecution: (req) => unary((md, o, cb) => client.getExecution(req, md, o, cb)),
    cancelExecution: (req) => unary((md, o, cb) => client.cancelExecution(req, md, o, cb)),
    watchExecutions: (req) => client.watchExecutions(req, metadata()),
    admin: {
      createUser: (req) => unary((md, o, cb) => admin.createUser(req, md, o, cb)),
      getUser: (req) => unary((md, o, cb) => admin.getUser(req, md, o, cb)),
      listUsers: (req) => unary((md, o, cb) => admin.listUsers(req, md, o, cb)),
      updateUser: (req) => unary((md, o, cb) => admin.updateUser(req, md, o, cb)),
      disableUser: (req) => unary((md, o, cb) => admin.disableUser(req, md, o, cb)),
      enableUser: (req) => unary((md, o, cb) => admin.enableUser(req, md, o, cb)),
      createApiKey: (req) => unary((md, o, cb) => admin.createApiKey(req, md, o, cb)),
      listApiKeys: (req) => unary((md, o, cb) => admin.listApiKeys(req, md, o, cb)),
      revokeApiKey: (req) => unary((md, o, cb) => admin.revokeApiKey(req, md, o, cb)),
      createBootstrapToken: (req) =>
        unary((md, o, cb) => admin.createBootstrapToken(req, md, o, cb)),
      listBootstrapTokens: (req) => unary((md, o, cb) => admin.listBootstrapTokens(req, md, o, cb)),
      revokeBootstrapToken: (req) =>
        unary((md, o, cb) => admin.revokeBootstrapToken(req, md, o, cb)),
      listWorkers: (req) => unary((md, o, cb) => admin.listWorkers(req, md, o, cb)),
      getWorker: (req) => unary((md, o, cb) => admin.getWorker(req, md, o, cb)),
      blockWorker: (req) => unary((md, o, cb) => admin.blockWorker(req, md, o, cb)),
      deregisterWorker: (req) => unary((md, o, cb) => admin.deregisterWorker(req, md, o, cb)),
      issueServiceCertificate: (req) =>
        unary((md, o, cb) => admin.issueServiceCertificate(req, md, o, cb)),
      revokeServiceCertificate: (req) =>
        unary((md, o, cb) => admin.revokeServiceCertificate(req, md, o, cb)),
    },
    close: () => {
      client.close();
      admin.close();
    },
  };
}

export { isServiceError, statusName } from '../common/grpc-status.js';
