// Builds the web device into src/cmaas/device/web_static/: device.js (one ES module, the
// app with strophe.js and @hpke/core bundled in), style.css, and index.html with the
// subresource-integrity hashes of both filled in.
//
// The build is reproducible: no source map, no timestamps, paths relative to this
// folder, a fixed target. SHA384SUMS (committed) holds the hash of every built file, so
// anyone can rebuild from a clean `npm ci` and compare with what a server serves. The
// build refuses to install output that differs from it; `node build.mjs --update`
// rewrites it after a deliberate change.
//
// Usage: node build.mjs [--update] [--out DIR]

import { createHash } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const SUMS = join(here, "SHA384SUMS");
// The page needs WebCrypto P-256 in IndexedDB, navigator.locks and <dialog>: every browser
// of the target has them, and a fixed target keeps the output the same from build to build.
const TARGET = ["chrome120", "firefox121", "safari17"];

function options(argv) {
  const parsed = { update: false, out: resolve(here, "../src/cmaas/device/web_static") };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--update") parsed.update = true;
    else if (argv[i] === "--out" && i + 1 < argv.length) parsed.out = resolve(argv[++i]);
    else throw new Error(`build.mjs: unknown argument ${argv[i]} (use --update, --out DIR)`);
  }
  return parsed;
}

async function bundle() {
  const result = await esbuild.build({
    absWorkingDir: here,
    entryPoints: ["src/app/main.js"],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: TARGET,
    charset: "utf8",
    legalComments: "eof",
    sourcemap: false,
    minify: false,
    write: false,
    logLevel: "warning",
  });
  if (result.outputFiles.length !== 1) {
    throw new Error(`build.mjs: expected one bundle, esbuild made ${result.outputFiles.length}`);
  }
  return Buffer.from(result.outputFiles[0].contents);
}

function sri(bytes) {
  return `sha384-${createHash("sha384").update(bytes).digest("base64")}`;
}

function page(template, files) {
  // The template names each file's hash as @@SRI:<file>@@.
  const html = template.replace(/@@SRI:([a-z.]+)@@/g, (_match, name) => {
    if (!(name in files)) throw new Error(`index.html: no built file ${name}`);
    return sri(files[name]);
  });
  return Buffer.from(html, "utf8");
}

function sums(files) {
  // The format of sha384sum, so `sha384sum -c SHA384SUMS` checks a served copy too.
  return Object.keys(files)
    .sort()
    .map((name) => `${createHash("sha384").update(files[name]).digest("hex")}  ${name}\n`)
    .join("");
}

async function main() {
  const { update, out } = options(process.argv.slice(2));
  const files = {
    "device.js": await bundle(),
    "style.css": await readFile(join(here, "style.css")),
  };
  files["index.html"] = page(await readFile(join(here, "index.html"), "utf8"), files);
  const built = sums(files);

  if (update) {
    await writeFile(SUMS, built);
  } else {
    const expected = await readFile(SUMS, "utf8").catch(() => "");
    if (expected !== built) {
      process.stderr.write(
        "build-web-device: the built files differ from web-device/SHA384SUMS:\n" +
          `expected:\n${expected}built:\n${built}` +
          "After a deliberate change run scripts/build-web-device --update and commit SHA384SUMS.\n",
      );
      process.exit(1);
    }
  }

  // Written beside, then renamed: a server never sees half a build.
  await mkdir(out, { recursive: true });
  for (const [name, bytes] of Object.entries(files)) {
    const partial = join(out, `.${name}.part`);
    await writeFile(partial, bytes);
    await rename(partial, join(out, name));
  }
  process.stdout.write(`build-web-device: ${Object.keys(files).length} files in ${out}\n`);
}

await main();
