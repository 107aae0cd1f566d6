"""A restarted SG holds no binding while its MNs still hold theirs: the first packet an MN's tunnel SA
authenticates brings a Binding Refresh Request under that MN's Mobility Header SA; a replayed or forged
packet brings none, and a burst brings one per second."""
import pytest

from nodeapps import ipv6
from nodeapps.mobility import messages as mh
from nodeapps.roles import vcm_shell
from shell_harness import harness_of


@pytest.fixture
def sg():
    with harness_of("private-vcm-in-sg", "sg") as running:
        yield running


def tunnelled_packet(h, configs, tunnel):
    """MN1's data to the file server as MN1 sends it: reverse-tunnelled to its home agent, in its SG SA."""
    home, agent = (ipv6.pton(configs["mn1"]["mobility"][k]) for k in ("address", "home_agent"))
    inner = mh.encapsulate(vcm_shell.build_udp(home, agent, 5000, 5001, b"data"), ipv6.pton(tunnel["remote"]), agent)
    return h.esp(tunnel, ipv6.NH_IPV6, inner)


def refresh_requests(h, configs):
    """SPIs of the ESP packets the SG sent under its Mobility Header SA to MN1."""
    peer = next(p for p in h.config.mobility["peers"] if p.get("name") == "mn1")
    spi = peer["out"]["spi"]
    return [data for data, _ in h.sent if len(data) >= 44 and data[6] in (ipv6.NH_ESP, ipv6.NH_ROUTING)
            and spi.to_bytes(4, "big") in data[40:80]]


def test_an_authenticated_packet_without_a_binding_asks_the_mn_to_register_again(sg):
    h, configs = sg
    tunnel = next(sa for sa in h.inbound_sas() if sa["name"] == "mn1->sg")
    packet = tunnelled_packet(h, configs, tunnel)
    h.network(packet)
    assert len(refresh_requests(h, configs)) == 1 and h.counters["refresh_requests"] == 1
    paced = h.runtime.core.counters
    h.network(packet)   # the same packet again: a replay, not authenticated, never asks
    h.network(packet[:-1] + bytes([packet[-1] ^ 1]))   # a forged ICV: the same
    assert paced["refresh_requests_suppressed"] == 0
    h.network(tunnelled_packet(h, configs, tunnel))   # a fresh one within the second asks, but is paced
    assert paced["refresh_requests_suppressed"] == 1
    assert len(refresh_requests(h, configs)) == 1 and h.counters["refresh_requests"] == 1
