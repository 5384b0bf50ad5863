// The web device's inbox, outcome by outcome, as src/cmaas/device/inbox.py decides:
// duplicate, refused (with the class of protocol section 12), key change and trust,
// one-time prekey deletion, auto-delete, files.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  DeviceStateError, FileUnavailable, Inbox, Keyring, MemoryStore, PinStore, SeenMessages, b64url, encryptBlob,
} from "../src/core/index.js";
import { makeApp, recipientOf, seal } from "../test-support/sealer.mjs";

const JID = "alice@example.org";
const GATEWAY = "gateway.example.org";
const BANK = "bank@gateway.example.org";
const NOW = 1_767_225_600_000;

async function device({ oneTimePrekeys = 3, store = new MemoryStore() } = {}) {
  const keyring = await Keyring.create(store, { jid: JID, nowMs: NOW, oneTimePrekeys });
  const inbox = new Inbox({
    keyring, pins: await PinStore.load(store), seen: await SeenMessages.load(store), gateway: GATEWAY,
  });
  return { store, keyring, inbox };
}

const stanza = (messageId, sender = BANK) => ({ sender, messageId, nowMs: NOW + 1000 });

test("accepted: first contact pins the key; the one-time prekey is gone before it is shown", async () => {
  const { store, keyring, inbox } = await device();
  const app = await makeApp();
  const recipient = await recipientOf(keyring);
  const text = await seal({ app, recipients: [recipient], createdMs: NOW, content: { kind: "otp", code: "493817", purpose: "Sign in" } });
  const outcome = await inbox.receive(text, stanza("m-1"));
  assert.equal(outcome.kind, "accepted");
  const { message } = outcome;
  assert.deepEqual(message.content, { kind: "otp", code: "493817", purpose: "Sign in" });
  assert.equal(message.appJid, BANK);
  assert.equal(message.appFingerprint, app.fingerprint);
  assert.equal(message.newlyPinned, true);
  assert.equal(message.expiresMs, NOW + 60_000);
  assert.equal(message.deleteAtMs, null);
  assert.equal(keyring.keyPairFor(recipient.keyId), null);
  assert.equal((await Keyring.load(store)).keyPairFor(recipient.keyId), null);
  assert.deepEqual([...(await PinStore.load(store)).get(BANK)], [...app.point]);
  // A second message from the same app is no first contact.
  const again = await seal({ app, messageId: "m-2", recipients: [await recipientOf(keyring)], createdMs: NOW });
  assert.equal((await inbox.receive(again, stanza("m-2"))).message.newlyPinned, false);
});

test("duplicate: a resend is recognised before opening; without the record it is UnknownKeyId", async () => {
  const { store, keyring, inbox } = await device();
  const app = await makeApp();
  const text = await seal({ app, recipients: [await recipientOf(keyring)], createdMs: NOW });
  assert.equal((await inbox.receive(text, stanza("m-1"))).kind, "accepted");
  assert.deepEqual(await inbox.receive(text, stanza("m-1")), { kind: "duplicate", messageId: "m-1", appJid: BANK });
  // The record survives a reload.
  const reloaded = new Inbox({
    keyring: await Keyring.load(store), pins: await PinStore.load(store), seen: await SeenMessages.load(store), gateway: GATEWAY,
  });
  assert.equal((await reloaded.receive(text, stanza("m-1"))).kind, "duplicate");
  // Without the record, the replay fails at step 10: its one-time prekey is gone.
  const forgetful = new Inbox({ keyring, pins: await PinStore.load(store), seen: await SeenMessages.load(new MemoryStore()), gateway: GATEWAY });
  const replay = await forgetful.receive(text, stanza("m-1"));
  assert.equal(replay.kind, "refused");
  assert.equal(replay.error.name, "UnknownKeyId");
});

test("refused: each failing check names its class; nothing is pinned or recorded", async () => {
  const { keyring, inbox } = await device({ oneTimePrekeys: 0 });
  const app = await makeApp();
  const recipient = await recipientOf(keyring);
  const cases = [
    ["BadSignature", async () => {
      const envelope = JSON.parse(await seal({ app, recipients: [recipient], createdMs: NOW }));
      envelope.header.priority = "high";
      return JSON.stringify(envelope);
    }, BANK],
    ["TamperedHeader", () => seal({ app, recipients: [recipient], createdMs: NOW }), "shop@gateway.example.org"],
    ["ForeignApp", () => seal({ app, appJid: "bank@evil.example.org", recipients: [recipient], createdMs: NOW }), "bank@evil.example.org"],
    ["WrongRecipient", () => seal({ app, to: "bob@example.org", recipients: [recipient], createdMs: NOW }), BANK],
    ["WrongDevice", () => seal({ app, recipients: [{ ...recipient, deviceId: recipient.deviceId ^ 1 }], createdMs: NOW }), BANK],
    ["Expired", () => seal({ app, recipients: [recipient], createdMs: NOW - 60_000, expiresMs: NOW }), BANK],
    ["UnknownKeyId", () => seal({ app, recipients: [{ ...recipient, keyId: 77 }], createdMs: NOW }), BANK],
    ["TamperedKeyEntry", () => seal({ app, recipients: [{ ...recipient, point: app.point }], createdMs: NOW }), BANK],
    ["MalformedEncoding", async () => `${await seal({ app, recipients: [recipient], createdMs: NOW })} x`, BANK],
  ];
  for (const [name, make, sender] of cases) {
    const outcome = await inbox.receive(await make(), stanza("m-1", sender));
    assert.equal(outcome.kind, "refused", name);
    assert.equal(outcome.error.name, name);
    assert.equal(outcome.offeredKey, null);
    assert.equal(inbox.pins.get(sender), null, name);
    assert.ok(inbox.seen.isNew(sender, "m-1"), name);
  }
  // After all of that, the genuine message still opens (the SPK is never consumed).
  const good = await inbox.receive(await seal({ app, recipients: [recipient], createdMs: NOW }), stanza("m-1"));
  assert.equal(good.kind, "accepted");
});

test("require a pinned key: an unknown app is UnpinnedAppKey", async () => {
  const { store, keyring } = await device();
  const inbox = new Inbox({
    keyring, pins: await PinStore.load(store), seen: await SeenMessages.load(store), gateway: GATEWAY, requirePinned: true,
  });
  const text = await seal({ app: await makeApp(), recipients: [await recipientOf(keyring)], createdMs: NOW });
  const outcome = await inbox.receive(text, stanza("m-1"));
  assert.equal(outcome.error.name, "UnpinnedAppKey");
  assert.ok(keyring.keyPairFor(2), "a refused message consumes no one-time prekey");
});

test("a changed app key is refused and offered; the user trusts it by its full fingerprint", async () => {
  const { keyring, inbox } = await device({ oneTimePrekeys: 0 });
  const recipient = await recipientOf(keyring);
  const [first, second] = [await makeApp(), await makeApp()];
  assert.equal((await inbox.receive(await seal({ app: first, recipients: [recipient], createdMs: NOW }), stanza("m-1"))).kind, "accepted");
  const changed = await seal({ app: second, messageId: "m-2", recipients: [recipient], createdMs: NOW });
  const outcome = await inbox.receive(changed, stanza("m-2"));
  assert.equal(outcome.kind, "refused");
  assert.equal(outcome.error.name, "AppKeyChanged");
  assert.deepEqual([...outcome.offeredKey], [...second.point]);
  assert.equal(outcome.offeredFingerprint, second.fingerprint);
  assert.equal(outcome.offeredDisplayFingerprint.replaceAll(" ", ""), second.fingerprint);
  assert.deepEqual(inbox.pins.offers().map(([jid, pin]) => [jid, pin.fingerprint]), [[BANK, second.fingerprint]]);
  // A forger's key (its signature does not verify under the key it carries) is not offered.
  const forged = JSON.parse(await seal({ app: second, messageId: "m-3", recipients: [recipient], createdMs: NOW }));
  const third = await makeApp();
  forged.app_key = { public_key: b64url(third.point), fingerprint: third.fingerprint };
  const forgery = await inbox.receive(JSON.stringify(forged), stanza("m-3"));
  assert.equal(forgery.error.name, "AppKeyChanged");
  assert.equal(forgery.offeredKey, null);
  assert.equal(inbox.pins.offers()[0][1].fingerprint, second.fingerprint);
  // Trust needs the whole fingerprint of the offered key; spaces and case do not matter.
  await assert.rejects(inbox.trust(BANK, second.fingerprint.slice(0, 32), { nowMs: NOW }), DeviceStateError);
  await assert.rejects(inbox.trust(BANK, first.fingerprint, { nowMs: NOW }), DeviceStateError);
  await assert.rejects(inbox.trust("shop@gateway.example.org", second.fingerprint, { nowMs: NOW }), DeviceStateError);
  const display = outcome.offeredDisplayFingerprint.toUpperCase();
  const pin = await inbox.trust(BANK, display, { nowMs: NOW + 5 });
  assert.equal(pin.fingerprint, second.fingerprint);
  assert.deepEqual(inbox.pins.offers(), []);
  assert.equal((await inbox.receive(changed, stanza("m-2"))).kind, "accepted");
  const old = await seal({ app: first, messageId: "m-4", recipients: [recipient], createdMs: NOW });
  assert.equal((await inbox.receive(old, stanza("m-4"))).error.name, "AppKeyChanged");
});

test("auto-delete: deleteAtMs from the header; after deleted() a resend is still a duplicate", async () => {
  const { inbox, keyring } = await device();
  const text = await seal({ app: await makeApp(), recipients: [await recipientOf(keyring)], createdMs: NOW, autoDeleteS: 30 });
  const { message } = await inbox.receive(text, stanza("m-1"));
  assert.equal(message.deleteAtMs, NOW + 1000 + 30_000);
  assert.equal(message.header.auto_delete_s, 30);
  assert.deepEqual(inbox.seen.due(NOW + 30_999), []);
  assert.deepEqual(inbox.seen.due(NOW + 31_000), [{ appJid: BANK, messageId: "m-1", deleteAtMs: NOW + 31_000 }]);
  await inbox.deleted(BANK, "m-1", { nowMs: NOW + 31_000 });
  assert.deepEqual(inbox.seen.due(NOW + 99_000), []);
  assert.equal((await inbox.receive(text, stanza("m-1"))).kind, "duplicate");
});

test("files: fetch-file, then accepted with the checked plaintext, or refused", async () => {
  const { inbox, keyring } = await device();
  const app = await makeApp();
  const fileKey = crypto.getRandomValues(new Uint8Array(32));
  const plaintext = new Uint8Array(150_000);
  for (let at = 0; at < plaintext.length; at += 65536) crypto.getRandomValues(plaintext.subarray(at, at + 65536));
  const { blob, size, sha256 } = await encryptBlob(plaintext, fileKey);
  const content = {
    kind: "file", name: "report.pdf", media_type: "application/pdf", size, sha256,
    url: "https://gateway.example.org/v1/blobs/abc", file_key: b64url(fileKey),
  };
  const receive = async (messageId) => inbox.receive(
    await seal({ app, messageId, content, recipients: [await recipientOf(keyring)], createdMs: NOW }), stanza(messageId));
  const fetch = await receive("f-1");
  assert.equal(fetch.kind, "fetch-file");
  assert.equal(fetch.firstContact, true);
  assert.equal(fetch.content.url, content.url);
  assert.equal(inbox.pins.get(BANK), null, "nothing is pinned before the file passed");
  assert.ok(inbox.seen.isNew(BANK, "f-1"));
  const tampered = blob.slice();
  tampered[100] ^= 1;
  const refused = await inbox.fileFetched(fetch, tampered, { nowMs: NOW });
  assert.equal(refused.kind, "refused");
  assert.equal(refused.error.name, "TamperedBlob");
  assert.equal(inbox.pins.get(BANK), null);
  assert.ok(inbox.seen.isNew(BANK, "f-1"));
  const failed = inbox.fileFailed(fetch, new FileUnavailable("HTTP 404"));
  assert.equal(failed.kind, "refused");
  assert.equal(failed.error.name, "FileUnavailable");
  const accepted = await inbox.fileFetched(await receive("f-2"), blob, { nowMs: NOW });
  assert.equal(accepted.kind, "accepted");
  assert.deepEqual(accepted.message.file, plaintext);
  assert.equal(accepted.message.newlyPinned, true);
  assert.equal(accepted.message.content.name, "report.pdf");
  assert.equal((await receive("f-2")).kind, "duplicate");
});

test("the record of shown messages keeps unexpired messages beyond its capacity", async () => {
  const store = new MemoryStore();
  const seen = await SeenMessages.load(store, { capacity: 2 });
  for (const [id, expiresMs] of [["a", NOW + 10], ["b", NOW + 1000], ["c", NOW + 20]])
    await seen.record(BANK, id, { expiresMs, nowMs: NOW });
  assert.equal(seen.size, 3, "nothing expired yet: all kept");
  await seen.record(BANK, "d", { expiresMs: NOW + 5000, nowMs: NOW + 15 });
  assert.equal(seen.size, 3);
  assert.ok(seen.isNew(BANK, "a"), "the oldest expired one went first");
  await seen.record(BANK, "e", { expiresMs: NOW + 5000, nowMs: NOW + 2000 });
  assert.equal(seen.size, 2);
  assert.deepEqual(["b", "c", "d", "e"].map((id) => seen.isNew(BANK, id)), [true, true, false, false]);
  const reloaded = await SeenMessages.load(store, { capacity: 2 });
  assert.equal(reloaded.size, 2);
  assert.equal(reloaded.isNew(BANK, "e"), false);
  assert.equal(reloaded.isNew("other@gateway.example.org", "e"), true);
});
