// A test-only app side: seals envelopes exactly as docs/protocol.md section 10 says, so
// the inbox tests can make any message (and any defect) without the Python client.

import { Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, HkdfSha256 } from "@hpke/core";
import {
  b64url, canonicalBytes, canonicalJson, concatBytes, fingerprint, keyEntryInfo, paddedLength, pointOf,
  signDer, utf8, verifyBundle,
} from "../src/core/index.js";

const suite = new CipherSuite({ kem: new DhkemP256HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

/** A new app signing key. */
export async function makeApp() {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
  const point = await pointOf(pair.publicKey);
  return { pair, point, fingerprint: await fingerprint(point) };
}

/** What a sender takes from a keyring's published bundle: its first OPK, else its SPK. */
export async function recipientOf(keyring, { useOneTimePrekey = true } = {}) {
  const bundle = await verifyBundle(keyring.bundle().text, keyring.jid);
  const prekey = (useOneTimePrekey && bundle.oneTimePrekeys[0]) || bundle.signedPrekey;
  return { deviceId: bundle.deviceId, keyId: prekey.keyId, point: prekey.publicKey };
}

/** Seal `content` for `recipients`; returns the canonical envelope text. */
export async function seal({
  app, appJid = "bank@gateway.example.org", to = "alice@example.org", messageId = "m-1",
  content = { kind: "text", text: "hello" }, recipients, createdMs = Date.now(),
  expiresMs = createdMs + 60_000, autoDeleteS, priority = "normal",
}) {
  const header = { v: 1, message_id: messageId, app: appJid, to, created_ms: createdMs, expires_ms: expiresMs, kind: content.kind, priority };
  if (autoDeleteS !== undefined) header.auto_delete_s = autoDeleteS;
  const contentBytes = canonicalBytes(content);
  const padded = new Uint8Array(paddedLength(contentBytes.length));
  padded.set(contentBytes);
  padded[contentBytes.length] = 0x80;
  const contentKey = crypto.getRandomValues(new Uint8Array(32));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const aes = await crypto.subtle.importKey("raw", contentKey, "AES-GCM", false, ["encrypt"]);
  const payload = new Uint8Array(await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: canonicalBytes(header) }, aes, padded));
  const keys = [];
  for (const { deviceId, keyId, point } of recipients) {
    const recipientPublicKey = await crypto.subtle.importKey("raw", point, { name: "ECDH", namedCurve: "P-256" }, true, []);
    const sealed = await suite.seal({ recipientPublicKey, info: keyEntryInfo(header, deviceId, keyId) }, contentKey);
    keys.push({ device_id: deviceId, key_id: keyId, sealed: b64url(concatBytes(new Uint8Array(sealed.enc), new Uint8Array(sealed.ct))) });
  }
  const envelope = {
    v: 1, header, app_key: { public_key: b64url(app.point), fingerprint: app.fingerprint }, keys,
    nonce: b64url(nonce), payload: b64url(payload),
  };
  envelope.signature = b64url(await signDer(app.pair.privateKey, canonicalBytes(envelope)));
  return canonicalJson(envelope);
}

export { utf8 };
