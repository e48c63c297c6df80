import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';

import { OutputCapture } from '../../agent/output-capture.js';
import { InvalidArgumentError } from '../../common/errors.js';

void describe('OutputCapture', () => {
  void it('keeps everything under the cap, unflagged', () => {
    const capture = new OutputCapture(16);
    capture.append(Buffer.from('hello '));
    capture.append(Buffer.from('world\n'));
    assert.equal(capture.toBuffer().toString(), 'hello world\n');
    assert.equal(capture.totalBytes, 12);
    assert.equal(capture.droppedBytes, 0);
    assert.equal(capture.truncated, false);
  });

  void it('keeps exactly the cap when the output is exactly the cap', () => {
    const capture = new OutputCapture(4);
    capture.append(Buffer.from('abcd'));
    assert.equal(capture.toBuffer().toString(), 'abcd');
    assert.equal(capture.truncated, false);
  });

  void it('keeps the first capBytes, counts the rest and flags truncation', () => {
    const capture = new OutputCapture(5);
    capture.append(Buffer.from('abc'));
    capture.append(Buffer.from('defgh'));
    capture.append(Buffer.from('ijk'));
    assert.equal(capture.toBuffer().toString(), 'abcde');
    assert.equal(capture.totalBytes, 11);
    assert.equal(capture.droppedBytes, 6);
    assert.equal(capture.truncated, true);
  });

  void it('copies what it keeps, so a large chunk is neither retained nor aliased', () => {
    const capture = new OutputCapture(3);
    const chunk = Buffer.alloc(1 << 20, 'x');
    capture.append(chunk);
    chunk.fill('y');
    const kept = capture.toBuffer();
    assert.equal(kept.toString(), 'xxx');
    assert.ok(kept.buffer.byteLength < chunk.length, 'the 1 MiB chunk is not held');
  });

  void it('with a cap of 0 keeps nothing but still counts', () => {
    const capture = new OutputCapture(0);
    capture.append(Buffer.from('abc'));
    capture.append(Buffer.alloc(0));
    assert.equal(capture.toBuffer().length, 0);
    assert.equal(capture.totalBytes, 3);
    assert.equal(capture.truncated, true);
  });

  void it('ignores empty chunks', () => {
    const capture = new OutputCapture(2);
    capture.append(Buffer.alloc(0));
    assert.equal(capture.totalBytes, 0);
    assert.equal(capture.truncated, false);
  });

  void it('works as a Writable: strings, buffers and a piped stream far past the cap', async () => {
    const capture = new OutputCapture(10);
    capture.write('abc');
    capture.write(Buffer.from('def'));
    const source = new PassThrough();
    const done = pipeline(source, capture);
    for (let i = 0; i < 1000; i++) source.write(Buffer.alloc(1024, 'z'));
    source.end();
    await done;
    assert.equal(capture.toBuffer().toString(), 'abcdefzzzz');
    assert.equal(capture.totalBytes, 6 + 1024 * 1000);
    assert.equal(capture.truncated, true);
  });

  void it('refuses a negative or fractional cap', () => {
    assert.throws(() => new OutputCapture(-1), InvalidArgumentError);
    assert.throws(() => new OutputCapture(1.5), InvalidArgumentError);
  });
});
