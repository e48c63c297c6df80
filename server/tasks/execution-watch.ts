/**
 * The WatchExecutions stream of TaskService: the execution changes the caller may see, from a
 * revision or from now, until the client goes away or the replica shuts down. It ends early when
 * the client reads too slowly or its credential stops being valid: re-checked whenever users, API
 * keys or certificates change, when the credential expires, and before each change is sent.
 */
import type { ServerWritableStream } from '@grpc/grpc-js';
import { GRPCOutOfRangeError, type IWatchResponse } from 'etcd3';
import {
  InvalidArgumentError,
  OutOfRangeError,
  QuotaExceededError,
  UnauthenticatedError,
} from '../../common/errors.js';
import type {
  WatchExecutionsRequest,
  WatchExecutionsResponse,
} from '../../gen/citadel/v1/task_service.js';
import type { Principal, RpcDeps } from '../auth/admission.js';
import { canSeeTask } from '../auth/authorization.js';
import type { CertRegistry } from '../auth/cert-registry.js';
import { whenExpired } from '../auth/credential-expiry.js';
import type { Keyring } from '../crypto/sealer.js';
import { keys } from '../store/keys.js';
import { executionToProto, type ExecutionRecord } from './records.js';
import { validateTaskId } from './task-validation.js';

/** Changes a watch stream may buffer for a slow client before it is ended. */
const MAX_BUFFERED_EVENTS = 10_000;

/**
 * What a watch stream uses: admission's tables and the certificate registry (re-checked), the
 * keyring, the shutdown signal.
 */
export interface ExecutionWatchDeps extends RpcDeps {
  certs: CertRegistry;
  keyring: Keyring;
  /** Aborted when the replica shuts down: open watch streams then end cleanly. */
  shutdown: AbortSignal;
}

/**
 * Streams execution changes until the client goes away or the watch fails.
 * @throws InvalidArgumentError for a bad task id or a negative `after_revision`.
 * @throws OutOfRangeError if `after_revision` is compacted or in the future.
 */
export async function watchExecutions(
  deps: ExecutionWatchDeps,
  req: WatchExecutionsRequest,
  call: ServerWritableStream<WatchExecutionsRequest, WatchExecutionsResponse>,
  principal: Principal,
): Promise<void> {
  const prefix =
    req.taskId === ''
      ? keys.executionPrefix
      : keys.taskExecutionPrefix(validateTaskId(req.taskId, 'task_id'));
  if (req.afterRevision < 0)
    throw new InvalidArgumentError('after_revision', 'must not be negative');
  if (req.afterRevision > 0) {
    // Fail early, by etcd's error code, when the revision is compacted or in the future.
    try {
      await deps.store.client.kv.range({
        key: deps.store.full(prefix),
        revision: req.afterRevision,
        count_only: true,
      });
    } catch (err) {
      if (err instanceof GRPCOutOfRangeError) {
        throw new OutOfRangeError(
          'after_revision is compacted or in the future; list executions, then watch from now',
        );
      }
      throw err;
    }
  }
  const watcher = await deps.store.watch(
    prefix,
    req.afterRevision > 0 ? req.afterRevision + 1 : undefined,
  );
  await new Promise<void>((resolve, reject) => {
    const finish = (err?: Error) => {
      deps.shutdown.removeEventListener('abort', close);
      deps.users.off('change', recheck);
      deps.apiKeys.off('change', recheck);
      deps.certs.off('change', onCert);
      disarmExpiry();
      watcher.removeAllListeners();
      void watcher.cancel().catch(() => undefined);
      if (err) reject(err);
      else resolve();
    };
    const close = () => finish();
    // A revoked key or certificate, or a disabled user, ends the stream at once, not at its
    // next call. Returns whether the stream goes on.
    const recheck = (): boolean => {
      if (deps.authenticator.stillAuthenticated(principal)) return true;
      finish(
        new UnauthenticatedError(
          'the credential expired or was revoked, or the user was disabled or changed; reconnect',
        ),
      );
      return false;
    };
    // Only this stream's service certificate matters (undefined: the registry was reloaded).
    const onCert = (serial: string | undefined) => {
      if (
        principal.certSerial !== undefined &&
        (serial === undefined || serial === principal.certSerial)
      ) {
        recheck();
      }
    };
    deps.users.on('change', recheck);
    deps.apiKeys.on('change', recheck);
    deps.certs.on('change', onCert);
    // An expiring key, token or certificate ends the stream when it expires.
    const disarmExpiry = whenExpired(principal.expiresAt, recheck);
    // A change between authentication and here is not missed.
    if (!recheck()) return;
    call.on('cancelled', close);
    call.on('close', close);
    if (deps.shutdown.aborted) close();
    deps.shutdown.addEventListener('abort', close, { once: true });
    // A watch response holds every change of the revisions it covers (etcd never splits a
    // revision across responses), so the last change of each revision can be marked.
    watcher.on('data', (res: IWatchResponse) => {
      // Checked again before sending: a change may be handled before the expiry timer due in
      // the same turn of the event loop, or before the table change that revoked the credential.
      if (!recheck()) return;
      // etcd3 rethrows a handler's exception outside any promise, which would end the process:
      // a record that cannot be read ends this stream instead.
      try {
        send(res);
      } catch (err) {
        finish(err instanceof Error ? err : new Error(String(err)));
      }
    });
    const send = (res: IWatchResponse) => {
      // Only changes inside the caller's task scope are sent; the last one sent of each
      // revision carries revision_complete.
      const puts = res.events
        .filter((e) => e.type === 'Put' && e.kv)
        .map((e) => ({
          record: JSON.parse(e.kv.value.toString()) as ExecutionRecord,
          revision: Number(e.kv.mod_revision),
        }))
        .filter(({ record }) => canSeeTask(principal.user, record.owner));
      puts.forEach(({ record, revision }, i) => {
        const next = puts[i + 1];
        const flushed = call.write({
          execution: executionToProto(deps.keyring, record),
          revision,
          revisionComplete: next === undefined || next.revision !== revision,
        });
        if (!flushed && call.writableLength > MAX_BUFFERED_EVENTS) {
          finish(
            new QuotaExceededError(
              'the client reads too slowly; watch again with after_revision to resume',
            ),
          );
        }
      });
    };
    watcher.on('error', (err: Error) => finish(err));
  });
}
