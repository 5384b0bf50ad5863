// Typed, bounded reads of parsed JSON objects, shared by the envelope and bundle parsers.

import { codePointLength, fromB64url } from "./bytes.js";
import { MalformedEncoding, OversizeInput } from "./errors.js";

/**
 * Typed reads of a parsed JSON object that must hold exactly the known keys, in the
 * reference's order (src/cmaas/envelope/encoding.py Fields): missing fields first, then
 * unknown ones. Every method throws MalformedEncoding for a wrong type or bound;
 * `array` throws OversizeInput beyond its count, `binary` as fromB64url.
 */
export class Fields {
  constructor(value, what, required, optional = []) {
    if (value === null || typeof value !== "object" || Array.isArray(value))
      throw new MalformedEncoding(`${what} must be a JSON object`);
    const keys = Object.keys(value);
    const missing = required.filter((key) => !keys.includes(key));
    if (missing.length) throw new MalformedEncoding(`${what} lacks ${missing.sort().join(", ")}`);
    const unknown = keys.filter((key) => !required.includes(key) && !optional.includes(key));
    if (unknown.length)
      throw new MalformedEncoding(`${what} has unknown fields ${unknown.sort().join(", ")}`);
    this.value = value;
    this.what = what;
  }

  has(key) {
    return Object.hasOwn(this.value, key);
  }

  text(key, maxLength, minLength = 1) {
    const value = this.value[key];
    if (typeof value !== "string") throw new MalformedEncoding(`${this.what}.${key} must be a string`);
    const length = codePointLength(value);
    if (length < minLength || length > maxLength)
      throw new MalformedEncoding(`${this.what}.${key} must be ${minLength} to ${maxLength} characters`);
    return value;
  }

  integer(key, low, high) {
    const value = this.value[key];
    if (typeof value !== "number" || !Number.isSafeInteger(value))
      throw new MalformedEncoding(`${this.what}.${key} must be an integer`);
    if (value < low || value > high)
      throw new MalformedEncoding(`${this.what}.${key} must be between ${low} and ${high}`);
    return value;
  }

  choice(key, choices) {
    const value = this.value[key];
    if (!choices.includes(value))
      throw new MalformedEncoding(`${this.what}.${key} must be one of ${choices.join(", ")}`);
    return value;
  }

  binary(key, bounds) {
    return fromB64url(this.value[key], `${this.what}.${key}`, bounds);
  }

  array(key, maxItems, minItems = 0) {
    const value = this.value[key];
    if (!Array.isArray(value)) throw new MalformedEncoding(`${this.what}.${key} must be an array`);
    if (value.length > maxItems)
      throw new OversizeInput(`${this.what}.${key} has more than ${maxItems} items`);
    if (value.length < minItems)
      throw new MalformedEncoding(`${this.what}.${key} needs at least ${minItems} items`);
    return value;
  }
}
