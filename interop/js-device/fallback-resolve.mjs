// A module resolution hook (node:module register): a bare specifier (such as
// "@hpke/core") that does not resolve where it is imported resolves from this folder's
// node_modules instead. web-device/src/core/ imports @hpke/core; until web-device/ has
// its own node_modules (npm ci there), the copy installed here serves both.

const HERE = new URL("./package.json", import.meta.url).href;

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const bare = !/^(?:\.{0,2}\/|[a-z][a-z0-9+.-]*:)/i.test(specifier);
    if (!bare || error?.code !== "ERR_MODULE_NOT_FOUND") throw error;
    return nextResolve(specifier, { ...context, parentURL: HERE });
  }
}
