// The byte conventions (protocol sections 2 and 4) on inputs the vectors do not spell out.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  b64url, canonicalJson, codePointLength, derToP1363, fromB64url, hexToBytes, p1363ToDer, parseStrictJson, utf8,
} from "../src/core/index.js";

const refused = (name, action) => assert.throws(action, (error) => error.name === name);

test("base64url: canonical only", () => {
  assert.deepEqual(fromB64url("AQID", "x"), Uint8Array.of(1, 2, 3));
  assert.equal(b64url(Uint8Array.of(0xfb, 0xff)), "-_8");
  for (const text of ["AQI=", "AQ+D", "AQ/D", "AQ D", "A", "AQJ", "-_9"]) refused("MalformedEncoding", () => fromB64url(text, "x"));
  refused("MalformedEncoding", () => fromB64url(7, "x"));
  refused("MalformedEncoding", () => fromB64url("AQID", "x", { size: 4 }));
  refused("OversizeInput", () => fromB64url("A".repeat(97), "x", { maxSize: 72 }));
  assert.equal(fromB64url("A".repeat(96), "x", { maxSize: 72 }).length, 72);
});

test("strict JSON: what section 2.3 refuses", () => {
  const malformed = [
    '{"a":1,"a":2}', '{"a":{"b":1,"b":1}}', "1.0", "1e3", "-0.5", "NaN", "Infinity", "9007199254740992",
    "-9007199254740992", "1" + "0".repeat(400), '"\\ud800"', '"\\udc00x"', '"a\nb"', "[1,]", '{"a":1,}',
    "01", "{} {}", "\ufeff{}", "'a'", '"\\x41"', "[".repeat(100) + "]".repeat(100), "",
  ];
  for (const text of malformed) refused("MalformedEncoding", () => parseStrictJson(text));
  refused("MalformedEncoding", () => parseStrictJson(Uint8Array.of(0x22, 0xff, 0x22)));
  refused("MalformedEncoding", () => parseStrictJson(Uint8Array.of(0xef, 0xbb, 0xbf, 0x31)));
  refused("OversizeInput", () => parseStrictJson(utf8('"é"'), { maxBytes: 3 }));
  refused("OversizeInput", () => parseStrictJson('"é"', { maxBytes: 3 }));
  assert.deepEqual(parseStrictJson(' { "b" : [ 1 , -0 , 9007199254740991 ] ,\t"a":"\\u0070\\ud83d\\ude00" } '),
    { b: [1, 0, 9007199254740991], a: "p😀" });
  const proto = parseStrictJson('{"__proto__":{"x":1}}');
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
});

test("canonical JSON and code-point lengths", () => {
  assert.equal(canonicalJson({ b: "\u2028/\u007f\u0001", a: [true, null, -5] }), '{"a":[true,null,-5],"b":"\u2028/\u007f\\u0001"}');
  for (const value of [1.5, 2 ** 53, "\ud800", undefined, Uint8Array.of(1)]) refused("MalformedEncoding", () => canonicalJson(value));
  assert.equal(codePointLength("😀".repeat(16000)), 16000);
  assert.equal(codePointLength("aé😀"), 3);
});

test("DER: only the one strict encoding of r and s in [1, n - 1]", () => {
  const raw = hexToBytes(`${"7f".repeat(32)}${"80".repeat(32)}`);
  const der = p1363ToDer(raw);
  assert.equal(der.length, 71);
  assert.deepEqual(derToP1363(der), raw);
  const small = hexToBytes(`${"00".repeat(31)}01${"00".repeat(2)}${"11".repeat(30)}`);
  assert.deepEqual(derToP1363(p1363ToDer(small)), small);
  const n = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
  const bad = {
    "leading zero": "300702020001020101",
    "negative": "3006020181020101",
    "long-form length": "308106020101020101",
    "trailing byte": "300602010102010100",
    "r = 0": "3006020100020101",
    "r = n": `3026022100${n}020101`,
    "wrong sequence length": "3007020101020101",
    "P1363": `${"11".repeat(32)}${"22".repeat(32)}`,
    "r and s beyond n": `3046022100${"ff".repeat(32)}022100${"ff".repeat(32)}`,
  };
  for (const [what, text] of Object.entries(bad))
    assert.throws(() => derToP1363(hexToBytes(text)), { name: "BadSignature" }, what);
});
