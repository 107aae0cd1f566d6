"""SAD: outbound by name, inbound by (SPI, destination) then SPI alone (RFC 4301 §4.1)."""
import pytest

from nodeapps.esp import SAD, ConfigError, SecurityAssociation
from nodeapps.ipv6 import pton


def sa(name, direction, spi, local, remote):
    return SecurityAssociation(name=name, direction=direction, spi=spi, key=bytes(16), salt=bytes(4),
                               mode="tunnel", local=local, remote=remote)


def test_outbound_by_name_only_outbound():
    out_sa = sa("mn1->sg", "out", 0x1001, "2001:db8::1", "2001:db8::2")
    in_sa = sa("sg->mn1", "in", 0x2001, "2001:db8::1", "2001:db8::2")
    sad = SAD([out_sa, in_sa])
    assert sad.outbound("mn1->sg") is out_sa
    assert sad.outbound("sg->mn1") is None
    assert sad.get("sg->mn1") is in_sa
    assert sad.outbound("nope") is None
    assert len(sad) == 2 and "mn1->sg" in sad


def test_inbound_prefers_spi_and_destination():
    a = sa("in-a", "in", 0x3000, "2001:db8::a", "2001:db8::1")
    b = sa("in-b", "in", 0x3000, "2001:db8::b", "2001:db8::1")
    sad = SAD([a, b])
    assert sad.inbound(0x3000, pton("2001:db8::a")) is a
    assert sad.inbound(0x3000, pton("2001:db8::b")) is b
    # Ambiguous SPI and a destination matching neither: no guess.
    assert sad.inbound(0x3000, pton("2001:db8::c")) is None
    assert sad.inbound(0x4000, pton("2001:db8::a")) is None


def test_inbound_key_agrees_with_inbound():
    a = sa("in-a", "in", 0x3000, "2001:db8::a", "2001:db8::1")
    b = sa("in-b", "in", 0x3000, "2001:db8::b", "2001:db8::1")
    c = sa("in-c", "in", 0x3001, "2001:db8::a", "2001:db8::1")
    sad = SAD([a, b, c])
    for spi in (0x3000, 0x3001, 0x3002):
        for dst in ("2001:db8::a", "2001:db8::b", "2001:db8::c"):
            key = pton(dst) + spi.to_bytes(4, "big")
            assert sad.inbound_key(key) is sad.inbound(spi, pton(dst))
    assert sad.inbound_key(pton("2001:db8::c") + (0x3001).to_bytes(4, "big")) is c  # SPI-alone fallback
    sad.remove(c)
    assert sad.inbound_key(pton("2001:db8::a") + (0x3001).to_bytes(4, "big")) is None


def test_inbound_falls_back_to_spi_alone():
    a = sa("in-a", "in", 0x3000, "2001:db8::a", "2001:db8::1")
    sad = SAD([a])
    # E.g. a mobile node whose care-of address is the outer destination, not the SA's home address.
    assert sad.inbound(0x3000, pton("2001:db8:ffff::9")) is a


def test_inbound_never_returns_outbound_sa():
    out_sa = sa("out", "out", 0x5000, "2001:db8::1", "2001:db8::2")
    sad = SAD([out_sa])
    assert sad.inbound(0x5000, pton("2001:db8::2")) is None


def test_duplicate_spi_for_same_destination_refused():
    sad = SAD([sa("in-a", "in", 0x3000, "2001:db8::a", "2001:db8::1")])
    with pytest.raises(ConfigError, match="spi"):
        sad.add(sa("in-a2", "in", 0x3000, "2001:db8::a", "2001:db8::7"))
    with pytest.raises(ConfigError, match="name"):
        sad.add(sa("in-a", "in", 0x3001, "2001:db8::a", "2001:db8::1"))
    # The same SPI towards another destination is a different SA.
    sad.add(sa("out-x", "out", 0x3000, "2001:db8::1", "2001:db8::b"))
    assert len(sad) == 2


def test_remove_restores_lookups():
    a = sa("in-a", "in", 0x3000, "2001:db8::a", "2001:db8::1")
    b = sa("in-b", "in", 0x3000, "2001:db8::b", "2001:db8::1")
    sad = SAD([a, b])
    assert sad.remove("in-b") is b
    assert sad.inbound(0x3000, pton("2001:db8::c")) is a  # unambiguous again
    sad.remove(a)
    assert sad.inbound(0x3000, pton("2001:db8::a")) is None
    with pytest.raises(KeyError):
        sad.remove("in-a")
    sad.add(sa("in-a", "in", 0x3000, "2001:db8::a", "2001:db8::1"))  # name and SPI are free again
    assert [s.name for s in sad] == ["in-a"]
