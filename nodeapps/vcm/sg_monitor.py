"""SG-side monitor (sans-IO): watches the inner headers of traffic the SG relays and reports to the VCM.

The shell calls :meth:`SgMonitor.observe` once per packet it processes on an MN's SG SA (``mn`` = that MN's
node id, ``direction`` "in" after decryption from the MN, "out" before encryption towards it) and for
packets it sees in clear on the office side (``mn=None``, ``direction="in"`` when they arrive from the
office). A known flow costs one dict lookup, one list store and one set add; only the first packet of a
flow is classified. From those observations and the MIPv6 bindings (:meth:`update_binding`) the monitor:

* learns where each MN is (outside: its SA carries traffic from it, or it registered a care-of address;
  inside: it is seen in clear in the office, or it deregistered its binding, or - optionally - its SA fell
  silent for ``idle_timeout``; that last test needs MN keepalives on the SG SA, because a route-optimised
  MN pair sends nothing through the SG),
* caches each MN's correspondents,
* detects a session between two external MNs: either one that existed before both were outside
  (trigger 1) or an external MN opening one to an external destination (trigger 2),

and sends REPORT (202) messages to the VCM, retransmitted with backoff until REPORT_ACK (204). Location
changes and a session seen in the same call go out combined in one REPORT.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Hashable, Optional

from . import protocol as p
from .channel import ControlChannel
from .deadlines import DeadlineQueue

TRIGGER_NAMES = {p.TRIGGER_EXISTING_SESSION: "existing-session", p.TRIGGER_EXTERNAL_INITIATOR: "external-initiator"}
_MAX_TLVS_PER_REPORT = 16


@dataclass(frozen=True)
class MnBinding:
    """An MN the SG serves: its external HoA and, in embodiment 1, its VPN-internal HoA."""
    node_id: int
    external_hoa: str
    internal_hoa: Optional[str] = None


@dataclass(frozen=True)
class MonitorConfig:
    node_id: int
    vcm_id: int
    vcm_path: Hashable
    mns: tuple
    triggers: frozenset = frozenset({p.TRIGGER_EXISTING_SESSION, p.TRIGGER_EXTERNAL_INITIATOR})
    idle_timeout: Optional[float] = None   # SG SA silence that means "back inside" (None: not used)
    flow_timeout: float = 120.0            # forget a flow not seen for this long
    sweep_interval: float = 1.0
    re_report_after: float = 30.0          # report a pair again if it still talks through the SG
    combine: bool = True                   # location and session in one REPORT when they coincide
    max_flows: int = 8192                  # flows cached at most; beyond, the oldest goes (100 MNs, margin)


@dataclass(frozen=True)
class MnLocationChanged:
    node_id: int
    location: str       # outside | inside
    reason: str


@dataclass(frozen=True)
class SessionDetected:
    node_a: int
    node_b: int
    trigger: str


@dataclass(frozen=True)
class ReportRejected:
    status: int


class _MnState:
    __slots__ = ("binding", "location", "care_of", "since", "correspondents", "flow_keys")

    def __init__(self, binding: MnBinding):
        self.binding = binding
        self.location: Optional[int] = None
        self.care_of: Optional[str] = None
        self.since = 0.0
        self.correspondents: set = set()   # 16-byte addresses
        self.flow_keys: set = set()


class SgMonitor:
    def __init__(self, config: MonitorConfig, *, initial_counter: int = 0, **channel_options):
        self.config = config
        self.channel = ControlChannel(config.node_id, {config.vcm_id: config.vcm_path},
                                      initial_counter=initial_counter, **channel_options)
        self._mns: dict[int, _MnState] = {}
        self._addr_mn: dict[bytes, int] = {}
        for binding in config.mns:
            self._mns[binding.node_id] = _MnState(binding)
            for text in (binding.external_hoa, binding.internal_hoa):
                if text is not None:
                    self._addr_mn[ipaddress.IPv6Address(text).packed] = binding.node_id
        # (src, dst, mn or None) -> [last seen, direction]
        self._flows: dict[tuple, list] = {}
        # So that a sweep looks only at flows that changed, not at every cached flow: each flow's expiry,
        # armed at a time it was seen (the sweep that finds it seen later arms it again: the clock never goes
        # back), and the flows seen since the last sweep.
        self._expiry = DeadlineQueue()
        self._touched: set = set()
        self._pairs_seen: set = set()          # MN pairs seen talking while one of them was inside
        self._reported: dict[frozenset, list] = {}   # pair -> [reported at, flow records]
        # Indexes over _reported, so that neither a sweep nor a location change scans every pair ever
        # reported: pairs by node, report order, the reported pair a cached flow's record belongs to, and
        # pairs to look at in the next sweep although none of their cached flows was seen since the last.
        self._reported_of: dict[int, set] = {}
        self._report_order: dict[frozenset, int] = {}
        self._pair_of_flow: dict[tuple, frozenset] = {}
        self._recheck: set = set()
        self._next_report_order = 0
        self._last_sweep = float("-inf")
        self._queued: list = []
        self._events: list = []
        self._next_sweep: Optional[float] = None
        self._in_flight: Optional[int] = None    # txid of the outstanding REPORT
        self.stats = self.channel.stats

    # -- hot path ---------------------------------------------------------------------------------
    def observe(self, now: float, src: bytes, dst: bytes, direction: str, mn: Optional[int]) -> None:
        """One relayed packet: inner source and destination (16 bytes each)."""
        key = (src, dst, mn)
        record = self._flows.get(key)
        if record is not None:
            record[0] = now
            self._touched.add(key)
            return
        self._new_flow(now, src, dst, direction, mn)

    # -- sans-IO surface --------------------------------------------------------------------------
    def update_binding(self, now: float, mn: int, care_of: Optional[str],
                       home_address: Optional[str] = None) -> None:
        """A binding the SG accepted for an MN's external HoA; ``care_of=None`` is a deregistration.
        ``home_address``: the address the binding is for. The SG keys an MN's binding by its external HoA,
        so that is what the monitor reports for the MN from then on (and whose traffic it attributes to
        the MN), whatever it was configured with."""
        state = self._mns.get(mn)
        if state is None:
            self.stats["unknown-mn"] += 1
            return
        if home_address is not None and home_address != state.binding.external_hoa:
            self._learn_external(state, home_address)
        if care_of is None:
            state.care_of = None
            self._set_location(state, p.LOCATION_INSIDE, now, "binding deregistered")
        else:
            changed = state.care_of != care_of
            state.care_of = care_of
            if state.location == p.LOCATION_OUTSIDE and changed:
                self._queued.append(self._info(state))   # new care-of address, same location
            self._set_location(state, p.LOCATION_OUTSIDE, now, "binding registered")
        self._flush(now)

    def _learn_external(self, state: "_MnState", home_address: str) -> None:
        binding = state.binding
        old = binding.external_hoa
        if old is not None and old != binding.internal_hoa:
            self._addr_mn.pop(ipaddress.IPv6Address(old).packed, None)
        self._addr_mn[ipaddress.IPv6Address(home_address).packed] = binding.node_id
        state.binding = replace(binding, external_hoa=home_address)
        self.stats["external-hoa-learned"] += 1

    def receive(self, data: bytes, peer: Hashable, now: float) -> None:
        got = self.channel.receive(data, peer, now)
        if got is None:
            return
        msg, request = got
        if msg.type in p.REQUEST_TYPES:   # nothing asks the SG monitor anything
            self.channel.reject(msg, p.STATUS_BAD_REQUEST)
            return
        if msg.type == p.REPORT_ACK and msg.status != p.STATUS_OK:
            self._events.append(ReportRejected(msg.status))
        if request is not None and request.txid == self._in_flight:
            self._in_flight = None
            self._flush(now)

    def handle_timer(self, now: float) -> None:
        for gave_up in self.channel.handle_timer(now):
            if gave_up.request.txid == self._in_flight:
                self._in_flight = None   # the VCM is unreachable; the next report tries again
        if self._next_sweep is not None and now >= self._next_sweep:
            self._sweep(now)
        self._flush(now)

    def get_timer(self) -> Optional[float]:
        deadlines = [d for d in (self.channel.get_timer(), self._next_sweep) if d is not None]
        return min(deadlines, default=None)

    def datagrams_to_send(self, now: float) -> list:
        self._flush(now)
        return self.channel.datagrams_to_send()

    def pop_events(self) -> list:
        events = self.channel.events + self._events
        self.channel.events, self._events = [], []
        return events

    # -- queries ----------------------------------------------------------------------------------
    def location(self, mn: int) -> Optional[str]:
        loc = self._mns[mn].location
        return {p.LOCATION_OUTSIDE: "outside", p.LOCATION_INSIDE: "inside"}.get(loc)

    def correspondents(self, mn: int) -> set:
        return {str(ipaddress.IPv6Address(a)) for a in self._mns[mn].correspondents}

    def flow_count(self) -> int:
        return len(self._flows)

    # -- classification (first packet of a flow) -------------------------------------------------
    def _new_flow(self, now: float, src: bytes, dst: bytes, direction: str, mn: Optional[int]) -> None:
        key = (src, dst, mn)
        record = [now, direction]
        if len(self._flows) >= self.config.max_flows:
            self._forget_flow(next(iter(self._flows)))   # oldest first: dicts keep insertion order
            self.stats["flows_evicted"] += 1
        if mn is not None and mn not in self._mns:
            self._cache_flow(key, record, now)
            self.stats["unknown-mn"] += 1   # an SA the shell did not tell us about; cached, not classified
            return
        src_mn, dst_mn = self._addr_mn.get(src), self._addr_mn.get(dst)
        if mn is not None:
            # RFC 4301 §5.2: a packet on MN X's SA speaks only for X. Another MN's home address on X's side
            # of the flow (source coming in, destination going out) is not attributed to anyone.
            own = src_mn if direction == "in" else dst_mn
            if own is not None and own != mn:
                self.stats["inner_source_mismatch"] += 1
                return
        # Location first: a change purges the MN's cached flows, and this one must survive it.
        if mn is None:
            if src_mn is not None and direction == "in":
                self._set_location(self._mns[src_mn], p.LOCATION_INSIDE, now, "seen in clear in the office")
            initiator = src_mn
        else:
            state = self._mns[mn]
            if direction == "in":
                self._set_location(state, p.LOCATION_OUTSIDE, now, "SG SA carries its traffic")
                state.correspondents.add(dst)
                initiator = mn
            else:
                if state.location is None:
                    self._set_location(state, p.LOCATION_OUTSIDE, now, "SG sends to it over its SA")
                state.correspondents.add(src)
                initiator = src_mn
        self._cache_flow(key, record, now)
        for node in {src_mn, dst_mn, mn} - {None}:
            self._mns[node].flow_keys.add(key)
        if src_mn is not None and dst_mn is not None and src_mn != dst_mn:
            pair = frozenset((src_mn, dst_mn))
            # Trigger 1 needs a session that existed while one of the two was still inside.
            if any(self._mns[node].location == p.LOCATION_INSIDE for node in pair):
                self._pairs_seen.add(pair)
            elif mn is not None:
                self._consider_session(pair, pair in self._pairs_seen, initiator, key, record, now)
        self._flush(now)

    def _cache_flow(self, key: tuple, record: list, now: float) -> None:
        self._flows[key] = record
        self._expiry.set(key, record[0])
        self._touched.add(key)
        self._ensure_sweep(now)

    def _uncache_flow(self, key: tuple) -> None:
        self._flows.pop(key, None)
        self._expiry.discard(key)
        self._touched.discard(key)

    def _forget_flow(self, key: tuple) -> None:
        self._uncache_flow(key)
        pair = self._pair_of_flow.pop(key, None)
        if pair is not None:
            self._recheck.add(pair)   # its record stays with the pair until it is older than the flow timeout
        for node in {self._addr_mn.get(key[0]), self._addr_mn.get(key[1]), key[2]} - {None}:
            state = self._mns.get(node)
            if state is not None:
                state.flow_keys.discard(key)

    def _consider_session(self, pair: frozenset, existed: bool, initiator: Optional[int], key: tuple, record: list,
                          now: float) -> None:
        a, b = sorted(pair, key=lambda node: node != initiator)   # initiator first
        if not all(self._mns[n].location == p.LOCATION_OUTSIDE for n in pair):
            return
        reported = self._reported.get(pair)
        if reported is not None:
            reported[1].append(record)
            self._pair_of_flow[key] = pair
            return
        trigger = p.TRIGGER_EXISTING_SESSION if existed else p.TRIGGER_EXTERNAL_INITIATOR
        if trigger not in self.config.triggers:
            return
        self._reported[pair] = [now, [record]]
        self._report_order[pair] = self._next_report_order
        self._next_report_order += 1
        self._pair_of_flow[key] = pair
        for node in pair:
            self._reported_of.setdefault(node, set()).add(pair)
        self._events.append(SessionDetected(a, b, TRIGGER_NAMES[trigger]))
        self._queued.append(p.SessionSeen(a, b, trigger))

    def _info(self, state: _MnState) -> p.MnInfo:
        b = state.binding
        return p.MnInfo(b.node_id, state.location, b.external_hoa, b.internal_hoa, state.care_of)

    def _set_location(self, state: _MnState, location: int, now: float, reason: str) -> None:
        if state.location == location:
            return
        state.location = location
        state.since = now
        node = state.binding.node_id
        # Flows classified under the old location must be classified again.
        for key in state.flow_keys:
            self._uncache_flow(key)
            self._pair_of_flow.pop(key, None)
            for other in {self._addr_mn.get(key[0]), self._addr_mn.get(key[1]), key[2]} - {None, node}:
                self._mns[other].flow_keys.discard(key)
        state.flow_keys.clear()
        for pair in self._reported_of.pop(node, ()):
            del self._reported[pair]
            del self._report_order[pair]
            for other in pair - {node}:
                self._reported_of[other].discard(pair)
        self._events.append(MnLocationChanged(node, "outside" if location == p.LOCATION_OUTSIDE else "inside",
                                              reason))
        self._queued.append(self._info(state))
        self._ensure_sweep(now)

    # -- timers -----------------------------------------------------------------------------------
    def _sweep(self, now: float, full: bool = False) -> None:
        """Forget flows not seen for the flow timeout, re-report pairs still talking through the SG. Looks
        at the flows seen since the last sweep and those whose expiry is due; ``full`` (or a clock that
        went back) looks at every cached flow instead, as the reference for the tests."""
        cfg = self.config
        horizon = now - cfg.flow_timeout
        since = self._last_sweep
        self._last_sweep = now
        flows = self._flows
        full = full or now < since
        stale = []
        if full:
            stale = [key for key, record in flows.items() if record[0] < horizon]
        else:
            for key in self._expiry.pop_due(horizon):
                seen = flows[key][0]
                if seen < horizon:
                    stale.append(key)
                else:
                    self._expiry.set(key, seen)   # seen since it was armed: wait for its new expiry
        touched, self._touched = (set(flows) if full else self._touched), set()
        seen_since: list = []   # flows seen since the last sweep: only their pairs can have become due
        for key in touched:
            seen = flows[key][0]
            if since <= seen and horizon <= seen:
                seen_since.append(key)
            if seen >= now:
                self._touched.add(key)   # seen at this very time: since the next sweep's start, too
        pair_of = self._pair_of_flow
        candidates = self._recheck
        self._recheck = set()
        for key in seen_since:
            pair = pair_of.get(key)
            if pair is not None:
                candidates.add(pair)
        for key in stale:
            self._forget_flow(key)
        if cfg.idle_timeout is not None:
            for state in self._mns.values():
                if state.location != p.LOCATION_OUTSIDE or now - state.since < cfg.idle_timeout:
                    continue
                node = state.binding.node_id
                records = [self._flows.get(k) for k in state.flow_keys if k[2] == node]
                last_in = max((r[0] for r in records if r is not None and r[1] == "in"), default=state.since)
                if now - last_in >= cfg.idle_timeout:
                    self._set_location(state, p.LOCATION_INSIDE, now, "SG SA silent")
        # A pair is re-reported when one of its flows was seen re_report_after past its report. Such a
        # sighting happened since the last sweep (or that sweep re-reported the pair), so only the pairs
        # of flows seen since are looked at, in the order they were first reported. Older records of
        # other pairs wait for their next look to be dropped: they can never make a pair due again.
        order = self._report_order
        for pair in sorted((pair for pair in candidates if pair in order), key=order.__getitem__):
            reported = self._reported[pair]
            limit = reported[0] + cfg.re_report_after
            due = False
            kept = []
            for record in reported[1]:
                seen = record[0]
                if seen > limit:
                    due = True
                if seen >= horizon:
                    kept.append(record)
            if due:
                reported[0] = now   # still talking through the SG: the VCM may have given up
                a, b = sorted(pair)
                self._queued.append(p.SessionSeen(a, b, p.TRIGGER_EXISTING_SESSION))
            reported[1] = kept   # flow records older than the flow timeout no longer count
        self._next_sweep = None
        self._ensure_sweep(now)

    def _ensure_sweep(self, now: float) -> None:
        if self._next_sweep is not None:
            return
        watching = self.config.idle_timeout is not None and any(
            state.location == p.LOCATION_OUTSIDE for state in self._mns.values())
        if self._flows or watching:
            self._next_sweep = now + self.config.sweep_interval

    def _flush(self, now: float) -> None:
        """Stop-and-wait: one REPORT in flight, so the VCM processes reports in the order they were made
        (a retransmission carries a fresh counter and could otherwise overtake a newer report)."""
        if not self._queued or self._in_flight is not None:
            return
        size = _MAX_TLVS_PER_REPORT if self.config.combine else 1
        batch, self._queued = self._queued[:size], self._queued[size:]
        self._in_flight = self.channel.send_request(self.config.vcm_id, p.REPORT, batch, now)
