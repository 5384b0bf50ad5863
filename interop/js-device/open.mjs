// Node driver over the web device's opener, web-device/src/core/envelope.js: the same
// module the page runs, written from docs/protocol.md (sections 2, 3, 4, 9, 10 and 11) on
// WebCrypto and @hpke/core, sharing no code with the Python library. The tests feed it
// the protocol vectors and fresh envelopes sealed in Python, and compare what it opens
// or refuses.
//
// stdin:  {"cases": [{"envelope_text", "device": {"jid", "device_id",
//          "prekeys": {"<key_id>": {"private_hex", "public_hex"}}},
//          "context": {"now_ms", "pinned_app_key_hex", "require_pinned", "sender_jid",
//          "stanza_id", "app_domain"}}]}
// stdout: {"results": [{"content_json": "..."} | {"error": "<class>", "detail": "..."}]}

import {
  EnvelopeError,
  hexToBytes,
  importPrekeyPair,
  openEnvelope,
} from "../../web-device/src/core/index.js";

async function open({ envelope_text: text, device, context }) {
  const keyPairs = new Map();
  for (const [keyId, prekey] of Object.entries(device.prekeys))
    keyPairs.set(Number(keyId), await importPrekeyPair(hexToBytes(prekey.private_hex), hexToBytes(prekey.public_hex)));
  const opened = await openEnvelope(text, {
    jid: device.jid,
    deviceId: device.device_id,
    keyPairFor: (keyId) => keyPairs.get(keyId),
    nowMs: context.now_ms,
    pinnedAppKey: context.pinned_app_key_hex ? hexToBytes(context.pinned_app_key_hex) : null,
    requirePinned: Boolean(context.require_pinned),
    senderJid: context.sender_jid ?? null,
    stanzaId: context.stanza_id ?? null,
    appDomain: context.app_domain ?? null,
  });
  return { content_json: opened.contentJson };
}

let data = "";
for await (const chunk of process.stdin) data += chunk;
const results = [];
for (const testCase of JSON.parse(data).cases) {
  try {
    results.push(await open(testCase));
  } catch (error) {
    if (error instanceof EnvelopeError) results.push({ error: error.name, detail: error.message });
    else results.push({ error: "Crash", detail: String(error?.stack ?? error) });
  }
}
process.stdout.write(JSON.stringify({ results }));
