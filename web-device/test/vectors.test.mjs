// Every vector of docs/protocol-vectors.json through the web device's core (protocol
// section 15): keys, padding, signature encodings, devices and their bundles, the
// deterministic parts of sealing, every open vector, every negative vector.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import {
  ENVELOPE_ERRORS, EnvelopeError, canonicalBytes, canonicalJson, derToP1363, fingerprint, fromB64url, hex,
  hexToBytes, importPrekeyPair, importVerifyKey, keyEntryInfo, openEnvelope, p1363ToDer, paddedLength,
  parseEnvelope, parseStrictJson, prekeySignatureInput, signatureInput, unpad, utf8, verifyBundle, verifyDer,
} from "../src/core/index.js";
import { CipherSuite, DhkemP256HkdfSha256, HkdfSha256, Aes256Gcm } from "@hpke/core";

const VECTORS = JSON.parse(readFileSync(new URL("../../docs/protocol-vectors.json", import.meta.url), "utf8"));
const suite = new CipherSuite({ kem: new DhkemP256HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

async function vectorDevice(device) {
  const keys = VECTORS.devices.find((d) => d.name === device.name);
  const pairs = new Map();
  for (const prekey of keys.prekeys)
    if (device.prekey_ids.includes(prekey.key_id))
      pairs.set(prekey.key_id, await importPrekeyPair(hexToBytes(prekey.private_hex), hexToBytes(prekey.public_hex)));
  return { jid: device.jid, deviceId: device.device_id, keyPairFor: (keyId) => pairs.get(keyId) };
}

async function openVector(vector) {
  const { context } = vector;
  const input = vector.envelope_text ?? hexToBytes(vector.envelope_hex);
  return openEnvelope(input, {
    ...(await vectorDevice(vector.device)),
    nowMs: context.now_ms,
    pinnedAppKey: context.pinned_app_key_hex ? hexToBytes(context.pinned_app_key_hex) : null,
    requirePinned: context.require_pinned,
    senderJid: context.sender_jid,
    stanzaId: context.stanza_id,
    appDomain: context.app_domain,
  });
}

test("keys: points, base64url and fingerprints", async () => {
  for (const key of VECTORS.keys) {
    const point = hexToBytes(key.public_hex);
    assert.equal(hex(fromB64url(key.public_b64url, "key", { size: 65 })), key.public_hex);
    assert.equal(await fingerprint(point), key.fingerprint);
    await importVerifyKey(point);
  }
});

test("padding: Padmé lengths and the padded example", () => {
  for (const { n, padded_length: expected } of VECTORS.padding.lengths) assert.equal(paddedLength(n), expected, `n = ${n}`);
  const { plaintext_hex: plaintext, padded_hex: padded } = VECTORS.padding.example;
  assert.equal(hex(unpad(hexToBytes(padded))), plaintext);
});

test("signature encodings: DER <-> P1363, both verify", async () => {
  for (const vector of VECTORS.signature_encoding) {
    const der = hexToBytes(vector.der_hex);
    assert.equal(hex(derToP1363(der)), vector.p1363_hex, vector.name);
    assert.equal(hex(p1363ToDer(hexToBytes(vector.p1363_hex))), vector.der_hex, vector.name);
    const key = await importVerifyKey(hexToBytes(vector.public_hex));
    assert.ok(await verifyDer(key, der, utf8(vector.message_text)), vector.name);
  }
  assert.equal(VECTORS.signature_encoding.length, 3);
});

test("devices: fingerprints, prekey signature inputs and signatures, the published bundle", async () => {
  for (const device of VECTORS.devices) {
    const identity = hexToBytes(device.identity_public_hex);
    assert.equal(await fingerprint(identity), device.identity_fingerprint);
    const verifyKey = await importVerifyKey(identity);
    for (const prekey of device.prekeys) {
      const input = prekeySignatureInput({
        jid: device.jid, deviceId: device.device_id, type: prekey.type, keyId: prekey.key_id,
        publicKey: hexToBytes(prekey.public_hex),
      });
      assert.equal(new TextDecoder().decode(input), prekey.signature_input.text);
      assert.equal(hex(input), prekey.signature_input.hex);
      assert.ok(await verifyDer(verifyKey, hexToBytes(prekey.signature_der_hex), input));
      assert.equal(hex(p1363ToDer(hexToBytes(prekey.signature_p1363_hex))), prekey.signature_der_hex);
      await importPrekeyPair(hexToBytes(prekey.private_hex), hexToBytes(prekey.public_hex));
    }
    const bundle = await verifyBundle(device.bundle_text, device.jid);
    assert.equal(bundle.deviceId, device.device_id);
    assert.equal(canonicalJson(parseStrictJson(device.bundle_text)), device.bundle_text);
  }
  assert.equal(VECTORS.devices.length, 4);
});

test("seal: every deterministic part, and the recorded key entries open to the content key", async () => {
  for (const vector of VECTORS.seal) {
    const { inputs } = vector;
    assert.equal(canonicalJson(inputs.content), vector.content_json.text, vector.name);
    const padded = hexToBytes(vector.padded_content.hex);
    assert.equal(padded.length, vector.padded_content.length);
    assert.equal(hex(unpad(padded)), vector.content_json.hex);
    const envelope = await parseEnvelope(vector.envelope_text);
    assert.equal(canonicalJson(envelope.header), vector.header.text, vector.name);
    // AES-256-GCM under the fixed content key and nonce is deterministic.
    const contentKey = hexToBytes(inputs.content_key_hex);
    const aes = await crypto.subtle.importKey("raw", contentKey, "AES-GCM", false, ["encrypt"]);
    const payload = new Uint8Array(await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: hexToBytes(inputs.nonce_hex), additionalData: canonicalBytes(envelope.header) }, aes, padded));
    assert.equal(hex(payload), vector.payload.hex, vector.name);
    assert.equal(hex(envelope.payload), vector.payload.hex);
    for (const [index, entry] of vector.key_entries.entries()) {
      const info = keyEntryInfo(envelope.header, entry.device_id, entry.key_id);
      assert.equal(new TextDecoder().decode(info), entry.info.text, vector.name);
      const pair = await importPrekeyPair(hexToBytes(entry.recipient_private_hex), hexToBytes(entry.recipient_public_hex));
      const sealed = envelope.keys[index].sealed;
      const opened = await suite.open({ recipientKey: pair, enc: sealed.slice(0, 65), info }, sealed.slice(65));
      assert.equal(hex(new Uint8Array(opened)), inputs.content_key_hex, vector.name);
    }
    assert.equal(new TextDecoder().decode(signatureInput(envelope)), vector.signature_input.text, vector.name);
    assert.equal(hex(envelope.signature), vector.signature.der_hex);
    const appKey = await importVerifyKey(hexToBytes(inputs.app_public_hex));
    assert.ok(await verifyDer(appKey, envelope.signature, signatureInput(envelope)), vector.name);
    assert.equal(canonicalJson(envelope.value), vector.envelope_text, vector.name);
  }
  assert.equal(VECTORS.seal.length, 4);
});

test("open: every open vector opens to the exact content, header, key id and app key", async () => {
  for (const vector of VECTORS.open) {
    const opened = await openVector(vector);
    const { expected } = vector;
    assert.equal(opened.contentJson, expected.content_json, vector.name);
    assert.equal(canonicalJson(opened.header), expected.header, vector.name);
    assert.equal(opened.keyId, expected.key_id, vector.name);
    assert.equal(hex(opened.appKey), expected.app_public_hex, vector.name);
  }
  assert.ok(VECTORS.open.length >= 9);
});

test("negative: every envelope vector fails with exactly the named class", async () => {
  const envelopes = VECTORS.negative.filter((vector) => vector.input === "envelope");
  for (const vector of envelopes) {
    await assert.rejects(openVector(vector), (error) => {
      assert.ok(error instanceof EnvelopeError, `${vector.name}: ${error}`);
      assert.equal(error.name, vector.expected_error, `${vector.name}: ${error.message}`);
      for (const ancestor of vector.error_ancestors)
        assert.ok(error instanceof ENVELOPE_ERRORS[ancestor], `${vector.name} is a ${ancestor}`);
      return true;
    }, vector.name);
  }
  assert.ok(envelopes.length >= 65);
  assert.ok(envelopes.some((vector) => vector.envelope_hex));
});

test("negative: every bundle vector fails with exactly the named class", async () => {
  const bundles = VECTORS.negative.filter((vector) => vector.input === "bundle");
  for (const vector of bundles) {
    await assert.rejects(verifyBundle(vector.bundle_text, vector.expected_jid), (error) => {
      assert.equal(error.name, vector.expected_error, `${vector.name}: ${error.message}`);
      return true;
    }, vector.name);
  }
  assert.ok(bundles.length >= 14);
});
