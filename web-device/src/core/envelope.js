// Opening a CMaaS envelope v1 on the device side: docs/protocol.md sections 9 to 11, in
// the order of section 11 (the first failure ends the open with its error class, those of
// section 12). The same module runs in the page and in interop/js-device/open.mjs.

import { Aes256Gcm, CipherSuite, DhkemP256HkdfSha256, HkdfSha256 } from "@hpke/core";
import {
  MAX_SAFE_INTEGER, canonicalBytes, canonicalJson, equalBytes, fromUtf8, parseStrictJson,
} from "./bytes.js";
import { Fields } from "./fields.js";
import {
  AppKeyChanged, BadSignature, Expired, ForeignApp, MalformedEncoding, TamperedHeader, TamperedKeyEntry, TamperedPayload, UnknownKeyId, UnpinnedAppKey,
  WrongDevice, WrongRecipient,
} from "./errors.js";
import { POINT_SIZE, fingerprint, importVerifyKey, verifyDer } from "./keys.js";

/** The largest envelope text, in UTF-8 bytes (section 9). */
export const MAX_ENVELOPE_BYTES = 256 * 1024;
/** At most this many key entries (section 9). */
export const MAX_KEY_ENTRIES = 64;
/** The largest device id or key id (section 5). */
export const MAX_ID = 2 ** 31 - 1;
/** The largest content JSON, in UTF-8 bytes (section 10.1). */
export const MAX_CONTENT_BYTES = 65535;
/** The longest a message may live (section 9.1). */
export const MAX_LIFETIME_MS = 30 * 24 * 3600 * 1000;
/** The longest bare JID, in characters (section 5). */
export const MAX_JID_LENGTH = 3071;

const MAX_AUTO_DELETE_S = 365 * 24 * 3600;
const TAG_SIZE = 16;
const MAX_PAYLOAD_SIZE = paddedLength(MAX_CONTENT_BYTES) + TAG_SIZE;
const MAX_SIGNATURE_SIZE = 72;
const SEALED_SIZE = 113;
const NONCE_SIZE = 12;
const ENC_SIZE = 65;
const MESSAGE_ID = /^[A-Za-z0-9._:~-]{1,128}$/;
const KINDS = ["text", "otp", "file"];
const PRIORITIES = ["high", "normal", "bulk"];
const ENVELOPE_FIELDS = ["v", "header", "app_key", "keys", "nonce", "payload", "signature"];
const HEADER_FIELDS = ["v", "message_id", "app", "to", "created_ms", "expires_ms", "kind", "priority"];
const FILE_FIELDS = ["kind", "name", "media_type", "size", "url", "file_key", "sha256"];
const CONTENT_FIELDS = { text: ["kind", "text"], otp: ["kind", "code", "purpose"], file: FILE_FIELDS };

const SUITE = new CipherSuite({
  kem: new DhkemP256HkdfSha256(),
  kdf: new HkdfSha256(),
  aead: new Aes256Gcm(),
});

/**
 * Padmé padded length of `n` content bytes (section 10.2).
 * @param {number} n
 * @returns {number}
 */
export function paddedLength(n) {
  const target = Math.max(n + 1, 256);
  const exponent = Math.floor(Math.log2(target));
  const lowBits = exponent - (Math.floor(Math.log2(exponent)) + 1);
  const step = 2 ** lowBits;
  return Math.ceil(target / step) * step;
}

/**
 * Remove the padding of section 10.2.
 * @param {Uint8Array} padded
 * @returns {Uint8Array}
 * @throws {MalformedEncoding} the padding is not exactly what a sender makes
 */
export function unpad(padded) {
  let end = padded.length;
  while (end > 0 && padded[end - 1] === 0) end--;
  if (end === 0 || padded[end - 1] !== 0x80)
    throw new MalformedEncoding("the plaintext padding is malformed");
  if (paddedLength(end - 1) !== padded.length)
    throw new MalformedEncoding("the plaintext is padded to the wrong length");
  return padded.slice(0, end - 1);
}

/**
 * @typedef {object} Header the signed header (section 9.1), as on the wire
 * @property {1} v
 * @property {string} message_id
 * @property {string} app
 * @property {string} to
 * @property {number} created_ms
 * @property {number} expires_ms
 * @property {"text" | "otp" | "file"} kind
 * @property {"high" | "normal" | "bulk"} priority
 * @property {number} [auto_delete_s]
 */

/**
 * @typedef {object} ParsedEnvelope an envelope that passed steps 1 and 2
 * @property {object} value the parsed JSON value (what the signature input is computed from)
 * @property {Header} header
 * @property {Uint8Array} appKey the app's 65-byte public key
 * @property {string} appFingerprint its canonical fingerprint
 * @property {{deviceId: number, keyId: number, sealed: Uint8Array}[]} keys
 * @property {Uint8Array} nonce
 * @property {Uint8Array} payload
 * @property {Uint8Array} signature DER
 */

/**
 * Steps 1 and 2 of section 11: size, strict JSON, every field present, known, typed and
 * within bounds, the fingerprint matching the key, no device twice.
 * @param {string | Uint8Array} text the envelope text (or its UTF-8 bytes)
 * @returns {Promise<ParsedEnvelope>}
 * @throws {OversizeInput} over 256 KiB, over 64 entries, or a field over its size
 * @throws {MalformedEncoding} anything else not in the v1 format
 */
export async function parseEnvelope(text) {
  const value = parseStrictJson(text, { maxBytes: MAX_ENVELOPE_BYTES, what: "envelope" });
  const fields = new Fields(value, "envelope", ENVELOPE_FIELDS);
  fields.integer("v", 1, 1);
  const app = new Fields(value.app_key, "envelope.app_key", ["public_key", "fingerprint"]);
  const appKey = app.binary("public_key", { size: POINT_SIZE });
  const appFingerprint = await fingerprint(appKey);
  if (app.text("fingerprint", 64) !== appFingerprint)
    throw new MalformedEncoding("envelope.app_key.fingerprint does not match the key");
  const keys = fields.array("keys", MAX_KEY_ENTRIES, 1).map((item) => {
    const entry = new Fields(item, "envelope.keys[]", ["device_id", "key_id", "sealed"]);
    return {
      deviceId: entry.integer("device_id", 1, MAX_ID),
      keyId: entry.integer("key_id", 1, MAX_ID),
      sealed: entry.binary("sealed", { size: SEALED_SIZE }),
    };
  });
  if (new Set(keys.map((entry) => entry.deviceId)).size !== keys.length)
    throw new MalformedEncoding("envelope.keys lists a device twice");
  const header = parseHeader(value.header);
  return {
    value,
    header,
    appKey,
    appFingerprint,
    keys,
    nonce: fields.binary("nonce", { size: NONCE_SIZE }),
    payload: fields.binary("payload", { maxSize: MAX_PAYLOAD_SIZE }),
    signature: fields.binary("signature", { maxSize: MAX_SIGNATURE_SIZE }),
  };
}

function parseHeader(value) {
  const fields = new Fields(value, "header", HEADER_FIELDS, ["auto_delete_s"]);
  fields.integer("v", 1, 1);
  fields.choice("kind", KINDS);
  fields.choice("priority", PRIORITIES);
  const messageId = fields.text("message_id", 128);
  const jids = { app: fields.text("app", MAX_JID_LENGTH), to: fields.text("to", MAX_JID_LENGTH) };
  const created = fields.integer("created_ms", 0, MAX_SAFE_INTEGER);
  const expires = fields.integer("expires_ms", 0, MAX_SAFE_INTEGER);
  if (fields.has("auto_delete_s")) fields.integer("auto_delete_s", 1, MAX_AUTO_DELETE_S);
  if (!MESSAGE_ID.test(messageId))
    throw new MalformedEncoding("header.message_id must be 1 to 128 of A-Z a-z 0-9 . _ : ~ -");
  for (const [name, jid] of Object.entries(jids))
    if (!jid.includes("@") || jid.includes("/"))
      throw new MalformedEncoding(`header.${name} must be a bare JID`);
  if (!(created < expires))
    throw new MalformedEncoding("header.expires_ms must come after header.created_ms");
  if (expires - created > MAX_LIFETIME_MS)
    throw new MalformedEncoding("an envelope may live at most 30 days");
  return value;
}

/**
 * The bytes the app signs (section 10.5): the canonical JSON of the parsed envelope
 * without its `signature`, recomputed from the parsed values.
 * @param {ParsedEnvelope} envelope
 * @returns {Uint8Array}
 */
export function signatureInput(envelope) {
  const { signature: _signature, ...signed } = envelope.value;
  return canonicalBytes(signed);
}

/**
 * Whether the envelope's signature verifies under the key it carries (steps 3 and 5
 * alone): what makes a changed key worth offering to the user.
 * @param {ParsedEnvelope} envelope
 * @returns {Promise<boolean>}
 */
export async function signedByItsKey(envelope) {
  try {
    const key = await importVerifyKey(envelope.appKey);
    return await verifyDer(key, envelope.signature, signatureInput(envelope));
  } catch {
    return false;
  }
}

/**
 * The HPKE `info` of a key entry (section 10.4).
 * @param {Header} header
 * @param {number} deviceId
 * @param {number} keyId
 * @returns {Uint8Array}
 */
export function keyEntryInfo(header, deviceId, keyId) {
  return canonicalBytes({
    v: 1, message_id: header.message_id, app: header.app, to: header.to,
    device_id: deviceId, key_id: keyId,
  });
}

/**
 * @typedef {object} OpenContext who the device is and what it trusts
 * @property {string} jid the device's own bare JID (as the server bound it)
 * @property {number} deviceId
 * @property {(keyId: number) => (CryptoKeyPair | null | undefined | Promise<CryptoKeyPair | null | undefined>)} keyPairFor
 *   the private prekey (whole key pair) by key id: current SPK, unused OPK or retired SPK
 * @property {number} nowMs the current time, Unix milliseconds
 * @property {Uint8Array | null} [pinnedAppKey] the key pinned for the sending app JID
 * @property {boolean} [requirePinned] refuse an app with no pinned key
 * @property {string | null} [senderJid] the stanza's bare `from` (checked when given)
 * @property {string | null} [stanzaId] the stanza's `id` (checked when given)
 * @property {string | null} [appDomain] the gateway's component domain (step 6a, when given)
 */

/**
 * @typedef {object} OpenedMessage a message that passed every check
 * @property {Header} header
 * @property {object} content the content object (section 10.1), as parsed
 * @property {string} contentJson its canonical JSON
 * @property {Uint8Array} appKey
 * @property {string} appFingerprint canonical
 * @property {number} keyId the prekey the entry was sealed to
 */

/**
 * Open an envelope for this device: the 13 steps of section 11, in order. Deleting a used
 * one-time prekey, pinning and the seen-record are the caller's (see inbox.js).
 * @param {string | Uint8Array} text the envelope text
 * @param {OpenContext} context
 * @returns {Promise<OpenedMessage>}
 * @throws {OversizeInput | MalformedEncoding | InvalidPoint} steps 1-3, 13
 * @throws {AppKeyChanged | UnpinnedAppKey} step 4
 * @throws {BadSignature} step 5
 * @throws {TamperedHeader} step 6
 * @throws {ForeignApp} step 6a
 * @throws {WrongRecipient} step 7
 * @throws {WrongDevice} step 8
 * @throws {Expired} step 9
 * @throws {UnknownKeyId} step 10
 * @throws {TamperedKeyEntry} step 11
 * @throws {TamperedPayload} step 12
 */
export async function openEnvelope(text, context) {
  const envelope = await parseEnvelope(text);
  const { header } = envelope;
  const verifyKey = await importVerifyKey(envelope.appKey); // step 3
  const pinned = context.pinnedAppKey ?? null;
  if (pinned === null) {
    if (context.requirePinned) throw new UnpinnedAppKey(`no signing key is pinned for ${header.app}`);
  } else if (!equalBytes(pinned, envelope.appKey)) {
    throw new AppKeyChanged(
      `${header.app} now signs with key ${envelope.appFingerprint}, not the pinned ${await fingerprint(pinned)}`,
    );
  }
  if (!(await verifyDer(verifyKey, envelope.signature, signatureInput(envelope))))
    throw new BadSignature("the app signature does not verify");
  if (context.senderJid != null && context.senderJid !== header.app)
    throw new TamperedHeader(`signed by ${header.app} but sent by ${context.senderJid}`);
  if (context.stanzaId != null && context.stanzaId !== header.message_id)
    throw new TamperedHeader("the stanza id is not the signed message id");
  if (context.appDomain != null && header.app.slice(header.app.lastIndexOf("@") + 1) !== context.appDomain)
    throw new ForeignApp(`${header.app} is not an app of the gateway ${context.appDomain}`);
  if (header.to !== context.jid) throw new WrongRecipient("the envelope is addressed to another account");
  const entry = envelope.keys.find((item) => item.deviceId === context.deviceId);
  if (!entry) throw new WrongDevice(`the envelope has no key for device ${context.deviceId}`);
  if (!(context.nowMs < header.expires_ms)) throw new Expired(`message ${header.message_id} expired`);
  const keyPair = await context.keyPairFor(entry.keyId);
  if (!keyPair)
    throw new UnknownKeyId(`this device holds no prekey ${entry.keyId}: never issued, or already used`);
  const contentKey = await openContentKey(
    entry.sealed, keyPair, keyEntryInfo(header, context.deviceId, entry.keyId));
  const padded = await openPayload(contentKey, envelope.nonce, envelope.payload, canonicalBytes(header));
  const content = parseContent(unpad(padded));
  if (content.kind !== header.kind)
    throw new MalformedEncoding(`the content is ${content.kind}, the header ${header.kind}`);
  return {
    header,
    content,
    contentJson: canonicalJson(content),
    appKey: envelope.appKey,
    appFingerprint: envelope.appFingerprint,
    keyId: entry.keyId,
  };
}

// Step 11. The WHOLE key pair goes to @hpke/core: from a non-extractable private key
// alone it derives the public point without the sign of y, and half of all keys fail.
async function openContentKey(sealed, keyPair, info) {
  let contentKey;
  try {
    contentKey = new Uint8Array(await SUITE.open(
      { recipientKey: keyPair, enc: sealed.slice(0, ENC_SIZE), info }, sealed.slice(ENC_SIZE)));
  } catch {
    throw new TamperedKeyEntry("the key entry does not open with the prekey it names");
  }
  if (contentKey.length !== 32) throw new TamperedKeyEntry("the key entry holds no 32-byte key");
  return contentKey;
}

// Step 12. A payload shorter than the tag is refused by some engines as an argument
// error rather than an authentication failure: both are TamperedPayload.
async function openPayload(contentKey, nonce, payload, associatedData) {
  try {
    const key = await globalThis.crypto.subtle.importKey("raw", contentKey, "AES-GCM", false, ["decrypt"]);
    return new Uint8Array(await globalThis.crypto.subtle.decrypt(
      { name: "AES-GCM", iv: nonce, additionalData: associatedData, tagLength: 128 }, key, payload));
  } catch {
    throw new TamperedPayload("the payload does not decrypt");
  }
}

/**
 * Parse and check a content object (section 10.1, step 13).
 * @param {Uint8Array | string} data the content JSON
 * @returns {object} `{kind: "text", text}`, `{kind: "otp", code, purpose}` or
 *   `{kind: "file", name, media_type, size, url, file_key, sha256}` (wire names)
 * @throws {OversizeInput} over 65,535 bytes
 * @throws {MalformedEncoding} not a valid content object
 */
export function parseContent(data) {
  const text = data instanceof Uint8Array ? fromUtf8(data, "content") : data;
  const value = parseStrictJson(text, { maxBytes: MAX_CONTENT_BYTES, what: "content" });
  const anyField = [...new Set(Object.values(CONTENT_FIELDS).flat())];
  const kind = new Fields(value, "content", ["kind"], anyField).choice("kind", KINDS);
  const fields = new Fields(value, "content", CONTENT_FIELDS[kind]);
  if (kind === "text") {
    fields.text("text", 16000);
  } else if (kind === "otp") {
    if (!/^[0-9A-Za-z]{4,12}$/.test(fields.text("code", 12)))
      throw new MalformedEncoding("content.code must be 4 to 12 ASCII letters or digits");
    fields.text("purpose", 200);
  } else {
    if (!/^[0-9a-f]{64}$/.test(fields.text("sha256", 64, 64)))
      throw new MalformedEncoding("content.sha256 must be 64 lowercase hex digits");
    const url = fields.text("url", 2048);
    if (!url.startsWith("https://") && !url.startsWith("http://"))
      throw new MalformedEncoding("content.url must be an http(s) URL");
    fields.text("name", 255);
    fields.text("media_type", 255);
    fields.integer("size", 0, 2 ** 40);
    fields.binary("file_key", { size: 32 });
  }
  return value;
}
