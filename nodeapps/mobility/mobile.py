"""Mobile node core (RFC 6275 §11): home registration, return routability, route optimisation.

Theory of operation. The shell tells the core where the node is attached with ``move_to(care_of, now)``
(``move_to(home_address, now)`` = back home). The core keeps one binding update list entry per peer:

* the home agent: BU with A and H flags from the care-of address (HAO = home address, Alternate Care-of
  Address option = care-of address), marked ``Protection.ESP_TRANSPORT``; retransmitted with exponential
  backoff from InitialBindackTimeoutFirstReg (first registration) or INITIAL_BINDACK_TIMEOUT, doubling up to
  MAX_BINDACK_TIMEOUT; refreshed before the granted lifetime ends; status 135 resynchronises the sequence;
* "secured" peers (e.g. the security gateway): the same BU without H, also under ESP;
* correspondents with route optimisation: HoTI reverse-tunnelled through the HA (``Protection.ESP_TUNNEL``),
  CoTI direct, then a BU authenticated with Kbm; redone on movement (a fresh home token is reused),
  before the binding ends, and on BA 136-138 or a Binding Error. With a static Kbm for the correspondent
  (``use_binding_key``, RFC 4449) there are no tests: every BU is authenticated with that key at once.

Data plane (pure, per packet): ``outgoing(packet, now)`` turns a packet from the home address into what goes
on the wire (unchanged at home; HAO straight to a correspondent with a binding; otherwise IPv6-in-IPv6 to
the HA). ``incoming(packet, now)`` undoes the HA tunnel or the type 2 routing header.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Optional

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility import rr
from nodeapps.mobility.bindings import BindingUpdateList, BindingUpdateListEntry, PeerKind, Retransmitter
from nodeapps.mobility.constants import (
    BA_ACCEPTED, BA_EXPIRED_CARE_OF_NONCE_INDEX, BA_EXPIRED_HOME_NONCE_INDEX, BA_EXPIRED_NONCES,
    BA_NOT_HOME_AGENT_FOR_THIS_MN, BA_SEQUENCE_OUT_OF_WINDOW,
    BE_UNKNOWN_BINDING_FOR_HAO, BE_UNRECOGNIZED_MH_TYPE, COOKIE_LENGTH, INITIAL_BINDACK_TIMEOUT,
    HOME_REGISTRATION_LIFETIME, INITIAL_BINDACK_TIMEOUT_FIRSTREG, LIFETIME_UNIT, MAX_BINDACK_TIMEOUT, MAX_RR_BINDING_LIFETIME,
    MAX_TOKEN_LIFETIME, MH_NAMES, seconds_to_units, units_to_seconds,
)
from nodeapps.mobility.core import Core
from nodeapps.mobility.events import (
    BindingAcknowledged, BindingDeregistered, BindingErrorReceived, BindingFailed, BindingLost, Datagram,
    Protection, RouteOptimisationStarted, RouteOptimisationStopped, SequenceResynchronised,
)

_NONCE_STATUSES = (BA_EXPIRED_HOME_NONCE_INDEX, BA_EXPIRED_CARE_OF_NONCE_INDEX, BA_EXPIRED_NONCES)


class _Correspondent:
    """Return routability state for one correspondent (RFC 6275 §11.6)."""

    def __init__(self, address: bytes, max_timeout: float, keep_retrying: bool = False):
        self.address = address
        self.wanted = True          # the shell asked for route optimisation
        self.unsupported = False    # BE status 2: it does not speak Mobile IPv6
        self.bu_wanted = False      # a BU is to be sent as soon as the tokens are there
        self.optimised = False      # RouteOptimisationStarted was reported and not yet stopped
        self.home_token: Optional[bytes] = None
        self.home_nonce_index = 0
        self.home_token_at = 0.0
        self.care_of_token: Optional[bytes] = None
        self.care_of_nonce_index = 0
        self.care_of_token_at = 0.0
        self.care_of_token_for: Optional[bytes] = None
        self.hoti_cookie: Optional[bytes] = None
        self.coti_cookie: Optional[bytes] = None
        self.coti_for: Optional[bytes] = None
        self.hoti_retx = Retransmitter(max_timeout, keep_retrying)
        self.coti_retx = Retransmitter(max_timeout, keep_retrying)
        self.static_kbm: Optional[bytes] = None   # RFC 4449: shared out of band, replaces the tests


class MobileNode(Core):
    def __init__(self, home_address: bytes, home_agent: bytes, *, care_of_address: Optional[bytes] = None,
                 home_lifetime: float = HOME_REGISTRATION_LIFETIME, correspondent_lifetime: float = MAX_RR_BINDING_LIFETIME,
                 initial_bindack_timeout: float = INITIAL_BINDACK_TIMEOUT,
                 initial_bindack_timeout_first_reg: float = INITIAL_BINDACK_TIMEOUT_FIRSTREG,
                 max_bindack_timeout: float = MAX_BINDACK_TIMEOUT, keep_retrying: bool = False,
                 refresh_fraction: float = 0.75, token_lifetime: float = MAX_TOKEN_LIFETIME,
                 use_alternate_care_of: bool = True, require_esp: bool = True,
                 random_bytes: Callable[[int], bytes] = os.urandom, initial_sequence: Optional[int] = None):
        """Starts at home unless ``care_of_address`` is given (then call ``move_to`` to register).

        ``home_lifetime``/``correspondent_lifetime``: requested binding lifetimes (seconds). ``refresh_fraction``:
        a binding is refreshed after this share of its granted lifetime (or the HA's refresh advice if sooner).
        ``keep_retrying``: after the backoff reached MAX_BINDACK_TIMEOUT keep retrying every MAX_BINDACK_TIMEOUT
        instead of giving up (RFC 6275 §11.8 allows stopping). ``require_esp``: BAs from the HA and secured peers
        must be reported as ESP-protected by the shell.
        """
        super().__init__()
        if not 0 < refresh_fraction < 1:
            raise ValueError("refresh_fraction must be between 0 and 1")
        if min(home_lifetime, correspondent_lifetime) < LIFETIME_UNIT:
            raise ValueError("binding lifetimes must be at least %d s (0 would mean deregistration)" % LIFETIME_UNIT)
        self.home_address = bytes(home_address)
        self.home_agent = bytes(home_agent)
        self.care_of_address = bytes(care_of_address) if care_of_address else self.home_address
        self.home_lifetime = home_lifetime
        self.correspondent_lifetime = min(correspondent_lifetime, MAX_RR_BINDING_LIFETIME)
        self.initial_bindack_timeout = initial_bindack_timeout
        self.initial_bindack_timeout_first_reg = initial_bindack_timeout_first_reg
        self.max_bindack_timeout = max_bindack_timeout
        self.keep_retrying = keep_retrying
        self.refresh_fraction = refresh_fraction
        self.token_lifetime = token_lifetime
        self.use_alternate_care_of = use_alternate_care_of
        self.require_esp = require_esp
        self._random_bytes = random_bytes
        self._initial_sequence = initial_sequence
        self.bul = BindingUpdateList()
        self._correspondents: dict[bytes, _Correspondent] = {}
        self._add_peer(self.home_agent, PeerKind.HOME_AGENT)

    # ------------------------------------------------------------------ state queries
    @property
    def at_home(self) -> bool:
        return self.care_of_address == self.home_address

    def home_registered(self) -> bool:
        """The HA has acknowledged a binding for the current care-of address."""
        entry = self.bul.get(self.home_agent)
        return not self.at_home and entry.registered_care_of == self.care_of_address

    def registered_everywhere(self) -> bool:
        """The HA and every secured peer (e.g. the SG) have acknowledged the current care-of address."""
        return not self.at_home and all(
            entry.registered_care_of == self.care_of_address for entry in self.bul
            if entry.kind in (PeerKind.HOME_AGENT, PeerKind.SECURED))

    def route_optimised(self, correspondent: bytes, now: float) -> bool:
        entry = self.bul.get(correspondent)
        return (not self.at_home and entry is not None and entry.kind is PeerKind.CORRESPONDENT
                and entry.registered_care_of == self.care_of_address
                and entry.expires_at is not None and now < entry.expires_at)

    # ------------------------------------------------------------------ API calls
    def move_to(self, care_of_address: bytes, now: float) -> None:
        """The node is now reachable at ``care_of_address`` (the home address = back on the home link)."""
        care_of_address = bytes(care_of_address)
        if care_of_address == self.care_of_address:
            return
        self.care_of_address = care_of_address
        self.counters["moves"] += 1
        for entry in self.bul:
            if entry.kind is PeerKind.CORRESPONDENT:
                continue
            if self.at_home:
                if entry.peer_has_binding or entry.outstanding:
                    # RFC 6275 §11.5.4: deregister with lifetime 0 from the home address.
                    self._start_bu(entry, now, 0.0, self.initial_bindack_timeout)
                else:
                    self._abandon(entry)
            else:
                first = entry.kind is PeerKind.HOME_AGENT and not entry.peer_has_binding
                self._start_bu(entry, now, self.home_lifetime,
                               self.initial_bindack_timeout_first_reg if first else self.initial_bindack_timeout)
        for cs in self._correspondents.values():
            self._cancel_tests(cs, home_too=False)
            if cs.optimised:
                cs.optimised = False
                self._emit(RouteOptimisationStopped(cs.address, "returned home" if self.at_home else "moved"))
            entry = self.bul.get(cs.address)
            has_binding = entry is not None and (entry.peer_has_binding or entry.outstanding)
            if entry is not None:
                self._abandon(entry)
            if (cs.wanted and not self.at_home) or (self.at_home and has_binding):
                cs.bu_wanted = True
                self._ensure_rr(cs, now)

    def register_with(self, peer: bytes, now: float, home_address: Optional[bytes] = None) -> None:
        """Keep a plain (non-home) binding with ``peer`` under ESP, e.g. the security gateway (issue item 5).
        ``home_address``: the address the binding is for, if not this core's home address (embodiment 1:
        the SG keys an MN by its external home address); its BUs carry it in the Home Address option,
        also from the home link."""
        peer = bytes(peer)
        entry = self.bul.get(peer) or self._add_peer(peer, PeerKind.SECURED, home_address)
        if not self.at_home:
            self._start_bu(entry, now, self.home_lifetime, self.initial_bindack_timeout)

    def start_route_optimisation(self, correspondent: bytes, now: float) -> None:
        correspondent = bytes(correspondent)
        cs = self._correspondents.get(correspondent)
        if cs is None:
            cs = self._correspondents[correspondent] = _Correspondent(correspondent, self.max_bindack_timeout,
                                                                      self.keep_retrying)
        cs.wanted, cs.unsupported = True, False
        if not self.at_home and not self.route_optimised(correspondent, now):
            cs.bu_wanted = True
            self._ensure_rr(cs, now)

    def stop_route_optimisation(self, correspondent: bytes, now: float) -> None:
        """Go back to tunnelling through the HA and delete the binding at the correspondent."""
        cs = self._correspondents.get(bytes(correspondent))
        if cs is None:
            return
        cs.wanted = False
        self._cancel_tests(cs, home_too=True)
        if cs.optimised:
            cs.optimised = False
            self._emit(RouteOptimisationStopped(cs.address, "stopped"))
        entry = self.bul.get(cs.address)
        if entry is not None and (entry.peer_has_binding or entry.outstanding):
            self._abandon(entry)
            cs.bu_wanted = True
            self._ensure_rr(cs, now)
        else:
            cs.bu_wanted = False

    def use_binding_key(self, correspondent: bytes, kbm: Optional[bytes], now: float) -> None:
        """Authenticate BUs to ``correspondent`` with a static Kbm shared out of band (RFC 4449) instead of
        return routability: no Nonce Indices option and no home or care-of test, so away from home a BU
        leaves now (without waiting for the home registration the HoTI needs). None: return routability
        again. Starts route optimisation with the correspondent if it was not."""
        correspondent = bytes(correspondent)
        kbm = bytes(kbm) if kbm is not None else None
        cs = self._correspondents.get(correspondent)
        if cs is not None and cs.static_kbm == kbm:
            return
        if cs is None:
            cs = self._correspondents[correspondent] = _Correspondent(correspondent, self.max_bindack_timeout,
                                                                      self.keep_retrying)
        cs.static_kbm = kbm
        if kbm is not None:
            self._cancel_tests(cs, home_too=True)
        entry = self.bul.get(correspondent)
        if entry is not None and entry.outstanding:
            self._abandon(entry)   # signed with the other key: the peer may not accept it
        cs.wanted, cs.unsupported = True, False
        if not self.at_home and not self.route_optimised(correspondent, now):
            cs.bu_wanted = True
            self._ensure_rr(cs, now)

    def retry_route_optimisation(self, correspondent: bytes, now: float) -> None:
        """The correspondent has just shown it is reachable (a peer MN sent us its own BU): send the test
        inits still waiting for an answer again now, with the backoff restarted, instead of waiting out a
        backoff that may have grown while the peer could not be reached (RFC 6275 §11.8 leaves the
        retransmission policy to the node)."""
        cs = self._correspondents.get(bytes(correspondent))
        if cs is None or not cs.wanted or cs.unsupported or self.at_home:
            return
        if cs.hoti_cookie is not None:
            self.counters["test_init_retries"] += 1
            cs.hoti_retx.start(now, self.initial_bindack_timeout)
            self._transmit_hoti(cs)
        if cs.coti_cookie is not None and cs.coti_for == self.care_of_address:
            self.counters["test_init_retries"] += 1
            cs.coti_retx.start(now, self.initial_bindack_timeout)
            self._transmit_coti(cs)

    def deregistration_from_home(self, correspondent: bytes, now: float) -> Optional[bytes]:
        """A BU with lifetime 0 that deletes our binding at ``correspondent``, built from the home address
        (RFC 6275 §11.5.4) and authenticated with Kbm from the home keygen token alone (§5.2.5), without the
        A flag: for when the shell can reach the correspondent only over some other path (no BA could come
        back). None if the correspondent holds no binding of ours or the home token is stale. The local
        route optimisation ends at once; it starts again on the next ``move_to``."""
        cs = self._correspondents.get(bytes(correspondent))
        entry = self.bul.get(bytes(correspondent))
        if cs is None or entry is None or not entry.peer_has_binding or \
                (cs.static_kbm is None and not self._home_token_fresh(cs, now)):
            return None
        self._cancel_tests(cs, home_too=False)
        cs.bu_wanted = False
        self._abandon(entry)
        entry.registered_care_of = entry.expires_at = entry.refresh_at = None
        entry.peer_has_binding = False
        sequence = entry.new_sequence()
        if cs.static_kbm is not None:   # RFC 4449: no Nonce Indices option
            bu = rr.sign(m.BindingUpdate(sequence, 0, ack=False), cs.static_kbm, self.home_address, cs.address)
        else:
            bu = m.BindingUpdate(sequence, 0, ack=False, options=(m.NonceIndices(cs.home_nonce_index, 0),))
            bu = rr.sign(bu, rr.binding_management_key(cs.home_token), self.home_address, cs.address)
        self.counters["sent_BU"] += 1
        if cs.optimised:
            cs.optimised = False
            self._emit(RouteOptimisationStopped(cs.address, "deregistered from home"))
        return m.build_mobility_packet(self.home_address, cs.address, bu)

    # ------------------------------------------------------------------ timers
    def get_timer(self) -> Optional[float]:
        times = [t for t in (self.bul.next_deadline(),) if t is not None]
        for cs in self._correspondents.values():
            times += [t for t in (cs.hoti_retx.deadline, cs.coti_retx.deadline) if t is not None]
        return min(times, default=None)

    def handle_timer(self, now: float) -> None:
        for entry in self.bul:
            if entry.send_pending_at is not None and now >= entry.send_pending_at:
                entry.send_pending_at = None
                self._transmit_first(entry, now, entry.pending_initial_timeout)
            if entry.retransmit.expired(now):
                if entry.retransmit.backoff(now):
                    self.counters["bu_retransmissions"] += 1
                    self._transmit_bu(entry, now)
                else:
                    entry.outstanding = False
                    self._emit(BindingFailed(entry.peer, entry.kind.value, None))
                    self._correspondent_lost(entry.peer, "no binding acknowledgement")
            if entry.refresh_at is not None and now >= entry.refresh_at:
                entry.refresh_at = None
                self._refresh(entry, now)
            if entry.expires_at is not None and now >= entry.expires_at:
                entry.expires_at = entry.refresh_at = None
                entry.registered_care_of = None
                if entry.sent_at == entry.acked_sent_at:
                    entry.peer_has_binding = False  # nothing newer was sent that the peer may hold
                self._emit(BindingLost(entry.peer, entry.kind.value))
                self._correspondent_lost(entry.peer, "binding expired")
        for cs in list(self._correspondents.values()):
            for retx, home in ((cs.hoti_retx, True), (cs.coti_retx, False)):
                if not retx.expired(now):
                    continue
                if retx.backoff(now):
                    self.counters["test_init_retransmissions"] += 1
                    if home:
                        self._transmit_hoti(cs)
                    else:
                        self._transmit_coti(cs)
                else:
                    self._cancel_tests(cs, home_too=True)
                    cs.bu_wanted = False
                    self._emit(RouteOptimisationStopped(cs.address, "no %s test answer" % ("home" if home else
                                                                                         "care-of")))

    def _refresh(self, entry: BindingUpdateListEntry, now: float) -> None:
        """RFC 6275 §11.7.1: renew before the lifetime ends (RR again for correspondents)."""
        if self.at_home:
            return
        if entry.kind is PeerKind.CORRESPONDENT:
            cs = self._correspondents.get(entry.peer)
            if cs is not None and cs.wanted:
                cs.bu_wanted = True
                self._ensure_rr(cs, now)
            return
        self.counters["refreshes"] += 1
        self._start_bu(entry, now, self.home_lifetime, self.initial_bindack_timeout)

    # ------------------------------------------------------------------ binding updates
    def _add_peer(self, peer: bytes, kind: PeerKind, home_address: Optional[bytes] = None) -> BindingUpdateListEntry:
        if self._initial_sequence is not None:
            sequence = self._initial_sequence
        else:
            sequence = int.from_bytes(self._random_bytes(2), "big")
        entry = BindingUpdateListEntry(peer, kind, bytes(home_address or self.home_address), sequence,
                                       retransmit=Retransmitter(self.max_bindack_timeout, self.keep_retrying))
        return self.bul.add(entry)

    def _abandon(self, entry: BindingUpdateListEntry) -> None:
        entry.outstanding = False
        entry.send_pending_at = None
        entry.retransmit.stop()

    def _start_bu(self, entry: BindingUpdateListEntry, now: float, lifetime: float, initial_timeout: float) -> None:
        """A new BU (new care-of address, lifetime or keys): sent now, or when MAX_UPDATE_RATE allows."""
        self._abandon(entry)
        if entry.registered_care_of != self.care_of_address or lifetime == 0:
            # Once this BU is out the peer may hold either binding: trust neither until the BA.
            entry.registered_care_of = entry.expires_at = entry.refresh_at = None
        entry.care_of_address = self.care_of_address
        entry.requested_lifetime = lifetime
        entry.failed_status = None
        earliest = entry.rate_limit.earliest(now)
        if earliest > now:
            self.counters["bu_rate_limited"] += 1
            entry.send_pending_at = earliest
            entry.pending_initial_timeout = initial_timeout
            return
        self._transmit_first(entry, now, initial_timeout)

    def _transmit_first(self, entry: BindingUpdateListEntry, now: float, initial_timeout: float) -> None:
        if self._transmit_bu(entry, now):
            entry.retransmit.start(now, initial_timeout)

    def _transmit_bu(self, entry: BindingUpdateListEntry, now: float) -> bool:
        """Send the entry's BU with a new sequence number (RFC 6275 §11.8: every retransmission gets one)."""
        care_of = entry.care_of_address
        home = entry.home_address
        from_home = care_of == self.home_address
        lifetime_units = seconds_to_units(entry.requested_lifetime)
        if entry.kind is PeerKind.CORRESPONDENT:
            cs = self._correspondents.get(entry.peer)
            if cs is None or entry.kbm is None or not self._tokens_fresh_for(cs, entry, now):
                # Tokens went stale while retransmitting: get new ones first.
                entry.outstanding = False
                entry.retransmit.stop()
                if cs is not None:
                    cs.bu_wanted = True
                    self._ensure_rr(cs, now)
                return False
        sequence = entry.new_sequence()
        options = ()
        if entry.kind is PeerKind.CORRESPONDENT:
            # RFC 4449: a BU under a static Kbm carries no Nonce Indices option.
            options = () if entry.nonce_indices is None else (m.NonceIndices(*entry.nonce_indices),)
        elif self.use_alternate_care_of and not from_home:
            # RFC 6275 §11.7.1: ESP does not cover the source address; repeat the CoA inside the BU.
            options = (m.AlternateCareOfAddress(care_of),)
        bu = m.BindingUpdate(sequence, lifetime_units, ack=True, home_registration=entry.kind is PeerKind.HOME_AGENT,
                             options=options)
        if entry.kind is PeerKind.CORRESPONDENT:
            bu = rr.sign(bu, entry.kbm, care_of, entry.peer)
        src = self.home_address if from_home else care_of
        # From the home link without a HAO (RFC 6275 §11.5.4), unless the binding is for another address.
        packet = m.build_mobility_packet(src, entry.peer, bu,
                                         home_address=None if from_home and home == src else home)
        if entry.kind is PeerKind.CORRESPONDENT:
            protection, esp_peer = Protection.NONE, None
        else:
            protection, esp_peer = Protection.ESP_TRANSPORT, entry.peer  # RFC 3776 §3.1
        self._queue(packet, "BU seq %d lifetime %d to %s" % (sequence, lifetime_units, entry.kind.value),
                    protection, esp_peer)
        entry.rate_limit.record(now)
        entry.sent_at = now
        entry.outstanding = True
        if entry.requested_lifetime > 0:
            entry.peer_has_binding = True
        return True

    # ------------------------------------------------------------------ return routability
    def _home_token_fresh(self, cs: _Correspondent, now: float) -> bool:
        return cs.home_token is not None and now - cs.home_token_at < self.token_lifetime

    def _care_of_token_fresh(self, cs: _Correspondent, now: float) -> bool:
        return (cs.care_of_token is not None and cs.care_of_token_for == self.care_of_address
                and now - cs.care_of_token_at < self.token_lifetime)

    def _tokens_fresh_for(self, cs: _Correspondent, entry: BindingUpdateListEntry, now: float) -> bool:
        if cs.static_kbm is not None:
            return entry.kbm == cs.static_kbm
        if not self._home_token_fresh(cs, now):
            return False
        deregistering = entry.requested_lifetime == 0 or entry.care_of_address == self.home_address
        return deregistering or self._care_of_token_fresh(cs, now)

    def _cancel_tests(self, cs: _Correspondent, *, home_too: bool) -> None:
        cs.coti_cookie = None
        cs.coti_retx.stop()
        if home_too:
            cs.hoti_cookie = None
            cs.hoti_retx.stop()

    def _ensure_rr(self, cs: _Correspondent, now: float) -> None:
        """Send whichever test init is missing; send the BU once both tokens are fresh (RFC 6275 §11.6)."""
        if not cs.bu_wanted or cs.unsupported:
            return
        entry = self.bul.get(cs.address)
        deregistering = self.at_home or not cs.wanted
        if cs.static_kbm is not None:
            self._start_keyed_bu(cs, entry, deregistering, now)
            return
        need_home = not self._home_token_fresh(cs, now)
        need_care_of = not deregistering and not self._care_of_token_fresh(cs, now)
        if need_home and cs.hoti_cookie is None and (self.at_home or self.home_registered()):
            # Away, the HoTI goes through the HA, so it waits for the home registration (see _on_ack).
            cs.hoti_cookie = self._random_bytes(COOKIE_LENGTH)
            cs.hoti_retx.start(now, self.initial_bindack_timeout)
            self._transmit_hoti(cs)
        if need_care_of and cs.coti_cookie is None:
            cs.coti_cookie = self._random_bytes(COOKIE_LENGTH)
            cs.coti_for = self.care_of_address
            cs.coti_retx.start(now, self.initial_bindack_timeout)
            self._transmit_coti(cs)
        if need_home or need_care_of:
            return
        cs.bu_wanted = False
        if entry is None:
            entry = self._add_peer(cs.address, PeerKind.CORRESPONDENT)
        entry.kbm = rr.binding_management_key(cs.home_token, None if deregistering else cs.care_of_token)
        entry.nonce_indices = (cs.home_nonce_index, 0 if deregistering else cs.care_of_nonce_index)
        lifetime = 0.0 if deregistering else self.correspondent_lifetime
        self._start_bu(entry, now, lifetime, self.initial_bindack_timeout)

    def _start_keyed_bu(self, cs: _Correspondent, entry: Optional[BindingUpdateListEntry], deregistering: bool,
                        now: float) -> None:
        cs.bu_wanted = False
        lifetime = 0.0 if deregistering else self.correspondent_lifetime
        if entry is None:
            entry = self._add_peer(cs.address, PeerKind.CORRESPONDENT)
        elif (entry.outstanding and entry.kbm == cs.static_kbm and entry.care_of_address == self.care_of_address
              and entry.requested_lifetime == lifetime):
            return   # this very BU is on its way
        entry.kbm, entry.nonce_indices = cs.static_kbm, None
        self._start_bu(entry, now, lifetime, self.initial_bindack_timeout)

    def _transmit_hoti(self, cs: _Correspondent) -> None:
        inner = m.build_mobility_packet(self.home_address, cs.address, m.HomeTestInit(cs.hoti_cookie))
        if self.at_home:
            self._queue(inner, "HoTI")
        else:
            # RFC 6275 §11.6.1: from the home address, reverse-tunnelled through the HA.
            self._queue(m.encapsulate(inner, self.care_of_address, self.home_agent), "HoTI tunnelled",
                        Protection.ESP_TUNNEL, self.home_agent)

    def _transmit_coti(self, cs: _Correspondent) -> None:
        packet = m.build_mobility_packet(cs.coti_for, cs.address, m.CareOfTestInit(cs.coti_cookie))
        self._queue(packet, "CoTI")

    def _correspondent_lost(self, peer: bytes, reason: str) -> None:
        cs = self._correspondents.get(peer)
        if cs is not None and cs.optimised:
            cs.optimised = False
            self._emit(RouteOptimisationStopped(peer, reason))

    # ------------------------------------------------------------------ receive
    def receive(self, packet: bytes, now: float, *, esp_protected: bool = False) -> None:
        """A mobility packet for this node (ESP already removed by the shell, ``esp_protected`` tells).

        An IPv6-in-IPv6 packet from the HA (e.g. a tunnelled HoT) is unwrapped here too."""
        try:
            _, _, upper, _ = m.packet_summary(packet)
            if upper == ipv6.NH_IPV6:
                outer_src, outer_dst, inner = m.decapsulate(packet)
                if outer_src != self.home_agent or outer_dst != self.care_of_address:
                    self._drop("unexpected_tunnel", ipv6.ntop(outer_src))
                    return
                packet = inner
        except m.MobilityParseError as exc:
            self._drop("malformed", str(exc))
            return
        parsed = self._parse(packet)
        if parsed is None:
            return
        if parsed.routing_address is not None and parsed.routing_address != self.home_address:
            # RFC 6275 §11.3.3: a type 2 routing header must name a home address of ours; a peer holding
            # the binding for another of them (register_with) answers with that one.
            entry = self.bul.get(parsed.src)
            if entry is None or parsed.routing_address != entry.home_address:
                self._drop("foreign_routing_header", ipv6.ntop(parsed.routing_address))
                return
        if parsed.dst not in (self.home_address, self.care_of_address):
            self._drop("not_for_us", ipv6.ntop(parsed.dst))
            return
        message = parsed.message
        self.counters["received_" + MH_NAMES.get(message.MH_TYPE, "unknown")] += 1
        if isinstance(message, m.BindingAcknowledgement):
            self._on_ack(parsed, message, now, esp_protected)
        elif isinstance(message, (m.HomeTest, m.CareOfTest)):
            self._on_test(parsed, message, now)
        elif isinstance(message, m.BindingRefreshRequest):
            self._on_refresh_request(parsed, now)
        elif isinstance(message, m.BindingError):
            self._on_binding_error(parsed, message, now)
        else:
            self._drop("unexpected_message", message.name)

    def _on_ack(self, parsed: m.MobilityPacket, ack: m.BindingAcknowledgement, now: float,
                esp_protected: bool) -> None:
        """RFC 6275 §11.7.3."""
        peer = parsed.src
        entry = self.bul.get(peer)
        if entry is None or not entry.outstanding:
            self._drop("unexpected_binding_ack", ipv6.ntop(peer))
            return
        if entry.kind is not PeerKind.CORRESPONDENT and self.require_esp and not esp_protected:
            self._drop("unprotected_binding_ack", ipv6.ntop(peer))
            return
        if ack.status != BA_SEQUENCE_OUT_OF_WINDOW and ack.sequence != entry.sequence:
            self._drop("binding_ack_sequence_mismatch", "%d != %d" % (ack.sequence, entry.sequence))
            return
        if entry.kind is PeerKind.CORRESPONDENT and ack.status not in _NONCE_STATUSES:
            if not rr.verify(parsed.mh, entry.kbm, entry.care_of_address, peer):
                self._drop("bad_authenticator", ipv6.ntop(peer))
                return
        entry.outstanding = False
        entry.retransmit.stop()
        cs = self._correspondents.get(peer)
        if ack.status == BA_SEQUENCE_OUT_OF_WINDOW:
            # The BA carries the peer's last accepted number; continue after it.
            entry.sequence = ack.sequence
            self.counters["sequence_resyncs"] += 1
            self._emit(SequenceResynchronised(peer, ack.sequence))
            if entry.kind is PeerKind.CORRESPONDENT:
                if cs is not None:
                    cs.bu_wanted = True
                    self._ensure_rr(cs, now)
            else:
                self._start_bu(entry, now, entry.requested_lifetime, self.initial_bindack_timeout)
            return
        if ack.status in _NONCE_STATUSES and cs is not None:
            if ack.status in (BA_EXPIRED_HOME_NONCE_INDEX, BA_EXPIRED_NONCES):
                cs.home_token = None
            if ack.status in (BA_EXPIRED_CARE_OF_NONCE_INDEX, BA_EXPIRED_NONCES):
                cs.care_of_token = None
            cs.bu_wanted = True
            self._ensure_rr(cs, now)
            return
        if entry.requested_lifetime == 0 and ack.status == BA_NOT_HOME_AGENT_FOR_THIS_MN:
            ack = replace(ack, status=BA_ACCEPTED)  # RFC 6275 §10.3.2: the HA had no binding to delete
        if not ack.accepted:
            entry.failed_status = ack.status
            self._emit(BindingFailed(peer, entry.kind.value, ack.status))
            if cs is not None:
                cs.wanted = False
                self._correspondent_lost(peer, "binding rejected with status %d" % ack.status)
            return
        if entry.requested_lifetime == 0:
            entry.registered_care_of = None
            entry.expires_at = entry.refresh_at = None
            entry.peer_has_binding = False
            self._emit(BindingDeregistered(peer, entry.kind.value))
            return
        granted = units_to_seconds(ack.lifetime)
        entry.registered_care_of = entry.care_of_address
        entry.peer_has_binding = True
        entry.acked_sent_at = entry.sent_at
        entry.granted_lifetime = granted
        # RFC 6275 §11.7.3: the lifetime runs from when the BU was sent.
        entry.expires_at = entry.sent_at + granted
        refresh_in = granted * self.refresh_fraction
        advice = ack.option(m.BindingRefreshAdvice)
        if advice is not None and entry.kind is not PeerKind.CORRESPONDENT:
            refresh_in = min(refresh_in, units_to_seconds(advice.interval))
        entry.refresh_at = entry.sent_at + refresh_in
        self._emit(BindingAcknowledged(peer, entry.kind.value, entry.care_of_address, granted))
        if entry.kind is PeerKind.HOME_AGENT:
            # HoTIs waited for the home registration.
            for other in self._correspondents.values():
                self._ensure_rr(other, now)
        elif cs is not None and entry.care_of_address == self.care_of_address and not cs.optimised:
            cs.optimised = True
            self._emit(RouteOptimisationStarted(peer, entry.care_of_address))

    def _on_test(self, parsed: m.MobilityPacket, test, now: float) -> None:
        cs = self._correspondents.get(parsed.src)
        home = isinstance(test, m.HomeTest)
        if cs is None:
            self._drop("unexpected_test", ipv6.ntop(parsed.src))
            return
        if parsed.home_address is not None or parsed.routing_address is not None:
            self._drop("test_with_mobility_header", test.name)
            return
        if home:
            # RFC 6275 §11.6.2: the HoT is addressed to the home address and answers our latest HoTI.
            if parsed.dst != self.home_address or cs.hoti_cookie is None or test.cookie != cs.hoti_cookie:
                self._drop("unexpected_test", "HoT cookie")
                return
            cs.home_token, cs.home_nonce_index, cs.home_token_at = test.token, test.nonce_index, now
            cs.hoti_cookie = None
            cs.hoti_retx.stop()
        else:
            if (cs.coti_cookie is None or test.cookie != cs.coti_cookie or parsed.dst != cs.coti_for
                    or cs.coti_for != self.care_of_address):
                self._drop("unexpected_test", "CoT cookie")
                return
            cs.care_of_token, cs.care_of_nonce_index, cs.care_of_token_at = test.token, test.nonce_index, now
            cs.care_of_token_for = cs.coti_for
            cs.coti_cookie = None
            cs.coti_retx.stop()
        self._ensure_rr(cs, now)

    def _on_refresh_request(self, parsed: m.MobilityPacket, now: float) -> None:
        """RFC 6275 §11.7.4: answer a BRR from a node we have a binding with by refreshing it."""
        entry = self.bul.get(parsed.src)
        if entry is None or entry.registered_care_of is None or self.at_home:
            self._drop("unexpected_refresh_request", ipv6.ntop(parsed.src))
            return
        entry.refresh_at = None
        self._refresh(entry, now)

    def _on_binding_error(self, parsed: m.MobilityPacket, error: m.BindingError, now: float) -> None:
        """RFC 6275 §11.3.6."""
        peer = parsed.src
        self._emit(BindingErrorReceived(peer, error.status, error.home_address))
        cs = self._correspondents.get(peer)
        if cs is None:
            self.counters["binding_errors_ignored"] += 1
            return
        if error.status == BE_UNRECOGNIZED_MH_TYPE:
            cs.unsupported, cs.wanted, cs.bu_wanted = True, False, False
            self._cancel_tests(cs, home_too=True)
            entry = self.bul.get(peer)
            if entry is not None:
                self._abandon(entry)
                entry.registered_care_of = entry.expires_at = entry.refresh_at = None
                entry.peer_has_binding = False
            self._correspondent_lost(peer, "correspondent does not support mobility")
        elif error.status == BE_UNKNOWN_BINDING_FOR_HAO and error.home_address == self.home_address:
            # RFC 6275 §11.3.6: remove the entry and go through the home agent at once, even with a BU
            # outstanding (the peer may never accept it). Then return routability from scratch (§5.2):
            # the peer lost our binding for a reason we cannot see, e.g. a restart with a new Kcn, and
            # a BU on the tokens we hold could be silently discarded (§9.5.1) until they go stale. Tests
            # already in flight are kept: the peer answers them with its current state, and a burst of
            # (unauthenticated) BEs cannot keep restarting them.
            entry = self.bul.get(peer)
            if entry is not None:
                self._abandon(entry)
                entry.registered_care_of = entry.expires_at = entry.refresh_at = None
                entry.peer_has_binding = False
            cs.home_token = cs.care_of_token = None
            self._correspondent_lost(peer, "binding error")
            if cs.wanted and not self.at_home:
                cs.bu_wanted = True
                self._ensure_rr(cs, now)

    # ------------------------------------------------------------------ data plane
    def outgoing(self, packet: bytes, now: float, *, route_optimise: bool = True) -> Datagram:
        """What to send for a packet the node's stack wrote from its home address (RFC 6275 §11.3.1).
        ``route_optimise=False``: through the HA even to a correspondent holding our binding (the shell has
        another protected path for that traffic, or none: a HAO in clear would expose it)."""
        if len(packet) < ipv6.HEADER_LEN or packet[8:24] != self.home_address or self.at_home:
            return Datagram(packet, description="data")
        if route_optimise and self.route_optimised(packet[24:40], now):
            return Datagram(m.insert_home_address_option(packet, self.care_of_address), description="data HAO")
        return Datagram(m.encapsulate(packet, self.care_of_address, self.home_agent),
                        description="data reverse-tunnelled")

    def incoming(self, packet: bytes, now: float) -> Optional[bytes]:
        """The packet as the node's stack should see it (addressed to the home address), or None to drop."""
        try:
            home_address, routing_address, upper, _ = m.packet_summary(packet)
            src, dst = packet[8:24], packet[24:40]
            if upper == ipv6.NH_IPV6 and routing_address is None:
                outer_src, outer_dst, inner = m.decapsulate(packet)
                from_home_agent = outer_src == self.home_agent and outer_dst == self.care_of_address
                if from_home_agent and inner[24:40] == self.home_address:
                    return inner
                self._drop("unexpected_tunnel", ipv6.ntop(outer_src))
                return None
            if routing_address is not None:
                inner, home, care_of = m.remove_routing_header(packet)
                if home != self.home_address or care_of != self.care_of_address:
                    self._drop("foreign_routing_header", ipv6.ntop(home))
                    return None
                return inner
        except m.MobilityParseError as exc:
            self._drop("malformed", str(exc))
            return None
        if dst in (self.home_address, self.care_of_address):
            return packet
        self._drop("not_for_us", ipv6.ntop(dst))
        return None
