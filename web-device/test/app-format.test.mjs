// The page's wording that the DOM contract fixes: the OTP countdown ("valid for m:ss") and
// file sizes. ui.js touches the DOM only inside its class, so Node imports it as it is.

import assert from "node:assert/strict";
import { test } from "node:test";

import { formatSize, remaining } from "../src/app/ui.js";

const COUNTDOWNS = [
  [600_000, "10:00"],
  [59_001, "1:00"], // rounded up: never "0:00" while the code still holds
  [59_000, "0:59"],
  [1, "0:01"],
  [0, "0:00"],
  [-5_000, "0:00"],
  [3_599_000, "59:59"],
  [3_600_000, "1:00:00"],
  [86_400_000 + 61_000, "24:01:01"],
];

const SIZES = [
  [0, "0 bytes"],
  [1023, "1023 bytes"],
  [1024, "1.0 KiB"],
  [1_048_576, "1.0 MiB"],
  [1_572_864, "1.5 MiB"],
  [2 ** 40, "1.0 TiB"],
];

test("the countdown is m:ss, rounded up to the next second, h:mm:ss from an hour on", () => {
  for (const [ms, text] of COUNTDOWNS) assert.equal(remaining(ms), text, `${ms} ms`);
});

test("sizes: bytes below a KiB, then one decimal in binary units", () => {
  for (const [bytes, text] of SIZES) assert.equal(formatSize(bytes), text, `${bytes} bytes`);
});
