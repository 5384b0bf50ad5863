// Where the device keeps its state: a tiny asynchronous key-value store. In the page it is
// IndexedDB; in tests a Map. Values are structured-cloned on the way in, as IndexedDB does,
// so CryptoKey and CryptoKeyPair objects are stored as they are (non-extractable private
// keys included) and a caller's later change to an object does not reach the store.

import { DeviceStateError } from "./errors.js";

/**
 * @typedef {object} Store
 * @property {(key: string) => Promise<unknown>} get the value, or undefined
 * @property {(key: string, value: unknown) => Promise<void>} put write one value (atomically)
 * @property {(key: string) => Promise<void>} delete
 * @property {(prefix: string) => Promise<string[]>} keys the keys starting with `prefix`, sorted
 */

/** A Store in memory, for tests (and for a page that must not persist anything). */
export class MemoryStore {
  #values = new Map();

  /**
   * @param {string} key
   * @returns {Promise<unknown>} a clone of the value, or undefined
   */
  async get(key) {
    return this.#values.has(key) ? structuredClone(this.#values.get(key)) : undefined;
  }

  /**
   * @param {string} key
   * @param {unknown} value cloned with structuredClone
   * @returns {Promise<void>}
   * @throws {DOMException} the value cannot be cloned
   */
  async put(key, value) {
    this.#values.set(key, structuredClone(value));
  }

  /**
   * @param {string} key
   * @returns {Promise<void>}
   */
  async delete(key) {
    this.#values.delete(key);
  }

  /**
   * @param {string} prefix
   * @returns {Promise<string[]>} sorted
   */
  async keys(prefix) {
    return [...this.#values.keys()].filter((key) => key.startsWith(prefix)).sort();
  }
}

const OBJECT_STORE = "state";

/**
 * A Store in IndexedDB (browser only): one database `name`, one object store. Every put
 * is its own readwrite transaction and resolves once the transaction has completed (is
 * durable as far as the browser promises); the device's writes are few (one per message
 * opened, one per publication), so no batching is needed.
 * @param {string} name the database name, e.g. "cmaas-device"
 * @returns {Promise<Store>}
 * @throws {DeviceStateError} IndexedDB is missing or refuses to open the database
 */
export async function openIndexedDbStore(name) {
  const indexedDB = globalThis.indexedDB;
  if (!indexedDB) throw new DeviceStateError("this browser offers no IndexedDB");
  const database = await new Promise((resolve, reject) => {
    const request = indexedDB.open(name, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(OBJECT_STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(new DeviceStateError(`cannot open IndexedDB ${name}: ${request.error}`));
    request.onblocked = () => reject(new DeviceStateError(`IndexedDB ${name} is blocked by another tab`));
  });
  const run = (mode, act) =>
    new Promise((resolve, reject) => {
      const transaction = database.transaction(OBJECT_STORE, mode);
      const request = act(transaction.objectStore(OBJECT_STORE));
      transaction.oncomplete = () => resolve(request.result);
      const fail = () => reject(new DeviceStateError(`IndexedDB ${name}: ${transaction.error ?? request.error}`));
      transaction.onerror = fail;
      transaction.onabort = fail;
    });
  return {
    get: (key) => run("readonly", (objects) => objects.get(key)),
    put: async (key, value) => {
      await run("readwrite", (objects) => objects.put(value, key));
    },
    delete: async (key) => {
      await run("readwrite", (objects) => objects.delete(key));
    },
    keys: async (prefix) => {
      const range = globalThis.IDBKeyRange.bound(prefix, `${prefix}\uffff`);
      const keys = await run("readonly", (objects) => objects.getAllKeys(range));
      return keys.map(String).filter((key) => key.startsWith(prefix)).sort();
    },
  };
}
