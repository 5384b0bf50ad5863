// A device's keys (docs/protocol.md sections 5 to 8), made and kept in WebCrypto: the
// identity key (ECDSA) and the prekeys (ECDH) are generated with non-extractable private
// halves and stored as whole CryptoKeyPair objects, never as bytes. Mirrors the reference
// keyring (src/cmaas/envelope/keyring.py) and its key file (src/cmaas/device/keyfile.py):
// every change is persisted before the method returns.

import { b64url, canonicalJson } from "./bytes.js";
import { prekeySignatureInput } from "./bundle.js";
import { DeviceStateError } from "./errors.js";
import { MAX_ID, MAX_LIFETIME_MS } from "./envelope.js";
import {
  displayFingerprint, fingerprint, generatePrekeyPair, generateSigningKeyPair, pointOf, signDer,
} from "./keys.js";

/** The store key the keyring lives under. */
export const KEYRING_KEY = "keyring";
/** The reference device's pool size, and the most OPKs one bundle carries. */
export const ONE_TIME_PREKEYS = 100;
/** The signed prekey is replaced once it is older than this (section 8). */
export const SIGNED_PREKEY_MAX_AGE_MS = 7 * 24 * 3600 * 1000;
/** A retired signed prekey is kept this long: the longest an envelope lives (section 8). */
export const RETIRED_SIGNED_PREKEY_MS = MAX_LIFETIME_MS;

/**
 * @typedef {object} Prekey one prekey as stored
 * @property {number} keyId
 * @property {CryptoKeyPair} keyPair ECDH P-256, private half non-extractable
 * @property {Uint8Array} point the 65-byte public point
 * @property {Uint8Array} signature strict DER, by the identity key over the six fields
 */

/** A device's keys, persisted in a Store under {@link KEYRING_KEY}. */
export class Keyring {
  #store;
  #state;

  /** Use {@link Keyring.create} or {@link Keyring.load}. */
  constructor(store, state, identityFingerprint) {
    this.#store = store;
    this.#state = state;
    /** The identity key's canonical fingerprint (64 lowercase hex digits). */
    this.fingerprint = identityFingerprint;
  }

  /**
   * Make a new device: a random device id, the identity key, signed prekey 1 and
   * `oneTimePrekeys` one-time prekeys (ids 2, 3, ...), and store it.
   * @param {import("./storage.js").Store} store
   * @param {{jid: string, nowMs?: number, oneTimePrekeys?: number}} options the account's
   *   bare JID exactly as the server bound it; the time (default now); the pool (0-100, default 100)
   * @returns {Promise<Keyring>}
   * @throws {DeviceStateError} the store holds a keyring already (never overwritten)
   * @throws {RangeError} a JID that is not 1 to 3,071 characters, or a pool out of range
   */
  static async create(store, { jid, nowMs = Date.now(), oneTimePrekeys = ONE_TIME_PREKEYS }) {
    if (typeof jid !== "string" || jid.length < 1 || [...jid].length > 3071)
      throw new RangeError("a JID is 1 to 3,071 characters");
    if (!Number.isInteger(oneTimePrekeys) || oneTimePrekeys < 0 || oneTimePrekeys > ONE_TIME_PREKEYS)
      throw new RangeError(`the pool is 0 to ${ONE_TIME_PREKEYS} one-time prekeys`);
    if ((await store.get(KEYRING_KEY)) !== undefined)
      throw new DeviceStateError("this browser profile already holds a device; a new one never replaces it");
    const identity = await generateSigningKeyPair();
    const identityPoint = await pointOf(identity.publicKey);
    const state = {
      v: 1, jid, deviceId: randomDeviceId(), identity, identityPoint,
      signedPrekey: null, retiredSignedPrekeys: [], oneTimePrekeys: [], nextKeyId: 1,
    };
    const keyring = new Keyring(store, state, await fingerprint(identityPoint));
    state.signedPrekey = { ...(await keyring.#newPrekey("spk")), createdMs: nowMs };
    for (let i = 0; i < oneTimePrekeys; i++)
      state.oneTimePrekeys.push({ ...(await keyring.#newPrekey("opk")), published: false });
    await keyring.#save();
    return keyring;
  }

  /**
   * The device kept in `store`, or null when there is none.
   * @param {import("./storage.js").Store} store
   * @returns {Promise<Keyring | null>}
   * @throws {DeviceStateError} what is stored is not a keyring of this version
   */
  static async load(store) {
    const state = await store.get(KEYRING_KEY);
    if (state === undefined) return null;
    if (state === null || typeof state !== "object" || state.v !== 1 || !state.identity?.privateKey ||
        !state.signedPrekey?.keyPair || !Array.isArray(state.oneTimePrekeys))
      throw new DeviceStateError("the stored keyring is damaged or from another version");
    return new Keyring(store, state, await fingerprint(state.identityPoint));
  }

  /** @returns {string} the account's bare JID */
  get jid() {
    return this.#state.jid;
  }

  /** @returns {number} the device id, 1 to 2^31 - 1 */
  get deviceId() {
    return this.#state.deviceId;
  }

  /** @returns {string} the identity fingerprint for people: 8 groups of 8 hex digits */
  get displayFingerprint() {
    return displayFingerprint(this.fingerprint);
  }

  /** @returns {Uint8Array} the identity key's 65-byte point */
  get identityKey() {
    return this.#state.identityPoint.slice();
  }

  /** @returns {{keyId: number, createdMs: number}} the current signed prekey */
  get signedPrekey() {
    const { keyId, createdMs } = this.#state.signedPrekey;
    return { keyId, createdMs };
  }

  /** @returns {number[]} the key ids of the retired signed prekeys still held */
  get retiredKeyIds() {
    return this.#state.retiredSignedPrekeys.map((prekey) => prekey.keyId);
  }

  /** @returns {number[]} the key ids of the one-time prekeys held (used ones are gone), ascending */
  get oneTimeKeyIds() {
    return this.#state.oneTimePrekeys.map((prekey) => prekey.keyId);
  }

  /** @returns {number} how many one-time prekeys wait to be published */
  get unpublishedCount() {
    return this.#state.oneTimePrekeys.filter((prekey) => !prekey.published).length;
  }

  /**
   * The bundle to publish (section 6): the signed prekey and up to 100 one-time prekeys
   * not yet published, oldest first, as canonical JSON.
   * @returns {{text: string, oneTimePrekeyIds: number[]}} the bundle text, and the OPK ids
   *   it carries (for {@link Keyring#markPublished} once the gateway accepted it)
   */
  bundle() {
    const state = this.#state;
    const wire = (prekey) => ({
      key_id: prekey.keyId, public_key: b64url(prekey.point), signature: b64url(prekey.signature),
    });
    const chosen = state.oneTimePrekeys.filter((prekey) => !prekey.published).slice(0, ONE_TIME_PREKEYS);
    const text = canonicalJson({
      v: 1,
      jid: state.jid,
      device_id: state.deviceId,
      identity_key: b64url(state.identityPoint),
      suites: ["p256"],
      signed_prekey: wire(state.signedPrekey),
      one_time_prekeys: chosen.map(wire),
    });
    return { text, oneTimePrekeyIds: chosen.map((prekey) => prekey.keyId) };
  }

  /**
   * The bundle text alone (see {@link Keyring#bundle}).
   * @returns {string}
   */
  bundleText() {
    return this.bundle().text;
  }

  /**
   * Mark one-time prekeys published (after the gateway completed the publication).
   * @param {Iterable<number>} keyIds ids from {@link Keyring#bundle}; unknown ids are ignored
   * @returns {Promise<void>}
   * @throws {DeviceStateError} the store refused the write
   */
  async markPublished(keyIds) {
    const ids = new Set(keyIds);
    for (const prekey of this.#state.oneTimePrekeys) if (ids.has(prekey.keyId)) prekey.published = true;
    await this.#save();
  }

  /**
   * Whether the signed prekey is older than 7 days.
   * @param {number} nowMs
   * @returns {boolean}
   */
  signedPrekeyDue(nowMs) {
    return nowMs - this.#state.signedPrekey.createdMs > SIGNED_PREKEY_MAX_AGE_MS;
  }

  /**
   * Replace the signed prekey when it is older than 7 days, keeping the old one as a
   * retired key for 30 days; drop retired keys older than that. Publish after a rotation.
   * @param {number} nowMs
   * @returns {Promise<boolean>} whether the signed prekey was replaced
   * @throws {DeviceStateError} the key ids are used up, or the store refused the write
   */
  async rotateIfDue(nowMs) {
    const state = this.#state;
    const kept = state.retiredSignedPrekeys.filter((old) => nowMs - old.retiredMs < RETIRED_SIGNED_PREKEY_MS);
    const pruned = kept.length !== state.retiredSignedPrekeys.length;
    state.retiredSignedPrekeys = kept;
    if (!this.signedPrekeyDue(nowMs)) {
      if (pruned) await this.#save();
      return false;
    }
    const { keyId, keyPair, point, signature } = state.signedPrekey;
    state.retiredSignedPrekeys.push({ keyId, keyPair, point, signature, retiredMs: nowMs });
    state.signedPrekey = { ...(await this.#newPrekey("spk")), createdMs: nowMs };
    await this.#save();
    return true;
  }

  /**
   * Generate one-time prekeys after a `prekeys-low` notice (section 13): up to
   * `capacity - remaining` (at most 100) waiting to be published. Publish afterwards.
   * @param {{remaining: number, capacity: number}} notice from the notice's attributes
   * @returns {Promise<number>} how many were generated
   * @throws {DeviceStateError} the key ids are used up, or the store refused the write
   */
  async refill({ remaining, capacity }) {
    const room = Math.min(Math.max(0, capacity - remaining), ONE_TIME_PREKEYS);
    const wanted = Math.max(0, room - this.unpublishedCount);
    for (let i = 0; i < wanted; i++)
      this.#state.oneTimePrekeys.push({ ...(await this.#newPrekey("opk")), published: false });
    if (wanted) await this.#save();
    return wanted;
  }

  /**
   * The private prekey a key entry names: the current signed prekey, an unused one-time
   * prekey or a retired signed prekey (step 10).
   * @param {number} keyId
   * @returns {CryptoKeyPair | null} the whole key pair (HPKE needs both halves), or null
   */
  keyPairFor(keyId) {
    const state = this.#state;
    const prekey = [state.signedPrekey, ...state.oneTimePrekeys, ...state.retiredSignedPrekeys]
      .find((candidate) => candidate.keyId === keyId);
    return prekey ? prekey.keyPair : null;
  }

  /**
   * Forget a one-time prekey after the first successful open of a message sealed to it,
   * and persist that before the message is shown (forward secrecy, section 8). A signed
   * prekey's id changes nothing.
   * @param {number} keyId
   * @returns {Promise<boolean>} whether a one-time prekey was forgotten
   * @throws {DeviceStateError} the store refused the write
   */
  async consumeOneTimePrekey(keyId) {
    const state = this.#state;
    const index = state.oneTimePrekeys.findIndex((prekey) => prekey.keyId === keyId);
    if (index < 0) return false;
    state.oneTimePrekeys.splice(index, 1);
    await this.#save();
    return true;
  }

  /**
   * Delete the keyring from the store (after this device was revoked). This object must
   * not be used afterwards.
   * @returns {Promise<void>}
   */
  async erase() {
    await this.#store.delete(KEYRING_KEY);
  }

  async #newPrekey(type) {
    const state = this.#state;
    const keyId = state.nextKeyId;
    if (keyId > MAX_ID) throw new DeviceStateError("this device has used up its key ids; make a new device");
    state.nextKeyId += 1;
    const keyPair = await generatePrekeyPair();
    const point = await pointOf(keyPair.publicKey);
    const signature = await signDer(state.identity.privateKey, prekeySignatureInput({
      jid: state.jid, deviceId: state.deviceId, type, keyId, publicKey: point,
    }));
    return { keyId, keyPair, point, signature };
  }

  async #save() {
    try {
      await this.#store.put(KEYRING_KEY, this.#state);
    } catch (error) {
      throw error instanceof DeviceStateError ? error : new DeviceStateError(`cannot store the keyring: ${error}`);
    }
  }
}

function randomDeviceId() {
  const draw = new Uint32Array(1);
  for (;;) {
    globalThis.crypto.getRandomValues(draw);
    const id = draw[0] & MAX_ID;
    if (id >= 1) return id;
  }
}
