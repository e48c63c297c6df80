/**
 * OAuth 2.0 bearer JWTs, verified with `jose` against a JWKS from a file or an HTTPS URL
 * (cached; refetched on an unknown key id, at most once per cooldown). Issuer, audience,
 * expiry and not-before are checked with a small leeway; only asymmetric algorithms are
 * accepted, so `none` and HS* (including HS256 "signed" with a public key) are refused.
 */
import { readFile } from 'node:fs/promises';
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
} from 'jose';
import { ConfigError, UnauthenticatedError } from '../../common/errors.js';

/** Signature algorithms a token may use. */
export const JWT_ALGORITHMS = ['RS256', 'ES256', 'EdDSA'];

export interface JwtOptions {
  /** JWKS file (a JSON Web Key Set). Exactly one of file and URL. */
  jwksFile?: string;
  /** JWKS URL, https only. */
  jwksUrl?: string;
  /** Required `iss`. */
  issuer: string;
  /** Required `aud` (one of). */
  audience: string;
  /** Claim holding the caller's role (admin, scheduler, executor, viewer). @default "citadel_role" */
  roleClaim: string;
  /** Clock skew tolerated on exp / nbf, in seconds. @default 30 */
  leewaySeconds: number;
  /** Least time between two fetches of the JWKS URL. @default 30000 */
  jwksCooldownMs?: number;
}

export interface VerifiedToken {
  subject: string;
  /** The role claim, if the token has one. */
  role: string | undefined;
  /** `jti` or a hash of the token, for audit correlation. */
  claims: JWTPayload;
}

type KeySet = Parameters<typeof jwtVerify>[1];

export class JwtVerifier {
  private constructor(
    private readonly keys: KeySet,
    private readonly options: JwtOptions,
  ) {}

  /** Loads the key set. @throws ConfigError for a missing or invalid JWKS source. */
  static async create(options: JwtOptions): Promise<JwtVerifier> {
    if (Boolean(options.jwksFile) === Boolean(options.jwksUrl)) {
      throw new ConfigError(
        '--jwt-jwks-file',
        'give exactly one of --jwt-jwks-file and --jwt-jwks-url',
      );
    }
    if (options.jwksUrl) {
      const url = new URL(options.jwksUrl);
      if (url.protocol !== 'https:')
        throw new ConfigError('--jwt-jwks-url', 'must be an https:// URL');
      return new JwtVerifier(
        createRemoteJWKSet(url, {
          cacheMaxAge: 10 * 60_000,
          cooldownDuration: options.jwksCooldownMs ?? 30_000,
        }),
        options,
      );
    }
    let jwks: JSONWebKeySet;
    try {
      jwks = JSON.parse(await readFile(options.jwksFile!, 'utf8')) as JSONWebKeySet;
    } catch (err) {
      throw new ConfigError(
        '--jwt-jwks-file',
        `cannot read a JSON Web Key Set: ${(err as Error).message}`,
      );
    }
    if (!Array.isArray(jwks.keys)) throw new ConfigError('--jwt-jwks-file', 'has no "keys" array');
    return new JwtVerifier(createLocalJWKSet(jwks), options);
  }

  /**
   * Verifies `token`.
   * @throws UnauthenticatedError with a short reason (never the token).
   */
  async verify(token: string): Promise<VerifiedToken> {
    try {
      const { payload } = await jwtVerify(token, this.keys, {
        issuer: this.options.issuer,
        audience: this.options.audience,
        algorithms: JWT_ALGORITHMS,
        clockTolerance: this.options.leewaySeconds,
        requiredClaims: ['sub', 'exp'],
      });
      const role = payload[this.options.roleClaim];
      return {
        // Not narrowed here: the authenticator refuses anything but a plain user id.
        subject: payload.sub as unknown as string,
        role: typeof role === 'string' ? role : undefined,
        claims: payload,
      };
    } catch (err) {
      throw new UnauthenticatedError(`invalid token: ${reasonOf(err)}`);
    }
  }
}

/** A short, fixed reason for a refused token, by jose's error code. */
function reasonOf(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed)
    return `claim ${err.claim} failed (${err.reason})`;
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'algorithm not allowed';
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'unknown signing key';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'bad signature';
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid)
    return 'malformed';
  if (err instanceof joseErrors.JWKSTimeout) return 'key set unavailable';
  return 'not verifiable';
}
