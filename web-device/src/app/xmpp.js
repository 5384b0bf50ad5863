// The page's XMPP side: one strophe.js connection over RFC 7395 WebSocket, SCRAM only,
// no stream management (a closed tab must not leave a hibernating session that swallows
// messages: without it the server stores them offline until the page comes back).
//
// It knows stanzas, not envelopes: it hands the device controller every sealed message
// however it came (live, as a carbon copy, from the archive), runs the gateway's ad-hoc
// commands, and sends receipts and markers. It never answers a message with an error.

import { $iq, $msg, $pres, Strophe } from "strophe.js";

export const NS = {
  envelope: "urn:cmaas:envelope:1",
  device: "urn:cmaas:device:1",
  receipts: "urn:xmpp:receipts",
  markers: "urn:xmpp:chat-markers:0",
  carbons: "urn:xmpp:carbons:2",
  forward: "urn:xmpp:forward:0",
  mam: "urn:xmpp:mam:2",
  rsm: "http://jabber.org/protocol/rsm",
  commands: "http://jabber.org/protocol/commands",
  data: "jabber:x:data",
  discoInfo: "http://jabber.org/protocol/disco#info",
};

const FORM_TYPE = "urn:cmaas:cmd:1";

// strophe.js logs every stanza step at DEBUG; warnings and errors are enough in a console.
Strophe.setLogLevel(Strophe.LogLevel.WARN);
const IQ_TIMEOUT_MS = 15_000;
// A message waits for its app's name: not long, the JID will do.
const NAME_TIMEOUT_MS = 5_000;
const ARCHIVE_PAGE = 50;

/** The server refused the password: retrying will not help. */
export class AuthenticationFailed extends Error {
  constructor(message) {
    super(message);
    this.name = "AuthenticationFailed";
  }
}

/** The connection could not be made or was lost. */
export class ConnectionLost extends Error {
  constructor(message) {
    super(message);
    this.name = "ConnectionLost";
  }
}

/** An IQ came back as an error or not at all. */
export class IqFailed extends Error {
  constructor(message, condition) {
    super(message);
    this.name = "IqFailed";
    this.condition = condition;
  }
}

/** The reply of one ad-hoc command step (XEP-0050). */
export class CommandReply {
  constructor(status, sessionId, notes, values, items) {
    this.status = status;
    this.sessionId = sessionId;
    /** @type {Array<[string, string]>} (type, text) */
    this.notes = notes;
    /** @type {Record<string, string[]>} */
    this.values = values;
    /** @type {Array<Record<string, string>> | null} */
    this.items = items;
  }

  get errorNotes() {
    return this.notes.filter(([type]) => type === "error").map(([, text]) => text);
  }

  value(name) {
    return (this.values[name] ?? [])[0] ?? null;
  }

  static fromIq(iq) {
    const command = child(iq, NS.commands, "command");
    if (command === null) throw new IqFailed("the command reply has no <command/>", "bad-reply");
    const notes = children(command, NS.commands, "note").map((note) => [
      note.getAttribute("type") ?? "info",
      note.textContent ?? "",
    ]);
    const values = {};
    let items = null;
    const form = child(command, NS.data, "x");
    if (form !== null) {
      for (const field of children(form, NS.data, "field")) {
        const name = field.getAttribute("var") ?? "";
        values[name] = (values[name] ?? []).concat(fieldValues(field));
      }
      const rows = children(form, NS.data, "item");
      if (rows.length > 0) {
        items = rows.map((row) =>
          Object.fromEntries(
            children(row, NS.data, "field").map((f) => [
              f.getAttribute("var") ?? "",
              fieldValues(f)[0] ?? "",
            ]),
          ),
        );
      }
    }
    return new CommandReply(
      command.getAttribute("status") ?? "",
      command.getAttribute("sessionid") ?? "",
      notes,
      values,
      items,
    );
  }
}

/**
 * One login of the account. Callbacks:
 * - onMessage(stanza, via): a sealed message, `via` "live" | "carbon" | "archive"; the
 *   stanza is the message itself (unwrapped from a carbon or archive result, whose outer
 *   sender was checked to be the account itself).
 * - onPrekeysLow(element): a <prekeys-low/> from the gateway domain.
 * - onDisconnected(error | null): the session ended (null when asked to).
 */
export class XmppSession {
  /**
   * @param {{websocket: string, jid: string, resource: string, password: string,
   *          gateway: string, onMessage: Function, onPrekeysLow: Function,
   *          onDisconnected: Function}} options
   */
  constructor(options) {
    this.options = options;
    this.bareJid = options.jid;
    this.fullJid = `${options.jid}/${options.resource}`;
    this.connection = null;
    this._up = false;
    this._ended = false;
    this._closing = false;
  }

  /**
   * Log in and send initial presence (so the server delivers what it stored offline).
   * @returns {Promise<void>}
   * @throws {AuthenticationFailed} The server refused the password.
   * @throws {ConnectionLost} No session (the server is unreachable or dropped us).
   */
  connect() {
    const connection = new Strophe.Connection(this.options.websocket, {
      mechanisms: [Strophe.SASLSHA512, Strophe.SASLSHA384, Strophe.SASLSHA256, Strophe.SASLSHA1],
      enableStreamManagement: false,
    });
    this.connection = connection;
    return new Promise((resolve, reject) => {
      let settled = false;
      const fail = (error) => {
        if (!settled) {
          settled = true;
          reject(error);
        }
      };
      connection.connect(this.fullJid, this.options.password, (status, condition) => {
        switch (status) {
          case Strophe.Status.CONNECTED:
            this._onConnected();
            settled = true;
            this._up = true;
            resolve();
            break;
          case Strophe.Status.AUTHFAIL:
            fail(new AuthenticationFailed("the server refused the account or password"));
            break;
          case Strophe.Status.CONNFAIL:
          case Strophe.Status.ERROR:
          case Strophe.Status.CONNTIMEOUT:
            fail(new ConnectionLost(`could not connect${condition ? `: ${condition}` : ""}`));
            break;
          case Strophe.Status.DISCONNECTED:
            if (!settled) {
              fail(new ConnectionLost(`disconnected${condition ? `: ${condition}` : ""}`));
            } else if (this._up && !this._ended) {
              // Only a session that was up ends here; a failed login was told by connect().
              this._ended = true;
              this.options.onDisconnected(
                this._closing ? null : new ConnectionLost(condition || "the connection closed"),
              );
            }
            break;
          default:
            break;
        }
      });
    });
  }

  /** End the session with a closing stream (the server then drops the resource at once). */
  disconnect() {
    this._closing = true;
    if (this.connection !== null) {
      // An unavailable presence first: the server stops routing to this resource now.
      this.connection.send($pres({ type: "unavailable" }));
      this.connection.flush();
      this.connection.disconnect("closed by the user");
    }
  }

  get connected() {
    return this.connection !== null && this.connection.connected && !this._ended;
  }

  _onConnected() {
    const connection = this.connection;
    connection.addHandler((stanza) => this._dispatch(stanza), null, "message", null);
    // Non-negative priority: servers deliver messages to the bare JID to this resource,
    // and offline storage is flushed to it.
    connection.send($pres().c("priority").t("0"));
  }

  _dispatch(stanza) {
    try {
      this._route(stanza);
    } catch (error) {
      // A handler that throws is dropped by strophe: never let one stanza end reception.
      console.error("cmaas: a message could not be handled", error);
    }
    return true;
  }

  _route(stanza) {
    const type = stanza.getAttribute("type") ?? "normal";
    if (type === "error") return; // a bounce: the gateway handles it; never answered
    const from = stanza.getAttribute("from") ?? "";
    if (child(stanza, NS.envelope, "envelope") !== null) {
      this.options.onMessage(stanza, "live");
      return;
    }
    const low = child(stanza, NS.device, "prekeys-low");
    if (low !== null) {
      if (from === this.options.gateway) this.options.onPrekeysLow(low);
      return;
    }
    const carbon = child(stanza, NS.carbons, "received");
    if (carbon !== null) {
      // A copy vouched for by the server comes from the account's own bare JID.
      if (from !== this.bareJid) return;
      const inner = forwarded(carbon);
      if (inner !== null && child(inner, NS.envelope, "envelope") !== null) {
        this.options.onMessage(inner, "carbon");
      }
    }
  }

  /** Enable carbon copies (XEP-0280). @throws {IqFailed} */
  async enableCarbons() {
    await this.iq($iq({ type: "set" }).c("enable", { xmlns: NS.carbons }));
  }

  /**
   * Read the account's archive (XEP-0313) from `sinceMs` on, page by page, calling
   * `onMessage(stanza, "archive")` for each archived sealed message from the account's
   * own archive. Resolves once the archive says it is complete.
   * @throws {IqFailed} The server has no archive or refused the query.
   */
  async catchUp(sinceMs) {
    let after = null;
    for (;;) {
      const queryId = this.connection.getUniqueId("mam");
      const found = [];
      const handler = this.connection.addHandler(
        (stanza) => {
          const result = child(stanza, NS.mam, "result");
          if (result === null || result.getAttribute("queryid") !== queryId) return true;
          const from = stanza.getAttribute("from");
          if (from !== null && from !== "" && Strophe.getBareJidFromJid(from) !== this.bareJid) {
            return true; // only the account's own archive speaks for its messages
          }
          const inner = forwarded(result);
          if (
            inner !== null &&
            inner.getAttribute("type") !== "error" &&
            child(inner, NS.envelope, "envelope") !== null
          ) {
            found.push(inner);
          }
          return true;
        },
        NS.mam,
        "message",
      );
      let reply;
      try {
        const query = $iq({ type: "set" })
          .c("query", { xmlns: NS.mam, queryid: queryId })
          .c("x", { xmlns: NS.data, type: "submit" })
          .c("field", { var: "FORM_TYPE", type: "hidden" })
          .c("value")
          .t(NS.mam)
          .up()
          .up()
          .c("field", { var: "start" })
          .c("value")
          .t(new Date(sinceMs).toISOString())
          .up()
          .up()
          .up()
          .c("set", { xmlns: NS.rsm })
          .c("max")
          .t(String(ARCHIVE_PAGE));
        if (after !== null) query.up().c("after").t(after);
        reply = await this.iq(query);
      } finally {
        this.connection.deleteHandler(handler);
      }
      for (const stanza of found) this.options.onMessage(stanza, "archive");
      const fin = child(reply, NS.mam, "fin");
      const last = fin === null ? null : child(child(fin, NS.rsm, "set"), NS.rsm, "last");
      if (fin === null || fin.getAttribute("complete") === "true" || last === null) return;
      after = last.textContent;
    }
  }

  /**
   * Execute an ad-hoc command on the gateway and submit one form per step (XEP-0050).
   * @param {string} node
   * @param {...Record<string, string>} steps
   * @returns {Promise<CommandReply>} the last reply
   * @throws {IqFailed} The gateway answered with an XMPP error or not at all.
   */
  async command(node, ...steps) {
    let reply = CommandReply.fromIq(
      await this.iq(
        $iq({ type: "set", to: this.options.gateway }).c("command", {
          xmlns: NS.commands,
          node,
          action: "execute",
        }),
      ),
    );
    for (const [index, values] of steps.entries()) {
      if (reply.status !== "executing") break;
      const submit = $iq({ type: "set", to: this.options.gateway })
        .c("command", {
          xmlns: NS.commands,
          node,
          sessionid: reply.sessionId,
          action: index === steps.length - 1 ? "complete" : "next",
        })
        .c("x", { xmlns: NS.data, type: "submit" })
        .c("field", { var: "FORM_TYPE" })
        .c("value")
        .t(FORM_TYPE)
        .up()
        .up();
      for (const [name, value] of Object.entries(values)) {
        submit.c("field", { var: name }).c("value").t(value).up().up();
      }
      reply = CommandReply.fromIq(await this.iq(submit));
    }
    return reply;
  }

  /**
   * The display name the gateway gives a JID (its disco#info identity), or null.
   * @returns {Promise<string | null>}
   */
  async displayName(jid) {
    try {
      const reply = await this.iq(
        $iq({ type: "get", to: jid }).c("query", { xmlns: NS.discoInfo }),
        NAME_TIMEOUT_MS,
      );
      const query = child(reply, NS.discoInfo, "query");
      const identity = query === null ? null : child(query, NS.discoInfo, "identity");
      const name = identity?.getAttribute("name");
      return name ? name : null;
    } catch (error) {
      if (error instanceof IqFailed) return null;
      throw error;
    }
  }

  /** `<received/>` (XEP-0184) for a message shown, naming this device (protocol 13). */
  sendReceived(appJid, messageId, deviceId) {
    this._report(appJid, "received", NS.receipts, messageId, deviceId);
  }

  /** `<displayed/>` (XEP-0333) for a message read, naming this device (protocol 13). */
  sendDisplayed(appJid, messageId, deviceId) {
    this._report(appJid, "displayed", NS.markers, messageId, deviceId);
  }

  _report(appJid, name, xmlns, messageId, deviceId) {
    this.connection.send(
      $msg({ type: "chat", to: appJid })
        .c(name, { xmlns, id: messageId })
        .up()
        .c("device", { xmlns: NS.device, id: String(deviceId) }),
    );
  }

  /**
   * Send an IQ and wait for its result.
   * @returns {Promise<Element>} the result stanza
   * @throws {IqFailed}
   */
  iq(builder, timeoutMs = IQ_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      if (!this.connected) {
        reject(new IqFailed("not connected", "not-connected"));
        return;
      }
      this.connection.sendIQ(
        builder.tree(),
        resolve,
        (stanza) => {
          if (stanza === null) {
            reject(new IqFailed("no answer in time", "timeout"));
            return;
          }
          const error = stanza.getElementsByTagName("error")[0];
          const condition = error?.firstElementChild?.localName ?? "unknown";
          reject(new IqFailed(`the server answered ${condition}`, condition));
        },
        timeoutMs,
      );
    });
  }
}

function children(element, ns, name) {
  if (element === null) return [];
  return Array.from(element.children).filter(
    (node) => node.localName === name && node.namespaceURI === ns,
  );
}

function child(element, ns, name) {
  return children(element, ns, name)[0] ?? null;
}

function fieldValues(field) {
  return children(field, NS.data, "value").map((value) => value.textContent ?? "");
}

function forwarded(wrapper) {
  const forward = child(wrapper, NS.forward, "forwarded");
  if (forward === null) return null;
  return Array.from(forward.children).find((node) => node.localName === "message") ?? null;
}
