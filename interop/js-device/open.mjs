// An independent device-side implementation of CMaaS envelope v1 opening, written from
// docs/protocol.md (sections 2, 3, 4, 9, 10 and 11) on Node's WebCrypto and @hpke/core.
// It shares no code with the Python library: the tests feed it the protocol vectors and
// fresh envelopes sealed in Python, and compare what it opens or refuses.
//
// stdin:  {"cases": [{"envelope_text", "device": {"jid", "device_id",
//          "prekeys": {"<key_id>": {"private_hex", "public_hex"}}},
//          "context": {"now_ms", "pinned_app_key_hex", "require_pinned", "sender_jid",
//          "stanza_id", "app_domain"}}]}
// stdout: {"results": [{"content_json": "..."} | {"error": "<class>", "detail": "..."}]}

import { webcrypto as crypto } from "node:crypto";
import { CipherSuite, DhkemP256HkdfSha256, HkdfSha256, Aes256Gcm } from "@hpke/core";

class Refused extends Error {
  constructor(kind, detail) { super(detail); this.kind = kind; }
}
const refuse = (kind, detail) => { throw new Refused(kind, detail); };

// 2.1 base64url without padding, canonical.
function fromB64url(text, what) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1)
    refuse("MalformedEncoding", `${what} is not base64url`);
  const bytes = Buffer.from(text, "base64url");
  if (bytes.toString("base64url") !== text) refuse("MalformedEncoding", `${what} not canonical`);
  return new Uint8Array(bytes);
}
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");
const hex = (bytes) => Buffer.from(bytes).toString("hex");
const fromHex = (text) => new Uint8Array(Buffer.from(text, "hex"));

// 2.2 canonical JSON: sorted keys, no whitespace, UTF-8.
function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  if (typeof value === "number" && !Number.isSafeInteger(value))
    refuse("MalformedEncoding", "only integers up to 2^53 - 1");
  return JSON.stringify(value);
}
const utf8 = (text) => new TextEncoder().encode(text);

// 4: DER ECDSA-Sig-Value -> WebCrypto's r || s (strict DER only).
function derToP1363(der) {
  const fail = () => refuse("BadSignature", "the signature is not strict DER");
  if (der.length < 8 || der[0] !== 0x30 || der[1] !== der.length - 2) fail();
  let at = 2;
  const part = () => {
    if (der[at] !== 0x02) fail();
    const length = der[at + 1];
    const body = der.slice(at + 2, at + 2 + length);
    if (length === 0 || body.length !== length || body[0] & 0x80) fail();
    if (length > 1 && body[0] === 0 && !(body[1] & 0x80)) fail();
    at += 2 + length;
    const trimmed = body[0] === 0 ? body.slice(1) : body;
    if (trimmed.length > 32) fail();
    const out = new Uint8Array(32);
    out.set(trimmed, 32 - trimmed.length);
    return out;
  };
  const r = part(), s = part();
  if (at !== der.length) fail();
  const joined = new Uint8Array(64);
  joined.set(r); joined.set(s, 32);
  return joined;
}

// 10.2 padding: 0x80 then zeros, to Padme(max(n + 1, 256)).
function paddedLength(n) {
  const target = Math.max(n + 1, 256);
  const e = Math.floor(Math.log2(target));
  const s = Math.floor(Math.log2(e)) + 1;
  const mask = 2 ** (e - s) - 1;
  return Math.ceil(target / (mask + 1)) * (mask + 1);
}
function unpad(padded) {
  let end = padded.length;
  while (end > 0 && padded[end - 1] === 0) end--;
  if (end === 0 || padded[end - 1] !== 0x80) refuse("MalformedEncoding", "bad padding");
  if (paddedLength(end - 1) !== padded.length) refuse("MalformedEncoding", "wrong padded length");
  return padded.slice(0, end - 1);
}

// 10.1 content fields by kind.
const CONTENT_FIELDS = {
  text: ["kind", "text"],
  otp: ["kind", "code", "purpose"],
  file: ["kind", "name", "media_type", "size", "url", "file_key", "sha256"],
};

// Lengths count Unicode code points, as the spec's "characters" do.
const textOf = (value, low, high) =>
  typeof value === "string" && [...value].length >= low && [...value].length <= high;

function checkContent(content) {
  exactKeys(content, ["kind"], ["text", "code", "purpose", ...CONTENT_FIELDS.file]);
  exactKeys(content, CONTENT_FIELDS[content.kind] ?? refuse("MalformedEncoding", "kind"));
  const ok = {
    text: () => textOf(content.text, 1, 16000),
    otp: () => /^[0-9A-Za-z]{4,12}$/.test(content.code) && textOf(content.purpose, 1, 200),
    file: () =>
      textOf(content.name, 1, 255) && textOf(content.media_type, 1, 255) &&
      Number.isSafeInteger(content.size) && content.size >= 0 && content.size <= 2 ** 40 &&
      textOf(content.url, 1, 2048) && /^https?:\/\//.test(content.url) &&
      fromB64url(content.file_key, "file_key").length === 32 &&
      /^[0-9a-f]{64}$/.test(content.sha256),
  }[content.kind]();
  if (!ok) refuse("MalformedEncoding", `content of kind ${content.kind} out of bounds`);
}

function exactKeys(value, required, optional = []) {
  if (value === null || typeof value !== "object" || Array.isArray(value))
    refuse("MalformedEncoding", "an object is expected");
  const keys = Object.keys(value);
  if (!required.every((k) => keys.includes(k)) ||
      !keys.every((k) => required.includes(k) || optional.includes(k)))
    refuse("MalformedEncoding", `fields ${keys.join(",")}`);
}

// 2.3 strict parsing: JSON.parse keeps the last of duplicate keys and accepts floats, so
// a scan of the (already valid) text refuses both first.
function strictParse(text) {
  let value;
  try { value = JSON.parse(text); } catch { refuse("MalformedEncoding", "not JSON"); }
  const stack = [];
  for (let i = 0; i < text.length;) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1));
        if (top.keys.has(key)) refuse("MalformedEncoding", `duplicate key ${key}`);
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j + 1;
      continue;
    }
    if (c === "-" || (c >= "0" && c <= "9")) {
      const number = /^-?\d+(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i))[0];
      if (/[.eE]/.test(number)) refuse("MalformedEncoding", `number ${number} is not an integer`);
      i += number.length;
      continue;
    }
    if (c === "{") stack.push({ keys: new Set(), expectKey: true });
    else if (c === "[") stack.push(null);
    else if (c === "}" || c === "]") stack.pop();
    else if (c === ",") { const top = stack[stack.length - 1]; if (top) top.expectKey = true; }
    i += 1;
  }
  wellFormed(value);
  return value;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// 2.3: a string with a lone surrogate (\ud800 escaped) has no UTF-8 form.
function wellFormed(value) {
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) refuse("MalformedEncoding", "a lone surrogate");
  } else if (value !== null && typeof value === "object") {
    for (const [key, item] of Object.entries(value)) { wellFormed(key); wellFormed(item); }
  }
}

const suite = new CipherSuite({
  kem: new DhkemP256HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm(),
});

function jwkFromPoint(pointHex, privateHex) {
  const point = fromHex(pointHex);
  const jwk = { kty: "EC", crv: "P-256", x: b64url(point.slice(1, 33)), y: b64url(point.slice(33)) };
  if (privateHex) jwk.d = b64url(fromHex(privateHex));
  return jwk;
}

async function open({ envelope_text: text, device, context }) {
  // Steps 1-2: form (2.3: strict JSON, exactly the known fields).
  if (utf8(text).length > 262144) refuse("OversizeInput", "over 256 KiB");
  const envelope = strictParse(text);
  exactKeys(envelope, ["v", "header", "app_key", "keys", "nonce", "payload", "signature"]);
  const { header, app_key: appKey, keys, nonce, payload, signature, v } = envelope;
  if (v !== 1 || !Array.isArray(keys) || keys.length === 0) refuse("MalformedEncoding", "fields");
  exactKeys(header, ["v", "message_id", "app", "to", "created_ms", "expires_ms", "kind",
    "priority"], ["auto_delete_s"]);
  exactKeys(appKey, ["public_key", "fingerprint"]);
  for (const entry of keys) exactKeys(entry, ["device_id", "key_id", "sealed"]);
  if (new Set(keys.map((k) => k.device_id)).size !== keys.length)
    refuse("MalformedEncoding", "a device twice");
  const appPoint = fromB64url(appKey.public_key, "app_key.public_key");
  if (appPoint.length !== 65) refuse("MalformedEncoding", "app key size");
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", appPoint));
  if (hex(digest) !== appKey.fingerprint) refuse("MalformedEncoding", "fingerprint");
  // Step 3: a point on P-256.
  let verifyKey;
  try {
    verifyKey = await crypto.subtle.importKey(
      "raw", appPoint, { name: "ECDSA", namedCurve: "P-256" }, false, ["verify"]);
  } catch { refuse("InvalidPoint", "app key not on P-256"); }
  // Step 4: the pinned key.
  if (context.pinned_app_key_hex) {
    if (hex(appPoint) !== context.pinned_app_key_hex) refuse("AppKeyChanged", "other app key");
  } else if (context.require_pinned) refuse("UnpinnedAppKey", "no pinned key");
  // Step 5: the app's signature over the envelope without "signature".
  const signed = { ...envelope };
  delete signed.signature;
  const ok = await crypto.subtle.verify(
    { name: "ECDSA", hash: "SHA-256" }, verifyKey,
    derToP1363(fromB64url(signature, "signature")), utf8(canonical(signed)));
  if (!ok) refuse("BadSignature", "the app signature does not verify");
  // Step 6: the stanza agrees with the signed header; 6a: the app is the gateway's.
  if (context.sender_jid != null && context.sender_jid !== header.app)
    refuse("TamperedHeader", "sender");
  if (context.stanza_id != null && context.stanza_id !== header.message_id)
    refuse("TamperedHeader", "stanza id");
  if (context.app_domain != null && header.app.split("@").pop() !== context.app_domain)
    refuse("ForeignApp", "not the gateway's app");
  // Steps 7-9: recipient, device, expiry.
  if (header.to !== device.jid) refuse("WrongRecipient", "another account");
  const entry = keys.find((k) => k.device_id === device.device_id);
  if (!entry) refuse("WrongDevice", "no entry for this device");
  if (!(context.now_ms < header.expires_ms)) refuse("Expired", "expired");
  // Step 10: the named prekey.
  const prekey = device.prekeys[String(entry.key_id)];
  if (!prekey) refuse("UnknownKeyId", `no prekey ${entry.key_id}`);
  // Step 11: HPKE base mode, info bound to this message, device and key.
  const info = utf8(canonical({
    v: 1, message_id: header.message_id, app: header.app, to: header.to,
    device_id: device.device_id, key_id: entry.key_id,
  }));
  const sealed = fromB64url(entry.sealed, "sealed");
  let contentKey;
  try {
    const recipientKey = await suite.kem.importKey(
      "jwk", jwkFromPoint(prekey.public_hex, prekey.private_hex), false);
    contentKey = new Uint8Array(await suite.open(
      { recipientKey, enc: sealed.slice(0, 65), info }, sealed.slice(65)));
  } catch { refuse("TamperedKeyEntry", "the key entry does not open"); }
  if (contentKey.length !== 32) refuse("TamperedKeyEntry", "not a 32-byte key");
  // Step 12: the payload, with the canonical header as associated data.
  let padded;
  try {
    const aes = await crypto.subtle.importKey("raw", contentKey, "AES-GCM", false, ["decrypt"]);
    padded = new Uint8Array(await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: fromB64url(nonce, "nonce"), additionalData: utf8(canonical(header)) },
      aes, fromB64url(payload, "payload")));
  } catch { refuse("TamperedPayload", "the payload does not decrypt"); }
  // Step 13: the content.
  let contentText;
  try {
    contentText = new TextDecoder("utf-8", { fatal: true }).decode(unpad(padded));
  } catch (error) {
    if (error instanceof Refused) throw error;
    refuse("MalformedEncoding", "the content is not UTF-8");
  }
  const content = strictParse(contentText);
  checkContent(content);
  if (content.kind !== header.kind) refuse("MalformedEncoding", "kind differs from header");
  return { content_json: canonical(content) };
}

const input = JSON.parse(await new Promise((resolve) => {
  let data = "";
  process.stdin.on("data", (chunk) => { data += chunk; });
  process.stdin.on("end", () => resolve(data));
}));
const results = [];
for (const testCase of input.cases) {
  try {
    results.push(await open(testCase));
  } catch (error) {
    if (!(error instanceof Refused)) results.push({ error: "Crash", detail: String(error) });
    else results.push({ error: error.kind, detail: error.message });
  }
}
process.stdout.write(JSON.stringify({ results }));
