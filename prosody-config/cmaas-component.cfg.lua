-- CMaaS gateway for Prosody: the parts an operator adds to an existing prosody.cfg.lua.
-- Checked against Prosody 0.12 (Debian bookworm).
--
-- The gateway is an XEP-0114 external component: it connects to Prosody on a local TCP
-- port, authenticates with a shared secret and then sends and receives stanzas for
-- every address in its own domain (gateway.example.org below; use your own).
--
-- Where each part goes matters. Prosody's config has sections: settings before the
-- first VirtualHost/Component line are server-wide, settings after such a line belong
-- to that host. Port settings placed in a host section are ignored (Prosody only logs a
-- warning) and the component port then falls back to 5347 on the default interfaces.
-- Debian's prosody.cfg.lua includes conf.d/*.cfg.lua at its END, i.e. inside the last
-- VirtualHost section, so:
--   * part 1 goes into the server-wide section of prosody.cfg.lua itself;
--   * part 2 can go at the end of prosody.cfg.lua or into
--     /etc/prosody/conf.d/cmaas-component.cfg.lua.
-- Then restart Prosody (`prosodyctl restart` or systemctl).

---------------------------------------------------------------------------------------
-- Part 1: server-wide section (before the first VirtualHost).
---------------------------------------------------------------------------------------

-- Keep the component port on loopback (or a private network): the secret is the only
-- protection and the stream is not encrypted.
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }

-- Users who receive app messages: Debian's default config loads the "limits" module,
-- which throttles what each client SENDS to about 10 kB/s. Delivery receipts and
-- replies then queue up under load (measured: receipt round trips of 2 s at 200
-- messages/s). The component connection itself is not throttled. Either raise the
-- client rate, e.g.
--
-- limits = {
--     c2s = { rate = "100kb/s"; burst = "2s" };
--     s2sin = { rate = "30kb/s"; burst = "2s" };
-- }
--
-- or exempt particular accounts with `unlimited_jids = { "user@example.org" }`.
-- mod_offline (loaded automatically; do not list it in modules_disabled) stores
-- messages for offline users without a count limit.

---------------------------------------------------------------------------------------
-- Part 2: the component itself (after the server-wide section).
---------------------------------------------------------------------------------------

-- gateway.example.org must NOT also be a VirtualHost. If users of other servers should
-- reach the gateway, it needs DNS records pointing at this server and a certificate
-- like any domain.
Component "gateway.example.org"
	-- The same value as the gateway's component secret. Generate a long random one,
	-- e.g. `openssl rand -base64 32`, and keep this file readable by prosody only.
	component_secret = "CHANGE-ME"

	-- Prosody accepts ONE connection per component domain: a second gateway instance
	-- using the same domain is refused with <conflict/> (there is no load balancing
	-- as in ejabberd; run a standby instance or give each instance its own domain).
	-- If the gateway restarts while Prosody still holds its old, half-dead connection,
	-- the new one is refused as well until the old one times out. To let the newest
	-- connection win instead:
	-- component_conflict_resolve = "kick_old"

	-- Stanzas from the gateway larger than this close the whole component stream
	-- (not-well-formed) and the stanza is lost. The default is 512 KiB:
	-- component_stanza_size_limit = 512 * 1024
