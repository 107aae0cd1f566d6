"""ESP in UDP (RFC 3948, ``SvpnLab(esp_encap="udp")``) in Mininet: the MN–SG tunnel SAs cross the public
links as UDP 4500 datagrams that tshark dissects as ESP and scapy decrypts; nothing leaves in clear and no
native ESP is left on the wire; the tunnel follows a mobile node's moves."""
import binascii
import ipaddress
import subprocess
import time

import pytest

from topologies.measurements import iperf3, ping
from tests.integration.helpers import start_capture

MARKER = b"SVPNLAB-MARKER!!"  # 16 bytes, ping -p pattern


def marker_ping(lab, src, dst, count=10):
    return lab.host(src).cmd(f"ping -6 -n -c {count} -i 0.02 -s 200 -p {binascii.hexlify(MARKER).decode()} {dst}")


def stop_capture(lab, proc):
    time.sleep(0.3)
    lab.stop_helper(proc)


def tshark_esp(path):
    """(source, destination, UDP source port, UDP destination port, SPI) of every packet tshark dissects as
    ESP, with its default dissectors (UDP 4500 is its "udpencap")."""
    out = subprocess.run(["tshark", "-n", "-r", path, "-Y", "esp", "-T", "fields", "-E", "separator=,",
                          "-e", "ipv6.src", "-e", "ipv6.dst", "-e", "udp.srcport", "-e", "udp.dstport",
                          "-e", "esp.spi"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        src, dst, sport, dport, spi = line.split(",")
        rows.append((src, dst, int(sport) if sport else None, int(dport) if dport else None, int(spi, 0)))
    return rows


def tunnel_spis(lab, mn):
    return {sa["spi"]: sa for sa in lab.node_configs[mn]["sas"]}


@pytest.fixture(scope="module")
def lab():
    from topologies.lab import SvpnLab
    lab = SvpnLab(addressing="private", mobile_nodes=2, attachments=["wlan1", "cell"], links="ideal",
                  esp_encap="udp")
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def test_traffic_flows_through_the_encapsulated_tunnel(lab):
    plan = lab.plan
    for src, dst in [("mn1", plan.office["fs"]), ("mn1", plan.mobile("mn2").home_address),
                     ("fs", plan.mobile("mn1").home_address)]:
        assert ping(lab.host(src), dst, count=10, interval=0.02)["received"] == 10, f"{src} -> {dst}"
    assert iperf3(lab.host("mn1"), lab.host("fs"), plan.office["fs"], seconds=1.5)["mbit_s"] > 10
    counters = lab.status("sg")["counters"]
    assert counters["udp_rx"] > 1000 and counters["udp_tx"] > 0 and counters["send_errors"] == 0
    mn1 = lab.status("mn1")["counters"]
    assert mn1["udp_gso_sends"] > 0  # TCP left in UDP segmentation offload sends
    assert lab.tun_mtu == 1500 - 77 - 8 - 1  # UDP header taken off, rounded down to even


def test_public_links_carry_only_udp_encapsulated_esp_that_tshark_dissects(lab):
    plan = lab.plan
    inner = {ipaddress.IPv6Address(a).packed
             for a in (plan.mobile("mn1").home_address, plan.mobile("mn2").home_address, plan.office["fs"])}
    spis = set(tunnel_spis(lab, "mn1")) | set(tunnel_spis(lab, "mn2"))
    expected = {("ir", "ir-sg"): 60, ("ar1", "ar1-lan"): 40}  # as in test_vpn_baseline, one datagram each
    captures = {key: start_capture(lab, key[0], key[1], f"udp-{key[1]}.pcap") for key in expected}
    marker_ping(lab, "mn1", plan.office["fs"])
    marker_ping(lab, "mn1", plan.mobile("mn2").home_address)
    from scapy.all import UDP, IPv6, rdpcap
    for key, (proc, path) in captures.items():
        stop_capture(lab, proc)
        esp_in_udp = 0
        for pkt in rdpcap(path):
            raw = bytes(pkt)
            assert MARKER not in raw, f"payload marker in clear on {key[1]}"
            assert not any(a in raw for a in inner), f"inner address in clear on {key[1]}"
            ip6 = pkt.getlayer(IPv6)
            assert ip6 is None or ip6.nh != 50, f"native ESP on {key[1]}"
            if ip6 is not None and UDP in pkt and pkt[UDP].dport == 4500:
                assert pkt[UDP].sport == 4500
                esp_in_udp += 1
        assert esp_in_udp == expected[key], f"{key[1]}: {esp_in_udp} ESP-in-UDP packets, expected {expected[key]}"
        rows = tshark_esp(path)
        assert len(rows) == expected[key], f"tshark dissected {len(rows)} ESP packets on {key[1]}"
        assert all(r[2] == r[3] == 4500 and r[4] in spis for r in rows)
        assert {plan.sg_public} <= {r[0] for r in rows} | {r[1] for r in rows}


def test_captured_datagrams_decrypt_with_scapy_given_the_same_keys(lab):
    from scapy.all import ESP, UDP, IPv6, rdpcap
    from scapy.layers.ipsec import SecurityAssociation
    plan = lab.plan
    proc, path = start_capture(lab, "ir", "ir-sg", "udp-sg-link.pcap")
    marker_ping(lab, "mn1", plan.office["fs"], count=5)
    stop_capture(lab, proc)
    sas = tunnel_spis(lab, "mn1")
    decrypted = {"out": 0, "in": 0}
    for pkt in rdpcap(path):
        if IPv6 not in pkt or ESP not in pkt or pkt[ESP].spi not in sas:
            continue
        sa = sas[pkt[ESP].spi]
        oracle = SecurityAssociation(ESP, spi=sa["spi"], crypt_algo="AES-GCM", auth_algo="NULL",
                                     crypt_key=bytes.fromhex(sa["key"] + sa["salt"]),
                                     nat_t_header=UDP(sport=4500, dport=4500))
        inner = IPv6(bytes(oracle.decrypt(pkt[IPv6])[IPv6].payload))
        assert MARKER in bytes(inner)
        assert {inner.src, inner.dst} == {plan.mobile("mn1").home_address, plan.office["fs"]}
        decrypted[sa["direction"]] += 1
    assert decrypted["out"] >= 5 and decrypted["in"] >= 5
