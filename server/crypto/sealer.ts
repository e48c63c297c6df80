/**
 * Envelope encryption for data at rest: AES-256-GCM records sealed under versioned data keys,
 * and data keys wrapped under the master key; and keyed fingerprints (HMAC-SHA256 under a
 * subkey of a data key) for values that must be compared but not readable or guessable.
 *
 * Sealed record layout (all lengths in bytes):
 *
 *   version (1, = 1) | kid length (1) | kid (ascii) | nonce (12) | ciphertext | tag (16)
 *
 * The GCM additional authenticated data is the header (version, kid length, kid) followed by
 * the caller's AAD, so neither the record identity nor the key id can be swapped undetected.
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { DecryptError, InvalidArgumentError } from '../../common/errors.js';

const VERSION = 1;
const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const MAX_KID_BYTES = 255;
/** Printable ASCII without space: kids end up in headers, logs and etcd keys. */
const KID_PATTERN = /^[\x21-\x7e]+$/;

/** Returns 32 fresh random bytes, suitable as a data key or master key. */
export function generateKey(): Buffer {
  return randomBytes(KEY_BYTES);
}

/**
 * Data keys by key id, with one active key that new records are sealed under. Older keys stay
 * in the ring so records sealed before a rotation still open.
 */
export class Keyring {
  readonly #keys: Map<string, Buffer>;
  readonly #activeKid: string;
  /** Fingerprint subkeys derived so far, by kid and purpose. */
  readonly #fingerprintKeys = new Map<string, Buffer>();

  /**
   * @param keys data keys (32 bytes each) by key id (printable ASCII, at most 255 bytes).
   * @param activeKid the key id new records are sealed under; must be in `keys`.
   * @throws InvalidArgumentError if a kid or key is malformed or `activeKid` is missing.
   */
  constructor(keys: ReadonlyMap<string, Buffer>, activeKid: string) {
    this.#keys = new Map();
    for (const [kid, key] of keys) {
      checkKid('keys', kid);
      checkKey(`keys[${JSON.stringify(kid)}]`, key);
      // Copy so a caller reusing or zeroing its buffer cannot change the ring.
      this.#keys.set(kid, Buffer.from(key));
    }
    if (!this.#keys.has(activeKid)) {
      throw new InvalidArgumentError(
        'activeKid',
        `${JSON.stringify(activeKid)} is not in the keyring`,
      );
    }
    this.#activeKid = activeKid;
  }

  /** The key id new records are sealed under. */
  get activeKid(): string {
    return this.#activeKid;
  }

  /** All key ids in the ring. */
  kids(): string[] {
    return [...this.#keys.keys()];
  }

  /**
   * Encrypts `plaintext` under the active key with a fresh random nonce.
   * @param aad the record's identity, e.g. `task/t_abc/payload`; `open` needs the same value.
   */
  seal(plaintext: Buffer, aad: string): Buffer {
    // The constructor guarantees the active key exists.
    return sealWith(this.#keys.get(this.#activeKid)!, this.#activeKid, plaintext, aad);
  }

  /**
   * Decrypts a record sealed by `seal` under any key in the ring.
   * @throws DecryptError on unknown kid, bad version, truncated input, wrong AAD or tampering.
   */
  open(sealed: Buffer, aad: string): Buffer {
    const parsed = parseSealed(sealed);
    const key = this.#keys.get(parsed.kid);
    if (key === undefined) {
      throw new DecryptError(`unknown key id ${JSON.stringify(parsed.kid)}`);
    }
    return decrypt(key, parsed, aad);
  }

  /**
   * A keyed fingerprint of `data`: HMAC-SHA256 under a subkey derived from the data key `kid`
   * with HKDF-SHA256 (no salt, `purpose` as the info). Equal inputs give equal fingerprints
   * under one key, so a stored fingerprint can tell a repeated input from another; unlike a
   * plain hash, it cannot confirm a guessed input without the data key. Each purpose gets an
   * unrelated subkey, and the data key itself is never used as an HMAC key.
   * @param purpose a fixed label naming the use and its version, e.g.
   *   `citadel idempotency fingerprint v1`.
   * @param kid the data key to derive from; store it beside the fingerprint so the same one can
   *   be recomputed after a rotation. @default the active key id
   * @returns the fingerprint, 64 lowercase hex digits.
   * @throws DecryptError if `kid` is not in the ring.
   */
  fingerprint(data: string | Buffer, purpose: string, kid: string = this.#activeKid): string {
    const id = `${kid}\0${purpose}`;
    let subkey = this.#fingerprintKeys.get(id);
    if (subkey === undefined) {
      const key = this.#keys.get(kid);
      if (key === undefined) throw new DecryptError(`unknown key id ${JSON.stringify(kid)}`);
      subkey = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), purpose, KEY_BYTES));
      this.#fingerprintKeys.set(id, subkey);
    }
    return createHmac('sha256', subkey).update(data).digest('hex');
  }

  /** `seal` for a UTF-8 string. */
  sealString(plaintext: string, aad: string): Buffer {
    return this.seal(Buffer.from(plaintext, 'utf8'), aad);
  }

  /** `open` for a record sealed by `sealString`. @throws DecryptError as `open` does. */
  openString(sealed: Buffer, aad: string): string {
    return this.open(sealed, aad).toString('utf8');
  }

  /**
   * `seal` for a JSON-serialisable value.
   * @throws InvalidArgumentError if `value` has no JSON form (e.g. `undefined`).
   */
  sealJson(value: unknown, aad: string): Buffer {
    const json = JSON.stringify(value) as string | undefined;
    if (json === undefined) {
      throw new InvalidArgumentError('value', 'has no JSON representation');
    }
    return this.sealString(json, aad);
  }

  /**
   * `open` for a record sealed by `sealJson`. The result is not validated against `T`.
   * @throws DecryptError as `open` does, or if the authenticated content is not JSON.
   */
  openJson<T>(sealed: Buffer, aad: string): T {
    const text = this.openString(sealed, aad);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new DecryptError('sealed record is not valid JSON');
    }
  }
}

/**
 * Wraps (encrypts) a data key under the master key, in the sealed record format with AAD
 * `citadel/data-key/<kid>`.
 * @throws InvalidArgumentError if a key is not 32 bytes or the kid is malformed.
 */
export function wrapDataKey(masterKey: Buffer, kid: string, dataKey: Buffer): Buffer {
  checkKey('masterKey', masterKey);
  checkKid('kid', kid);
  checkKey('dataKey', dataKey);
  return sealWith(masterKey, kid, dataKey, dataKeyAad(kid));
}

/**
 * Unwraps a data key produced by `wrapDataKey`.
 * @throws DecryptError if the wrapped key is for another kid, the master key is wrong, or the
 *   input is truncated or tampered with.
 * @throws InvalidArgumentError if the master key is not 32 bytes.
 */
export function unwrapDataKey(masterKey: Buffer, kid: string, wrapped: Buffer): Buffer {
  checkKey('masterKey', masterKey);
  const parsed = parseSealed(wrapped);
  if (parsed.kid !== kid) {
    throw new DecryptError(`wrapped key is for key id ${JSON.stringify(parsed.kid)}`);
  }
  const dataKey = decrypt(masterKey, parsed, dataKeyAad(kid));
  if (dataKey.length !== KEY_BYTES) {
    throw new DecryptError('wrapped data key has the wrong length');
  }
  return dataKey;
}

function dataKeyAad(kid: string): string {
  return `citadel/data-key/${kid}`;
}

interface ParsedSealed {
  header: Buffer;
  kid: string;
  nonce: Buffer;
  ciphertext: Buffer;
  tag: Buffer;
}

function sealWith(key: Buffer, kid: string, plaintext: Buffer, aad: string): Buffer {
  const kidBytes = Buffer.from(kid, 'ascii');
  const header = Buffer.concat([Buffer.from([VERSION, kidBytes.length]), kidBytes]);
  const nonce = randomBytes(NONCE_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, nonce, { authTagLength: TAG_BYTES });
  cipher.setAAD(Buffer.concat([header, Buffer.from(aad, 'utf8')]));
  const ciphertext = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([header, nonce, ciphertext, cipher.getAuthTag()]);
}

function parseSealed(sealed: Buffer): ParsedSealed {
  if (sealed.length < 2) {
    throw new DecryptError('sealed record is truncated');
  }
  const version = sealed[0];
  if (version !== VERSION) {
    throw new DecryptError(`unsupported sealed record version ${String(version)}`);
  }
  const kidLength = sealed[1]!;
  const headerLength = 2 + kidLength;
  if (kidLength === 0 || sealed.length < headerLength + NONCE_BYTES + TAG_BYTES) {
    throw new DecryptError('sealed record is truncated');
  }
  const kid = sealed.subarray(2, headerLength).toString('latin1');
  if (!KID_PATTERN.test(kid)) {
    throw new DecryptError('sealed record has a malformed key id');
  }
  const tagStart = sealed.length - TAG_BYTES;
  return {
    header: sealed.subarray(0, headerLength),
    kid,
    nonce: sealed.subarray(headerLength, headerLength + NONCE_BYTES),
    ciphertext: sealed.subarray(headerLength + NONCE_BYTES, tagStart),
    tag: sealed.subarray(tagStart),
  };
}

function decrypt(key: Buffer, parsed: ParsedSealed, aad: string): Buffer {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, parsed.nonce, {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(Buffer.concat([parsed.header, Buffer.from(aad, 'utf8')]));
    decipher.setAuthTag(parsed.tag);
    return Buffer.concat([decipher.update(parsed.ciphertext), decipher.final()]);
  } catch {
    // OpenSSL's message carries nothing useful; keep ours uniform for every auth failure.
    throw new DecryptError('sealed record failed authentication (wrong key or AAD, or tampered)');
  }
}

function checkKid(field: string, kid: string): void {
  if (kid.length === 0 || kid.length > MAX_KID_BYTES || !KID_PATTERN.test(kid)) {
    throw new InvalidArgumentError(field, `key id must be 1-255 printable ASCII characters`);
  }
}

function checkKey(field: string, key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) {
    throw new InvalidArgumentError(field, `key must be exactly ${KEY_BYTES} bytes`);
  }
}
