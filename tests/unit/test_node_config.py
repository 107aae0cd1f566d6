import json
import os
import subprocess
import sys

import pytest

from nodeapps.runtime.config import ConfigError, NodeConfig, build_processor

KEY = "00112233445566778899aabbccddeeff"


def good_config():
    return {
        "node": "mn1", "role": "mobile-node",
        "tun": {"name": "svpn0", "mtu": 1420, "addresses": ["fdc0:ffee:0:1::a:1/128"], "routes": ["fdc0:ffee::/48"]},
        "outer_interfaces": ["mn1-eth0"],
        "sas": [{"name": "mn1->sg", "direction": "out", "spi": 4096, "algorithm": "aes128gcm16", "key": KEY,
                 "salt": "01020304", "mode": "tunnel", "local": "2001:db8:21::a:1", "remote": "2001:db8:0:1::1"}],
        "spd": {"vpn_prefixes": ["fdc0:ffee::/48"], "rules": [
            {"direction": "out", "src": "fdc0:ffee:0:1::a:1/128", "dst": "fdc0:ffee::/48", "action": "protect",
             "sa": "mn1->sg"}]},
        "event_log": None, "control_socket": "/tmp/none.sock",
    }


def test_a_good_config_builds_a_processor_that_protects_vpn_traffic():
    config = NodeConfig.from_dict(good_config())
    processor = build_processor(config)
    from nodeapps import ipv6
    inner = ipv6.build_header(ipv6.pton("fdc0:ffee:0:1::a:1"), ipv6.pton("fdc0:ffee:0:1::10"), 59, 0)
    verdict, sa, out = processor.outbound(inner)
    assert verdict == "protect" and sa.name == "mn1->sg"
    assert out[6] == 50 and out[24:40] == ipv6.pton("2001:db8:0:1::1")


@pytest.mark.parametrize("mutate, named", [
    (lambda c: c.pop("node"), "node"),
    (lambda c: c.update(role="router"), "role"),
    (lambda c: c["tun"].update(mtu=1000), "tun.mtu"),
    (lambda c: c["tun"].update(addresses=["not-an-address"]), "tun.addresses"),
    (lambda c: c.update(outer_interfaces=[]), "outer_interfaces"),
    (lambda c: c["sas"][0].update(key="abcd"), "key"),
    (lambda c: c["spd"]["rules"][0].update(action="encrypt"), "action"),
    (lambda c: c.update(event_rate_limit=0), "event_rate_limit"),
    (lambda c: c.update(event_rate_limit="many"), "event_rate_limit"),
])
def test_bad_config_fields_are_named_in_a_one_line_error(mutate, named):
    config = good_config()
    mutate(config)
    with pytest.raises(ConfigError) as info:
        build_processor(NodeConfig.from_dict(config))
    assert named in str(info.value) and "\n" not in str(info.value)


def test_daemon_with_a_broken_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "node.json"
    config = good_config()
    config["sas"][0]["spi"] = 7  # reserved SPI
    path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "nodeapps.node", str(path)],
                            capture_output=True, text=True, timeout=30,
                            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "spi" in lines[0] and "Traceback" not in result.stderr


def test_unreadable_or_non_json_config_is_reported(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        NodeConfig.from_file(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not JSON"):
        NodeConfig.from_file(str(bad))


def test_event_rate_limit_defaults_to_20_and_can_be_raised():
    assert NodeConfig.from_dict(good_config()).event_rate_limit == 20
    assert NodeConfig.from_dict({**good_config(), "event_rate_limit": 5000}).event_rate_limit == 5000
