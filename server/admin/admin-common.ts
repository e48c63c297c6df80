/**
 * Helpers shared by the AdminService handlers: the audit record of a change, free text, reading
 * a user.
 */
import { InvalidArgumentError, NotFoundError } from '../../common/errors.js';
import type { Principal } from '../auth/authentication.js';
import { validateUserId, type UserRecord } from '../auth/users.js';
import { keys } from '../store/keys.js';
import type { AuditEvent, Store, Versioned } from '../store/store.js';

/** The audit record of an admin change: who, with which credential, and what. */
export function configChange(
  principal: Principal,
  action: string,
  details: AuditEvent['details'],
): AuditEvent {
  return {
    eventType: 'configuration_change',
    action,
    result: 'success',
    userId: principal.userId,
    ipAddress: principal.ipAddress,
    details: { ...details, auth_method: principal.method, credential_id: principal.credentialId },
  };
}

/** Validates free text kept for humans (descriptions, reasons): at most 200 characters. */
export function description(text: string, field = 'description'): string {
  if (text.length > 200) throw new InvalidArgumentError(field, 'is over 200 characters');
  return text;
}

/**
 * The user `id` as stored, with its revision for a compare.
 * @throws InvalidArgumentError naming `field` if `id` is not a user id.
 * @throws NotFoundError if there is no such user.
 */
export async function readUser(
  store: Store,
  id: string,
  field = 'id',
): Promise<Versioned<UserRecord>> {
  const user = await store.getJson<UserRecord>(keys.user(validateUserId(id, field)));
  if (!user) throw new NotFoundError('user', id);
  return user;
}
