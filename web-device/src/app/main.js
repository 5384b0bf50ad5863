// The page's entry point. One device per browser profile: its keys are in this origin's
// IndexedDB, and two tabs logging in with one resource knock each other off. So one tab
// holds the Web Lock "cmaas-device" for as long as it lives and is the only one that
// connects; any other shows data-state="other-tab" and waits for the lock, taking over
// when the first tab closes.

import { DeviceController } from "./controller.js";
import { Ui } from "./ui.js";

const LOCK = "cmaas-device";

async function loadConfig() {
  const response = await fetch("./config.json", { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  const config = await response.json();
  if (typeof config.websocket !== "string" || !/^wss?:\/\//.test(config.websocket)) {
    throw new Error("config.json: websocket must be a ws:// or wss:// URL");
  }
  if (typeof config.gateway !== "string" || config.gateway === "" || config.gateway.includes("@")) {
    throw new Error("config.json: gateway must be the gateway's component domain");
  }
  if (config.jid !== undefined && config.jid !== null && typeof config.jid !== "string") {
    throw new Error("config.json: jid must be a string or null");
  }
  return config;
}

async function start() {
  let controller = null;
  let pending = null; // credentials given while another tab held the device
  let holding = false;
  const ui = new Ui({
    now: () => Date.now(),
    onSignIn: (jid, password) => {
      if (holding) {
        controller.signIn(jid, password);
      } else {
        pending = { jid, password };
        ui.setState("other-tab", "This tab connects with your account as soon as the other one closes.");
      }
    },
    onRead: (messageId) => controller?.read(messageId),
    onGone: (messageId, reason) => controller?.gone(messageId, reason),
    onTrust: (appJid, fingerprint) => controller.trust(appJid, fingerprint),
    onRevoke: () => controller.revoke(),
  });

  let config;
  try {
    config = await loadConfig();
  } catch (error) {
    ui.setState("error", `The page is misconfigured: ${error.message}`);
    return;
  }
  const prefill = new URLSearchParams(location.search).get("jid") ?? config.jid ?? "";
  if (!globalThis.navigator?.locks || !globalThis.indexedDB || !globalThis.crypto?.subtle) {
    ui.setState("error", "This browser lacks Web Locks, IndexedDB or WebCrypto (a secure context is needed).");
    return;
  }

  const hold = async () => {
    holding = true;
    controller = new DeviceController(config, ui);
    window.addEventListener("pagehide", () => controller.close());
    if (pending !== null) {
      const { jid, password } = pending;
      pending = null;
      controller.signIn(jid, password);
    } else {
      ui.setState("signed-out");
      ui.showSignIn(prefill);
    }
    // Held until the tab closes: the lock is released with the page.
    await new Promise(() => {});
  };

  await navigator.locks.request(LOCK, { ifAvailable: true }, async (lock) => {
    if (lock !== null) await hold();
  });
  // Reached only when another tab holds the device.
  ui.setState("other-tab");
  ui.showSignIn(prefill);
  await navigator.locks.request(LOCK, hold);
}

start().catch((error) => {
  const state = document.getElementById("state");
  state.dataset.state = "error";
  state.textContent = `The device stopped: ${error.message}`;
});
