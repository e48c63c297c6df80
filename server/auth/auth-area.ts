/**
 * The auth area's registration: the watched tables of API keys, users and client certificates
 * (every replica holds them in memory), the failure guard, and the authenticator every public
 * call is admitted with (API keys, OAuth 2.0 JWTs, service certificates).
 */
import type { Logger } from 'pino';
import type { Store } from '../store/store.js';
import { ApiKeyTable, KeyUsage } from './api-keys.js';
import { AuthFailureGuard } from './auth-failures.js';
import { Authenticator } from './authentication.js';
import { CertRegistry } from './cert-registry.js';
import { JwtVerifier } from './jwt-verifier.js';
import { UserTable } from './users.js';

/** The server options this area reads (rows of server-options.ts). */
export interface AuthOptions {
  authFailureLimit: number;
  authFailureWindowMs: number;
  jwtJwksFile?: string;
  jwtJwksUrl?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  jwtRoleClaim: string;
  jwtLeewaySeconds: number;
  jwtJwksCooldownMs: number;
  jwtAutoProvision: boolean;
}

export interface AuthArea {
  apiKeys: ApiKeyTable;
  users: UserTable;
  certs: CertRegistry;
  failures: AuthFailureGuard;
  authenticator: Authenticator;
  /** Stops the watched tables. */
  stop(): Promise<void>;
}

/**
 * Loads the tables (a range read and a watch each) and builds the authenticator.
 * @throws ConfigError for a JWKS that cannot be loaded; the tables are stopped again.
 */
export async function createAuth(
  deps: { store: Store; logger: Logger },
  options: Readonly<AuthOptions>,
): Promise<AuthArea> {
  const { store, logger } = deps;
  const apiKeys = new ApiKeyTable(store, logger);
  const users = new UserTable(store, logger);
  const certs = new CertRegistry(store, logger);
  const tables = [apiKeys, users, certs];
  const stop = async () => void (await Promise.all(tables.map((t) => t.stop())));
  await Promise.all(tables.map((t) => t.start()));
  try {
    const jwt =
      options.jwtJwksFile !== undefined || options.jwtJwksUrl !== undefined
        ? await JwtVerifier.create({
            jwksFile: options.jwtJwksFile,
            jwksUrl: options.jwtJwksUrl,
            issuer: options.jwtIssuer!,
            audience: options.jwtAudience!,
            roleClaim: options.jwtRoleClaim,
            leewaySeconds: options.jwtLeewaySeconds,
            jwksCooldownMs: options.jwtJwksCooldownMs,
          })
        : undefined;
    const failures = new AuthFailureGuard(store, logger, {
      maxFailures: options.authFailureLimit,
      windowMs: options.authFailureWindowMs,
    });
    const authenticator = new Authenticator({
      apiKeys,
      users,
      certs,
      keyUsage: new KeyUsage(store, logger),
      failures,
      store,
      logger,
      jwt,
      autoProvision: options.jwtAutoProvision,
    });
    return { apiKeys, users, certs, failures, authenticator, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
