// A web-core device driven over stdin/stdout, for tests/interop/test_web_core.py: it
// makes a device (keyring in memory, non-extractable keys), prints its bundle, then
// answers one JSON line per message with the inbox's outcome. The process must live
// across the exchange: its private keys exist nowhere else.
//
// argv:   <jid> <gateway domain> [one-time prekeys]
// stdout: {"device_id", "fingerprint", "bundle"} first, then one line per input line
// stdin:  {"envelope", "sender", "message_id", "now_ms", "blob_hex"?} per message
// answer: {"kind", "content_json"?, "file_hex"?, "error"?, "offered_fingerprint"?,
//          "delete_at_ms"?, "newly_pinned"?}

import { createInterface } from "node:readline";

import { Inbox, Keyring, MemoryStore, PinStore, SeenMessages, canonicalJson, hex, hexToBytes } from "../src/core/index.js";

const [jid, gateway, count = "100"] = process.argv.slice(2);
const store = new MemoryStore();
const keyring = await Keyring.create(store, { jid, oneTimePrekeys: Number(count) });
const inbox = new Inbox({ keyring, pins: await PinStore.load(store), seen: await SeenMessages.load(store), gateway });
const say = (value) => process.stdout.write(`${JSON.stringify(value)}\n`);
say({ device_id: keyring.deviceId, fingerprint: keyring.displayFingerprint, bundle: keyring.bundleText() });

function answer(outcome) {
  if (outcome.kind === "refused")
    return { kind: "refused", error: outcome.error.name, detail: outcome.error.message, offered_fingerprint: outcome.offeredFingerprint };
  if (outcome.kind !== "accepted") return { kind: outcome.kind };
  const { message } = outcome;
  return {
    kind: "accepted",
    content_json: canonicalJson(message.content),
    file_hex: message.file ? hex(message.file) : null,
    delete_at_ms: message.deleteAtMs,
    newly_pinned: message.newlyPinned,
  };
}

for await (const line of createInterface({ input: process.stdin })) {
  const request = JSON.parse(line);
  const stanza = { sender: request.sender, messageId: request.message_id, nowMs: request.now_ms };
  let outcome = await inbox.receive(request.envelope, stanza);
  if (outcome.kind === "fetch-file")
    outcome = request.blob_hex == null
      ? { kind: "fetch-file" }
      : await inbox.fileFetched(outcome, hexToBytes(request.blob_hex), { nowMs: request.now_ms });
  say(answer(outcome));
}
