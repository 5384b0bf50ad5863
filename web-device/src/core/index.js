// The web device's core: pure modules (WebCrypto, no DOM, no network) shared by the page
// (web-device/src/app/) and interop/js-device/open.mjs.

export * from "./errors.js";
export {
  MAX_SAFE_INTEGER, b64url, canonicalBytes, canonicalJson, codePointLength, concatBytes,
  derToP1363, equalBytes, fromB64url, fromUtf8, hex, hexToBytes, p1363ToDer, parseStrictJson, utf8,
} from "./bytes.js";
export {
  POINT_SIZE, canonicalFingerprint, checkPublicKey, displayFingerprint, fingerprint,
  generatePrekeyPair, generateSigningKeyPair, importPrekeyPair, importVerifyKey, pointOf,
  signDer, verifyDer,
} from "./keys.js";
export {
  MAX_CONTENT_BYTES, MAX_ENVELOPE_BYTES, MAX_ID, MAX_JID_LENGTH, MAX_KEY_ENTRIES, MAX_LIFETIME_MS,
  keyEntryInfo, openEnvelope, paddedLength, parseContent, parseEnvelope, signatureInput,
  signedByItsKey, unpad,
} from "./envelope.js";
export { MAX_BUNDLE_BYTES, MAX_PREKEYS_PER_BUNDLE, prekeySignatureInput, verifyBundle } from "./bundle.js";
export { MemoryStore, openIndexedDbStore } from "./storage.js";
export {
  KEYRING_KEY, Keyring, ONE_TIME_PREKEYS, RETIRED_SIGNED_PREKEY_MS, SIGNED_PREKEY_MAX_AGE_MS,
} from "./keyring.js";
export { PINS_KEY, PinStore } from "./pins.js";
export { DEFAULT_CAPACITY, SEEN_KEY, SeenMessages } from "./seen.js";
export { BLOB_CHUNK_SIZE, BLOB_HEADER_SIZE, decryptBlob, encryptBlob, encryptedBlobSize, safeFileName } from "./files.js";
export { Inbox } from "./inbox.js";
