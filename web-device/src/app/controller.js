// The device in the page: it joins the core (keys, opener, inbox, storage: src/core/) to
// XMPP (xmpp.js) and the DOM (ui.js), as the reference device's DeviceClient does
// (src/cmaas/device/client.py): it publishes through the gateway's ad-hoc command, opens
// every sealed message however it came, performs the inbox's outcome (show, receipt,
// file download, auto-delete), refills one-time prekeys when the gateway asks, rotates
// the signed prekey on schedule, sends read markers when a message was read, and revokes
// itself.

import {
  Inbox,
  Keyring,
  PinStore,
  SeenMessages,
  displayFingerprint,
  openIndexedDbStore,
} from "../core/index.js";
import { AuthenticationFailed, XmppSession } from "./xmpp.js";

const PUBLISH = "urn:cmaas:cmd:device-publish";
const REVOKE = "urn:cmaas:cmd:device-revoke";
const DATABASE = "cmaas-device";
const ARCHIVE_KEY = "archive";
// A clock difference between the browser and its server must not skip a message.
const ARCHIVE_SKEW_MS = 120_000;
const ARCHIVE_WRITE_EVERY_MS = 5_000;
const ARCHIVE_FOLLOW_MS = 60_000;
const MAINTENANCE_EVERY_MS = 3600_000;
const PUBLISH_RETRY_MS = 30_000;
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const FILE_ATTEMPTS = 3;
const LOOPBACK = new Set(["127.0.0.1", "localhost", "[::1]"]);

/** The gateway refused a command; `notes` says why. */
export class GatewayRefused extends Error {
  constructor(message) {
    super(message);
    this.name = "GatewayRefused";
  }
}

function refusal(action, reply) {
  return `${action}: ${reply.errorNotes.join("; ") || `status ${reply.status}`}`;
}

function bareJidProblem(jid) {
  const at = jid.indexOf("@");
  if (at < 1 || at === jid.length - 1 || jid.includes("/") || /\s/.test(jid)) {
    return "give the account as name@domain";
  }
  return null;
}

export class DeviceController {
  constructor(config, ui) {
    this.config = config;
    this.ui = ui;
    this.store = null;
    this.keyring = null;
    this.inbox = null;
    this.pins = null;
    this.session = null;
    this.password = null;
    this.queue = Promise.resolve();
    this.names = new Map();
    this.shownFrom = new Map(); // messageId -> app JID, for read markers and deletions
    this.refusalsTold = new Set();
    this.pendingReads = new Set();
    this.backoffMs = BACKOFF_FIRST_MS;
    this.reconnectTimer = null;
    this.maintenance = null;
    this.catchingUp = false;
    this.archiveWrittenMs = 0;
    this.archiveTimer = null;
    this.stopped = false;
    this.unconfirmed = false;
  }

  // -- signing in -------------------------------------------------------------------

  async signIn(jid, password) {
    const problem = bareJidProblem(jid);
    if (problem !== null) {
      this.ui.setState("error", `The account is not valid: ${problem}.`);
      this.ui.showSignIn("", { focus: true });
      return;
    }
    this.ui.setFormEnabled(false);
    this.ui.setState("connecting");
    this.stopped = false;
    try {
      this.store ??= await openIndexedDbStore(DATABASE);
      this.keyring = await Keyring.load(this.store);
      // A device made now is kept only once the server accepted the account: a mistyped
      // one must not hold this browser's device.
      this.unconfirmed = this.keyring === null;
      this.keyring ??= await Keyring.create(this.store, { jid });
      if (this.keyring.jid !== jid) {
        this.keyring = null;
        this.ui.setState(
          "error",
          "This browser holds the device of another account. Sign in as that account, or use another browser profile.",
        );
        this.ui.showSignIn("", { focus: true });
        return;
      }
      this.pins = await PinStore.load(this.store);
      this.inbox = new Inbox({
        keyring: this.keyring,
        pins: this.pins,
        seen: await SeenMessages.load(this.store),
        gateway: this.config.gateway,
      });
    } catch (error) {
      this.ui.setState("error", `The device's storage failed: ${error.message}`);
      this.ui.showSignIn("", { focus: true });
      return;
    }
    this.password = password;
    await this._connect(true);
  }

  async _connect(first) {
    const keyring = this.keyring;
    const session = new XmppSession({
      websocket: this.config.websocket,
      jid: keyring.jid,
      resource: `web-${keyring.deviceId}`,
      password: this.password,
      gateway: this.config.gateway,
      onMessage: (stanza, via) => this._enqueue(() => this._receive(stanza, via)),
      onPrekeysLow: (notice) => this._enqueue(() => this._refill(notice)),
      onDisconnected: (error) => this._lost(session, error),
    });
    this.session = session;
    try {
      await session.connect();
    } catch (error) {
      if (this.session !== session) return;
      this.session = null;
      if (first && this.unconfirmed) {
        await keyring.erase();
        this.keyring = null;
      }
      if (error instanceof AuthenticationFailed) {
        this.password = null;
        this.ui.setState("error", "The server refused the account or password.");
        this.ui.showSignIn(keyring.jid, { focus: true });
      } else if (first) {
        this.password = null;
        this.ui.setState("error", `Could not reach the server: ${error.message}`);
        this.ui.showSignIn(keyring.jid, { focus: true });
      } else {
        this._scheduleReconnect();
      }
      return;
    }
    this.backoffMs = BACKOFF_FIRST_MS;
    this.unconfirmed = false;
    this.ui.hideSignIn();
    this.ui.showDevice({
      jid: keyring.jid,
      deviceId: keyring.deviceId,
      fingerprint: keyring.displayFingerprint,
    });
    // Publishing at every session is idempotent (protocol 7), and tells a revoked device.
    for (;;) {
      try {
        await this._enqueue(() => this.publish());
        break;
      } catch (error) {
        if (this.stopped || this.session !== session) return;
        this.ui.setState("error", `Publishing the device failed (${error.message}); trying again in 30 s.`);
        await new Promise((resolve) => setTimeout(resolve, PUBLISH_RETRY_MS));
        if (this.stopped || this.session !== session) return;
      }
    }
    this.ui.setState("online");
    for (const messageId of this.pendingReads) this.read(messageId);
    this.pendingReads.clear();
    this.maintenance ??= setInterval(() => this._maintain(), MAINTENANCE_EVERY_MS);
    this._catchUp(session);
  }

  _lost(session, error) {
    if (this.session !== session) return;
    this.session = null;
    if (error === null || this.stopped) return;
    console.warn("cmaas: connection lost:", error.message);
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    if (this.stopped || this.password === null) return;
    this.ui.setState("offline");
    const delay = this.backoffMs;
    this.backoffMs = Math.min(this.backoffMs * 2, BACKOFF_MAX_MS);
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => {
      this.ui.setState("connecting");
      this._connect(false);
    }, delay);
  }

  /** The tab goes away: close the stream so the server stops routing to it at once. */
  close() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.session?.disconnect();
  }

  _enqueue(task) {
    // One message at a time, as the reference device's lock: the keyring, the pins and
    // the seen-record change in the order messages arrive.
    const run = this.queue.then(task);
    this.queue = run.catch((error) => console.error("cmaas:", error));
    return run;
  }

  // -- keys at the gateway -------------------------------------------------------------

  /** Rotate the signed prekey when due, then publish it with every unpublished OTP.
   * @throws {GatewayRefused | IqFailed} */
  async publish() {
    const keyring = this.keyring;
    await keyring.rotateIfDue(Date.now());
    const bundle = keyring.bundle();
    const reply = await this.session.command(PUBLISH, { bundle: bundle.text, label: "Web browser" });
    if (reply.status !== "completed") {
      const reason = refusal("publishing the device", reply);
      if (/DeviceRevoked|revoked/.test(reason)) {
        await this._revoked();
        throw new GatewayRefused("this device was revoked");
      }
      throw new GatewayRefused(reason);
    }
    await keyring.markPublished(bundle.oneTimePrekeyIds);
    const left = reply.value("prekeys_left");
    this.ui.markPublished(left === null ? null : Number(left));
  }

  async _maintain() {
    if (this.session?.connected && this.keyring?.signedPrekeyDue(Date.now())) {
      try {
        await this._enqueue(() => this.publish());
      } catch (error) {
        console.error("cmaas: could not rotate the signed prekey:", error);
      }
    }
  }

  async _refill(notice) {
    const deviceId = Number(notice.getAttribute("device"));
    const remaining = Number(notice.getAttribute("remaining"));
    const capacity = Number(notice.getAttribute("capacity"));
    if (![deviceId, remaining, capacity].every(Number.isSafeInteger)) return; // malformed
    if (deviceId !== this.keyring.deviceId) return;
    await this.keyring.refill({ remaining, capacity });
    try {
      await this.publish();
    } catch (error) {
      console.error("cmaas: could not replenish one-time prekeys:", error);
    }
  }

  // -- receiving ------------------------------------------------------------------------

  async _catchUp(session) {
    this.catchingUp = true;
    const startedMs = Date.now();
    let carbons = true;
    try {
      await session.enableCarbons();
    } catch (error) {
      carbons = false;
      console.warn("cmaas: no carbon copies:", error.message);
    }
    const cursor = await this.store.get(ARCHIVE_KEY);
    if (typeof cursor === "number") {
      try {
        await session.catchUp(Math.max(0, cursor - ARCHIVE_SKEW_MS));
        await this.queue; // the archived messages were opened
      } catch (error) {
        this.catchingUp = false;
        console.warn("cmaas: no archive to catch up from:", error.message);
        return;
      }
    }
    this.catchingUp = false;
    if (this.session === session) {
      await this._archiveCaughtUp(startedMs);
      clearInterval(this.archiveTimer);
      // With carbons, everything the account receives reaches this session (directly or
      // as a copy), so the cursor follows the clock while it is up.
      if (carbons) {
        this.archiveTimer = setInterval(() => {
          if (this.session === session && session.connected) this._archiveMovesOn();
        }, ARCHIVE_FOLLOW_MS);
      }
    }
  }

  async _archiveCaughtUp(atMs) {
    this.archiveWrittenMs = atMs;
    await this.store.put(ARCHIVE_KEY, atMs);
  }

  _archiveMovesOn() {
    if (this.catchingUp) return;
    const now = Date.now();
    if (now - this.archiveWrittenMs >= ARCHIVE_WRITE_EVERY_MS) {
      this._archiveCaughtUp(now).catch((error) => console.error("cmaas:", error));
    }
  }

  async _receive(stanza, via) {
    if (this.inbox === null) return; // revoked meanwhile: nothing opens any more
    const envelope = stanza.getElementsByTagNameNS("urn:cmaas:envelope:1", "envelope")[0];
    const from = stanza.getAttribute("from") ?? "";
    const sender = from.split("/")[0];
    const messageId = stanza.getAttribute("id") ?? "";
    const fromArchive = via === "archive";
    let outcome = await this.inbox.receive(envelope.textContent ?? "", {
      sender,
      messageId,
      nowMs: Date.now(),
    });
    if (outcome.kind === "fetch-file") outcome = await this._fetch(outcome);
    if (!fromArchive) this._archiveMovesOn();

    const told = `${sender}\n${messageId}`;
    switch (outcome.kind) {
      case "duplicate":
        // Shown before: the gateway resent because a receipt was lost. Live copies are
        // acknowledged again; an archived one was acknowledged when it was first shown.
        if (!fromArchive) this.session?.sendReceived(sender, messageId, this.keyring.deviceId);
        break;
      case "refused":
        if (this.refusalsTold.has(told)) break;
        if (this.refusalsTold.size >= 10_000) this.refusalsTold.clear();
        this.refusalsTold.add(told);
        // An archived message the device cannot open (sealed before it existed, expired)
        // is passed over quietly, as the reference device does.
        if (!fromArchive) {
          console.warn(`cmaas: refused message ${messageId} from ${sender}: ${outcome.error.name}: ${outcome.error.message}`);
        }
        if (outcome.error.name === "AppKeyChanged" && outcome.offeredFingerprint) {
          const pinned = this.pins.items().find(([appJid]) => appJid === sender);
          this.ui.showKeyChange({
            appJid: sender,
            offeredFingerprint: outcome.offeredFingerprint,
            offeredDisplay: displayFingerprint(outcome.offeredFingerprint),
            pinnedDisplay: pinned ? displayFingerprint(pinned[1].fingerprint) : null,
          });
        }
        break;
      case "accepted":
        await this._show(outcome.message, sender, messageId);
        break;
      default:
        console.error("cmaas: unknown inbox outcome", outcome);
    }
  }

  async _show(message, sender, messageId) {
    const shown = this.ui.showMessage({
      messageId,
      appJid: sender,
      appName: await this._appName(sender),
      appFingerprint: displayFingerprint(message.appFingerprint),
      newlyPinned: message.newlyPinned,
      kind: message.content.kind,
      content: message.content,
      expiresMs: message.header.expires_ms,
      deleteAtMs: message.deleteAtMs,
      file: message.file,
    });
    if (!shown) return; // expired while it was being opened: nothing shown, no receipt
    this.shownFrom.set(messageId, sender);
    if (this.session?.connected) {
      this.session.sendReceived(sender, messageId, this.keyring.deviceId);
      this.ui.markReceived(messageId);
    }
  }

  async _appName(appJid) {
    if (!this.names.has(appJid) && this.session?.connected) {
      const name = await this.session.displayName(appJid);
      if (name === null) return appJid;
      this.names.set(appJid, name);
    }
    return this.names.get(appJid) ?? appJid;
  }

  /** Download the blob, then let the inbox check and decrypt it (CMB1). */
  async _fetch(fetchOutcome) {
    const { url } = fetchOutcome.content;
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      return this.inbox.fileFailed(fetchOutcome, new Error(`not a URL: ${url}`));
    }
    if (parsed.protocol !== "https:" && !(parsed.protocol === "http:" && LOOPBACK.has(parsed.hostname))) {
      return this.inbox.fileFailed(fetchOutcome, new Error(`refusing to fetch ${url} without TLS`));
    }
    let reason = "";
    for (let attempt = 0; attempt < FILE_ATTEMPTS; attempt += 1) {
      try {
        const response = await fetch(parsed, {
          credentials: "omit",
          cache: "no-store",
          redirect: "error",
          referrerPolicy: "no-referrer",
        });
        if (response.status !== 200) {
          reason = `HTTP ${response.status}`;
        } else {
          const bytes = new Uint8Array(await response.arrayBuffer());
          return await this.inbox.fileFetched(fetchOutcome, bytes, { nowMs: Date.now() });
        }
      } catch (error) {
        if (error?.name !== "TypeError") return this.inbox.fileFailed(fetchOutcome, error);
        reason = error.message;
      }
      await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    }
    return this.inbox.fileFailed(fetchOutcome, new Error(`${url}: ${reason}`));
  }

  // -- what the person does ---------------------------------------------------------

  /** The message was read (visible, in view for 2 s): the displayed marker goes. */
  read(messageId) {
    const appJid = this.shownFrom.get(messageId);
    if (appJid === undefined || this.keyring === null) return;
    if (!this.session?.connected) {
      this.pendingReads.add(messageId);
      return;
    }
    this.session.sendDisplayed(appJid, messageId, this.keyring.deviceId);
    this.ui.markRead(messageId);
  }

  /** The message left the view: at auto-delete, the inbox forgets its content. */
  gone(messageId, reason) {
    const appJid = this.shownFrom.get(messageId);
    this.shownFrom.delete(messageId);
    this.pendingReads.delete(messageId);
    if (reason === "deleted" && appJid !== undefined) {
      this._enqueue(() => this.inbox.deleted(appJid, messageId, { nowMs: Date.now() }));
    }
  }

  /** Accept an app's new key after the person compared its fingerprint. */
  async trust(appJid, fingerprint) {
    await this._enqueue(() => this.inbox.trust(appJid, fingerprint, { nowMs: Date.now() }));
    this.refusalsTold.clear();
  }

  /** Revoke this device at the gateway, then forget its keys. @throws {Error} */
  async revoke() {
    if (!this.session?.connected) {
      this.ui.setState("offline", "Revoking needs a connection: try again when online.");
      return;
    }
    const deviceId = String(this.keyring.deviceId);
    let reply;
    try {
      reply = await this.session.command(REVOKE, { device_id: deviceId });
    } catch (error) {
      this.ui.setState("online", `Revoking failed: ${error.message}`);
      return;
    }
    if (reply.status !== "completed" || reply.errorNotes.length > 0) {
      this.ui.setState("online", refusal("Revoking failed", reply));
      return;
    }
    await this._revoked();
  }

  async _revoked() {
    // A revoked id never comes back: its keys can open nothing new, so they go.
    this.stopped = true;
    clearInterval(this.maintenance);
    clearInterval(this.archiveTimer);
    this.maintenance = null;
    const session = this.session;
    this.session = null;
    session?.disconnect();
    await this.keyring.erase();
    await this.store.delete(ARCHIVE_KEY);
    this.keyring = null;
    this.inbox = null;
    this.pins = null;
    this.password = null;
    this.shownFrom.clear();
    this.pendingReads.clear();
    this.ui.markRevoked();
    this.ui.setState("revoked", "Sign in again to set up a new device in this browser.");
    this.ui.showSignIn("", { focus: true });
  }
}
