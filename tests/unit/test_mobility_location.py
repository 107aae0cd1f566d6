"""Inside or outside: only an authenticated office announcement on the current link makes a node internal."""
from nodeapps.mobility.location import Location, LocationChanged, PresenceDetector, decide


def test_decide():
    assert decide("office", "office") is Location.INTERNAL
    assert decide("office", None) is Location.EXTERNAL
    assert decide("wlan", "office") is Location.EXTERNAL       # proof from another link does not count
    assert decide(None, None) is Location.EXTERNAL


def test_starts_external_and_needs_authentication():
    detector = PresenceDetector()
    assert detector.location is Location.EXTERNAL
    detector.link_up("office", 0.0)
    assert detector.location is Location.EXTERNAL and detector.pop_events() == []
    detector.office_announcement("office", authenticated=True, now=0.5)
    assert detector.location is Location.INTERNAL
    assert detector.pop_events() == [LocationChanged(Location.INTERNAL, "office", "authenticated office announcement")]


def test_fake_office_copying_prefixes_stays_external():
    detector = PresenceDetector()
    detector.link_up("fake-office", 0.0)
    for t in range(10):
        detector.office_announcement("fake-office", authenticated=False, now=float(t))
    assert detector.location is Location.EXTERNAL and detector.pop_events() == []
    assert detector.counters["announcements_unauthenticated"] == 10


def test_link_change_drops_back_to_external_at_once():
    detector = PresenceDetector()
    detector.link_up("office", 0.0)
    detector.office_announcement("office", True, 0.1)
    detector.pop_events()
    detector.link_up("wlan", 5.0)
    assert detector.location is Location.EXTERNAL
    assert detector.pop_events() == [LocationChanged(Location.EXTERNAL, "wlan", "link changed")]
    # A late announcement from the old link does not count.
    detector.office_announcement("office", True, 5.1)
    assert detector.location is Location.EXTERNAL and detector.counters["announcements_other_link"] == 1
    detector.link_up("office", 9.0)
    detector.office_announcement("office", True, 9.1)
    detector.link_down(12.0)
    assert [e.location for e in detector.pop_events()] == [Location.INTERNAL, Location.EXTERNAL]


def test_announcement_lifetime_expires():
    detector = PresenceDetector(announcement_lifetime=30.0)
    detector.link_up("office", 0.0)
    detector.office_announcement("office", True, 1.0)
    detector.office_announcement("office", True, 20.0)     # fresh announcements extend it
    assert detector.get_timer() == 50.0
    detector.handle_timer(49.9)
    assert detector.location is Location.INTERNAL
    detector.handle_timer(50.0)
    assert detector.location is Location.EXTERNAL and detector.get_timer() is None
    assert detector.pop_events()[-1] == LocationChanged(Location.EXTERNAL, "office", "office announcement expired")
