/**
 * Pure builders that turn `citadelctl token ...` and `citadelctl worker ...` flags into
 * AdminService requests. All flag validation happens here, before any network call; each error
 * names the flag to fix.
 */

import { InvalidArgumentError } from '../../common/errors.js';
import {
  BlockWorkerRequest,
  CreateBootstrapTokenRequest,
  DeregisterWorkerRequest,
  ListBootstrapTokensRequest,
  ListWorkersRequest,
} from '../../gen/citadel/v1/admin_service.js';
import { parseExpiry, parseInteger, parseLabels, parseNonEmpty, parseText } from '../flags.js';

/** Longest a bootstrap token may live, as the contract says. */
export const MAX_TOKEN_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000;

/** Most joins one bootstrap token may allow. */
export const MAX_TOKEN_USES = 1000;

/** Most labels a bootstrap token may carry. */
const MAX_TOKEN_LABELS = 32;

/** A bootstrap token label value: at most 63 letters, digits, '.', '_', '/' or '-'. */
const TOKEN_LABEL_VALUE = /^[A-Za-z0-9._/-]{0,63}$/;

/** Flags of `token create`. */
export interface CreateTokenFlags {
  /** A duration from now (`24h`) or an ISO 8601 time with zone; at most 7 days ahead. */
  expires?: string;
  /** How many joins the token allows, 1-1000. @default "1" */
  uses?: string;
  /** Repeated `key=value`. */
  label?: string[];
  description?: string;
}

/** Flags of `token list`. */
export interface ListTokensFlags {
  /** Include revoked, used-up and expired tokens. */
  all?: boolean;
}

/** Flags of `worker list`. */
export interface ListWorkersFlags {
  pageSize?: string;
  pageToken?: string;
  /** Include blocked and retired workers. */
  includeInactive?: boolean;
}

/** Flags of `worker block` and `worker deregister`. */
export interface WorkerReasonFlags {
  reason?: string;
}

/**
 * Builds CreateBootstrapTokenRequest. An --expires past the 7-day limit only through the
 * rounding up to a whole second is brought back to the limit, so `--expires 7d` works.
 * @param now the instant a duration in --expires counts from.
 * @throws InvalidArgumentError naming the flag: a missing, malformed, past or too distant
 *   --expires, --uses outside 1-1000, a bad --label, or a --description over 200 characters.
 */
export function buildCreateBootstrapTokenRequest(
  flags: CreateTokenFlags,
  now: Date = new Date(),
): CreateBootstrapTokenRequest {
  if (flags.expires === undefined) {
    throw new InvalidArgumentError(
      '--expires',
      'required: a duration such as 24h, or an ISO 8601 time, at most 7 days ahead',
    );
  }
  return CreateBootstrapTokenRequest.fromPartial({
    bootstrapToken: {
      description: parseText(flags.description, '--description'),
      labels: parseTokenLabels(flags.label ?? []),
      maxUses: flags.uses === undefined ? 1 : parseInteger(flags.uses, '--uses', 1, MAX_TOKEN_USES),
      expireTime: parseTokenExpiry(flags.expires, now),
    },
  });
}

/** Builds ListBootstrapTokensRequest; `--all` includes inactive tokens. */
export function buildListBootstrapTokensRequest(
  flags: ListTokensFlags,
): ListBootstrapTokensRequest {
  return ListBootstrapTokensRequest.fromPartial({ includeInactive: flags.all === true });
}

/**
 * Builds ListWorkersRequest.
 * @throws InvalidArgumentError for a bad --page-size.
 */
export function buildListWorkersRequest(flags: ListWorkersFlags): ListWorkersRequest {
  return ListWorkersRequest.fromPartial({
    pageSize:
      flags.pageSize === undefined ? 0 : parseInteger(flags.pageSize, '--page-size', 1, 1000),
    pageToken: flags.pageToken ?? '',
    includeInactive: flags.includeInactive === true,
  });
}

/**
 * Builds BlockWorkerRequest. The reason is required: blocking is what an operator does to a
 * host they suspect, and the audit record should say why.
 * @throws InvalidArgumentError for an empty ID, or a --reason missing or over 200 characters.
 */
export function buildBlockWorkerRequest(id: string, flags: WorkerReasonFlags): BlockWorkerRequest {
  const reason = parseText(flags.reason, '--reason');
  if (reason === '') {
    throw new InvalidArgumentError(
      '--reason',
      'required: why the worker is blocked, for the audit',
    );
  }
  return BlockWorkerRequest.fromPartial({ id: parseNonEmpty(id, 'ID'), reason });
}

/**
 * Builds DeregisterWorkerRequest.
 * @throws InvalidArgumentError for an empty ID or a --reason over 200 characters.
 */
export function buildDeregisterWorkerRequest(
  id: string,
  flags: WorkerReasonFlags,
): DeregisterWorkerRequest {
  return DeregisterWorkerRequest.fromPartial({
    id: parseNonEmpty(id, 'ID'),
    reason: parseText(flags.reason, '--reason'),
  });
}

/** `--expires` of a token: in the future and at most 7 days ahead. */
function parseTokenExpiry(text: string, now: Date): Date {
  const expires = parseExpiry(text, '--expires', now);
  const limit = now.getTime() + MAX_TOKEN_LIFETIME_MS;
  if (expires.getTime() <= limit) return expires;
  // parseExpiry rounds a duration up to a whole second; `7d` must not fail for that alone.
  if (expires.getTime() - limit < 1000) return new Date(Math.floor(limit / 1000) * 1000);
  throw new InvalidArgumentError('--expires', 'must be at most 7 days ahead');
}

/** `--label k=v` of a token: keys as for tasks, values restricted too, at most 32. */
function parseTokenLabels(values: readonly string[]): Record<string, string> {
  const labels = parseLabels(values);
  const entries = Object.entries(labels);
  if (entries.length > MAX_TOKEN_LABELS) {
    throw new InvalidArgumentError('--label', `at most ${MAX_TOKEN_LABELS} labels`);
  }
  for (const [key, value] of entries) {
    if (!TOKEN_LABEL_VALUE.test(value)) {
      throw new InvalidArgumentError(
        '--label',
        `value of "${key}" must be at most 63 letters, digits, '.', '_', '/' or '-'`,
      );
    }
  }
  return labels;
}
