"""A run's ESP keys in Wireshark's ESP SA table: tshark decrypts our own ESP with them and nothing else."""
import os
import shutil
import subprocess

import pytest
from scapy.all import ICMPv6EchoRequest, IPv6, UDP, raw

from nodeapps.esp.processor import IPsecProcessor
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.spd import SPD
from shell_harness import lab_configs
from topologies import wireshark

OUT = {"name": "mn1->sg", "direction": "out", "spi": 0x1001, "algorithm": "aes128gcm16",
       "key": "00112233445566778899aabbccddeeff", "salt": "01020304", "mode": "tunnel",
       "local": "2001:db8:21::a:1", "remote": "2001:db8:0:1::1"}


def test_a_record_holds_the_spi_and_key_with_its_salt():
    record = wireshark.esp_sa_record({**OUT, "spi": "0x1001"})
    assert record == ('"IPv6","*","*","0x00001001","AES-GCM with 16 octet ICV [RFC4106]",'
                      '"0x00112233445566778899aabbccddeeff01020304","NULL",""')


def test_every_configured_sa_of_a_vcm_lab_is_listed_once():
    configs = lab_configs("private-vcm-host")
    sas = wireshark.configured_sas(configs)
    spis = [wireshark._spi(sa) for sa in sas]
    assert len(spis) == len(set(spis))
    names = {sa["name"] for sa in sas}
    # the MN–SG tunnels, the mobility message pairs and the MN–VCM pairs are all there
    assert {"mn1->sg", "sg->mn1"} <= names
    assert any("mh" in n for n in names) and any("vcm" in n for n in names)


def test_key_logs_are_read_and_cut_lines_skipped(tmp_path):
    (tmp_path / "mn1.keys.jsonl").write_text('{"spi": 4097, "key": "aa", "salt": "bb", "direction": "in"}\n{"spi": 4')
    (tmp_path / "other.jsonl").write_text('{"spi": 1, "key": "aa", "salt": "bb", "direction": "in"}\n')
    assert [sa["spi"] for sa in wireshark.read_key_logs(str(tmp_path))] == [4097]


@pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")
def test_tshark_decrypts_our_esp_with_the_profile_and_with_the_options(tmp_path):
    from scapy.all import Ether, wrpcap
    sa = SecurityAssociation.from_config(OUT)
    processor = IPsecProcessor(SPD.from_config({"vpn_prefixes": ["fdc0::/16"], "rules": [
        {"direction": "out", "src": "::/0", "dst": "::/0", "action": "protect", "sa": "mn1->sg"}]}), SAD([sa]))
    packets = [raw(IPv6(src="fdc0:ffee:0:1::a:1", dst="fdc0:ffee:0:1::10") / ICMPv6EchoRequest(data=b"lab")),
               raw(IPv6(src="fdc0:ffee:0:1::a:1", dst="fdc0:ffee:0:1::a:2") / UDP(sport=7777, dport=7777) / b"x")]
    wire = [processor.outbound(p)[2] for p in packets]
    capture = str(tmp_path / "ir.pcap")
    wrpcap(capture, [Ether() / IPv6(w) for w in wire])
    profile = wireshark.write_profile(str(tmp_path / "wireshark"), [OUT])
    env = {**os.environ, "WIRESHARK_CONFIG_DIR": profile}
    fields = ["-T", "fields", "-e", "ipv6.dst", "-e", "icmpv6.type", "-e", "udp.dstport"]
    with_profile = subprocess.run(["tshark", "-r", capture] + fields, env=env, capture_output=True, text=True)
    assert with_profile.stdout.split("\n")[:2] == [
        "2001:db8:0:1::1,fdc0:ffee:0:1::10\t128\t", "2001:db8:0:1::1,fdc0:ffee:0:1::a:2\t\t7777"]
    with_options = subprocess.run(["tshark", "-r", capture] + wireshark.tshark_options([OUT]) + fields,
                                  capture_output=True, text=True)
    assert with_options.stdout == with_profile.stdout
    # Without the keys, nothing inside is readable.
    without = subprocess.run(["tshark", "-r", capture] + fields, capture_output=True, text=True,
                             env={**os.environ, "WIRESHARK_CONFIG_DIR": str(tmp_path / "empty")})
    assert "128" not in without.stdout and "7777" not in without.stdout
    assert "@mipv6@" in (tmp_path / "wireshark" / "colorfilters").read_text()
