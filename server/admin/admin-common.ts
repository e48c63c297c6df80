/** Helpers shared by the AdminService handlers: the audit record of a change, free text. */
import { InvalidArgumentError } from '../../common/errors.js';
import type { Principal } from '../auth/authentication.js';
import type { AuditEvent } from '../store/store.js';

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
