import assert from 'node:assert/strict';
import { createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { describe, it } from 'node:test';

import {
  encodeHeartbeatBody,
  HeartbeatSequence,
  signedHeartbeat,
  signHeartbeatBody,
  type HeartbeatFields,
} from '../../agent/heartbeat.js';
import { generateWorkerKey, keyTypeOf, loadPrivateKey, type KeyType } from '../../agent/keys.js';
import { InvalidArgumentError } from '../../common/errors.js';
import { HeartbeatBody } from '../../gen/citadel/v1/worker_service.js';

const FIELDS: HeartbeatFields = {
  workerId: 'w_0123456789abcdef',
  sequence: 1_700_000_000_000_000,
  sendTime: new Date('2025-01-02T03:04:05.678Z'),
  certificateSerial: '0a1b2c3d4e5f',
  runningExecutionIds: ['t_0123456789abcdef-00000001-01'],
  freeSlots: 3,
  totalSlots: 4,
};

/** Verifies as the server does: with the public key of the certificate, over the exact bytes. */
function serverVerifies(keyType: KeyType, body: Buffer, signature: Buffer, publicPem: string) {
  const key = createPublicKey(publicPem);
  return keyType === 'p256'
    ? verify('sha256', body, { key, dsaEncoding: 'der' }, signature)
    : verify(null, body, key, signature);
}

for (const keyType of ['p256', 'ed25519'] as const) {
  void describe(`signedHeartbeat with a ${keyType} key`, () => {
    void it('signs the exact body bytes so that the public key verifies them', async () => {
      const material = await generateWorkerKey(keyType, 'test-host');
      const privateKey = loadPrivateKey(material.privateKeyPem);
      assert.equal(keyTypeOf(privateKey), keyType);
      const publicPem = createPublicKey(privateKey).export({ type: 'spki', format: 'pem' });

      const request = signedHeartbeat(FIELDS, privateKey);
      assert.ok(
        serverVerifies(keyType, request.body, request.signature, publicPem.toString()),
        'serverVerifies(keyType, request.body, request.signature, publicPem.toString())',
      );
      assert.deepEqual(request.body, encodeHeartbeatBody(FIELDS));

      const tampered = Buffer.from(request.body);
      tampered[tampered.length - 1]! ^= 1;
      assert.equal(
        serverVerifies(keyType, tampered, request.signature, publicPem.toString()),
        false,
      );
    });

    void it('encodes every field so that the server decodes them back', async () => {
      const material = await generateWorkerKey(keyType, 'test-host');
      const request = signedHeartbeat(FIELDS, loadPrivateKey(material.privateKeyPem));
      const body = HeartbeatBody.decode(request.body);
      assert.equal(body.workerId, FIELDS.workerId);
      assert.equal(body.sequence, FIELDS.sequence);
      assert.equal(body.sendTime?.toISOString(), FIELDS.sendTime.toISOString());
      assert.equal(body.certificateSerial, FIELDS.certificateSerial);
      assert.deepEqual(body.runningExecutionIds, FIELDS.runningExecutionIds);
      assert.equal(body.freeSlots, 3);
      assert.equal(body.totalSlots, 4);
    });
  });
}

void describe('signHeartbeatBody', () => {
  void it('refuses keys workers may not use', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const p384 = generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    assert.throws(() => signHeartbeatBody(Buffer.from('x'), rsa), InvalidArgumentError);
    assert.throws(() => signHeartbeatBody(Buffer.from('x'), p384), InvalidArgumentError);
  });

  void it('produces a DER (not raw r||s) ECDSA signature', async () => {
    const material = await generateWorkerKey('p256', 'h');
    const sig = signHeartbeatBody(Buffer.from('body'), loadPrivateKey(material.privateKeyPem));
    assert.equal(sig[0], 0x30); // ASN.1 SEQUENCE
  });
});

void describe('HeartbeatSequence', () => {
  void it('starts at the given microseconds and goes up by one', () => {
    const seq = new HeartbeatSequence(5_000_000);
    assert.equal(seq.next(), 5_000_000);
    assert.equal(seq.next(), 5_000_001);
    assert.equal(seq.next(), 5_000_002);
  });

  void it('starts at the current time in microseconds by default and only goes up', () => {
    const before = Date.now() * 1000;
    const earlier = new HeartbeatSequence();
    const first = earlier.next();
    assert.ok(
      first >= before && first <= Date.now() * 1000,
      'first >= before && first <= Date.now() * 1000',
    );
    let last = first;
    for (let i = 0; i < 100; i++) {
      const n = earlier.next();
      assert.ok(n > last, 'n > last');
      last = n;
    }
    assert.ok(Number.isSafeInteger(last), 'Number.isSafeInteger(last)');
  });
});
