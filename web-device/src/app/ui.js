// The page's DOM: the sign-in form, the state line, the device panel, the messages with
// their countdowns and auto-delete, key-change alerts and the revoke dialog. It holds no
// keys and speaks no XMPP; the controller tells it what to show and hears what the person
// did (signed in, read a message, trusted a key, revoked the device).
//
// Everything from the network is put in as text (textContent), never as markup.

const READ_AFTER_MS = 2_000;
const READ_RATIO = 0.5;

const STATE_WORDS = {
  "signed-out": "Signed out.",
  connecting: "Connecting…",
  online: "Online: messages arrive here.",
  offline: "Offline: reconnecting…",
  "other-tab": "Another tab of this browser holds this device. This tab takes over when that one closes.",
  revoked: "This device is revoked: it receives no more messages.",
  error: "Error.",
};

/** Formats a remaining time as m:ss (h:mm:ss from an hour on). */
export function remaining(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const hours = Math.floor(total / 3600);
  const minutes = Math.floor((total % 3600) / 60);
  const seconds = String(total % 60).padStart(2, "0");
  if (hours > 0) return `${hours}:${String(minutes).padStart(2, "0")}:${seconds}`;
  return `${minutes}:${seconds}`;
}

/** A byte count for people: 1,048,576 bytes is "1.0 MiB". */
export function formatSize(bytes) {
  if (bytes < 1024) return `${bytes} bytes`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

function element(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

export class Ui {
  /**
   * @param {{onSignIn: (jid: string, password: string) => void,
   *          onRead: (messageId: string) => void,
   *          onGone: (messageId: string, reason: "expired" | "deleted") => void,
   *          onTrust: (appJid: string, fingerprint: string) => Promise<void>,
   *          onRevoke: () => Promise<void>, now: () => number}} handlers
   */
  constructor(handlers) {
    this.handlers = handlers;
    this.state = document.getElementById("state");
    this.form = document.getElementById("sign-in");
    this.jid = document.getElementById("jid");
    this.password = document.getElementById("password");
    this.device = document.getElementById("device");
    this.messages = document.getElementById("messages");
    this.noMessages = document.getElementById("no-messages");
    this.alerts = document.getElementById("alerts");
    this.revokeButton = document.getElementById("revoke");
    this.dialog = document.getElementById("confirm-revoke");
    this.announcer = document.getElementById("announcer");
    /** messageId -> {li, timers, expiresMs, deleteAtMs, url} */
    this.shown = new Map();
    this.readTimers = new Map();

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      const jid = this.jid.value.trim();
      const password = this.password.value;
      // The password leaves the form at once: it is kept only by the connection.
      this.password.value = "";
      this.handlers.onSignIn(jid, password);
    });

    this.revokeButton.addEventListener("click", () => this.dialog.showModal());
    document.getElementById("cancel-revoke").addEventListener("click", () => this.dialog.close());
    document.getElementById("confirm-revoke-button").addEventListener("click", async () => {
      this.dialog.close();
      await this.handlers.onRevoke();
    });
    // Focus goes back where the dialog was opened from (or to the state line once the
    // button is gone after a revocation).
    this.dialog.addEventListener("close", () => {
      if (!this.revokeButton.hidden) this.revokeButton.focus();
    });

    this.observer = new IntersectionObserver((entries) => this._onIntersect(entries), {
      threshold: [0, READ_RATIO, 1],
    });
    document.addEventListener("visibilitychange", () => {
      this.sweep();
      this._recheckReading();
    });
    this.ticker = setInterval(() => this.sweep(), 1000);
  }

  /** Show a state (one of the contract's data-state values), in words. */
  setState(state, detail = "") {
    this.state.dataset.state = state;
    this.state.textContent = detail ? `${STATE_WORDS[state]} ${detail}` : STATE_WORDS[state];
  }

  /** Show the sign-in form; `focus` moves the keyboard there (after an error or a
   * revocation, when the control that had it is gone). */
  showSignIn(jid = "", { focus = false } = {}) {
    if (jid && !this.jid.value) this.jid.value = jid;
    this.form.hidden = false;
    this.setFormEnabled(true);
    if (focus) (this.jid.value ? this.password : this.jid).focus();
  }

  hideSignIn() {
    this.form.hidden = true;
  }

  setFormEnabled(enabled) {
    for (const control of this.form.querySelectorAll("input, button")) control.disabled = !enabled;
  }

  /** The device panel: account, id and identity fingerprint. */
  showDevice({ jid, deviceId, fingerprint }) {
    this.device.hidden = false;
    if (this.device.dataset.deviceId !== String(deviceId)) {
      // Another device than the one shown (a new one after a revocation).
      this.device.dataset.deviceId = String(deviceId);
      this.device.dataset.published = "false";
      document.getElementById("published").textContent = "Not yet";
      this.revokeButton.hidden = false;
    }
    document.getElementById("device-account").textContent = jid;
    document.getElementById("device-id").textContent = String(deviceId);
    document.getElementById("fingerprint").textContent = fingerprint;
  }

  markPublished(prekeysLeft) {
    this.device.dataset.published = "true";
    document.getElementById("published").textContent =
      prekeysLeft === null ? "Yes" : `Yes (${prekeysLeft} one-time prekeys at the gateway)`;
  }

  markRevoked() {
    this.device.dataset.published = "false";
    document.getElementById("published").textContent = "No: revoked";
    this.revokeButton.hidden = true;
    this.clearMessages();
  }

  /**
   * Show one opened message. Returns once its li is in the DOM.
   * @param {{messageId: string, appJid: string, appName: string, appFingerprint: string,
   *          newlyPinned: boolean, kind: "otp" | "text" | "file", content: object,
   *          expiresMs: number, deleteAtMs: number | null, file: Uint8Array | null}} message
   * @returns {boolean} false when it was not shown (an OTP already expired)
   */
  showMessage(message) {
    const now = this.handlers.now();
    if (message.kind === "otp" && now >= message.expiresMs) return false;
    if (message.deleteAtMs !== null && now >= message.deleteAtMs) return false;
    if (this.shown.has(message.messageId)) return true;

    const li = element("li", {
      class: "message",
      "data-message-id": message.messageId,
      "data-kind": message.kind,
      "data-app": message.appJid,
    });
    const meta = element("p", { class: "meta" });
    meta.append(element("span", { class: "app", title: message.appJid }, message.appName));
    const kindWords = { otp: "One-time password", text: "Message", file: "File" }[message.kind];
    meta.append(element("span", { class: "kind" }, kindWords));
    li.append(meta);

    let url = null;
    if (message.kind === "otp") {
      li.append(element("p", { class: "body" }, message.content.purpose));
      // Screen readers read the code character by character from the hidden twin; the
      // shown code is exactly the code (a person copies it from there).
      li.append(element("p", { class: "visually-hidden" }, `Code: ${[...message.content.code].join(" ")}`));
      li.append(element("p", { class: "otp-code", "aria-hidden": "true" }, message.content.code));
      const countdown = element("time", {
        class: "countdown",
        datetime: new Date(message.expiresMs).toISOString(),
      });
      countdown.textContent = `valid for ${remaining(message.expiresMs - now)}`;
      li.append(countdown);
    } else if (message.kind === "text") {
      li.append(element("p", { class: "body" }, message.content.text));
    } else {
      const { name, size, media_type: mediaType } = message.content;
      url = URL.createObjectURL(new Blob([message.file], { type: "application/octet-stream" }));
      li.append(element("p", { class: "body" }, `${name} (${mediaType}, ${formatSize(size)})`));
      const link = element("a", {
        class: "file-download",
        href: url,
        download: name,
        "data-file-name": name,
        "data-size": String(size),
      });
      link.textContent = `Save ${name}`;
      li.append(link);
    }
    if (message.newlyPinned) {
      li.append(
        element(
          "p",
          { class: "hint" },
          `First message from ${message.appJid}: its key is now trusted (fingerprint ${message.appFingerprint}).`,
        ),
      );
    }
    if (message.deleteAtMs !== null) {
      li.append(
        element(
          "p",
          { class: "hint" },
          `Deleted automatically at ${new Date(message.deleteAtMs).toLocaleTimeString()}.`,
        ),
      );
    }

    const entry = { li, url, expiresMs: message.kind === "otp" ? message.expiresMs : null, deleteAtMs: message.deleteAtMs, timers: [] };
    if (entry.expiresMs !== null) {
      entry.timers.push(setTimeout(() => this._gone(message.messageId, "expired"), entry.expiresMs - now));
    }
    if (entry.deleteAtMs !== null) {
      entry.timers.push(setTimeout(() => this._gone(message.messageId, "deleted"), entry.deleteAtMs - now));
    }
    this.shown.set(message.messageId, entry);
    this.messages.prepend(li);
    this.noMessages.hidden = true;
    this.announce(`${kindWords} from ${message.appName}.`);
    this.observer.observe(li);
    return true;
  }

  /** Tell screen readers something happened without moving focus. */
  announce(text) {
    this.announcer.textContent = text;
  }

  markReceived(messageId) {
    const entry = this.shown.get(messageId);
    if (entry) entry.li.dataset.received = "true";
  }

  markRead(messageId) {
    const entry = this.shown.get(messageId);
    if (entry) entry.li.dataset.read = "true";
  }

  /** Update the countdowns; remove what expired or is due for deletion (timers in a
   * background tab may run late, so every tick checks too). */
  sweep() {
    const now = this.handlers.now();
    for (const [messageId, entry] of [...this.shown]) {
      if (entry.expiresMs !== null && now >= entry.expiresMs) {
        this._gone(messageId, "expired");
      } else if (entry.deleteAtMs !== null && now >= entry.deleteAtMs) {
        this._gone(messageId, "deleted");
      } else if (entry.expiresMs !== null) {
        const countdown = entry.li.querySelector("time.countdown");
        const text = `valid for ${remaining(entry.expiresMs - now)}`;
        if (countdown.textContent !== text) countdown.textContent = text;
      }
    }
  }

  _gone(messageId, reason) {
    if (!this.shown.has(messageId)) return;
    this._remove(messageId);
    this.handlers.onGone(messageId, reason);
  }

  _remove(messageId) {
    const entry = this.shown.get(messageId);
    this.shown.delete(messageId);
    for (const timer of entry.timers) clearTimeout(timer);
    this._cancelReading(messageId);
    this.observer.unobserve(entry.li);
    entry.li.remove();
    if (entry.url !== null) URL.revokeObjectURL(entry.url);
    this.noMessages.hidden = this.shown.size > 0;
  }

  // -- reading: visible, at least half in view, for 2 s -------------------------

  _onIntersect(entries) {
    for (const entry of entries) {
      const messageId = entry.target.dataset.messageId;
      entry.target.dataset.inView = entry.intersectionRatio >= READ_RATIO ? "true" : "false";
      this._consider(messageId);
    }
  }

  _recheckReading() {
    for (const messageId of this.shown.keys()) this._consider(messageId);
  }

  _consider(messageId) {
    const entry = this.shown.get(messageId);
    if (!entry || entry.li.dataset.read === "true") return;
    const reading = document.visibilityState === "visible" && entry.li.dataset.inView === "true";
    if (!reading) {
      this._cancelReading(messageId);
    } else if (!this.readTimers.has(messageId)) {
      this.readTimers.set(
        messageId,
        setTimeout(() => {
          this.readTimers.delete(messageId);
          if (this.shown.has(messageId)) this.handlers.onRead(messageId);
        }, READ_AFTER_MS),
      );
    }
  }

  _cancelReading(messageId) {
    const timer = this.readTimers.get(messageId);
    if (timer !== undefined) {
      clearTimeout(timer);
      this.readTimers.delete(messageId);
    }
  }

  // -- alerts ---------------------------------------------------------------------

  /** A changed app key, loudly: both fingerprints and a button to trust the new one. */
  showKeyChange({ appJid, offeredFingerprint, offeredDisplay, pinnedDisplay }) {
    const key = `${appJid}\n${offeredFingerprint}`;
    for (const existing of this.alerts.querySelectorAll(".key-change")) {
      if (existing.dataset.key === key) return;
    }
    const alert = element("div", {
      class: "key-change",
      role: "alert",
      "data-app": appJid,
      "data-fingerprint": offeredFingerprint,
      "data-key": key,
    });
    alert.append(element("h2", {}, `The key of ${appJid} changed`));
    alert.append(
      element(
        "p",
        {},
        "Its messages are refused until you trust the new key. Either the app rotated its key or someone impersonates it: compare the new fingerprint with the app through another channel first.",
      ),
    );
    const list = element("dl");
    if (pinnedDisplay) {
      list.append(element("dt", {}, "Trusted key"), element("dd", {}, ""));
      list.lastChild.append(element("code", { class: "fingerprint" }, pinnedDisplay));
    }
    list.append(element("dt", {}, "New key"), element("dd", {}, ""));
    list.lastChild.append(element("code", { class: "fingerprint offered" }, offeredDisplay));
    alert.append(list);
    const button = element("button", { type: "button" }, "Trust new key");
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await this.handlers.onTrust(appJid, offeredFingerprint);
        alert.remove();
        document.getElementById("messages-heading").focus();
      } catch (error) {
        button.disabled = false;
        alert.querySelector(".error")?.remove();
        alert.append(element("p", { class: "error" }, `Could not trust the key: ${error.message}`));
      }
    });
    alert.append(button);
    this.alerts.append(alert);
  }

  /** Everything from a previous session leaves the view (messages are never stored). */
  clearMessages() {
    for (const messageId of [...this.shown.keys()]) this._remove(messageId);
  }
}
