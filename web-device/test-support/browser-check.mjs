// Run in a real browser (see browser-check.html): keys in IndexedDB survive a reopen as
// non-extractable CryptoKeyPairs, the store lists and deletes keys, and 40 fresh prekeys
// each open an envelope sealed to them (the whole-key-pair trap of protocol 10.4).
// Writes "ok ..." or "FAIL ..." into the title and #out.

import {
  Inbox, Keyring, PinStore, SeenMessages, openIndexedDbStore,
} from "../src/core/index.js";
import { makeApp, recipientOf, seal } from "./sealer.mjs";

const out = (text) => {
  document.title = text;
  document.getElementById("out").textContent = text;
};

try {
  const name = `check-${crypto.getRandomValues(new Uint32Array(1))[0]}`;
  const store = await openIndexedDbStore(name);
  const made = await Keyring.create(store, { jid: "alice@example.org", oneTimePrekeys: 40 });
  const keyring = await Keyring.load(await openIndexedDbStore(name));
  if (keyring.deviceId !== made.deviceId) throw new Error("the device changed on reopen");
  const stored = await store.get("keyring");
  let exported = 0;
  for (const key of [stored.identity.privateKey, keyring.keyPairFor(2).privateKey])
    await crypto.subtle.exportKey("pkcs8", key).then(() => { exported += 1; }, () => {});
  if (exported) throw new Error("a private key was exportable");
  const inbox = new Inbox({
    keyring, pins: await PinStore.load(store), seen: await SeenMessages.load(store), gateway: "gateway.example.org",
  });
  const app = await makeApp();
  let opened = 0;
  const failures = [];
  for (let i = 0; i < 40; i++) {
    const text = await seal({ app, messageId: `m-${i}`, recipients: [await recipientOf(keyring)] });
    const outcome = await inbox.receive(text, { sender: "bank@gateway.example.org", messageId: `m-${i}`, nowMs: Date.now() });
    if (outcome.kind === "accepted") opened += 1;
    else failures.push(outcome.error?.name ?? outcome.kind);
  }
  const spkOnly = await seal({ app, messageId: "spk", recipients: [await recipientOf(keyring, { useOneTimePrekey: false })] });
  const spk = await inbox.receive(spkOnly, { sender: "bank@gateway.example.org", messageId: "spk", nowMs: Date.now() });
  const again = await Keyring.load(await openIndexedDbStore(name));
  const keys = (await store.keys("")).join(",");
  await store.delete("seen");
  const afterDelete = (await store.keys("s")).join(",");
  const good = opened === 40 && spk.kind === "accepted" && again.oneTimeKeyIds.length === 0 &&
    keys === "keyring,pins,seen" && afterDelete === "";
  out(`${good ? "ok" : "FAIL"} opened ${opened}/40 spk ${spk.kind} left ${again.oneTimeKeyIds.length} ` +
      `keys ${keys} then ${afterDelete || "-"} ${failures.join(",")}`.trim());
} catch (error) {
  out(`FAIL ${error?.name}: ${error?.message}`);
}
