/**
 * Bootstrap tokens: `cbt_` + 43 base62 characters (256 bits), shown once and stored only as
 * their SHA-256 under `bootstrap-tokens/`. A token lets a worker join a set number of times
 * before it expires; Join consumes one use with a compare on the record's revision.
 */
import { createHash } from 'node:crypto';
import { InvalidArgumentError } from '../../common/errors.js';
import { randomBase32, randomBase62 } from '../../common/ids.js';
import type { BootstrapToken } from '../../gen/citadel/v1/worker.js';
import { validateLabels } from '../../common/labels.js';

export const BOOTSTRAP_TOKEN_PREFIX = 'cbt_';
/** Longest a token may live. */
export const MAX_TOKEN_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000;
const MAX_USES = 1000;

export interface BootstrapTokenRecord {
  /** Public id, `bt_...`. */
  id: string;
  description: string;
  labels: Record<string, string>;
  maxUses: number;
  uses: number;
  expiresAt: number;
  revokedAt?: number;
  createdAt: number;
  createdBy: string;
}

/** Why a token cannot be used now, or undefined if it can. */
export type TokenProblem = 'token_revoked' | 'token_expired' | 'token_used_up';

export function generateBootstrapToken(): { token: string; hashHex: string } {
  const token = BOOTSTRAP_TOKEN_PREFIX + randomBase62(43);
  return { token, hashHex: hashBootstrapToken(token) };
}

export function hashBootstrapToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export function tokenProblem(t: BootstrapTokenRecord, now: number): TokenProblem | undefined {
  if (t.revokedAt !== undefined) return 'token_revoked';
  if (t.expiresAt <= now) return 'token_expired';
  if (t.uses >= t.maxUses) return 'token_used_up';
  return undefined;
}

/**
 * A new token's record from a create request.
 * @throws InvalidArgumentError naming the field.
 */
export function newTokenRecord(
  spec: BootstrapToken | undefined,
  createdBy: string,
  now: number,
): BootstrapTokenRecord {
  if (!spec) throw new InvalidArgumentError('bootstrap_token', 'is required');
  const expiresAt = spec.expireTime?.getTime();
  if (expiresAt === undefined) {
    throw new InvalidArgumentError('bootstrap_token.expire_time', 'is required');
  }
  if (!(expiresAt > now)) {
    throw new InvalidArgumentError('bootstrap_token.expire_time', 'must be in the future');
  }
  if (expiresAt - now > MAX_TOKEN_LIFETIME_MS) {
    throw new InvalidArgumentError('bootstrap_token.expire_time', 'must be at most 7 days ahead');
  }
  if (spec.maxUses > MAX_USES) {
    throw new InvalidArgumentError('bootstrap_token.max_uses', `must be at most ${MAX_USES}`);
  }
  if (spec.description.length > 200) {
    throw new InvalidArgumentError('bootstrap_token.description', 'is over 200 characters');
  }
  const labels = validateLabels(spec.labels, 'bootstrap_token.labels');
  for (const [k, v] of Object.entries(labels)) {
    if (!/^[A-Za-z0-9._/-]{0,63}$/.test(v)) {
      throw new InvalidArgumentError(
        `bootstrap_token.labels[${JSON.stringify(k)}]`,
        'value must be at most 63 letters, digits, ".", "_", "/" or "-"',
      );
    }
  }
  return {
    id: `bt_${randomBase32(12)}`,
    description: spec.description,
    labels,
    maxUses: spec.maxUses === 0 ? 1 : spec.maxUses,
    uses: 0,
    expiresAt,
    createdAt: now,
    createdBy,
  };
}

export function tokenToProto(t: BootstrapTokenRecord): BootstrapToken {
  return {
    id: t.id,
    description: t.description,
    labels: t.labels,
    maxUses: t.maxUses,
    uses: t.uses,
    expireTime: new Date(t.expiresAt),
    revokeTime: t.revokedAt === undefined ? undefined : new Date(t.revokedAt),
    createTime: new Date(t.createdAt),
    createdBy: t.createdBy,
  };
}
