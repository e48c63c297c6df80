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
  private byHash = new Map<string, ApiKeyRecord>();
  private watcher: Watcher | undefined;
  private running = false;

  constructor(
    private readonly store: Store,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    this.running = true;
    await this.load();
  }

  private async load(): Promise<void> {
    const page = await this.store.range<ApiKeyRecord>(keys.apiKeyPrefix);
    const fresh = new Map<string, ApiKeyRecord>();
    for (const item of page.items) fresh.set(item.key.slice(keys.apiKeyPrefix.length), item.value);
    const watcher = await this.store.watch(keys.apiKeyPrefix, page.revision + 1);
    // Swap in one step, so a revoked key is never briefly valid again.
    this.byHash = fresh;
    watcher.on('put', (kv) => {
      const hash = this.store.relative(kv.key).slice(keys.apiKeyPrefix.length);
      this.byHash.set(hash, JSON.parse(kv.value.toString()) as ApiKeyRecord);
    });
    watcher.on('delete', (kv) => {
      this.byHash.delete(this.store.relative(kv.key).slice(keys.apiKeyPrefix.length));
    });
    // etcd cancels a watch whose resume revision was compacted (after a reconnect): a
    // revocation would then be missed, so reload the table and watch again.
    watcher.once('error', (err) => {
      this.logger.warn({ err }, 'api key watch cancelled; reloading');
      void watcher.cancel().catch(() => undefined);
      void this.reload();
    });
    this.watcher = watcher;
    if (!this.running) await this.stop();
  }

  private async reload(): Promise<void> {
    while (this.running) {
      try {
        await this.load();
        return;
      } catch (err) {
        this.logger.error({ err }, 'reloading api keys failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }

  async stop(): Promise<void> {
    this.running = false;
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
