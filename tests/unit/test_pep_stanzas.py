"""Golden stanzas: PEP queries to app JIDs for their legacy OMEMO device list and bundles."""

from __future__ import annotations

from cmaas.admin import RegisterAppRequest
from cmaas.wire import OmemoBundle
from tests.omemo_bundles import bundle_json

from .gateway_stanzas import DOMAIN, USER, GatewayStanzaTest

PUBSUB = "http://jabber.org/protocol/pubsub"
AXOLOTL = "eu.siacs.conversations.axolotl"
DEVICELIST = f"{AXOLOTL}.devicelist"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


class PepTest(GatewayStanzaTest):
    def setUp(self) -> None:
        super().setUp()
        self.run_coro(self.service.register_app(RegisterAppRequest("otp", "OTP Service")))

    def publish(self, device_id: int, prekeys: int = 2) -> OmemoBundle:
        bundle = OmemoBundle.from_json(bundle_json(prekeys), device_id=device_id)
        self.run_coro(self.keystore.omemo.publish("otp", bundle, max_devices=4, max_prekeys=100))
        return bundle

    def query(self, node: str, to: str = f"otp@{DOMAIN}", items: str = "") -> None:
        self.recv(
            f"<iq type='get' id='q1' from='{USER}' to='{to}'>"
            f"<pubsub xmlns='{PUBSUB}'><items node='{node}'>{items}</items></pubsub></iq>"
        )

    def expect_not_found(self, to: str = f"otp@{DOMAIN}") -> None:
        self.expect(f"""
          <iq type='error' id='q1' from='{to}' to='{USER}'>
            <error type='cancel'>
              <item-not-found xmlns='{STANZAS}'/>
              <text xmlns='{STANZAS}'>no such node</text>
            </error>
          </iq>""")


class TestDeviceList(PepTest):
    def test_the_list_names_each_published_device_oldest_first(self) -> None:
        self.publish(31337)
        self.monotonic.now += 1
        self.publish(42)
        for to in (f"otp@{DOMAIN}", f"otp@{DOMAIN}/cmaas"):
            self.query(DEVICELIST, to)
            self.expect(f"""
              <iq type='result' id='q1' from='{to}' to='{USER}'>
                <pubsub xmlns='{PUBSUB}'><items node='{DEVICELIST}'>
                  <item id='current'><list xmlns='{AXOLOTL}'>
                    <device id='31337'/><device id='42'/>
                  </list></item>
                </items></pubsub>
              </iq>""")

    def test_an_app_without_devices_has_an_empty_list(self) -> None:
        self.query(DEVICELIST)
        self.expect(f"""
          <iq type='result' id='q1' from='otp@{DOMAIN}' to='{USER}'>
            <pubsub xmlns='{PUBSUB}'><items node='{DEVICELIST}'>
              <item id='current'><list xmlns='{AXOLOTL}'/></item>
            </items></pubsub>
          </iq>""")

    def test_a_retired_device_leaves_the_list(self) -> None:
        self.publish(7)
        self.publish(8)
        self.run_coro(self.keystore.omemo.retire("otp", 7))
        self.query(DEVICELIST)
        self.expect(f"""
          <iq type='result' id='q1' from='otp@{DOMAIN}' to='{USER}'>
            <pubsub xmlns='{PUBSUB}'><items node='{DEVICELIST}'>
              <item id='current'><list xmlns='{AXOLOTL}'><device id='8'/></list></item>
            </items></pubsub>
          </iq>""")

    def test_asking_for_another_item_id_gets_no_item(self) -> None:
        self.publish(7)
        self.query(DEVICELIST, items="<item id='old'/>")
        self.expect(f"""
          <iq type='result' id='q1' from='otp@{DOMAIN}' to='{USER}'>
            <pubsub xmlns='{PUBSUB}'><items node='{DEVICELIST}'/></pubsub>
          </iq>""")
        self.query(DEVICELIST, items="<item id='current'/>")
        xml = self.next_stanza()
        assert xml.find(f".//{{{AXOLOTL}}}device").get("id") == "7"  # type: ignore[union-attr]


class TestBundle(PepTest):
    def test_a_bundle_is_served_as_published(self) -> None:
        bundle = self.publish(31337, prekeys=2)
        wire = bundle.to_json()
        prekeys = wire["prekeys"]
        assert isinstance(prekeys, list)
        node = f"{AXOLOTL}.bundles:31337"
        self.query(node)
        self.expect(f"""
          <iq type='result' id='q1' from='otp@{DOMAIN}' to='{USER}'>
            <pubsub xmlns='{PUBSUB}'><items node='{node}'>
              <item id='current'><bundle xmlns='{AXOLOTL}'>
                <signedPreKeyPublic signedPreKeyId='1'>{wire["signed_prekey"]}</signedPreKeyPublic>
                <signedPreKeySignature>{wire["signed_prekey_signature"]}</signedPreKeySignature>
                <identityKey>{wire["identity_key"]}</identityKey>
                <prekeys>
                  <preKeyPublic preKeyId='1'>{prekeys[0]["key"]}</preKeyPublic>
                  <preKeyPublic preKeyId='2'>{prekeys[1]["key"]}</preKeyPublic>
                </prekeys>
              </bundle></item>
            </items></pubsub>
          </iq>""")

    def test_a_republished_bundle_replaces_the_old_one(self) -> None:
        first = self.publish(5, prekeys=1)
        second = OmemoBundle.from_json(
            {**bundle_json(1, spk_id=2), "identity_key": first.to_json()["identity_key"]},
            device_id=5,
        )
        self.run_coro(self.keystore.omemo.publish("otp", second, max_devices=4, max_prekeys=9))
        self.query(f"{AXOLOTL}.bundles:5")
        xml = self.next_stanza()
        spk = xml.find(f".//{{{AXOLOTL}}}signedPreKeyPublic")
        assert spk is not None and spk.get("signedPreKeyId") == "2"
        assert spk.text == second.to_json()["signed_prekey"]


class TestRefusals(PepTest):
    def test_unknown_app_gets_item_not_found(self) -> None:
        self.query(DEVICELIST, to=f"nope@{DOMAIN}")
        self.expect_not_found(f"nope@{DOMAIN}")

    def test_the_component_domain_has_no_pep(self) -> None:
        self.query(DEVICELIST, to=DOMAIN)
        self.expect_not_found(DOMAIN)

    def test_unknown_nodes_get_item_not_found(self) -> None:
        self.publish(7)
        for node in (
            f"{AXOLOTL}.bundles:8",
            f"{AXOLOTL}.bundles:007",
            f"{AXOLOTL}.bundles:+7",
            f"{AXOLOTL}.bundles:0",
            f"{AXOLOTL}.bundles:2147483648",
            f"{AXOLOTL}.bundles:",
            f"{AXOLOTL}.bundles:99999999999999999999",
            "urn:xmpp:omemo:2:devices",
            "",
        ):
            self.query(node)
            self.expect_not_found()
        # The same path answers a known node right after: the refusals were real ones.
        self.query(f"{AXOLOTL}.bundles:7")
        assert self.next_stanza().get("type") == "result"

    def test_publishing_to_an_app_jid_is_forbidden(self) -> None:
        self.recv(
            f"<iq type='set' id='s1' from='{USER}' to='otp@{DOMAIN}'>"
            f"<pubsub xmlns='{PUBSUB}'><publish node='{DEVICELIST}'><item id='current'>"
            f"<list xmlns='{AXOLOTL}'><device id='1'/></list></item></publish></pubsub></iq>"
        )
        self.expect(f"""
          <iq type='error' id='s1' from='otp@{DOMAIN}' to='{USER}'>
            <error type='auth'>
              <forbidden xmlns='{STANZAS}'/>
              <text xmlns='{STANZAS}'>app JIDs' nodes are published by their app only</text>
            </error>
          </iq>""")
        self.query(DEVICELIST)
        xml = self.next_stanza()
        assert xml.get("type") == "result"
        assert xml.find(f".//{{{AXOLOTL}}}device") is None
