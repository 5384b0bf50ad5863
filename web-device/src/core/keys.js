// P-256 keys in WebCrypto (docs/protocol.md section 3): 65-byte points, fingerprints,
// ECDSA with strict DER, and key pairs for HPKE recipients.

import { b64url, derToP1363, hex, p1363ToDer } from "./bytes.js";
import { InvalidPoint, MalformedEncoding } from "./errors.js";

/** Bytes of an uncompressed P-256 point. */
export const POINT_SIZE = 65;

const ECDSA = { name: "ECDSA", namedCurve: "P-256" };
const ECDH = { name: "ECDH", namedCurve: "P-256" };
const SIGNING = { name: "ECDSA", hash: "SHA-256" };

function subtle() {
  return globalThis.crypto.subtle;
}

/**
 * The 65-byte uncompressed point of a public CryptoKey.
 * @param {CryptoKey} publicKey
 * @returns {Promise<Uint8Array>}
 */
export async function pointOf(publicKey) {
  return new Uint8Array(await subtle().exportKey("raw", publicKey));
}

/**
 * Lowercase hex SHA-256 of a 65-byte point: the canonical fingerprint (section 3).
 * @param {Uint8Array} point
 * @returns {Promise<string>} 64 hex digits
 */
export async function fingerprint(point) {
  return hex(new Uint8Array(await subtle().digest("SHA-256", point)));
}

/**
 * A canonical fingerprint for people: 8 groups of 8 hex digits, separated by spaces.
 * @param {string} canonicalFingerprint 64 lowercase hex digits
 * @returns {string}
 */
export function displayFingerprint(canonicalFingerprint) {
  return canonicalFingerprint.match(/.{1,8}/g).join(" ");
}

/**
 * The canonical form of a fingerprint a person typed or read out: whitespace removed,
 * lowercased. Compare the result with all 64 characters; never accept a prefix.
 * @param {string} text
 * @returns {string}
 */
export function canonicalFingerprint(text) {
  return String(text).replace(/\s+/g, "").toLowerCase();
}

/**
 * A P-256 ECDSA verification key from a 65-byte point.
 * @param {Uint8Array} point
 * @returns {Promise<CryptoKey>}
 * @throws {MalformedEncoding} not 65 bytes
 * @throws {InvalidPoint} not an uncompressed point on P-256
 */
export async function importVerifyKey(point) {
  checkPoint(point);
  try {
    return await subtle().importKey("raw", point, ECDSA, true, ["verify"]);
  } catch {
    throw new InvalidPoint("the key is not a point on P-256");
  }
}

/**
 * Check that 65 bytes are an uncompressed point on P-256.
 * @param {Uint8Array} point
 * @returns {Promise<void>}
 * @throws {MalformedEncoding} not 65 bytes
 * @throws {InvalidPoint} not an uncompressed point on P-256
 */
export async function checkPublicKey(point) {
  await importVerifyKey(point);
}

function checkPoint(point) {
  if (!(point instanceof Uint8Array) || point.length !== POINT_SIZE)
    throw new MalformedEncoding(`a public key is ${POINT_SIZE} bytes`);
  // WebCrypto would accept a compressed point of another length; this one must be 0x04.
  if (point[0] !== 0x04) throw new InvalidPoint("the key is not an uncompressed point");
}

/**
 * Verify a strict DER ECDSA(SHA-256) signature (section 4).
 * @param {CryptoKey} verifyKey from importVerifyKey
 * @param {Uint8Array} der
 * @param {Uint8Array} message the signed bytes (not hashed beforehand)
 * @returns {Promise<boolean>} whether it verifies
 * @throws {BadSignature} the signature is not strict DER with r, s in [1, n - 1]
 */
export async function verifyDer(verifyKey, der, message) {
  return subtle().verify(SIGNING, verifyKey, derToP1363(der), message);
}

/**
 * Sign with ECDSA(SHA-256); strict DER out (section 4). WebCrypto draws a random nonce.
 * @param {CryptoKey} signingKey a private ECDSA P-256 key
 * @param {Uint8Array} message
 * @returns {Promise<Uint8Array>} DER, 8 to 72 bytes
 */
export async function signDer(signingKey, message) {
  return p1363ToDer(new Uint8Array(await subtle().sign(SIGNING, signingKey, message)));
}

/**
 * A new ECDSA P-256 key pair, private half non-extractable (the identity key).
 * @returns {Promise<CryptoKeyPair>}
 */
export function generateSigningKeyPair() {
  return subtle().generateKey(ECDSA, false, ["sign", "verify"]);
}

/**
 * A new ECDH P-256 key pair, private half non-extractable (a prekey). Keep the whole
 * pair: HPKE needs the public point with the private key (section 10.4).
 * @returns {Promise<CryptoKeyPair>}
 */
export function generatePrekeyPair() {
  return subtle().generateKey(ECDH, false, ["deriveBits"]);
}

/**
 * An ECDH key pair from a known private scalar and its point (test vectors, the interop
 * driver): never for keys of a real device, whose private halves never leave WebCrypto.
 * @param {Uint8Array} scalar 32 bytes
 * @param {Uint8Array} point the 65-byte public point
 * @returns {Promise<CryptoKeyPair>}
 * @throws {MalformedEncoding} wrong sizes
 * @throws {InvalidPoint} not a key pair on P-256
 */
export async function importPrekeyPair(scalar, point) {
  checkPoint(point);
  if (scalar.length !== 32) throw new MalformedEncoding("a private scalar is 32 bytes");
  const jwk = {
    kty: "EC", crv: "P-256", x: b64url(point.subarray(1, 33)), y: b64url(point.subarray(33)),
  };
  try {
    return {
      privateKey: await subtle().importKey("jwk", { ...jwk, d: b64url(scalar) }, ECDH, false, ["deriveBits"]),
      publicKey: await subtle().importKey("raw", point, ECDH, true, []),
    };
  } catch {
    throw new InvalidPoint("not a P-256 key pair");
  }
}
