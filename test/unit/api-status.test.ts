// The boundary's status messages (server/api/rpc.ts capDetails): at most 1 KiB of UTF-8, cut on
// a whole character, always something grpc-js can put in a header (it runs encodeURI on it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { capDetails } from '../../server/api/rpc.js';

const encodable = (s: string) => {
  try {
    encodeURI(s);
    return true;
  } catch {
    return false;
  }
};

void test('a short message is kept as it is', () => {
  assert.equal(capDetails('task.type: is required'), 'task.type: is required');
});

void test('an emoji across the cut is dropped whole, never split in half', () => {
  for (let pad = 950; pad < 1010; pad++) {
    const out = capDetails('a'.repeat(pad) + '😀'.repeat(100));
    assert.ok(encodable(out), `encodeURI accepts the cut at ${pad}`);
    assert.ok(Buffer.byteLength(out) <= 1024, `${Buffer.byteLength(out)} bytes at ${pad}`);
    assert.match(out, /\(cut; \d+ bytes in all\)$/);
  }
});

void test('the cap counts bytes: 1024 CJK characters are cut to 1 KiB', () => {
  const out = capDetails('字'.repeat(1024));
  assert.ok(Buffer.byteLength(out) <= 1024, `${Buffer.byteLength(out)} bytes`);
  assert.equal(out, `${'字'.repeat(331)} ... (cut; 3072 bytes in all)`);
});

void test('a lone surrogate is replaced, so the header can be built', () => {
  const out = capDetails('bad key "\uD83D" here');
  assert.equal(out, 'bad key "\uFFFD" here');
  assert.ok(encodable(out), 'encodeURI accepts it');
});
