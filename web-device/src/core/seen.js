// Messages already shown, by (app JID, message id), so a message the gateway delivers
// twice is shown once (mirrors src/cmaas/device/seen.py). The record holds the last
// 10,000 messages, and never forgets one before its expiry: a replay within its lifetime
// must be recognised (docs/protocol.md section 14).

import { DeviceStateError } from "./errors.js";

/** The store key the record lives under. */
export const SEEN_KEY = "seen";
/** How many messages are remembered (more while younger ones have not expired). */
export const DEFAULT_CAPACITY = 10_000;

/**
 * @typedef {object} SeenEntry
 * @property {string} appJid
 * @property {string} messageId
 * @property {number} expiresMs the envelope's expiry: kept at least until then
 * @property {number | null} deleteAtMs when auto-delete takes the message from view
 */

/** The record of shown messages, persisted in a Store (one value, written per change). */
export class SeenMessages {
  #store;
  #entries;

  constructor(store, entries, capacity) {
    this.#store = store;
    this.#entries = entries;
    /** How many messages are remembered at least. */
    this.capacity = capacity;
  }

  /**
   * The record kept in `store` (none yet is an empty record).
   * @param {import("./storage.js").Store} store
   * @param {{capacity?: number}} [options]
   * @returns {Promise<SeenMessages>}
   * @throws {DeviceStateError} what is stored is damaged
   * @throws {RangeError} a capacity below 1
   */
  static async load(store, { capacity = DEFAULT_CAPACITY } = {}) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError("capacity must be at least 1");
    const stored = await store.get(SEEN_KEY);
    const entries = new Map();
    if (stored !== undefined) {
      if (!Array.isArray(stored))
        throw new DeviceStateError("the stored record of shown messages is damaged");
      for (const entry of stored) entries.set(keyOf(entry.appJid, entry.messageId), entry);
    }
    return new SeenMessages(store, entries, capacity);
  }

  /**
   * Whether the message was not shown yet (remembers nothing: see {@link SeenMessages#record}).
   * @param {string} appJid the stanza's bare `from`
   * @param {string} messageId the stanza's `id`
   * @returns {boolean}
   */
  isNew(appJid, messageId) {
    return !this.#entries.has(keyOf(appJid, messageId));
  }

  /**
   * Remember a message as shown. A message remembered already keeps its place; only its
   * deletion time changes. The oldest entries past their expiry are forgotten beyond capacity.
   * @param {string} appJid
   * @param {string} messageId
   * @param {{expiresMs: number, deleteAtMs?: number | null, nowMs: number}} times
   * @returns {Promise<void>}
   * @throws {DeviceStateError} the store refused the write
   */
  async record(appJid, messageId, { expiresMs, deleteAtMs = null, nowMs }) {
    const key = keyOf(appJid, messageId);
    const known = this.#entries.get(key);
    if (known) {
      if (known.deleteAtMs === deleteAtMs) return;
      known.deleteAtMs = deleteAtMs;
    } else {
      this.#entries.set(key, { appJid, messageId, expiresMs, deleteAtMs });
    }
    this.#evict(nowMs);
    try {
      await this.#store.put(SEEN_KEY, [...this.#entries.values()]);
    } catch (error) {
      throw error instanceof DeviceStateError ? error : new DeviceStateError(`cannot store the shown messages: ${error}`);
    }
  }

  /**
   * Forget that a message's view is to be deleted (it left the view); it stays recorded.
   * @param {string} appJid
   * @param {string} messageId
   * @param {number} nowMs
   * @returns {Promise<void>}
   * @throws {DeviceStateError} the store refused the write
   */
  async deleted(appJid, messageId, nowMs) {
    const known = this.#entries.get(keyOf(appJid, messageId));
    if (known) await this.record(appJid, messageId, { expiresMs: known.expiresMs, deleteAtMs: null, nowMs });
  }

  /**
   * The messages whose auto-delete time has come, earliest first.
   * @param {number} nowMs
   * @returns {{appJid: string, messageId: string, deleteAtMs: number}[]}
   */
  due(nowMs) {
    return [...this.#entries.values()]
      .filter((entry) => entry.deleteAtMs !== null && entry.deleteAtMs <= nowMs)
      .sort((a, b) => a.deleteAtMs - b.deleteAtMs)
      .map(({ appJid, messageId, deleteAtMs }) => ({ appJid, messageId, deleteAtMs }));
  }

  /** @returns {number} how many messages are remembered */
  get size() {
    return this.#entries.size;
  }

  #evict(nowMs) {
    let excess = this.#entries.size - this.capacity;
    for (const [key, entry] of this.#entries) {
      if (excess <= 0) break;
      if (entry.expiresMs <= nowMs) {
        this.#entries.delete(key);
        excess -= 1;
      }
    }
  }
}

// JSON of the pair: no separator character can make two pairs collide.
function keyOf(appJid, messageId) {
  return JSON.stringify([appJid, messageId]);
}
