// Preload (node --import) that installs fallback-resolve.mjs; see there why.
import { register } from "node:module";

register("./fallback-resolve.mjs", import.meta.url);
