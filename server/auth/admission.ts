/**
 * Admission to the public API: authenticates the caller of a call (API key, JWT or service
 * certificate: authentication.ts) or fails UNAUTHENTICATED, then checks the role's permission
 * for the RPC (authorization.ts) or fails PERMISSION_DENIED, audited. `unary` and
 * `serverStream` are the wrappers every TaskService and AdminService handler is built with.
 */
import type {
  handleServerStreamingCall,
  handleUnaryCall,
  ServerUnaryCall,
  ServerWritableStream,
} from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { serverStreamWith, unaryWith, type AuthenticatedCall } from '../api/rpc.js';
import type { Metrics } from '../metrics.js';
import { Tx, type Store } from '../store/store.js';
import { peerIdentity } from '../tls/peer-certificate.js';
import type { ApiKeyTable } from './api-keys.js';
import type { Authenticator, Principal } from './authentication.js';
import { authorize, type RpcName } from './authorization.js';
import type { UserTable } from './users.js';

export type { Principal };

/** What a public-API handler learns of its call besides the request. */
export interface RpcContext {
  principal: Principal;
}

export interface RpcDeps {
  authenticator: Authenticator;
  apiKeys: ApiKeyTable;
  users: UserTable;
  store: Store;
  logger: Logger;
  metrics: Metrics;
}

/** Checks the role's permission for `rpc`; a refusal is audited before it is thrown. */
function authorizeCall(deps: RpcDeps, principal: Principal, rpc: RpcName): void {
  try {
    authorize(principal.user, rpc);
  } catch (err) {
    const tx = new Tx().record({
      eventType: 'authorization_failure',
      action: rpc,
      result: 'failure',
      userId: principal.userId,
      ipAddress: principal.ipAddress,
      details: { role: principal.role },
    });
    deps.store.commit(tx).catch((e: unknown) => {
      deps.logger.warn({ err: e }, 'could not audit an authorization failure');
    });
    throw err;
  }
}

/** Authenticates the caller of `call` and checks its permission for `method`. */
async function admit(deps: RpcDeps, call: AuthenticatedCall, method: RpcName): Promise<Principal> {
  const principal = await deps.authenticator.authenticate(
    call.metadata,
    call.getPeer(),
    peerIdentity(call),
  );
  authorizeCall(deps, principal, method);
  return principal;
}

/** A unary handler of the user-facing API: authenticated and authorized for `method`. */
export function unary<Req, Res>(
  deps: RpcDeps,
  method: RpcName,
  handler: (request: Req, ctx: RpcContext, call: ServerUnaryCall<Req, Res>) => Promise<Res>,
): handleUnaryCall<Req, Res> {
  return unaryWith(deps, method, (call) => admit(deps, call, method), handler);
}

/** A server-streaming handler of the user-facing API, admitted like `unary`. */
export function serverStream<Req, Res>(
  deps: RpcDeps,
  method: RpcName,
  handler: (request: Req, ctx: RpcContext, call: ServerWritableStream<Req, Res>) => Promise<void>,
): handleServerStreamingCall<Req, Res> {
  return serverStreamWith(deps, method, (call) => admit(deps, call, method), handler);
}
