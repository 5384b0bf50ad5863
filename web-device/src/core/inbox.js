// What a device does with a sealed message it received, decided without any network or
// timer: mirrors src/cmaas/device/inbox.py step for step. receive() takes what the stanza
// carries (the envelope text, the bare `from`, the `id`) and the time, and returns one
// outcome for the page to carry out:
//
//   duplicate   shown before: send the receipt again, show nothing (the envelope is not
//               opened: its one-time prekey is gone)
//   refused     a check failed: show only the refusal, send no receipt; after
//               AppKeyChanged the new key is kept as an offer when the message's
//               signature verifies under it
//   fetch-file  a file message opened (its one-time prekey already forgotten): download
//               the blob, then call fileFetched (or fileFailed)
//   accepted    every check passed and the message is recorded as shown: show it, send
//               its receipt, and at deleteAtMs take it from view and call deleted()

import { AppKeyChanged, EnvelopeError } from "./errors.js";
import { openEnvelope, parseEnvelope, signedByItsKey } from "./envelope.js";
import { decryptBlob } from "./files.js";
import { fromB64url } from "./bytes.js";
import { displayFingerprint } from "./keys.js";

/**
 * @typedef {object} ReceivedMessage a message that passed every check
 * @property {string} messageId
 * @property {string} appJid
 * @property {string} appFingerprint canonical, of the app key pinned for `appJid`
 * @property {import("./envelope.js").Header} header
 * @property {object} content `{kind: "text", text}`, `{kind: "otp", code, purpose}` or
 *   `{kind: "file", name, media_type, size, url, file_key, sha256}`
 * @property {number} expiresMs the header's expiry (an OTP is never shown after it)
 * @property {number | null} deleteAtMs when auto-delete takes it from view
 * @property {boolean} newlyPinned this message pinned the app's key (first contact)
 * @property {Uint8Array | null} file a file message's checked plaintext
 */

/**
 * @typedef {{kind: "duplicate", messageId: string, appJid: string}} Duplicate
 * @typedef {{kind: "refused", messageId: string, sender: string, error: EnvelopeError | Error,
 *   offeredKey: Uint8Array | null, offeredFingerprint: string | null}} Refused
 *   `offeredKey` (and its canonical fingerprint) only after AppKeyChanged, when the
 *   message's signature verifies under the new key
 * @typedef {{kind: "fetch-file", messageId: string, appJid: string, content: object,
 *   opened: import("./envelope.js").OpenedMessage, firstContact: boolean}} FetchFile
 * @typedef {{kind: "accepted", message: ReceivedMessage}} Accepted
 * @typedef {Duplicate | Refused | FetchFile | Accepted} Outcome
 */

/** Decides, for each message a device receives, what it shows and acknowledges. */
export class Inbox {
  /**
   * @param {{keyring: import("./keyring.js").Keyring, pins: import("./pins.js").PinStore,
   *   seen: import("./seen.js").SeenMessages, gateway: string, requirePinned?: boolean}} parts
   *   the device's keys, pinned app keys and shown messages; the gateway's component
   *   domain (the only domain apps are on); whether an app must be pinned beforehand
   */
  constructor({ keyring, pins, seen, gateway, requirePinned = false }) {
    this.keyring = keyring;
    this.pins = pins;
    this.seen = seen;
    this.gateway = gateway;
    this.requirePinned = requirePinned;
  }

  /**
   * Decide what to do with one message.
   * @param {string} envelopeText the text of the stanza's `<envelope/>`
   * @param {{sender: string, messageId: string, nowMs: number}} stanza the bare `from`,
   *   the stanza `id`, the current time (Unix ms)
   * @returns {Promise<Outcome>}
   * @throws {DeviceStateError} the store refused a write (nothing is then shown)
   */
  async receive(envelopeText, { sender, messageId, nowMs }) {
    if (!this.seen.isNew(sender, messageId)) return { kind: "duplicate", messageId, appJid: sender };
    const pinned = this.pins.get(sender);
    let opened;
    try {
      opened = await openEnvelope(envelopeText, {
        jid: this.keyring.jid,
        deviceId: this.keyring.deviceId,
        keyPairFor: (keyId) => this.keyring.keyPairFor(keyId),
        nowMs,
        pinnedAppKey: pinned,
        requirePinned: this.requirePinned,
        senderJid: sender,
        stanzaId: messageId,
        appDomain: this.gateway,
      });
    } catch (error) {
      if (!(error instanceof EnvelopeError)) throw error;
      const offered = error instanceof AppKeyChanged ? await this.#offer(sender, envelopeText, nowMs) : null;
      return refused(messageId, sender, error, offered);
    }
    // Forward secrecy: a page that closes once the message is shown must not keep the
    // key that opens it.
    await this.keyring.consumeOneTimePrekey(opened.keyId);
    if (opened.content.kind === "file")
      return { kind: "fetch-file", messageId, appJid: sender, content: opened.content, opened, firstContact: pinned === null };
    return this.#accept(messageId, sender, opened, pinned === null, null, nowMs);
  }

  /**
   * Check and decrypt a file message's downloaded blob; accept the message when it passes.
   * @param {FetchFile} fetch the outcome receive() returned
   * @param {Uint8Array} blob the bytes downloaded from `fetch.content.url`
   * @param {{nowMs: number}} time
   * @returns {Promise<Accepted | Refused>} refused (TamperedBlob, MalformedEncoding) when
   *   the blob fails a check; the app key then stays unpinned and the message unrecorded
   * @throws {DeviceStateError} the store refused a write
   */
  async fileFetched(fetch, blob, { nowMs }) {
    let file;
    try {
      file = await decryptBlob(blob, fromB64url(fetch.content.file_key, "content.file_key", { size: 32 }), {
        expectedSize: fetch.content.size,
        expectedSha256: fetch.content.sha256,
      });
    } catch (error) {
      if (error instanceof EnvelopeError) return this.fileFailed(fetch, error);
      throw error;
    }
    return this.#accept(fetch.messageId, fetch.appJid, fetch.opened, fetch.firstContact, file, nowMs);
  }

  /**
   * Refuse a file message whose blob could not be downloaded or failed its checks.
   * @param {FetchFile} fetch
   * @param {Error} error why (e.g. FileUnavailable)
   * @returns {Refused}
   */
  fileFailed(fetch, error) {
    return refused(fetch.messageId, fetch.appJid, error, null);
  }

  /**
   * Note that a message's auto-delete time came and it left the view. It stays recorded
   * as shown, so a resend is still a duplicate.
   * @param {string} appJid
   * @param {string} messageId
   * @param {{nowMs: number}} time
   * @returns {Promise<void>}
   * @throws {DeviceStateError} the store refused the write
   */
  async deleted(appJid, messageId, { nowMs }) {
    await this.seen.deleted(appJid, messageId, nowMs);
  }

  /**
   * Accept the key an app offered (after AppKeyChanged), once the user has checked its
   * full fingerprint with the app. Later messages signed with it open.
   * @param {string} appJid
   * @param {string} fingerprintText all 64 hex digits (spaces and case ignored)
   * @param {{nowMs: number}} time
   * @returns {Promise<import("./pins.js").Pin>}
   * @throws {DeviceStateError} no key offered, or not its fingerprint; nothing changed
   */
  async trust(appJid, fingerprintText, { nowMs }) {
    return this.pins.accept(appJid, fingerprintText, nowMs);
  }

  async #accept(messageId, appJid, opened, firstContact, file, nowMs) {
    const newlyPinned = firstContact && (await this.pins.pin(appJid, opened.appKey, nowMs));
    const { header } = opened;
    const deleteAtMs = header.auto_delete_s ? nowMs + header.auto_delete_s * 1000 : null;
    await this.seen.record(appJid, messageId, { expiresMs: header.expires_ms, deleteAtMs, nowMs });
    return {
      kind: "accepted",
      message: {
        messageId, appJid, appFingerprint: opened.appFingerprint, header, content: opened.content,
        expiresMs: header.expires_ms, deleteAtMs, newlyPinned, file,
      },
    };
  }

  // Anyone can put a key in an envelope; only one that signed it may be offered to the
  // user, or a forger could queue its key for acceptance.
  async #offer(appJid, envelopeText, nowMs) {
    let envelope;
    try {
      envelope = await parseEnvelope(envelopeText);
    } catch {
      return null;
    }
    if (!(await signedByItsKey(envelope))) return null;
    return this.pins.offer(appJid, envelope.appKey, nowMs);
  }
}

function refused(messageId, sender, error, offer) {
  return {
    kind: "refused", messageId, sender, error,
    offeredKey: offer ? offer.publicKey : null,
    offeredFingerprint: offer ? offer.fingerprint : null,
    offeredDisplayFingerprint: offer ? displayFingerprint(offer.fingerprint) : null,
  };
}
