// Encrypted file blobs, CMB1 (docs/protocol.md 10.1.1; src/cmaas/envelope/blob.py): a
// 16-byte header "CMB1" || nonce prefix (8) || chunk size (u32 BE), then AES-256-GCM
// records of chunk size + 16 bytes, record i under nonce prefix || u32be(i) with
// associated data header || final (1 for the last record, else 0).

import { concatBytes, hex } from "./bytes.js";
import { MalformedEncoding, TamperedBlob } from "./errors.js";

/** The reference's chunk size. */
export const BLOB_CHUNK_SIZE = 64 * 1024;
/** Bytes of a blob's header. */
export const BLOB_HEADER_SIZE = 16;
const TAG_SIZE = 16;
const MIN_CHUNK = 1024;
const MAX_CHUNK = 1024 * 1024;
const MAGIC = [0x43, 0x4d, 0x42, 0x31]; // "CMB1"

/**
 * How many bytes the blob of a `size`-byte file takes.
 * @param {number} size
 * @param {number} [chunkSize]
 * @returns {number}
 */
export function encryptedBlobSize(size, chunkSize = BLOB_CHUNK_SIZE) {
  const records = Math.max(1, Math.ceil(size / chunkSize));
  return BLOB_HEADER_SIZE + size + records * TAG_SIZE;
}

function nonceOf(prefix, index) {
  const nonce = new Uint8Array(12);
  nonce.set(prefix);
  new DataView(nonce.buffer).setUint32(8, index);
  return nonce;
}

function importFileKey(fileKey, usage) {
  if (!(fileKey instanceof Uint8Array) || fileKey.length !== 32)
    throw new MalformedEncoding("a file key is 32 bytes");
  return globalThis.crypto.subtle.importKey("raw", fileKey, "AES-GCM", false, [usage]);
}

/**
 * Decrypt and check a whole blob against the envelope's `size` and `sha256`.
 * @param {Uint8Array} blob the downloaded bytes
 * @param {Uint8Array} fileKey the content's 32-byte `file_key`
 * @param {{expectedSize: number, expectedSha256: string}} expected from the file content
 * @returns {Promise<Uint8Array>} the plaintext file, only once every check passed
 * @throws {MalformedEncoding} not a CMB1 blob (magic, chunk size) or a key not 32 bytes
 * @throws {TamperedBlob} a record fails, the blob is cut or extended, or the size or
 *   SHA-256 differs from the envelope's
 */
export async function decryptBlob(blob, fileKey, { expectedSize, expectedSha256 }) {
  if (blob.length < BLOB_HEADER_SIZE || MAGIC.some((byte, i) => blob[i] !== byte))
    throw new MalformedEncoding("not a CMB1 blob");
  const header = blob.slice(0, BLOB_HEADER_SIZE);
  const prefix = header.slice(4, 12);
  const chunkSize = new DataView(header.buffer).getUint32(12);
  if (chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK)
    throw new MalformedEncoding("the blob's chunk size is out of bounds");
  const key = await importFileKey(fileKey, "decrypt");
  // Anything beyond the promised size is refused before it is decrypted.
  if (blob.length > encryptedBlobSize(expectedSize, chunkSize))
    throw new TamperedBlob("the blob holds more than the envelope's size");
  const recordSize = chunkSize + TAG_SIZE;
  const chunks = [];
  let size = 0;
  for (let at = BLOB_HEADER_SIZE, index = 0; ; index++) {
    const record = blob.subarray(at, at + recordSize);
    if (record.length < TAG_SIZE) throw new TamperedBlob("the blob is truncated");
    at += record.length;
    const final = at >= blob.length;
    let chunk;
    try {
      chunk = new Uint8Array(await globalThis.crypto.subtle.decrypt(
        { name: "AES-GCM", iv: nonceOf(prefix, index), additionalData: concatBytes(header, Uint8Array.of(final ? 1 : 0)) },
        key, record));
    } catch {
      throw new TamperedBlob(`blob record ${index} does not authenticate`);
    }
    size += chunk.length;
    if (size > expectedSize) throw new TamperedBlob("the blob holds more than the envelope's size");
    chunks.push(chunk);
    if (final) break;
  }
  const plaintext = concatBytes(...chunks);
  const digest = hex(new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", plaintext)));
  if (size !== expectedSize || digest !== expectedSha256)
    throw new TamperedBlob("the file's size or SHA-256 differs from the envelope's");
  return plaintext;
}

/**
 * Encrypt a file into a CMB1 blob (what an app does; for tests and tools).
 * @param {Uint8Array} plaintext
 * @param {Uint8Array} fileKey 32 bytes
 * @param {{chunkSize?: number}} [options]
 * @returns {Promise<{blob: Uint8Array, size: number, sha256: string}>}
 * @throws {MalformedEncoding} a key that is not 32 bytes
 * @throws {RangeError} a chunk size out of bounds
 */
export async function encryptBlob(plaintext, fileKey, { chunkSize = BLOB_CHUNK_SIZE } = {}) {
  if (chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK) throw new RangeError("a chunk is 1 KiB to 1 MiB");
  const key = await importFileKey(fileKey, "encrypt");
  const header = new Uint8Array(BLOB_HEADER_SIZE);
  header.set(MAGIC);
  header.set(globalThis.crypto.getRandomValues(new Uint8Array(8)), 4);
  new DataView(header.buffer).setUint32(12, chunkSize);
  const prefix = header.slice(4, 12);
  const records = Math.max(1, Math.ceil(plaintext.length / chunkSize));
  const parts = [header];
  for (let index = 0; index < records; index++) {
    const final = index === records - 1;
    parts.push(new Uint8Array(await globalThis.crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonceOf(prefix, index), additionalData: concatBytes(header, Uint8Array.of(final ? 1 : 0)) },
      key, plaintext.subarray(index * chunkSize, (index + 1) * chunkSize))));
  }
  const sha256 = hex(new Uint8Array(await globalThis.crypto.subtle.digest("SHA-256", plaintext)));
  return { blob: concatBytes(...parts), size: plaintext.length, sha256 };
}

/**
 * A file name safe to offer for download: the sender's name is untrusted display text.
 * @param {string} name the content's `name`
 * @returns {string} only A-Z a-z 0-9 . _ -, no leading dot, at most 100 characters
 */
export function safeFileName(name) {
  return String(name).replace(/[^A-Za-z0-9._-]+/g, "_").replace(/^[._]+/, "").slice(0, 100) || "file";
}
