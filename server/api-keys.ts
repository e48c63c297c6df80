/**
 * API keys: `sk_live_` + 43 base62 characters (256 bits), stored only as their SHA-256 under
 * `apikeys/`. Every replica holds the table in memory, loaded once and kept current by a
 * watch, so revocation takes effect everywhere as soon as it is committed.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { keys } from './keys.js';
import type { Store } from './store.js';

export const API_KEY_PREFIX = 'sk_live_';
const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/** What is stored for a key; never the key itself. */
export interface ApiKeyRecord {
  /** Public id of the key, e.g. `key_x3k9...`. */
  id: string;
  /** First characters of the key, to help a human recognise it. */
  prefix: string;
  principal: string;
  role: string;
  createdAt: number;
  expiresAt: number | null;
}

/** A fresh random key (shown once) and its stored hash. */
export function generateApiKey(): { key: string; hashHex: string } {
  // Rejection sampling keeps every base62 character uniform.
  let body = '';
  while (body.length < 43) {
    for (const byte of randomBytes(64)) {
      if (byte < 248 && body.length < 43) body += ALPHABET[byte % 62];
    }
  }
  const key = API_KEY_PREFIX + body;
  return { key, hashHex: hashApiKey(key) };
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

/** The in-memory, watch-driven table of API keys. */
export class ApiKeyTable {
  private readonly byHash = new Map<string, ApiKeyRecord>();
  private watcher: Watcher | undefined;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const page = await this.store.range<ApiKeyRecord>(keys.apiKeyPrefix);
    for (const item of page.items)
      this.byHash.set(item.key.slice(keys.apiKeyPrefix.length), item.value);
    const watcher = await this.store.watch(keys.apiKeyPrefix, page.revision + 1);
    watcher.on('put', (kv) => {
      const hash = this.store.relative(kv.key).slice(keys.apiKeyPrefix.length);
      this.byHash.set(hash, JSON.parse(kv.value.toString()) as ApiKeyRecord);
    });
    watcher.on('delete', (kv) => {
      this.byHash.delete(this.store.relative(kv.key).slice(keys.apiKeyPrefix.length));
    });
    watcher.on('error', (err) => this.logger.error({ err }, 'api key watch failed'));
    this.watcher = watcher;
  }

  async stop(): Promise<void> {
    await this.watcher?.cancel().catch(() => undefined);
    this.watcher = undefined;
  }

  /** The record for `key` if it exists and has not expired. */
  lookup(key: string, now = Date.now()): ApiKeyRecord | undefined {
    if (!key.startsWith(API_KEY_PREFIX) || key.length > 128) return undefined;
    const record = this.byHash.get(hashApiKey(key));
    if (!record || (record.expiresAt !== null && record.expiresAt <= now)) return undefined;
    return record;
  }
}
