"""Baseline VPN data plane in Mininet: hub-and-spoke through the SG, ESP on every public link."""
import binascii
import os

import pytest

from topologies.measurements import iperf3, ping

MARKER = b"SVPNLAB-MARKER!!"  # 16 bytes, ping -p pattern


def marker_ping(lab, src, dst, count=10):
    out = lab.host(src).cmd(f"ping -6 -n -c {count} -i 0.02 -s 200 -p {binascii.hexlify(MARKER).decode()} {dst}")
    return out


def start_capture(lab, node, interface, name):
    path = os.path.join(lab.run_dir, name)
    proc = lab.popen(node, ["tcpdump", "--immediate-mode", "-U", "-n", "-s", "0", "-i", interface, "-w", path, "ip6"], name + ".log")
    # tcpdump says "listening on" once its socket is ready
    import time
    for _ in range(100):
        with open(os.path.join(lab.run_dir, name + ".log"), "rb") as f:
            if b"listening on" in f.read():
                break
        time.sleep(0.05)
    return proc, path


def read_capture(lab, proc, path):
    import time
    time.sleep(0.3)
    lab.stop_helper(proc)
    from scapy.all import rdpcap
    return rdpcap(path)


@pytest.fixture(scope="module", params=["private", "public"])
def lab(request):
    from topologies.lab import SvpnLab
    # Ideal links: these tests count packets, and the default profiles include random loss.
    lab = SvpnLab(addressing=request.param, mobile_nodes=2, attachments=["wlan1", "cell"], links="ideal")
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


def test_mn1_reaches_file_server_and_mn2_through_the_sg_and_office_stays_plain(lab):
    plan = lab.plan
    fs = plan.office["fs"]
    mn2 = plan.mobile("mn2").home_address
    for src, dst in [("mn1", fs), ("mn1", mn2), ("mn2", fs), ("lap", fs), ("fs", plan.mobile("mn1").home_address)]:
        result = ping(lab.host(src), dst, count=10, interval=0.02)
        assert result["received"] == 10, f"{src} -> {dst}: {result['received']}/10"
    sg = lab.status("sg")
    sas = {s["name"]: s for s in sg["ipsec"]["sas"]}
    # hub and spoke: MN1->MN2 traffic entered on mn1's SA and left on mn2's
    assert sas["mn1->sg"]["counters"]["packets"] >= 20 and sas["sg->mn2"]["counters"]["packets"] >= 20
    assert sg["ipsec"]["counters"]["icv"] == 0 and sg["ipsec"]["counters"]["replay"] == 0


def test_iperf3_tcp_runs_through_the_tunnel(lab):
    result = iperf3(lab.host("mn1"), lab.host("fs"), lab.plan.office["fs"], seconds=1.5)
    assert result["mbit_s"] > 10


def test_public_links_carry_only_esp_and_the_office_carries_plain_packets(lab):
    plan = lab.plan
    mn1 = plan.mobile("mn1")
    inner = {bytes.fromhex(binascii.hexlify(__import__("ipaddress").IPv6Address(a).packed).decode())
             for a in (mn1.home_address, plan.mobile("mn2").home_address, plan.office["fs"])}
    # ESP packets each public link must carry: MN1<->FS is 10 echoes + 10 replies; MN1<->MN2 through the
    # SG is 40 (each echo and reply crosses the SG link twice).
    expected = {("ir", "ir-sg"): 60, ("ir", "ir-ar1"): 40, ("ir", "ir-ar3"): 20,
                ("ar1", "ar1-lan"): 40, ("ar3", "ar3-lan"): 20}
    public = {key: start_capture(lab, key[0], key[1], f"public-{key[1]}.pcap") for key in expected}
    office = start_capture(lab, "fs", "fs-eth0", "office.pcap")
    marker_ping(lab, "mn1", plan.office["fs"])
    marker_ping(lab, "mn1", plan.mobile("mn2").home_address)
    for key, (proc, path) in public.items():
        esp_seen = 0
        for pkt in read_capture(lab, proc, path):
            raw = bytes(pkt)
            assert MARKER not in raw, f"payload marker in clear on {key[1]}"
            assert not any(a in raw for a in inner), f"inner address in clear on {key[1]}"
            ip6 = pkt.getlayer("IPv6")
            if ip6 is not None and ip6.nh == 50:
                esp_seen += 1
        assert esp_seen == expected[key], f"{key[1]}: {esp_seen} ESP packets, expected {expected[key]}"
    office_packets = read_capture(lab, *office)
    plain = [p for p in office_packets if MARKER in bytes(p) and p.getlayer("IPv6").src == mn1.home_address]
    assert len(plain) >= 10


def test_captured_esp_decrypts_with_scapy_given_the_same_keys(lab):
    from scapy.layers.inet6 import IPv6
    from scapy.layers.ipsec import ESP, SecurityAssociation
    plan = lab.plan
    proc, path = start_capture(lab, "ir", "ir-sg", "sg-link.pcap")
    marker_ping(lab, "mn1", plan.office["fs"], count=5)
    packets = read_capture(lab, proc, path)
    up = next(s for s in lab.node_configs["mn1"]["sas"] if s["name"] == "mn1->sg")
    down = next(s for s in lab.node_configs["mn1"]["sas"] if s["name"] == "sg->mn1")

    def oracle(sa):
        return SecurityAssociation(ESP, spi=sa["spi"], crypt_algo="AES-GCM",
                                   crypt_key=bytes.fromhex(sa["key"] + sa["salt"]), auth_algo="NULL")

    decrypted = {"up": 0, "down": 0}
    for pkt in packets:
        if IPv6 not in pkt or ESP not in pkt:
            continue
        esp = pkt[ESP]
        sa = {up["spi"]: ("up", up), down["spi"]: ("down", down)}.get(esp.spi)
        if sa is None:
            continue
        inner = IPv6(bytes(oracle(sa[1]).decrypt(pkt[IPv6])[IPv6].payload))
        assert MARKER in bytes(inner)
        assert {inner.src, inner.dst} == {plan.mobile("mn1").home_address, plan.office["fs"]}
        decrypted[sa[0]] += 1
    assert decrypted["up"] >= 5 and decrypted["down"] >= 5

