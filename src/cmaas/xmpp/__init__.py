"""XMPP pieces shared by the gateway, the client service and the reference device: the
CMaaS stanza namespaces, a supervised connection with backoff, and an ad-hoc command
caller."""
