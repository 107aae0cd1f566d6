"""Configured ESP SAs (nodeapps/esp/sa_spec.py) and the typed node sections that carry them: every SA field
is checked once with a one-line error naming it, the one SA-pair builder makes pairs both ends agree on, and
every section the lab writes reads back to itself (``from_dict(to_dict(x)) == x``)."""
import copy
import json

import pytest

from nodeapps.esp.errors import ConfigError as EspConfigError
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sa_spec import SaPair, SaSpec, sa_pair
from nodeapps.runtime.config import ConfigError, NodeConfig
from nodeapps.runtime.sections import (ExternalSection, MeshPeer, MeshSection, MobileNodeSection, MobilePeer,
                                       MobilityTimers, SaPeer, VcmSection)
from test_node_sections import LABS, lab_configs
from topologies import wireshark

SA = {"name": "mn1->sg", "direction": "out", "spi": 0x1000, "algorithm": "aes128gcm16", "key": "11" * 16,
      "salt": "22" * 4, "mode": "tunnel", "local": "2001:db8:21::a:1", "remote": "2001:db8:0:1::1"}


def test_a_spec_reads_back_to_itself_with_and_without_optional_fields():
    plain = SaSpec.from_dict(SA)
    assert plain.to_dict() == SA and SaSpec.from_dict(plain.to_dict()) == plain
    full = SaSpec.from_dict({**SA, "replay_window": 128, "esn": True, "soft_limit": 5, "created_at": 1.5,
                             "encap": "udp"})
    assert SaSpec.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    assert full.replay_window == 128 and full.esn is True and full.encap == "udp"


def test_hand_written_forms_are_made_canonical():
    spec = SaSpec.from_dict({**SA, "spi": "0x00001000", "key": "0x" + "AB" * 16, "salt": "de:ad:be:ef",
                             "local": " 2001:0db8:21::a:1 "})
    assert (spec.spi, spec.key, spec.salt, spec.local) == (0x1000, "ab" * 16, "deadbeef", "2001:db8:21::a:1")


BAD_FIELDS = [
    ({"spi": 255}, "spi"),                       # RFC 4303 §2.1: 1..255 reserved
    ({"spi": 0}, "spi"),
    ({"spi": 2 ** 32}, "spi"),
    ({"spi": True}, "spi"),
    ({"spi": "twelve"}, "spi"),
    ({"key": "11" * 15}, "key"),                 # RFC 4106 §8.1: 16 octets for AES-128
    ({"algorithm": "aes256gcm16"}, "key"),       # ... and 32 for AES-256
    ({"key": "zz" * 16}, "key"),
    ({"key": 7}, "key"),
    ({"salt": "22" * 3}, "salt"),                # RFC 4106 §8.1: a 4-octet salt
    ({"salt": "22" * 5}, "salt"),
    ({"algorithm": "des"}, "algorithm"),
    ({"mode": "beet"}, "mode"),
    ({"direction": "both"}, "direction"),
    ({"local": "10.0.0.1"}, "local"),
    ({"remote": None}, "remote"),
    ({"name": ""}, "name"),
    ({"replay_window": 8}, "replay_window"),
    ({"esn": 1}, "esn"),
    ({"soft_limit": 0}, "soft_limit"),
    ({"encap": "tcp"}, "encap"),
    ({"mode": "transport", "encap": "udp"}, "encap"),
    ({"created_at": [1]}, "created_at"),
    ({"lifetime": 5}, "lifetime"),
]


@pytest.mark.parametrize("change, field", BAD_FIELDS, ids=[f for _c, f in BAD_FIELDS])
def test_each_bad_sa_field_is_named_under_its_path(change, field):
    with pytest.raises(EspConfigError) as info:
        SaSpec.from_dict({**SA, **change}, "mobility.peers[1].out")
    message = str(info.value)
    assert message.startswith(f"mobility.peers[1].out.{field}:") and "\n" not in message, message


@pytest.mark.parametrize("field", ["name", "spi", "key", "salt", "mode", "local", "remote", "algorithm",
                                   "direction"])
def test_a_missing_sa_field_is_named(field):
    with pytest.raises(EspConfigError, match=f"^sas\\[0\\].{field}: missing$"):
        SaSpec.from_dict({k: v for k, v in SA.items() if k != field}, "sas[0]")


def _mutate(config: dict, path: tuple, value) -> dict:
    bad = copy.deepcopy(config)
    target = bad
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return bad


@pytest.mark.parametrize("variant, path, value, named", [
    ("private-vcm-home-ro", ("sas", 0, "spi"), 7, "config field sas[0].spi:"),
    ("private-vcm-home-ro", ("sas", 1, "salt"), "00", "config field sas[1].salt:"),
    ("private-vcm-home-ro", ("mobility", "peers", 1, "in", "key"), "00" * 8, "config field mobility.peers[1].in.key:"),
    ("public-vcm-host", ("mobility", "vcm", "sa", "out", "spi"), 1, "config field mobility.vcm.sa.out.spi:"),
    ("private-mesh", ("mobility", "mesh", "peers", 0, "in", "mode"), "beet",
     "config field mobility.mesh.peers[0].in.mode:"),
    ("private-correspondent", ("mobility", "external", "tunnel_peer", "out", "remote"), "xha",
     "config field mobility.external.tunnel_peer.out.remote:"),
    ("private-correspondent", ("mobility", "external", "peers", 0, "out"), [],
     "config field mobility.external.peers[0].out: must be an object"),
])
def test_bad_sas_in_a_mobile_nodes_file_get_one_line_naming_the_field(tmp_path, variant, path, value, named):
    config = lab_configs(tmp_path, **LABS[variant])["mn1"]
    with pytest.raises(ConfigError) as info:
        NodeConfig.from_dict(_mutate(config, path, value))
    assert str(info.value).startswith(named) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("node, path", [("ha", ("mobility", "peers", 0, "out", "spi")),
                                        ("xha", ("mobility", "tunnel_peers", 0, "in", "spi")),
                                        ("sg", ("sas", 0, "spi"))])
def test_every_role_checks_its_sas_as_it_loads(tmp_path, node, path):
    config = lab_configs(tmp_path, **LABS["private-correspondent"])[node]
    with pytest.raises(ConfigError, match="spi"):
        NodeConfig.from_dict(_mutate(config, path, 100))


def _counting_bytes():
    state = {"next": 0}

    def random_bytes(n: int) -> bytes:
        out = bytes((state["next"] + i) % 256 for i in range(n))
        state["next"] += n
        return out
    return random_bytes


def test_the_pair_builder_gives_both_ends_the_same_two_sas():
    ours, theirs = sa_pair("a->b", "b->a", 0x2000, "2001:db8::a", "2001:db8::b", mode="tunnel", encap="udp",
                           random_bytes=_counting_bytes())
    assert (ours.out.spi, ours.in_.spi) == (0x2000, 0x2001) and ours.out.key != ours.in_.key
    assert (ours.out.direction, ours.in_.direction, theirs.out.direction) == ("out", "in", "out")
    assert theirs.in_ == ours.out.seen_from_peer() and theirs.out == ours.in_.seen_from_peer()
    assert theirs.seen_from_peer() == ours and ours.out.encap == "udp"
    assert SaPair.from_dict(ours.to_dict(), "pair") == ours
    # reproducible with fixed key material, fresh otherwise
    again, _ = sa_pair("a->b", "b->a", 0x2000, "2001:db8::a", "2001:db8::b", mode="tunnel", encap="udp",
                       random_bytes=_counting_bytes())
    assert again == ours and sa_pair("a->b", "b->a", 0x2000, "2001:db8::a", "2001:db8::b")[0] != ours


def test_a_built_pair_carries_packets_from_one_end_to_the_other():
    ours, theirs = sa_pair("a->b", "b->a", 0x3000, "2001:db8::a", "2001:db8::b")
    sender, receiver = SecurityAssociation.from_config(ours.out), SecurityAssociation.from_config(theirs.in_)
    assert receiver.open(sender.seal(17, b"payload")) == (17, b"payload")
    back = SecurityAssociation.from_config(theirs.out.to_dict())
    assert SecurityAssociation.from_config(ours.in_).open(back.seal(6, b"reply")) == (6, b"reply")


def _sections(section: MobileNodeSection):
    """Every typed section inside one mobile node's section, itself included."""
    found = [section, section.timers, *section.peers, *section.tunnel_peers, *section.mobile_peers]
    if section.vcm is not None:
        found.append(section.vcm)
    if section.mesh is not None:
        found += [section.mesh, *section.mesh.peers]
    if section.external is not None:
        external = section.external
        found += [external, *external.peers, *external.mobile_peers]
        found += [external.tunnel_peer] if external.tunnel_peer is not None else []
    return found


@pytest.mark.parametrize("name", LABS)
def test_every_section_the_lab_writes_reads_back_to_itself(tmp_path, name):
    kinds = set()
    for config in lab_configs(tmp_path, **LABS[name]).values():
        if config["role"] != "mobile-node":
            continue
        section = MobileNodeSection.from_dict(json.loads(json.dumps(config["mobility"])))
        assert section.to_dict() == config["mobility"]   # the lab wrote canonical sections
        for part in _sections(section):
            kinds.add(type(part))
            data = json.loads(json.dumps(part.to_dict()))
            if isinstance(part, (MeshPeer, MobilePeer, SaPeer)):
                assert type(part).from_dict(data, "x") == part
            else:
                assert type(part).from_dict(data) == part
    assert {MobileNodeSection, MobilityTimers, SaPeer} <= kinds
    expected = {"vcm": VcmSection, "mesh": MeshPeer, "correspondent": ExternalSection, "insecure": MobilePeer}
    assert all(kind in kinds for key, kind in expected.items() if key in name)
    assert MeshSection in kinds if "mesh" in name else True


def test_every_configured_sa_of_every_node_is_a_canonical_spec(tmp_path):
    for variant in LABS:
        sas = wireshark.configured_sas(lab_configs(tmp_path, **LABS[variant]))
        assert sas and all(SaSpec.from_dict(sa).to_dict() == sa for sa in sas)
