/**
 * A bounded collector for one output stream of a task (stdout or stderr): keeps the first
 * `capBytes` bytes, counts the rest and drops it, so a task that prints gigabytes costs the
 * agent at most the cap in memory.
 */
import { Writable } from 'node:stream';

import { InvalidArgumentError } from '../common/errors.js';

/**
 * A Writable that keeps the first `capBytes` bytes written to it. Every chunk is handled
 * synchronously: bytes past the cap are counted and discarded at once, and the kept bytes are
 * copied, so no larger chunk the producer handed over is retained.
 */
export class OutputCapture extends Writable {
  readonly #cap: number;
  readonly #chunks: Buffer[] = [];
  #kept = 0;
  #total = 0;

  /** @throws InvalidArgumentError when `capBytes` is not a non-negative safe integer. */
  constructor(capBytes: number) {
    super({ decodeStrings: true });
    if (!Number.isSafeInteger(capBytes) || capBytes < 0) {
      throw new InvalidArgumentError('capBytes', 'must be a non-negative integer');
    }
    this.#cap = capBytes;
  }

  /** The cap this capture was built with. */
  get capBytes(): number {
    return this.#cap;
  }

  /** Every byte written, kept or not. */
  get totalBytes(): number {
    return this.#total;
  }

  /** Bytes written past the cap and dropped. */
  get droppedBytes(): number {
    return this.#total - this.#kept;
  }

  /** Whether anything was dropped. */
  get truncated(): boolean {
    return this.#total > this.#kept;
  }

  /** The kept bytes (at most `capBytes`), as one new Buffer. */
  toBuffer(): Buffer {
    return Buffer.concat(this.#chunks, this.#kept);
  }

  /** Takes a chunk synchronously (what `write()` does, without the stream machinery). */
  append(chunk: Uint8Array): void {
    this.#total += chunk.length;
    const room = this.#cap - this.#kept;
    if (room <= 0 || chunk.length === 0) return;
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    this.#chunks.push(Buffer.from(part));
    this.#kept += part.length;
  }

  override _write(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: (error?: Error | null) => void,
  ): void {
    this.append(chunk);
    callback();
  }
}
