// CMB1 blobs (protocol 10.1.1): every size round-trips; every kind of damage is refused.

import assert from "node:assert/strict";
import { test } from "node:test";

import { BLOB_HEADER_SIZE, decryptBlob, encryptBlob, encryptedBlobSize, safeFileName } from "../src/core/index.js";

const key = crypto.getRandomValues(new Uint8Array(32));
const CHUNK = 1024;

async function roundTrip(size) {
  const plaintext = crypto.getRandomValues(new Uint8Array(Math.min(size, 65536)));
  const file = new Uint8Array(size);
  for (let at = 0; at < size; at += plaintext.length) file.set(plaintext.subarray(0, size - at), at);
  const sealed = await encryptBlob(file, key, { chunkSize: CHUNK });
  assert.equal(sealed.blob.length, encryptedBlobSize(size, CHUNK));
  const opened = await decryptBlob(sealed.blob, key, { expectedSize: sealed.size, expectedSha256: sealed.sha256 });
  assert.deepEqual(opened, file);
  return sealed;
}

test("sizes 0, 1, one chunk, one chunk and a byte, 1 MiB with the default chunk round-trip", async () => {
  for (const size of [0, 1, CHUNK, CHUNK + 1, 3 * CHUNK]) await roundTrip(size);
  const mebibyte = crypto.getRandomValues(new Uint8Array(65536));
  const file = new Uint8Array(1 << 20);
  for (let at = 0; at < file.length; at += mebibyte.length) file.set(mebibyte, at);
  const sealed = await encryptBlob(file, key);
  assert.deepEqual(await decryptBlob(sealed.blob, key, { expectedSize: file.length, expectedSha256: sealed.sha256 }), file);
});

test("damage of every kind is refused", async () => {
  const { blob, size, sha256 } = await roundTrip(3 * CHUNK);
  const expected = { expectedSize: size, expectedSha256: sha256 };
  const record = CHUNK + 16;
  const flipped = blob.slice();
  flipped[BLOB_HEADER_SIZE + 5] ^= 1;
  const swapped = blob.slice();
  swapped.set(blob.subarray(BLOB_HEADER_SIZE + record, BLOB_HEADER_SIZE + 2 * record), BLOB_HEADER_SIZE);
  swapped.set(blob.subarray(BLOB_HEADER_SIZE, BLOB_HEADER_SIZE + record), BLOB_HEADER_SIZE + record);
  const headerChanged = blob.slice();
  headerChanged[5] ^= 1;
  const cases = {
    "a flipped byte": [flipped, expected],
    "records swapped": [swapped, expected],
    "cut at a record boundary": [blob.slice(0, BLOB_HEADER_SIZE + 2 * record), expected],
    "cut inside the tag": [blob.slice(0, BLOB_HEADER_SIZE + 2 * record + 10), expected],
    "extended": [new Uint8Array([...blob, 0]), expected],
    "another nonce prefix": [headerChanged, expected],
    "another size": [blob, { ...expected, expectedSize: size + 1 }],
    "a smaller size": [blob, { ...expected, expectedSize: size - 1 }],
    "another digest": [blob, { ...expected, expectedSha256: "0".repeat(64) }],
  };
  for (const [what, [input, promise]] of Object.entries(cases))
    await assert.rejects(decryptBlob(input, key, promise), { name: "TamperedBlob" }, what);
  await assert.rejects(decryptBlob(blob, crypto.getRandomValues(new Uint8Array(32)), expected), { name: "TamperedBlob" });
  const notCmb = blob.slice();
  notCmb[0] = 0x58;
  await assert.rejects(decryptBlob(notCmb, key, expected), { name: "MalformedEncoding" });
  const tinyChunk = blob.slice();
  tinyChunk.set([0, 0, 0, 16], 12);
  await assert.rejects(decryptBlob(tinyChunk, key, expected), { name: "MalformedEncoding" });
  await assert.rejects(decryptBlob(blob.slice(0, 10), key, expected), { name: "MalformedEncoding" });
  await assert.rejects(decryptBlob(blob, key.slice(1), expected), { name: "MalformedEncoding" });
});

test("a sender's file name is made safe to offer", () => {
  assert.equal(safeFileName("../../etc/passwd"), "etc_passwd");
  assert.equal(safeFileName(".hidden"), "hidden");
  assert.equal(safeFileName("résumé 2026.pdf"), "r_sum_2026.pdf");
  assert.equal(safeFileName("..."), "file");
  assert.equal(safeFileName("a".repeat(300)).length, 100);
});
