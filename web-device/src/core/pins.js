// App keys pinned on first use (mirrors src/cmaas/device/pins.py): the first message
// from an app pins its key; a later message signed with another key is refused
// (AppKeyChanged) and its key kept as an offer, which only the user's explicit decision
// (accept, with the fingerprint they checked with the app) turns into the pin.

import { DeviceStateError } from "./errors.js";
import { canonicalFingerprint, checkPublicKey, fingerprint } from "./keys.js";

/** The store key the pins live under. */
export const PINS_KEY = "pins";

/**
 * @typedef {object} Pin
 * @property {Uint8Array} publicKey the app's 65-byte signing key
 * @property {string} fingerprint canonical (64 lowercase hex digits)
 * @property {number} firstSeenMs when it was pinned (or offered)
 */

/** Pinned app keys and offered new keys, by app JID, persisted in a Store. */
export class PinStore {
  #store;
  #pins;
  #offers;

  constructor(store, pins, offers) {
    this.#store = store;
    this.#pins = pins;
    this.#offers = offers;
  }

  /**
   * The pins kept in `store` (none yet is an empty PinStore).
   * @param {import("./storage.js").Store} store
   * @returns {Promise<PinStore>}
   * @throws {DeviceStateError} what is stored is damaged
   */
  static async load(store) {
    const stored = await store.get(PINS_KEY);
    if (stored === undefined) return new PinStore(store, new Map(), new Map());
    if (!(stored?.pins instanceof Map) || !(stored.offers instanceof Map))
      throw new DeviceStateError("the stored pins are damaged; clearing them forgets every pinned app key");
    return new PinStore(store, stored.pins, stored.offers);
  }

  /**
   * @param {string} appJid
   * @returns {Uint8Array | null} the key pinned for `appJid`
   */
  get(appJid) {
    return this.#pins.get(appJid)?.publicKey ?? null;
  }

  /**
   * Pin `publicKey` for `appJid` unless a key is pinned already.
   * @param {string} appJid
   * @param {Uint8Array} publicKey
   * @param {number} nowMs
   * @returns {Promise<boolean>} true when newly pinned
   * @throws {InvalidPoint | MalformedEncoding} not a P-256 point
   * @throws {DeviceStateError} the store refused the write
   */
  async pin(appJid, publicKey, nowMs) {
    const pin = await newPin(publicKey, nowMs);
    if (this.#pins.has(appJid)) return false;
    this.#pins.set(appJid, pin);
    await this.#save();
    return true;
  }

  /**
   * Remember the key an app now signs with, for the user to accept or ignore.
   * @param {string} appJid
   * @param {Uint8Array} publicKey
   * @param {number} nowMs
   * @returns {Promise<Pin>} the offer
   * @throws {InvalidPoint | MalformedEncoding} not a P-256 point
   * @throws {DeviceStateError} the store refused the write
   */
  async offer(appJid, publicKey, nowMs) {
    const known = this.#offers.get(appJid);
    const pin = await newPin(publicKey, nowMs);
    if (known && known.fingerprint === pin.fingerprint) return clonePin(known);
    this.#offers.set(appJid, pin);
    await this.#save();
    return clonePin(pin);
  }

  /**
   * @returns {[string, Pin][]} the offered keys by app JID, sorted
   */
  offers() {
    return sorted(this.#offers);
  }

  /**
   * @returns {[string, Pin][]} the pinned keys by app JID, sorted
   */
  items() {
    return sorted(this.#pins);
  }

  /**
   * Pin the key `appJid` offered, once the user has checked its fingerprint.
   * @param {string} appJid
   * @param {string} fingerprintText as the user confirmed it: all 64 hex digits (spaces
   *   and case ignored; never a prefix)
   * @param {number} nowMs
   * @returns {Promise<Pin>} the new pin
   * @throws {DeviceStateError} no key is offered for `appJid`, the fingerprint is not the
   *   offered key's, or the store refused the write
   */
  async accept(appJid, fingerprintText, nowMs) {
    const offered = this.#offers.get(appJid);
    if (!offered) throw new DeviceStateError(`${appJid} has offered no new key`);
    const given = canonicalFingerprint(fingerprintText);
    if (given !== offered.fingerprint)
      throw new DeviceStateError(
        `${given} is not the fingerprint of the key ${appJid} offered (${offered.fingerprint}); nothing changed`);
    const pin = { ...offered, firstSeenMs: nowMs };
    this.#pins.set(appJid, pin);
    this.#offers.delete(appJid);
    await this.#save();
    return clonePin(pin);
  }

  /**
   * Drop the pin of `appJid`; its next message pins again.
   * @param {string} appJid
   * @returns {Promise<boolean>} whether a pin was there
   * @throws {DeviceStateError} the store refused the write
   */
  async forget(appJid) {
    if (!this.#pins.delete(appJid)) return false;
    await this.#save();
    return true;
  }

  async #save() {
    try {
      await this.#store.put(PINS_KEY, { pins: this.#pins, offers: this.#offers });
    } catch (error) {
      throw error instanceof DeviceStateError ? error : new DeviceStateError(`cannot store the pins: ${error}`);
    }
  }
}

async function newPin(publicKey, nowMs) {
  await checkPublicKey(publicKey);
  return { publicKey: publicKey.slice(), fingerprint: await fingerprint(publicKey), firstSeenMs: nowMs };
}

function clonePin(pin) {
  return { ...pin, publicKey: pin.publicKey.slice() };
}

function sorted(table) {
  return [...table.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([appJid, pin]) => [appJid, clonePin(pin)]);
}
