"""Hostile values: what a careless or malicious client might put into a form or a stanza."""

from __future__ import annotations

from hypothesis import strategies as st

# Characters XML 1.0 can carry: anything else cannot cross an XMPP stream at all.
_XML_CHARS = st.characters(
    exclude_categories=["Cs"],
    exclude_characters=[chr(c) for c in range(32) if c not in (9, 10, 13)] + ["\ufffe", "\uffff"],
)

CORPUS = [
    "",
    " ",
    "\t",
    "\n\n",
    "0",
    "-1",
    "1.5",
    "nan",
    "inf",
    "-inf",
    "1e309",
    "99999999999999999999",
    "default",
    "high",
    "HIGH",
    "bulk,urgent",
    "true",
    "false",
    "2",
    "10.0.0.0/33",
    "10.1.2.3/8",
    "0.0.0.0/0",
    "::/0",
    "fe80::1%eth0",
    "256.1.1.1",
    "127.0.0.1",
    "a@b@c",
    "@cmaas.test",
    "admin@cmaas.test",
    "admin@cmaas.test/res",
    "x" * 1100 + "@d.test",
    "+919876543210",
    "+00000",
    "+1",
    "98765 43210",
    "alice@",
    "Alice@Example.ORG",
    "https://app.example.org/cb",
    "http://[::1]:8080/x",
    "javascript:alert(1)",
    "https://u:p@h/",
    "' OR 1=1 --",
    "Robert'); DROP TABLE apps;--",
    "%s%s%n",
    "${jndi:ldap://x/a}",
    "{{7*7}}",
    "\u202eevil",
    "\u200b",
    "ÄÖÜ",
    "😀" * 30,
    "<x/>",
    "&amp;",
    "]]>",
    "a\r\nb",
    "x" * 4097,
    "y" * 10000,
]

text = st.one_of(
    st.sampled_from(CORPUS),
    st.text(_XML_CHARS, max_size=40),
    st.text(_XML_CHARS, min_size=4000, max_size=4200),
    st.builds(
        lambda s, n: s * n, st.sampled_from(["a", "ü", "😀", "<", "&", "1"]), st.integers(1, 6000)
    ),
)

values = st.one_of(
    text.map(lambda v: [v]),
    st.lists(text, max_size=6),
    st.lists(st.sampled_from(["10.0.0.0/8", "x"]), min_size=100, max_size=140),
)


def form(field_names: list[str]) -> st.SearchStrategy[dict[str, list[str]]]:
    """Some of a command's fields (and a few it does not have), each with hostile values."""
    names = st.sampled_from([*field_names, "FORM_TYPE", "unknown", "app_id", "x" * 300])
    return st.dictionaries(names, values, max_size=8)


jids = st.one_of(
    st.sampled_from(
        [
            "alice@cmaas.test/phone",
            "admin@cmaas.test/gajim",
            "cmaas.test",
            "gateway.cmaas.test",
            "evil@elsewhere.test/x",
            "a" * 1000 + "@cmaas.test",
            "ü@cmaas.test/ü",
        ]
    ),
    st.text(st.sampled_from("abz09.-_"), min_size=1, max_size=20).map(
        lambda u: f"{u}@cmaas.test/r"
    ),
)

targets = st.sampled_from(
    [
        "gateway.cmaas.test",
        "otp@gateway.cmaas.test",
        "nope@gateway.cmaas.test",
        "Otp@gateway.cmaas.test",
        "otp@gateway.cmaas.test/res",
        "x" * 70 + "@gateway.cmaas.test",
    ]
)
