"""labcheck (experiments/labcheck.py) on made-up artifacts, and the hand-outs' runnable blocks
(experiments/handouts.py): no root, no lab."""
import glob
import os
import shutil

import pytest
from scapy.all import UDP, Ether, ICMPv6EchoRequest, IPv6, raw, wrpcap
from scapy.layers.inet6 import MIP6MH_BA, MIP6MH_BU, MIP6MH_HoTI

from experiments import handouts, labcheck
from nodeapps.esp.processor import IPsecProcessor
from nodeapps.esp.sa import SecurityAssociation
from nodeapps.esp.sad import SAD
from nodeapps.esp.spd import SPD
from topologies import wireshark

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MN1_HOME, MN2_HOME = "fdc0:ffee:0:1::a:1", "fdc0:ffee:0:1::a:2"
ETHER = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
needs_tshark = pytest.mark.skipif(shutil.which("tshark") is None, reason="needs tshark")


def _sa(name, spi, local, remote):
    return {"name": name, "direction": "out", "spi": spi, "algorithm": "aes128gcm16", "mode": "tunnel",
            "key": f"{spi:032x}", "salt": "01020304", "local": local, "remote": remote}


MN1_TO_SG = _sa("mn1->sg", 0x1000, "2001:db8:21::a:1", "2001:db8:0:1::1")
SG_TO_MN2 = _sa("sg->mn2", 0x1003, "2001:db8:0:1::1", "2001:db8:31::a:2")
DIRECT = _sa("vcm-11-12-s1g1-out", 0x62826609, "2001:db8:e0::a:1", "2001:db8:e0::a:2")


def _esp(sa, inner_packets):
    processor = IPsecProcessor(SPD.from_config({"vpn_prefixes": ["fdc0::/16"], "rules": [
        {"direction": "out", "src": "::/0", "dst": "::/0", "action": "protect", "sa": sa["name"]}]}),
        SAD([SecurityAssociation.from_config(sa)]))
    return [ETHER / IPv6(processor.outbound(raw(p))[2]) for p in inner_packets]


def _echo(n):
    return [IPv6(src=MN1_HOME, dst=MN2_HOME) / ICMPv6EchoRequest(seq=i) for i in range(1, n + 1)]


def _run(tmp_path, captures: dict, sas) -> str:
    run = tmp_path / "shell-1"
    (run / "captures").mkdir(parents=True)
    for name, frames in captures.items():
        wrpcap(str(run / "captures" / f"{name}.pcapng"), frames)
    wireshark.write_profile(str(run / "wireshark"), sas)
    return str(run)


def _answers(tmp_path, text, name="answers.md"):
    path = tmp_path / name
    path.write_text("# my answers\n\nSome prose that is not a key.\n" + text)
    return str(path)


def _met(goals):
    return {goal: met for goal, met, _detail in goals}


def test_answers_are_key_value_lines_and_the_first_value_wins():
    answers = labcheck.parse_answers("run: a/b\n- `gap_ms`: `220`\n* spi_x: 0x1000\nnot: \ngap_ms: 1\nprose line\n")
    assert answers == {"run": "a/b", "gap_ms": "220", "spi_x": "0x1000"}


@needs_tshark
def test_lab1_goals_come_from_the_decrypted_captures(tmp_path):
    run = _run(tmp_path, {"ar1-lan": _esp(MN1_TO_SG, _echo(3)), "ar3-lan": _esp(SG_TO_MN2, _echo(3))},
               [MN1_TO_SG, SG_TO_MN2])
    right = _answers(tmp_path, f"run: {run}\ninner_source: {MN1_HOME}\nspi_mn1_to_sg: 0x00001000\n"
                               "spi_sg_to_mn2: 0x00001003\n")
    assert all(_met(labcheck.check(1, right)).values())
    assert labcheck.main(["1", right]) == 0
    wrong = _answers(tmp_path, f"run: {run}\ninner_source: 2001:db8:21::a:1\nspi_mn1_to_sg: 0x00001001\n"
                               "spi_sg_to_mn2: 0x00001003\n", "wrong.md")
    assert _met(labcheck.check(1, wrong)) == {"decrypted inner source": False, "SPI mn1 -> SG": False,
                                              "SPI SG -> mn2 (the SG re-encrypted)": True}
    assert labcheck.main(["1", wrong]) == 1


def _ping_log(path, gap_s):
    times = [1000.0 + 0.02 * i for i in range(50)] + [1001.0 + gap_s + 0.02 * i for i in range(50)]
    path.write_text("PING fs\n" + "".join(f"[{t:.6f}] 64 bytes from fdc0:ffee:0:1::10: icmp_seq={i} ttl=63 "
                                          f"time=87 ms\n" for i, t in enumerate(times)))
    return 1000.0 * (1001.0 + gap_s - times[49])


@needs_tshark
def test_lab2_recomputes_the_gap_and_finds_the_mobility_messages(tmp_path):
    frames = [ETHER / IPv6(src="2001:db8:31::a:1", dst="2001:db8:0:1::2") / MIP6MH_BU(),
              ETHER / IPv6(src="2001:db8:0:1::2", dst="2001:db8:31::a:1") / MIP6MH_BA(),
              ETHER / IPv6(src="2001:db8:31::a:1", dst="2001:db8:e0::a:2") / MIP6MH_HoTI()]
    run = _run(tmp_path, {"ar3-lan": frames}, [])
    gap = _ping_log(tmp_path / "ping.log", 0.2)
    assert gap == pytest.approx(220, abs=0.5)
    good = _answers(tmp_path, f"run: {run}\nping_log: ping.log\ngap_ms: 215\nmh_messages: BU BA HoTI\n")
    assert all(_met(labcheck.check(2, good)).values())
    bad = _answers(tmp_path, f"run: {run}\nping_log: ping.log\ngap_ms: 150\nmh_messages: BU BA CoT\n", "bad.md")
    met = _met(labcheck.check(2, bad))
    assert met["handover gap read from the ping log"] is False and met["Mobility Header messages found"] is False
    assert met["handover gap in the expected range"] is True
    _ping_log(tmp_path / "slow.log", 2.0)
    slow = _answers(tmp_path, f"run: {run}\nping_log: slow.log\ngap_ms: 2020\nmh_messages: BU BA\n", "slow.md")
    assert _met(labcheck.check(2, slow))["handover gap in the expected range"] is False


def _control(kind, src, dst):
    return ETHER / IPv6(src=src, dst=dst) / UDP(sport=7420, dport=7420) / (bytes([1, kind]) + bytes(22))


@needs_tshark
def test_lab3_reads_the_order_the_direct_spis_and_the_exposure(tmp_path):
    sg, vcm = "fdc0:ffee:0:1::1", "fdc0:ffee:0:1::3"
    control = [_control(9, MN2_HOME, vcm), _control(1, sg, vcm), _control(2, vcm, sg), _control(3, vcm, MN1_HOME),
               _control(3, vcm, MN2_HOME), _control(4, MN1_HOME, vcm), _control(5, vcm, MN2_HOME),
               _control(6, MN2_HOME, vcm), _control(4, MN2_HOME, vcm)]
    peer_out = {**DIRECT, "spi": 0x0C806DAC, "name": "vcm-11-12-s1g1-in", "key": "ab" * 16}
    run = _run(tmp_path, {"sg-lan": control, "ar1-lan": _esp(DIRECT, _echo(2)) + _esp(peer_out, _echo(2))},
               [DIRECT, peer_out])
    handover = tmp_path / "handover"
    handover.mkdir()
    (handover / "counters.csv").write_text("strategy,phase,metric,detail,value\n"
                                           "vcm,mn1-out,plaintext_exposure_bytes,ir,0\n"
                                           "insecure-ro,mn1-out,plaintext_exposure_bytes,ir,47000\n"
                                           "insecure-ro,route-optimised,plaintext_exposure_bytes,ar1-lan,219\n"
                                           "vcm,end,handler_errors,mn1,0.0\n")
    assert labcheck.vcm_order(run)[:3] == ["RESTARTED", "REPORT", "REPORT_ACK"]
    text = (f"run: {run}\nhandover: handover\nvcm_order: REPORT REPORT_ACK KEYS KEYS_ACK PEER_READY PEER_READY_ACK\n"
            "direct_spi_out: 0x62826609\ndirect_spi_in: 0x0c806dac\nleak_vcm_bytes: 0\nleak_insecure_ro_bytes: 47219\n")
    assert all(_met(labcheck.check(3, _answers(tmp_path, text))).values())
    swapped = text.replace("KEYS KEYS_ACK", "KEYS_ACK KEYS").replace("47219", "47000")
    met = _met(labcheck.check(3, _answers(tmp_path, swapped, "swapped.md")))
    assert met["VCM messages 202-212 in order"] is False
    assert met["plaintext exposure read from the handover run"] is False
    assert met["vcm leaks nothing, insecure-ro leaks"] is True


TRANSCRIPT = """*** lab up
svpnlab> status sg
node sg (security-gateway)
vcm manager stats: received=11, sent=12, retransmit=1, malformed=1

svpnlab> mn1 ping6 -c 10 -i 0.1 mn2
10 packets transmitted, 0 received, 100% packet loss, time 940ms
svpnlab> paths
mn1     mn2   wlan1 / cell  direct  23:04:09.105 (2.5 s ago)  vcm session 1, generation 1
svpnlab> paths
mn1     mn2   wlan1 / cell  direct  23:04:23.210 (3.1 s ago)  vcm session 2, generation 1
svpnlab> 
"""


def test_lab4_compares_the_answers_with_the_transcript(tmp_path):
    (tmp_path / "lab4.log").write_text(TRANSCRIPT)
    right = _answers(tmp_path, "transcript: lab4.log\nkeys_retransmits: 1\nmalformed_drops: 1\n"
                               "lost_while_killed: 10\nsession_after_restart: 2\n")
    assert all(_met(labcheck.check(4, right)).values())
    wrong = _answers(tmp_path, "transcript: lab4.log\nkeys_retransmits: 0\nmalformed_drops: 1\n"
                               "lost_while_killed: 10\nsession_after_restart: 1\n", "wrong.md")
    met = _met(labcheck.check(4, wrong))
    assert met["KEYS retransmitted after the drop"] is False and met["session after the restart"] is False
    assert met["forged message dropped as malformed"] is True


@pytest.mark.parametrize("argv, message", [
    (["5", "answers.md"], "labcheck: no lab '5' (labs: 1-4)"),
    (["4"], "labcheck: the following arguments are required: answers"),
    (["4", "missing.md"], "labcheck: missing.md: No such file or directory"),
    (["4", "empty.md"], "labcheck: empty.md: no 'key: value' lines (the hand-out lists the keys)"),
    (["4", "partial.md"], "labcheck: answers: missing 'keys_retransmits:' (the hand-out lists the keys)"),
    (["4", "nolog.md"], "labcheck: answers: transcript: no such file or folder: "),
    (["4", "notnumber.md"], "labcheck: answers: keys_retransmits: 'one' is not a number"),
    (["1", "badspi.md"], "labcheck: answers: 'zz' is not an SPI"),
])
def test_bad_input_gets_one_line_and_status_2(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "lab4.log").write_text(TRANSCRIPT)
    (tmp_path / "run").mkdir()
    (tmp_path / "empty.md").write_text("just prose\n")
    (tmp_path / "partial.md").write_text("transcript: lab4.log\n")
    (tmp_path / "nolog.md").write_text("transcript: gone.log\n")
    (tmp_path / "notnumber.md").write_text("transcript: lab4.log\nkeys_retransmits: one\n")
    (tmp_path / "badspi.md").write_text("run: run\ninner_source: x\nspi_mn1_to_sg: zz\nspi_sg_to_mn2: 0x1003\n")
    (tmp_path / "run" / "wireshark").mkdir()
    (tmp_path / "run" / "wireshark" / "esp_sa").write_text("")
    assert labcheck.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


HANDOUTS = sorted(glob.glob(os.path.join(ROOT, "docs", "labs", "[0-9]*.md")))


@pytest.mark.parametrize("path", HANDOUTS, ids=os.path.basename)
def test_every_handout_block_states_what_it_should_show(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    found = handouts.blocks(text)
    assert found and found[0].kind == "svpnlab-shell"
    assert all(block.expectations for block in found), "a block without expectations is checked by nothing"
    assert all(block.commands for block in found)
    for heading in ("## Goals", "## Steps", "## Questions", "## Hand in"):
        assert heading in text
    # The hand-in example names keys labcheck reads.
    assert "labcheck.py" in text


def test_blocks_and_expectations_are_read_as_written():
    text = ("intro\n```svpnlab-shell --vcm in-sg\nstatus   # a comment\n\n# only a comment\nmove mn1 cell\n```\n"
            "<!-- expect: ^ok$ -->\n<!-- expect-range: 1 2 gap ([\\d.]+) s -->\nprose\n"
            "```sh\nnot ours\n```\n<!-- expect: never -->\n```svpnlab-sh\necho hi\n```\n")
    shell, sh = handouts.blocks(text)
    assert (shell.kind, shell.options, shell.commands) == ("svpnlab-shell", ["--vcm", "in-sg"], ["status", "move mn1 cell"])
    assert [e.check(out) for e in shell.expectations for out in ["ok\ngap 1.5 s"]] == [None, None]
    assert shell.expectations[1].check("gap 3 s").endswith("3 outside 1-2")
    assert shell.expectations[0].check("not ok") is not None
    assert (sh.kind, sh.commands, sh.expectations) == ("svpnlab-sh", ["echo hi"], [])
    with pytest.raises(handouts.HandoutError):
        handouts.blocks("```svpnlab-sh\nx\n```\n<!-- expect-range: a b c -->\n")
