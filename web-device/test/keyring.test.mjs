// The web device's keyring: the bundle it publishes, non-extractable keys that survive a
// reload, sequential key ids, rotation with retired keys, refill, one-time prekey deletion.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DeviceStateError, KEYRING_KEY, Keyring, MemoryStore, RETIRED_SIGNED_PREKEY_MS, SIGNED_PREKEY_MAX_AGE_MS,
  utf8, verifyBundle,
} from "../src/core/index.js";

const JID = "alice@example.org";
const NOW = 1_767_225_600_000;

test("a new device: random id, identity fingerprint, SPK 1 and OPKs 2-101 in a bundle that verifies", async () => {
  const keyring = await Keyring.create(new MemoryStore(), { jid: JID, nowMs: NOW });
  assert.ok(Number.isInteger(keyring.deviceId) && keyring.deviceId >= 1 && keyring.deviceId <= 2 ** 31 - 1);
  assert.match(keyring.fingerprint, /^[0-9a-f]{64}$/);
  assert.match(keyring.displayFingerprint, /^([0-9a-f]{8} ){7}[0-9a-f]{8}$/);
  assert.equal(keyring.displayFingerprint.replaceAll(" ", ""), keyring.fingerprint);
  assert.deepEqual(keyring.signedPrekey, { keyId: 1, createdMs: NOW });
  assert.deepEqual(keyring.oneTimeKeyIds, Array.from({ length: 100 }, (_, i) => i + 2));
  const { text, oneTimePrekeyIds } = keyring.bundle();
  assert.ok(utf8(text).length <= 65536);
  const bundle = await verifyBundle(text, JID);
  assert.equal(bundle.deviceId, keyring.deviceId);
  assert.equal(bundle.signedPrekey.keyId, 1);
  assert.deepEqual(bundle.oneTimePrekeys.map((p) => p.keyId), oneTimePrekeyIds);
  assert.deepEqual(oneTimePrekeyIds, keyring.oneTimeKeyIds);
  await assert.rejects(verifyBundle(text, "mallory@example.org"), { name: "MalformedEncoding" });
  const other = await Keyring.create(new MemoryStore(), { jid: JID, nowMs: NOW });
  assert.notEqual(other.deviceId, keyring.deviceId);
});

test("private keys are non-extractable, also as stored and loaded again", async () => {
  const store = new MemoryStore();
  const keyring = await Keyring.create(store, { jid: JID, nowMs: NOW, oneTimePrekeys: 2 });
  const stored = await store.get(KEYRING_KEY);
  const privates = [
    stored.identity.privateKey, keyring.keyPairFor(1).privateKey, keyring.keyPairFor(2).privateKey,
    (await Keyring.load(store)).keyPairFor(3).privateKey,
  ];
  for (const key of privates) {
    assert.equal(key.extractable, false);
    for (const format of ["pkcs8", "jwk"])
      await assert.rejects(crypto.subtle.exportKey(format, key), (error) =>
        error instanceof DOMException && /not extractable/.test(error.message));
  }
  // The public halves are what a bundle is made of.
  assert.equal(new Uint8Array(await crypto.subtle.exportKey("raw", keyring.keyPairFor(1).publicKey)).length, 65);
});

test("a reload keeps the device; a second device never replaces it", async () => {
  const store = new MemoryStore();
  assert.equal(await Keyring.load(store), null);
  const keyring = await Keyring.create(store, { jid: JID, nowMs: NOW, oneTimePrekeys: 3 });
  const loaded = await Keyring.load(store);
  assert.equal(loaded.deviceId, keyring.deviceId);
  assert.equal(loaded.fingerprint, keyring.fingerprint);
  assert.equal(loaded.bundleText().length, keyring.bundleText().length);
  await verifyBundle(loaded.bundleText(), JID);
  await assert.rejects(Keyring.create(store, { jid: JID }), DeviceStateError);
  await store.put(KEYRING_KEY, { v: 2 });
  await assert.rejects(Keyring.load(store), DeviceStateError);
  await assert.rejects(Keyring.create(new MemoryStore(), { jid: "" }), RangeError);
});

test("published keys leave the bundle; a refill adds new ids, never reused", async () => {
  const store = new MemoryStore();
  const keyring = await Keyring.create(store, { jid: JID, nowMs: NOW, oneTimePrekeys: 5 });
  await keyring.markPublished(keyring.bundle().oneTimePrekeyIds);
  assert.deepEqual(keyring.bundle().oneTimePrekeyIds, []);
  assert.equal(keyring.unpublishedCount, 0);
  assert.equal(await keyring.consumeOneTimePrekey(6), true);
  assert.equal(await keyring.refill({ remaining: 96, capacity: 100 }), 4);
  assert.deepEqual(keyring.bundle().oneTimePrekeyIds, [7, 8, 9, 10]);
  // Nothing more while those four wait to be published.
  assert.equal(await keyring.refill({ remaining: 96, capacity: 100 }), 0);
  assert.equal(await keyring.refill({ remaining: 0, capacity: 500 }), 96);
  assert.equal(keyring.bundle().oneTimePrekeyIds.length, 100);
  const reloaded = await Keyring.load(store);
  assert.equal(reloaded.unpublishedCount, 100);
  assert.deepEqual(reloaded.oneTimeKeyIds.slice(0, 5), [2, 3, 4, 5, 7]);
});

test("the signed prekey rotates after 7 days; the retired one opens for 30 days more", async () => {
  const store = new MemoryStore();
  const keyring = await Keyring.create(store, { jid: JID, nowMs: NOW, oneTimePrekeys: 1 });
  assert.equal(await keyring.rotateIfDue(NOW + SIGNED_PREKEY_MAX_AGE_MS), false);
  const firstPair = keyring.keyPairFor(1);
  const rotatedAt = NOW + SIGNED_PREKEY_MAX_AGE_MS + 1;
  assert.equal(await keyring.rotateIfDue(rotatedAt), true);
  assert.deepEqual(keyring.signedPrekey, { keyId: 3, createdMs: rotatedAt });
  assert.deepEqual(keyring.retiredKeyIds, [1]);
  assert.equal(keyring.keyPairFor(1), firstPair);
  const bundle = await verifyBundle(keyring.bundleText(), JID);
  assert.equal(bundle.signedPrekey.keyId, 3);
  // Still held just before 30 days; gone after, at the next check.
  assert.equal(await keyring.rotateIfDue(rotatedAt + RETIRED_SIGNED_PREKEY_MS - 1), true);
  assert.deepEqual(keyring.retiredKeyIds, [1, 3]);
  assert.equal(await keyring.rotateIfDue(rotatedAt + RETIRED_SIGNED_PREKEY_MS), false);
  assert.deepEqual(keyring.retiredKeyIds, [3]);
  assert.equal(keyring.keyPairFor(1), null);
  assert.deepEqual((await Keyring.load(store)).retiredKeyIds, [3]);
});

test("a used one-time prekey is gone, also after a reload; a signed prekey is never consumed", async () => {
  const store = new MemoryStore();
  const keyring = await Keyring.create(store, { jid: JID, nowMs: NOW, oneTimePrekeys: 2 });
  assert.ok(keyring.keyPairFor(2));
  assert.equal(await keyring.consumeOneTimePrekey(2), true);
  assert.equal(keyring.keyPairFor(2), null);
  assert.equal(await keyring.consumeOneTimePrekey(2), false);
  assert.equal(await keyring.consumeOneTimePrekey(1), false);
  assert.ok(keyring.keyPairFor(1));
  const reloaded = await Keyring.load(store);
  assert.equal(reloaded.keyPairFor(2), null);
  assert.ok(reloaded.keyPairFor(3));
  await keyring.erase();
  assert.equal(await Keyring.load(store), null);
});
