// Device bundles (docs/protocol.md section 6): the prekey signature input, and the full
// check a gateway or sender makes of a bundle text. A device publishes its own bundle
// (keyring.js) and never needs to check another's; the check is here for the protocol's
// bundle vectors and so a device can test what it is about to publish.

import { b64url, canonicalBytes, parseStrictJson } from "./bytes.js";
import { BadSignature, MalformedEncoding } from "./errors.js";
import { Fields } from "./fields.js";
import { POINT_SIZE, importVerifyKey, verifyDer } from "./keys.js";

/** The largest bundle text, in UTF-8 bytes. */
export const MAX_BUNDLE_BYTES = 64 * 1024;
/** The most one-time prekeys a bundle carries. */
export const MAX_PREKEYS_PER_BUNDLE = 100;
const MAX_ID = 2 ** 31 - 1;
const MAX_JID_LENGTH = 3071;

/**
 * The bytes the identity key signs for one prekey: the canonical JSON of six fields.
 * @param {{jid: string, deviceId: number, type: "spk" | "opk", keyId: number, publicKey: Uint8Array}} prekey
 * @returns {Uint8Array}
 */
export function prekeySignatureInput({ jid, deviceId, type, keyId, publicKey }) {
  return canonicalBytes({ v: 1, jid, device_id: deviceId, type, key_id: keyId, public_key: b64url(publicKey) });
}

/**
 * Parse and verify a bundle text as the gateway does on publication (section 6,
 * "Verifying a bundle").
 * @param {string | Uint8Array} text
 * @param {string | null} expectedJid the account it must be for
 * @returns {Promise<{jid: string, deviceId: number, identityKey: Uint8Array,
 *   signedPrekey: {keyId: number, publicKey: Uint8Array}, oneTimePrekeys: {keyId: number, publicKey: Uint8Array}[]}>}
 * @throws {OversizeInput} over 65,536 bytes, 8 suites or 100 one-time prekeys
 * @throws {MalformedEncoding} not a well-formed bundle, for another account, or key ids twice
 * @throws {InvalidPoint} a 65-byte key that is not on P-256
 * @throws {BadSignature} a prekey signature that does not verify
 */
export async function verifyBundle(text, expectedJid) {
  const fields = new Fields(
    parseStrictJson(text, { maxBytes: MAX_BUNDLE_BYTES, what: "bundle" }),
    "bundle",
    ["v", "jid", "device_id", "identity_key", "suites", "signed_prekey", "one_time_prekeys"],
  );
  fields.integer("v", 1, 1);
  const jid = fields.text("jid", MAX_JID_LENGTH);
  if (expectedJid != null && jid !== expectedJid)
    throw new MalformedEncoding(`the bundle is for ${jid}, not ${expectedJid}`);
  const suites = fields.array("suites", 8, 1);
  for (const suite of suites)
    if (typeof suite !== "string" || suite.length < 1 || [...suite].length > 32)
      throw new MalformedEncoding("bundle.suites must be short strings");
  if (!suites.includes("p256") || new Set(suites).size !== suites.length)
    throw new MalformedEncoding("bundle.suites must list p256 once");
  const deviceId = fields.integer("device_id", 1, MAX_ID);
  const identityKey = fields.binary("identity_key", { size: POINT_SIZE });
  const prekey = (value, what) => {
    const entry = new Fields(value, what, ["key_id", "public_key", "signature"]);
    return {
      keyId: entry.integer("key_id", 1, MAX_ID),
      publicKey: entry.binary("public_key", { size: POINT_SIZE }),
      signature: entry.binary("signature", { maxSize: 72 }),
    };
  };
  const signedPrekey = prekey(fields.value.signed_prekey, "bundle.signed_prekey");
  const oneTimePrekeys = fields.array("one_time_prekeys", MAX_PREKEYS_PER_BUNDLE)
    .map((item) => prekey(item, "bundle.one_time_prekeys[]"));
  const identity = await importVerifyKey(identityKey);
  const ids = [signedPrekey.keyId, ...oneTimePrekeys.map((p) => p.keyId)];
  if (new Set(ids).size !== ids.length) throw new MalformedEncoding("key ids must be unique within a device");
  const roles = [["spk", signedPrekey], ...oneTimePrekeys.map((p) => ["opk", p])];
  for (const [type, { keyId, publicKey, signature }] of roles) {
    await importVerifyKey(publicKey);
    const input = prekeySignatureInput({ jid, deviceId, type, keyId, publicKey });
    if (!(await verifyDer(identity, signature, input)))
      throw new BadSignature(`the signature on ${type} ${keyId} does not verify`);
  }
  const strip = ({ keyId, publicKey }) => ({ keyId, publicKey });
  return { jid, deviceId, identityKey, signedPrekey: strip(signedPrekey), oneTimePrekeys: oneTimePrekeys.map(strip) };
}
