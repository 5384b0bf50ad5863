// The page's wording that the DOM contract fixes: the OTP countdown ("valid for m:ss") and
// file sizes. ui.js touches the DOM only inside its class, so Node imports it as it is.

import assert from "node:assert/strict";
import { test } from "node:test";

import { formatSize, remaining } from "../src/app/ui.js";

test("the countdown is m:ss, rounded up to the next second, h:mm:ss from an hour on", () => {
  assert.equal(remaining(600_000), "10:00");
  assert.equal(remaining(59_001), "1:00");
  assert.equal(remaining(59_000), "0:59");
  assert.equal(remaining(1), "0:01");
  assert.equal(remaining(0), "0:00");
  assert.equal(remaining(-5_000), "0:00");
  assert.equal(remaining(3_599_000), "59:59");
  assert.equal(remaining(3_600_000), "1:00:00");
  assert.equal(remaining(86_400_000 + 61_000), "24:01:01");
});

test("sizes: bytes below a KiB, then one decimal in binary units", () => {
  assert.equal(formatSize(0), "0 bytes");
  assert.equal(formatSize(1023), "1023 bytes");
  assert.equal(formatSize(1024), "1.0 KiB");
  assert.equal(formatSize(1_048_576), "1.0 MiB");
  assert.equal(formatSize(1_572_864), "1.5 MiB");
  assert.equal(formatSize(2 ** 40), "1.0 TiB");
});
