/**
 * Authentication: turns a service's client certificate or `authorization: Bearer ...` into a
 * principal, or refuses. A certificate with SAN `citadel://service/<user>` authenticates as that
 * user while its serial stays registered and unrevoked; worker certificates are never users. A
 * bearer that starts with `sk_live_` is an API key (looked up by hash); any other is an OAuth
 * 2.0 JWT when a JWKS is configured. `sub` names the user; the token's role claim, when
 * present, can narrow the role for the call. Every refusal is recorded by the AuthFailureGuard
 * (audited, throttled).
 */
import type { Metadata } from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { UnauthenticatedError } from '../../common/errors.js';
import { API_KEY_PREFIX, hashApiKey, type ApiKeyTable, type KeyUsage } from './api-keys.js';
import type { AuthFailureGuard } from './auth-failures.js';
import type { CertRegistry } from './cert-registry.js';
import { peerAddress, type PeerIdentity } from '../tls/peer-certificate.js';
import type { JwtVerifier } from './jwt-verifier.js';
import { keys } from '../store/keys.js';
import { Tx, type Actor, type Store } from '../store/store.js';
import { ROLE_PERMISSIONS } from './authorization.js';
import {
  BOOTSTRAP_ADMIN,
  USER_ID_PATTERN,
  type RoleName,
  type UserRecord,
  type UserTable,
} from './users.js';

/** The authenticated caller of an RPC. */
export interface Principal extends Actor {
  /** The caller's user record, as of this call (with the token's role, for a JWT). */
  user: UserRecord;
  role: RoleName;
  /** How the caller proved who they are. */
  method: 'api_key' | 'jwt' | 'mtls';
  /** API key id, the token's `jti` (or "-"), or the certificate's serial. */
  credentialId: string;
  /** Serial of the service certificate, to re-check it while a stream stays open. */
  certSerial?: string;
  /** SHA-256 of the presented API key, to re-check it while a stream stays open. */
  credentialHash?: string;
  /** The stored user record as authenticated; a stream ends if it changes role or scope. */
  stored: UserRecord;
  /** When the credential stops being valid (ms), if it expires. */
  expiresAt?: number;
}

const ROLES: readonly RoleName[] = ['admin', 'scheduler', 'executor', 'viewer'];

export interface AuthenticatorDeps {
  apiKeys: ApiKeyTable;
  users: UserTable;
  certs: CertRegistry;
  keyUsage: KeyUsage;
  failures: AuthFailureGuard;
  store: Store;
  logger: Logger;
  /** Set when OAuth 2.0 JWTs are accepted. */
  jwt?: JwtVerifier;
  /** Create unknown JWT subjects as viewers instead of refusing them. */
  autoProvision: boolean;
}

export class Authenticator {
  constructor(private readonly deps: AuthenticatorDeps) {}

  /**
   * @throws UnauthenticatedError, or AuthThrottledError once the peer or credential is throttled.
   */
  async authenticate(
    metadata: Metadata,
    peer: string,
    identity: PeerIdentity = { kind: 'none' },
  ): Promise<Principal> {
    const ipAddress = peerAddress(peer);
    const values = metadata.get('authorization');
    if (identity.kind === 'worker') {
      this.refuse(
        ipAddress,
        'mtls',
        'worker_certificate',
        'a worker certificate is not a user: workers call the worker endpoint only',
        identity.serial,
      );
    }
    if (identity.kind === 'service') {
      if (values.length > 0) {
        this.refuse(
          ipAddress,
          'mtls',
          'ambiguous_credentials',
          'present a service certificate or an authorization header, not both',
          identity.serial,
        );
      }
      return this.service(identity.subject, identity.serial, ipAddress);
    }
    if (values.length > 1) {
      this.refuse(
        ipAddress,
        'none',
        'ambiguous_credentials',
        `${values.length} authorization metadata entries: send exactly one`,
      );
    }
    if (values.length !== 1 || typeof values[0] !== 'string') {
      this.refuse(
        ipAddress,
        'none',
        'missing_credentials',
        'missing credentials: send "authorization: Bearer <API key or token>" metadata',
      );
    }
    const match = /^Bearer\s+(\S+)$/i.exec(values[0]);
    if (!match) {
      this.refuse(
        ipAddress,
        'none',
        'malformed_credentials',
        'authorization metadata must be "Bearer <API key or token>"',
      );
    }
    const bearer = match[1]!;
    if (bearer.startsWith(API_KEY_PREFIX) || !this.deps.jwt) return this.apiKey(bearer, ipAddress);
    return this.token(bearer, ipAddress);
  }

  /**
   * Whether a principal still holds as authenticated: the credential exists and has not
   * expired, and the user is enabled with the same role and scope (open streams end otherwise).
   */
  stillAuthenticated(principal: Principal, now = Date.now()): boolean {
    if (
      principal.credentialHash !== undefined &&
      !this.deps.apiKeys.get(principal.credentialHash)
    ) {
      return false;
    }
    if (
      principal.certSerial !== undefined &&
      !this.deps.certs.accepts(principal.certSerial, 'service', principal.userId, now)
    ) {
      return false;
    }
    if (principal.expiresAt !== undefined && now >= principal.expiresAt) return false;
    const user = this.deps.users.get(principal.userId);
    return (
      user?.enabled === true &&
      user.role === principal.stored.role &&
      user.taskScope === principal.stored.taskScope
    );
  }

  private service(userId: string, serial: string, ipAddress: string): Principal {
    const cert = this.deps.certs.get(serial);
    if (!cert || !this.deps.certs.accepts(serial, 'service', userId)) {
      this.refuse(
        ipAddress,
        'mtls',
        'certificate_revoked',
        'this service certificate is revoked, expired or unknown',
        serial,
      );
    }
    const user = this.deps.users.get(userId);
    if (!user?.enabled) {
      this.refuse(
        ipAddress,
        'mtls',
        'user_disabled',
        'the user of this service certificate is disabled or gone',
        serial,
      );
    }
    return {
      userId: user.id,
      user,
      stored: user,
      role: user.role,
      method: 'mtls',
      credentialId: serial,
      certSerial: serial,
      expiresAt: cert.notAfter,
      ipAddress,
    };
  }

  private apiKey(key: string, ipAddress: string): Principal {
    const record = this.deps.apiKeys.lookup(key);
    if (!record)
      this.refuse(
        ipAddress,
        'api_key',
        'unknown_credential',
        'invalid, revoked or expired API key',
        key,
      );
    const user = this.deps.users.get(record.userId);
    if (!user?.enabled)
      this.refuse(
        ipAddress,
        'api_key',
        'user_disabled',
        'the user of this API key is disabled',
        key,
      );
    this.deps.keyUsage.touch(record.id);
    return {
      userId: user.id,
      user,
      stored: user,
      role: user.role,
      method: 'api_key',
      credentialId: record.id,
      credentialHash: hashApiKey(key),
      expiresAt: record.expiresAt ?? undefined,
      ipAddress,
    };
  }

  private async token(token: string, ipAddress: string): Promise<Principal> {
    let verified;
    try {
      verified = await this.deps.jwt!.verify(token);
    } catch (err) {
      this.refuse(ipAddress, 'jwt', 'invalid_token', (err as Error).message, token);
    }
    const subject = verified.subject;
    // A token may name only an ordinary user id, and never the bootstrap admin: an identity
    // provider's subject must not become a local super-user by coincidence of names.
    if (
      typeof subject !== 'string' ||
      !USER_ID_PATTERN.test(subject) ||
      subject === BOOTSTRAP_ADMIN
    ) {
      this.refuse(
        ipAddress,
        'jwt',
        'bad_subject',
        'invalid token: its subject cannot be a Citadel user',
        token,
      );
    }
    let user = this.deps.users.get(subject);
    if (!user && this.deps.autoProvision) user = await this.provision(subject);
    if (user?.id !== subject) {
      this.refuse(
        ipAddress,
        'jwt',
        'unknown_user',
        `no user ${JSON.stringify(subject)}: ask an admin to create it`,
        token,
      );
    }
    if (!user.enabled)
      this.refuse(ipAddress, 'jwt', 'user_disabled', 'the user of this token is disabled', token);
    // The role claim can only narrow what the user's own role allows, never widen it.
    let effective: RoleName = user.role;
    if (verified.role !== undefined) {
      const claimed = verified.role as RoleName;
      const allowed = ROLE_PERMISSIONS[user.role];
      if (
        !ROLES.includes(claimed) ||
        ![...ROLE_PERMISSIONS[claimed]].every((p) => allowed.has(p))
      ) {
        this.refuse(
          ipAddress,
          'jwt',
          'role_claim_exceeds_user',
          `invalid token: role claim ${JSON.stringify(verified.role)} exceeds the user's role ${user.role}`,
          token,
        );
      }
      effective = claimed;
    }
    const exp = verified.claims.exp;
    return {
      userId: user.id,
      user: { ...user, role: effective },
      stored: user,
      role: effective,
      method: 'jwt',
      credentialId: typeof verified.claims.jti === 'string' ? verified.claims.jti : '-',
      expiresAt: typeof exp === 'number' ? exp * 1000 : undefined,
      ipAddress,
    };
  }

  /** Creates a viewer for an unknown, verified subject (auto-provisioning), audited. */
  private async provision(subject: string): Promise<UserRecord | undefined> {
    const now = Date.now();
    const user: UserRecord = {
      id: subject,
      role: 'viewer',
      allowedTaskTypes: [],
      allowedPriorities: [],
      maxTasks: 0,
      maxConcurrentExecutions: 0,
      taskScope: 'own',
      enabled: true,
      createdAt: now,
      updatedAt: now,
    };
    const tx = new Tx()
      .expect(keys.user(subject), 0)
      .putJson(keys.user(subject), user)
      .record({
        eventType: 'configuration_change',
        action: 'provision_user',
        result: 'success',
        userId: 'system:jwt',
        details: { user: subject, role: 'viewer' },
      });
    try {
      await this.deps.store.commit(tx);
      return user;
    } catch {
      // Provisioned concurrently (or the store failed): use what is there, if it is this user.
      const found = (await this.deps.store.getJson<UserRecord>(keys.user(subject)))?.value;
      return found?.id === subject ? found : undefined;
    }
  }

  private refuse(
    ipAddress: string,
    method: string,
    reason: string,
    message: string,
    credential?: string,
  ): never {
    this.deps.failures.fail({ peer: ipAddress, method, reason, credential });
    throw new UnauthenticatedError(message);
  }
}
