"""Lost control messages in the running lab: one message of a VCM session's setup is dropped at the node
where it matters (``drop-next``, fault injection on), and the pair must still end on the direct path, later
by about the retransmission timer of whoever waits for it.

The lab: two external MNs (wlan1, wlan2), the VCM built into the SG, the default direct pair over MN–MN
route optimisation (``home-ro``), so the KEYS start return routability and the MNs' binding updates with
each other (docs/vcm-runtime.md). mn1 pings mn2's home address at 50 Hz; time to direct is from the SG's
``session_detected`` to the later of the two MNs' ``data_first_direct`` (both directions direct).

The reference numbers the VCM steps (docs/vcm-protocol.md, Sequence): 202 REPORT and 204 REPORT_ACK
between the SG's monitor and the manager (one process: dropped on that hop), 206 / 210 the KEYS to mn2 /
mn1, 208 / 212 their KEYS_ACKs (relayed as PEER_READY). The mobility messages are mn1's return routability
and binding with mn2: HoTI, CoTI and BU lost on their way out of mn1, HoT, CoT and BA on their way in.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from nodeapps.mobility.constants import INITIAL_BINDACK_TIMEOUT
from nodeapps.vcm.channel import INITIAL_RTO_S as VCM_RTO_S
from topologies.lab import LabError, SvpnLab

PING_INTERVAL_S = 0.02
DIRECT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Drop:
    label: str        # the reference's step number, or the Mobility Header message's name
    node: str
    message: str
    direction: str

    @property
    def retransmit_s(self) -> float:
        """First retransmission timeout of the exchange the message belongs to."""
        return VCM_RTO_S if self.label.isdigit() else INITIAL_BINDACK_TIMEOUT

    @property
    def where(self) -> str:
        return f"{self.node} {self.direction}"


# label, node, message, direction
_WHERE = """
202   sg   REPORT      out
204   sg   REPORT_ACK  out
206   mn2  KEYS        in
208   mn2  KEYS_ACK    out
210   mn1  KEYS        in
212   mn1  KEYS_ACK    out
BU    mn1  BU          out
BA    mn1  BA          in
HoTI  mn1  HoTI        out
CoTI  mn1  CoTI        out
HoT   mn1  HoT         in
CoT   mn1  CoT         in
"""
DROPS = tuple(Drop(*line.split()) for line in _WHERE.strip().splitlines())
BY_LABEL = {d.label: d for d in DROPS}


def _first(events, name, node, after):
    return next((e["time"] for e in events if e["event"] == name and e["node"] == node and e["time"] >= after),
                None)


def _registered(lab: SvpnLab, mn: str) -> bool:
    mobility = lab.status(mn)["mobility"]
    external = mobility.get("external")
    return mobility["home_registered"] and (external is None or external["home_registered"])


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise LabError(f"lost messages: {what} within {timeout:.0f} s")
        time.sleep(0.05)


def run_once(addressing: str, drop: Drop | None, *, links: str = "ideal", seed: int | None = None) -> dict:
    """One fresh lab: arm ``drop`` (None: no loss), start the session, wait until both MNs are direct.
    Returns the times (s) and how many messages the node dropped."""
    lab = SvpnLab(addressing=addressing, mobile_nodes=2, attachments=["wlan1", "wlan2"], links=links,
                  mobility=True, vcm="in-sg", fault_injection=True, seed=seed)
    try:
        lab.start()
        # Registrations first: their BUs and BAs are not the ones under test.
        _wait(lambda: _registered(lab, "mn1") and _registered(lab, "mn2")
              and len(lab.status("sg")["mobility"]["bindings"]) >= 2, 15.0, "no registrations")
        time.sleep(0.3)
        before = lab.status(drop.node)["counters"]["fault_dropped"] if drop else 0
        if drop:
            lab.drop_next(drop.node, drop.message, drop.direction)
        started = time.time()
        lab.popen("mn1", ["ping", "-6", "-n", "-i", str(PING_INTERVAL_S), lab.plan.mobile("mn2").home_address],
                  "ping.log")

        def direct(mn, peer):
            return any(r["peer"] == peer and r["path"] == "direct"
                       for r in lab.status(mn).get("vcm", {}).get("paths", []))
        ended_direct = True
        try:
            _wait(lambda: direct("mn1", "mn2") and direct("mn2", "mn1"), DIRECT_TIMEOUT_S, "no direct path")
        except LabError:
            ended_direct = False
        time.sleep(0.3)   # both first direct packets logged
        status = lab.status(drop.node) if drop else None
        events = lab.events()
    finally:
        lab.stop()
    detect = _first(events, "session_detected", "sg", started)
    firsts = [_first(events, "data_first_direct", mn, started) for mn in ("mn1", "mn2")]
    to_direct = None if detect is None or None in firsts else max(firsts) - detect
    return {"addressing": addressing, "label": drop.label if drop else None, "ended_direct": ended_direct,
            "to_direct_s": to_direct,
            "dropped": (status["counters"]["fault_dropped"] - before) if drop else 0,
            "pending": status["faults"]["pending"] if drop else {}}
