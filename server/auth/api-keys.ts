/**
 * API keys: `sk_live_` + 43 base62 characters (256 bits), stored only as their SHA-256 under
 * `apikeys/`. Every replica holds the table in memory (a WatchedTable), so revocation takes
 * effect everywhere as soon as it is committed.
 */
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { randomBase62 } from '../../common/ids.js';
import { keys } from '../store/keys.js';
import { Tx, type Store } from '../store/store.js';
import { WatchedTable } from '../store/watched-table.js';

export const API_KEY_PREFIX = 'sk_live_';

/** What is stored for a key; never the key itself. */
export interface ApiKeyRecord {
  /** Public id of the key, e.g. `key_x3k9...`. */
  id: string;
  /** First characters of the key, to help a human recognise it. */
  prefix: string;
  /** The user the key authenticates as. */
  userId: string;
  description: string;
  createdAt: number;
  expiresAt: number | null;
}

/** A fresh random key (shown once) and its stored hash. */
export function generateApiKey(): { key: string; hashHex: string } {
  const key = API_KEY_PREFIX + randomBase62(43);
  return { key, hashHex: hashApiKey(key) };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** The in-memory, watch-driven table of API keys, by hash. */
export class ApiKeyTable extends WatchedTable<ApiKeyRecord> {
  constructor(store: Store, logger: Logger) {
    super(store, keys.apiKeyPrefix, logger);
  }

  /** The record for `key` if it exists and has not expired. */
  lookup(key: string, now = Date.now()): ApiKeyRecord | undefined {
    if (!key.startsWith(API_KEY_PREFIX) || key.length > 128) return undefined;
    const record = this.get(hashApiKey(key));
    if (!record || (record.expiresAt !== null && record.expiresAt <= now)) return undefined;
    return record;
  }
}

/**
 * Records when keys were last used, at most once a minute per key and replica, off the call's
 * path (`apikey-usage/<id>`).
 */
export class KeyUsage {
  private readonly written = new Map<string, number>();

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  touch(keyId: string): void {
    const now = this.now();
    const last = this.written.get(keyId);
    if (last !== undefined && now - last < 60_000) return;
    if (this.written.size > 100_000) this.written.clear();
    this.written.set(keyId, now);
    this.store
      .commit(new Tx().putJson(keys.apiKeyUsage(keyId), { lastUsedAt: now }))
      .catch((err: unknown) => this.logger.warn({ err }, 'could not record API key use'));
  }
}
