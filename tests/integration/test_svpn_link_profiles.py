"""The SVPN topology with its default link profiles: real delays where they belong."""
from topologies.measurements import ping


def test_default_link_profiles_put_the_office_tens_of_milliseconds_away():
    from nodeapps.linkemu.profiles import make_config
    from topologies.lab import SvpnLab

    def one_way_ms(name):
        return make_config(name).forward.delay_ms

    lab = SvpnLab(addressing="private", mobile_nodes=2, attachments=["wlan1", "wlan2"])
    try:
        lab.start()
        expected = 2 * (one_way_ms("wlan") + one_way_ms("wan-metro") + one_way_ms("wan-longhaul"))
        result = ping(lab.host("mn1"), lab.plan.office["fs"], count=40, interval=0.05)
        if abs(result["rtt_median_ms"] - expected) >= 0.06 * expected and lab.link_metadata()["overloaded_links"]:
            # an emulator says the host fell behind (its delays are inflated, not the profile's): once more
            result = ping(lab.host("mn1"), lab.plan.office["fs"], count=40, interval=0.05)
        assert result["received"] >= 30
        assert abs(result["rtt_median_ms"] - expected) < 0.06 * expected, (result["rtt_median_ms"], expected)
        # the two hotspots are close to each other, the office is far: MN1 -> MN2 via the SG is ~2x
        via_sg = ping(lab.host("mn1"), lab.plan.mobile("mn2").home_address, count=20, interval=0.05)
        assert via_sg["rtt_median_ms"] > 1.8 * expected
        meta = lab.link_metadata()
        assert meta["backends"].get("userspace", 0) + meta["backends"].get("netem", 0) >= 6
    finally:
        lab.stop()
