// The byte conventions of docs/protocol.md section 2 (and 4's signature encodings):
// canonical base64url, hex, canonical JSON, strict JSON parsing with code-point lengths,
// and DER <-> IEEE P1363 ECDSA signatures. Pure: TextEncoder, TextDecoder, atob and btoa only.

import { BadSignature, MalformedEncoding, OversizeInput } from "./errors.js";

/** 2^53 - 1, the largest integer canonical JSON carries. */
export const MAX_SAFE_INTEGER = Number.MAX_SAFE_INTEGER;

const ENCODER = new TextEncoder();
const STRICT_DECODER = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const B64URL = /^[A-Za-z0-9_-]*$/;
const HEX = /^(?:[0-9a-fA-F]{2})*$/;
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
// P-256's group order n: r and s of a signature lie in [1, n - 1].
const ORDER_N = hexToBytes("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");

/**
 * UTF-8 bytes of a text.
 * @param {string} text
 * @returns {Uint8Array}
 */
export function utf8(text) {
  return ENCODER.encode(text);
}

/**
 * The text of strict UTF-8 bytes (no replacement characters; a byte-order mark is refused).
 * @param {Uint8Array} bytes
 * @param {string} [what] names the input in the error
 * @returns {string}
 * @throws {MalformedEncoding} not UTF-8, or begins with a byte-order mark
 */
export function fromUtf8(bytes, what = "the text") {
  if (bytes.length >= 3 && bytes[0] === 0xef && bytes[1] === 0xbb && bytes[2] === 0xbf)
    throw new MalformedEncoding(`${what} begins with a byte-order mark`);
  try {
    return STRICT_DECODER.decode(bytes);
  } catch {
    throw new MalformedEncoding(`${what} is not UTF-8`);
  }
}

/**
 * Base64url without padding (protocol 2.1).
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function b64url(bytes) {
  let binary = "";
  for (let at = 0; at < bytes.length; at += 0x8000)
    binary += String.fromCharCode(...bytes.subarray(at, at + 0x8000));
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * Decode canonical base64url (protocol 2.1).
 * @param {unknown} text the JSON value
 * @param {string} what names the field in the error
 * @param {{size?: number, maxSize?: number}} [bounds] an exact decoded size, or a maximum
 *   (a longer text is OversizeInput before decoding)
 * @returns {Uint8Array}
 * @throws {OversizeInput} longer than `maxSize` allows
 * @throws {MalformedEncoding} not a string, not canonical base64url, or the wrong size
 */
export function fromB64url(text, what, bounds = {}) {
  if (typeof text !== "string") throw new MalformedEncoding(`${what} must be a base64url string`);
  if (bounds.maxSize !== undefined && text.length > Math.ceil((bounds.maxSize * 4) / 3))
    throw new OversizeInput(`${what} is longer than ${bounds.maxSize} bytes`);
  if (!B64URL.test(text) || text.length % 4 === 1)
    throw new MalformedEncoding(`${what} is not base64url without padding`);
  const binary = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  if (b64url(bytes) !== text) throw new MalformedEncoding(`${what} is not canonical base64url`);
  if (bounds.size !== undefined && bytes.length !== bounds.size)
    throw new MalformedEncoding(`${what} must be ${bounds.size} bytes, not ${bytes.length}`);
  if (bounds.maxSize !== undefined && bytes.length > bounds.maxSize)
    throw new OversizeInput(`${what} is longer than ${bounds.maxSize} bytes`);
  return bytes;
}

/**
 * Lowercase hex.
 * @param {Uint8Array} bytes
 * @returns {string}
 */
export function hex(bytes) {
  let out = "";
  for (const byte of bytes) out += byte.toString(16).padStart(2, "0");
  return out;
}

/**
 * Bytes of a hex text (either case).
 * @param {string} text
 * @returns {Uint8Array}
 * @throws {MalformedEncoding} not an even number of hex digits
 */
export function hexToBytes(text) {
  if (typeof text !== "string" || !HEX.test(text)) throw new MalformedEncoding("not hex");
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

/**
 * The bytes of several arrays one after another.
 * @param {...Uint8Array} parts
 * @returns {Uint8Array}
 */
export function concatBytes(...parts) {
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/**
 * Whether two byte arrays are equal (not constant time: for public values only).
 * @param {Uint8Array} a
 * @param {Uint8Array} b
 * @returns {boolean}
 */
export function equalBytes(a, b) {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}

/**
 * How many Unicode code points a text has: the protocol's "characters" (2.3).
 * @param {string} text
 * @returns {number}
 */
export function codePointLength(text) {
  let count = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    count++;
  }
  return count;
}

/**
 * Canonical JSON text (protocol 2.2, RFC 8785 for the protocol's values).
 * @param {unknown} value objects, arrays, strings, safe integers, booleans, null
 * @returns {string}
 * @throws {MalformedEncoding} a float, an integer beyond 2^53 - 1, a lone surrogate, or
 *   a value JSON cannot hold
 */
export function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value))
      throw new MalformedEncoding(`${value} has no canonical form: only integers up to 2^53 - 1`);
    return JSON.stringify(value);
  }
  if (typeof value === "string") {
    if (LONE_SURROGATE.test(value)) throw new MalformedEncoding("a text with a lone surrogate");
    return JSON.stringify(value);
  }
  if (typeof value === "object" && !(value instanceof Uint8Array)) {
    const keys = Object.keys(value).sort(compareCodePoints);
    return `{${keys.map((key) => `${canonicalJson(key)}:${canonicalJson(value[key])}`).join(",")}}`;
  }
  throw new MalformedEncoding(`a ${typeof value} has no canonical JSON form`);
}

/**
 * UTF-8 bytes of the canonical JSON of a value.
 * @param {unknown} value
 * @returns {Uint8Array}
 * @throws {MalformedEncoding} as canonicalJson
 */
export function canonicalBytes(value) {
  return utf8(canonicalJson(value));
}

// Keys sort by code point (JCS sorts by UTF-16 unit; the two agree on the protocol's
// ASCII keys, and a device never signs other keys).
function compareCodePoints(a, b) {
  const left = [...a];
  const right = [...b];
  for (let i = 0; i < Math.min(left.length, right.length); i++) {
    const diff = left[i].codePointAt(0) - right[i].codePointAt(0);
    if (diff) return diff;
  }
  return left.length - right.length;
}

const MAX_DEPTH = 64;

/**
 * Parse JSON strictly (protocol 2.3): UTF-8 without a byte-order mark, no trailing data,
 * no duplicate key, integers only (no fraction or exponent, within +-(2^53 - 1)), no lone
 * surrogate escape, nesting at most 64 deep. Objects come back as plain objects whose keys
 * are all own properties (`__proto__` included).
 * @param {string | Uint8Array} input
 * @param {{maxBytes?: number, what?: string}} [options] a size limit on the UTF-8 bytes,
 *   checked before parsing
 * @returns {unknown}
 * @throws {OversizeInput} more than `maxBytes`
 * @throws {MalformedEncoding} anything else above
 */
export function parseStrictJson(input, options = {}) {
  const what = options.what ?? "the JSON text";
  let text = input;
  if (input instanceof Uint8Array) {
    if (options.maxBytes !== undefined && input.length > options.maxBytes)
      throw new OversizeInput(`${what} is over ${options.maxBytes} bytes`);
    text = fromUtf8(input, what);
  } else {
    if (typeof input !== "string") throw new MalformedEncoding(`${what} is not text`);
    if (options.maxBytes !== undefined && utf8Length(input) > options.maxBytes)
      throw new OversizeInput(`${what} is over ${options.maxBytes} bytes`);
    if (input.charCodeAt(0) === 0xfeff)
      throw new MalformedEncoding(`${what} begins with a byte-order mark`);
    if (LONE_SURROGATE.test(input)) throw new MalformedEncoding(`${what} is not UTF-8`);
  }
  const parser = new StrictParser(text, what);
  parser.space();
  const value = parser.value(0);
  parser.space();
  if (parser.at !== text.length) parser.fail("trailing data");
  return value;
}

// UTF-8 length of a text without encoding it (for the size check before parsing).
function utf8Length(text) {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) length += 1;
    else if (unit < 0x800) length += 2;
    else if (unit >= 0xd800 && unit <= 0xdbff) {
      length += 4;
      i++;
    } else length += 3;
  }
  return length;
}

class StrictParser {
  constructor(text, what) {
    this.text = text;
    this.what = what;
    this.at = 0;
  }

  fail(why) {
    throw new MalformedEncoding(`${this.what} is not strict JSON: ${why} at ${this.at}`);
  }

  space() {
    const text = this.text;
    while (this.at < text.length) {
      const c = text.charCodeAt(this.at);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      this.at++;
    }
  }

  literal(word, value) {
    if (this.text.startsWith(word, this.at)) {
      this.at += word.length;
      return value;
    }
    return this.fail("an unknown word");
  }

  value(depth) {
    if (depth > MAX_DEPTH) this.fail("nesting too deep");
    const c = this.text[this.at];
    if (c === "{") return this.object(depth);
    if (c === "[") return this.array(depth);
    if (c === '"') return this.string();
    if (c === "t") return this.literal("true", true);
    if (c === "f") return this.literal("false", false);
    if (c === "n") return this.literal("null", null);
    if (c === "-" || (c >= "0" && c <= "9")) return this.number();
    return this.fail(c === undefined ? "unexpected end" : "an unexpected character");
  }

  object(depth) {
    this.at++;
    const result = {};
    const seen = new Set();
    this.space();
    if (this.text[this.at] === "}") {
      this.at++;
      return result;
    }
    for (;;) {
      if (this.text[this.at] !== '"') this.fail("a key must be a string");
      const key = this.string();
      if (seen.has(key)) this.fail(`duplicate key ${JSON.stringify(key)}`);
      seen.add(key);
      this.space();
      if (this.text[this.at] !== ":") this.fail("':' expected");
      this.at++;
      this.space();
      // defineProperty: "__proto__" is a key like any other, never the prototype.
      Object.defineProperty(result, key, {
        value: this.value(depth + 1), enumerable: true, writable: true, configurable: true,
      });
      this.space();
      const c = this.text[this.at++];
      if (c === "}") return result;
      if (c !== ",") this.fail("',' or '}' expected");
      this.space();
    }
  }

  array(depth) {
    this.at++;
    const result = [];
    this.space();
    if (this.text[this.at] === "]") {
      this.at++;
      return result;
    }
    for (;;) {
      result.push(this.value(depth + 1));
      this.space();
      const c = this.text[this.at++];
      if (c === "]") return result;
      if (c !== ",") this.fail("',' or ']' expected");
      this.space();
    }
  }

  number() {
    const match = /^-?(?:0|[1-9][0-9]*)([.eE])?/.exec(this.text.slice(this.at, this.at + 400));
    if (!match) return this.fail("a malformed number");
    if (match[1]) return this.fail("a number with a fraction or exponent");
    const digits = match[0];
    // Counted before converting, so 10^400 digits do not become Infinity first.
    if (digits.replace("-", "").length > 16 || !Number.isSafeInteger(Number(digits)))
      return this.fail("an integer beyond 2^53 - 1");
    this.at += digits.length;
    return Number(digits) || 0; // -0 is 0
  }

  string() {
    const text = this.text;
    let out = "";
    let start = ++this.at;
    for (;;) {
      if (this.at >= text.length) this.fail("an unterminated string");
      const c = text.charCodeAt(this.at);
      if (c === 0x22) {
        out += text.slice(start, this.at++);
        break;
      }
      if (c < 0x20) this.fail("a control character in a string");
      if (c !== 0x5c) {
        this.at++;
        continue;
      }
      out += text.slice(start, this.at);
      const e = text[this.at + 1];
      const simple = { '"': '"', "\\": "\\", "/": "/", b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" }[e];
      if (simple !== undefined) {
        out += simple;
        this.at += 2;
      } else if (e === "u") {
        const digits = text.slice(this.at + 2, this.at + 6);
        if (!/^[0-9a-fA-F]{4}$/.test(digits)) this.fail("a malformed \\u escape");
        out += String.fromCharCode(parseInt(digits, 16));
        this.at += 6;
      } else this.fail("an unknown escape");
      start = this.at;
    }
    if (LONE_SURROGATE.test(out)) this.fail("a lone surrogate escape");
    return out;
  }
}

/**
 * IEEE P1363 (r || s, 64 bytes, as WebCrypto signs) to strict DER (protocol 4).
 * @param {Uint8Array} raw 64 bytes
 * @returns {Uint8Array} 8 to 72 bytes
 * @throws {RangeError} `raw` is not 64 bytes
 */
export function p1363ToDer(raw) {
  if (raw.length !== 64) throw new RangeError("a P-256 P1363 signature is 64 bytes");
  const integer = (value) => {
    let start = 0;
    while (start < value.length - 1 && value[start] === 0) start++;
    let body = value.slice(start);
    if (body[0] & 0x80) body = concatBytes(Uint8Array.of(0), body);
    return concatBytes(Uint8Array.of(0x02, body.length), body);
  };
  const body = concatBytes(integer(raw.subarray(0, 32)), integer(raw.subarray(32)));
  return concatBytes(Uint8Array.of(0x30, body.length), body);
}

/**
 * Strict DER `SEQUENCE { r INTEGER, s INTEGER }` to IEEE P1363 (r || s, 64 bytes), for
 * WebCrypto's verify (protocol 4).
 * @param {Uint8Array} der
 * @returns {Uint8Array} 64 bytes
 * @throws {BadSignature} anything but the one DER encoding of r and s in [1, n - 1]
 */
export function derToP1363(der) {
  const fail = (why) => {
    throw new BadSignature(`the signature is not strict DER: ${why}`);
  };
  if (der.length < 8 || der.length > 72) fail("length");
  if (der[0] !== 0x30 || der[1] !== der.length - 2) fail("sequence");
  let at = 2;
  const integer = () => {
    if (der[at] !== 0x02) fail("integer tag");
    const length = der[at + 1];
    const body = der.subarray(at + 2, at + 2 + length);
    if (length === 0 || length > 33 || body.length !== length) fail("integer length");
    if (body[0] & 0x80) fail("negative integer");
    if (length > 1 && body[0] === 0 && !(body[1] & 0x80)) fail("superfluous leading zero");
    at += 2 + length;
    const value = new Uint8Array(32);
    const trimmed = body[0] === 0 ? body.subarray(1) : body;
    if (trimmed.length > 32) fail("integer too large");
    value.set(trimmed, 32 - trimmed.length);
    if (value.every((byte) => byte === 0) || compareBytes(value, ORDER_N) >= 0)
      fail("r or s outside [1, n - 1]");
    return value;
  };
  const r = integer();
  const s = integer();
  if (at !== der.length) fail("trailing bytes");
  return concatBytes(r, s);
}

function compareBytes(a, b) {
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}
