// Unit tests for the AES-256-GCM envelope sealer: round trips, tamper detection, rotation; and
// the keyed fingerprints (HMAC under an HKDF subkey of a data key).
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DecryptError } from '../../common/errors.js';
import { Keyring, generateKey, unwrapDataKey, wrapDataKey } from '../../server/crypto/sealer.js';

const AAD = 'task/t_abc/payload';

function ring(kid = 'dk1', key = generateKey()): Keyring {
  return new Keyring(new Map([[kid, key]]), kid);
}

void test('seal/open round trip for bytes, strings and JSON', () => {
  const keyring = ring();
  const bytes = Buffer.from([0, 1, 2, 255]);
  assert.deepEqual(keyring.open(keyring.seal(bytes, AAD), AAD), bytes);
  assert.equal(keyring.openString(keyring.sealString('héllo', AAD), AAD), 'héllo');
  assert.deepEqual(keyring.open(keyring.seal(Buffer.alloc(0), AAD), AAD), Buffer.alloc(0));
  const value = { a: 1, b: ['x', null], c: { d: true } };
  assert.deepEqual(keyring.openJson<typeof value>(keyring.sealJson(value, AAD), AAD), value);
});

void test('sealed layout: version, kid, nonce, ciphertext, tag', () => {
  const sealed = ring('dk1').seal(Buffer.from('abc'), AAD);
  assert.equal(sealed[0], 1);
  assert.equal(sealed[1], 3);
  assert.equal(sealed.subarray(2, 5).toString('ascii'), 'dk1');
  assert.equal(sealed.length, 2 + 3 + 12 + 3 + 16);
});

void test('two seals of the same plaintext differ (fresh nonce)', () => {
  const keyring = ring();
  const a = keyring.sealString('same', AAD);
  const b = keyring.sealString('same', AAD);
  assert.notDeepEqual(a, b);
  assert.notDeepEqual(a.subarray(5, 17), b.subarray(5, 17));
});

void test('wrong AAD, tampering, truncation, bad version and unknown kid throw DecryptError', () => {
  const keyring = ring('dk1');
  const sealed = keyring.sealString('secret payload', AAD);
  const flip = (index: number): Buffer => {
    const copy = Buffer.from(sealed);
    copy[index] = copy[index]! ^ 0x01;
    return copy;
  };

  assert.throws(() => keyring.open(sealed, 'task/t_other/payload'), DecryptError);
  assert.throws(() => keyring.open(flip(sealed.length - 20), AAD), DecryptError); // ciphertext
  assert.throws(() => keyring.open(flip(sealed.length - 1), AAD), DecryptError); // tag
  assert.throws(() => keyring.open(flip(8), AAD), DecryptError); // nonce
  assert.throws(() => keyring.open(flip(0), AAD), DecryptError); // version
  assert.throws(() => keyring.open(flip(4), AAD), DecryptError); // kid byte
  assert.throws(() => keyring.open(sealed.subarray(0, sealed.length - 1), AAD), DecryptError);
  assert.throws(() => keyring.open(sealed.subarray(0, 10), AAD), DecryptError);
  assert.throws(() => keyring.open(Buffer.alloc(0), AAD), DecryptError);
  assert.throws(() => ring('dk2').open(sealed, AAD), /unknown key id "dk1"/);
  assert.throws(() => ring('dk1').open(sealed, AAD), DecryptError); // same kid, other key
});

void test('a header swapped to another kid in the ring does not open', () => {
  const key1 = generateKey();
  const keyring = new Keyring(
    new Map([
      ['dk1', key1],
      ['dk2', key1], // even with the same key bytes, the kid is authenticated
    ]),
    'dk1',
  );
  const sealed = keyring.sealString('x', AAD);
  const swapped = Buffer.from(sealed);
  swapped.write('dk2', 2, 'ascii');
  assert.throws(() => keyring.open(swapped, AAD), DecryptError);
});

void test('error messages never contain plaintext or key material', () => {
  const key = generateKey();
  const keyring = ring('dk1', key);
  const sealed = keyring.sealString('top-secret-value', AAD);
  try {
    keyring.open(sealed, 'wrong');
    assert.fail('expected DecryptError');
  } catch (err) {
    assert.ok(err instanceof DecryptError, 'err instanceof DecryptError');
    assert.equal(err.name, 'DecryptError');
    assert.doesNotMatch(err.message, /top-secret-value/);
    assert.ok(
      !err.message.includes(key.toString('hex')),
      "!err.message.includes(key.toString('hex'))",
    );
    assert.ok(
      !err.message.includes(key.toString('base64')),
      "!err.message.includes(key.toString('base64'))",
    );
  }
});

void test('rotation: a ring with a new active kid still opens records sealed under the old one', () => {
  const old = generateKey();
  const before = new Keyring(new Map([['dk1', old]]), 'dk1');
  const record = before.sealString('old record', AAD);

  const after = new Keyring(
    new Map([
      ['dk0', generateKey()],
      ['dk1', old],
      ['dk2', generateKey()],
    ]),
    'dk2',
  );
  assert.equal(after.openString(record, AAD), 'old record');
  const fresh = after.sealString('new record', AAD);
  assert.equal(fresh.subarray(2, 2 + fresh[1]!).toString('ascii'), 'dk2');
  assert.throws(() => before.open(fresh, AAD), DecryptError);
});

void test('Keyring rejects a missing active kid and keys that are not 32 bytes', () => {
  assert.throws(() => new Keyring(new Map([['dk1', generateKey()]]), 'dk2'), /activeKid/);
  assert.throws(() => new Keyring(new Map([['dk1', Buffer.alloc(16)]]), 'dk1'), /32 bytes/);
  assert.throws(() => new Keyring(new Map([['', generateKey()]]), ''), /key id/);
});

void test('wrapDataKey/unwrapDataKey round trip; wrong master key or kid fails', () => {
  const master = generateKey();
  const dataKey = generateKey();
  const wrapped = wrapDataKey(master, 'dk7', dataKey);
  assert.deepEqual(unwrapDataKey(master, 'dk7', wrapped), dataKey);
  assert.ok(!wrapped.includes(dataKey), '!wrapped.includes(dataKey)');
  assert.throws(() => unwrapDataKey(generateKey(), 'dk7', wrapped), DecryptError);
  assert.throws(() => unwrapDataKey(master, 'dk8', wrapped), DecryptError);
  // A data key wrapped under the master key is not a record that a keyring can open, and vice versa.
  assert.throws(
    () => new Keyring(new Map([['dk7', master]]), 'dk7').open(wrapped, AAD),
    DecryptError,
  );
});

const PURPOSE = 'citadel idempotency fingerprint v1';

void test('fingerprint: HMAC-SHA256 under an HKDF subkey of the data key, pinned by a known answer', () => {
  // Computed apart from this code (RFC 5869 HKDF-SHA256, empty salt, info = the purpose; then
  // HMAC-SHA256): stored fingerprints depend on this derivation never changing by accident.
  const keyring = ring('dk1', Buffer.alloc(32, 7));
  const data = 'admin\0{"type":"email"}';
  assert.equal(
    keyring.fingerprint(data, PURPOSE),
    '8579875aa46826548eb6c31b53231bcb529da8cccbae78996a40f04a0363219d',
  );
  assert.notEqual(
    keyring.fingerprint(data, PURPOSE),
    createHash('sha256').update(data).digest('hex'),
    'not the plain SHA-256 a payload guess could be checked against',
  );
});

void test('fingerprint: stable for one key and purpose; another key, kid or purpose gives another', () => {
  const key = generateKey();
  const keyring = ring('dk1', key);
  const data = Buffer.from('same request');
  const fp = keyring.fingerprint(data, PURPOSE);
  assert.match(fp, /^[0-9a-f]{64}$/);
  assert.equal(keyring.fingerprint(data, PURPOSE), fp, 'deterministic');
  assert.equal(keyring.fingerprint('same request', PURPOSE), fp, 'a string is its UTF-8 bytes');
  assert.equal(ring('dk9', key).fingerprint(data, PURPOSE), fp, 'the key bytes count, not the kid');
  assert.notEqual(ring('dk1').fingerprint(data, PURPOSE), fp, 'depends on the key');
  assert.notEqual(keyring.fingerprint(data, 'another purpose v1'), fp, 'depends on the purpose');
  assert.notEqual(keyring.fingerprint('other request', PURPOSE), fp, 'depends on the data');
});

void test('fingerprint: an older kid after a rotation recomputes the old value; an unknown kid throws', () => {
  const old = generateKey();
  const before = new Keyring(new Map([['dk1', old]]), 'dk1');
  const stored = before.fingerprint('request', PURPOSE);
  const after = new Keyring(
    new Map([
      ['dk1', old],
      ['dk2', generateKey()],
    ]),
    'dk2',
  );
  assert.notEqual(after.fingerprint('request', PURPOSE), stored, 'the active key changed');
  assert.equal(after.fingerprint('request', PURPOSE, 'dk1'), stored);
  assert.throws(() => after.fingerprint('request', PURPOSE, 'dk3'), DecryptError);
});
