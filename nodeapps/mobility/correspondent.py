"""Correspondent node core (RFC 6275 §9): return routability answers and route-optimisation bindings.

Theory of operation: the MN sends a HoTI from its home address (through its HA) and a CoTI from its care-of
address; we answer each with a keygen token made from our secret Kcn and the current nonce (``rr.py``).
The MN then proves it received both by authenticating a BU with Kbm. A valid BU creates a binding; from
then on the shell asks ``route(dst, now)`` (or ``add_routing_header``) for each outgoing packet to put a type
2 routing header towards the care-of address, and passes incoming packets that carry a Home Address option
to ``accept_home_address_option``, which swaps the home address back in only under a binding (§9.3.1) and
otherwise answers with a Binding Error. A home address given a static Kbm (``set_binding_key``, RFC 4449)
may skip the tests: its BUs carry no Nonce Indices option and are checked with that key.
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, Optional

from nodeapps import ipv6
from nodeapps.mobility import messages as m
from nodeapps.mobility import rr
from nodeapps.mobility.bindings import TokenBucket
from nodeapps.mobility.constants import (
    BA_ACCEPTED, BA_EXPIRED_CARE_OF_NONCE_INDEX, BA_EXPIRED_HOME_NONCE_INDEX, BA_EXPIRED_NONCES,
    BA_HOME_REGISTRATION_NOT_SUPPORTED, BA_INSUFFICIENT_RESOURCES, BA_SEQUENCE_OUT_OF_WINDOW, MAX_NONCE_LIFETIME,
    MAX_RR_BINDING_LIFETIME, seconds_to_units, units_to_seconds,
)
from nodeapps.mobility.core import BindingCacheNode
from nodeapps.mobility.events import BindingRemoved


# Bindings a correspondent keeps: the lab's scale experiment has 100 MNs, each with a binding per peer.
DEFAULT_CACHE_CAPACITY = 1024
# BUs without nonce indices from a home address whose static Kbm is not here yet: kept this long, this many
# (a peer's keyed BU can overtake the key on its way to us; unverified until the key comes).
KEYLESS_BU_HOLD_S = 2.0
MAX_KEYLESS_BUS = 16
# Per home address: a forged keyless BU for the same address does not push the genuine one out (each is
# verified when the key comes; the forged ones then fail the authenticator check).
MAX_KEYLESS_BUS_PER_HOME = 4


class CorrespondentNode(BindingCacheNode):
    def __init__(self, addresses: Iterable[bytes], *, random_bytes: Callable[[int], bytes] = os.urandom,
                 kcn: Optional[bytes] = None, max_lifetime: float = MAX_RR_BINDING_LIFETIME,
                 nonce_regeneration_interval: float = rr.NONCE_REGENERATION_INTERVAL,
                 nonce_lifetime: float = MAX_NONCE_LIFETIME, test_rate: float = 50.0, test_burst: float = 20.0,
                 cache_capacity: Optional[int] = DEFAULT_CACHE_CAPACITY, **limits):
        """``random_bytes`` supplies Kcn and nonces (inject a seeded source in tests). ``max_lifetime``: granted
        binding lifetimes are trimmed to it (MAX_RR_BINDING_LIFETIME). ``test_rate``/``test_burst``: token bucket
        for HoTI/CoTI answers, so we cannot be used as a reflector. ``cache_capacity``: most bindings kept; a
        new one beyond it evicts the oldest (counted ``bindings_evicted``; None: no bound)."""
        super().__init__(addresses, cache_capacity=cache_capacity, **limits)
        self.nonces = rr.NonceTable(random_bytes, kcn=kcn, regeneration_interval=nonce_regeneration_interval,
                                    nonce_lifetime=nonce_lifetime)
        self.max_lifetime = min(max_lifetime, MAX_RR_BINDING_LIFETIME)
        self._test_limit = TokenBucket(test_rate, test_burst)
        self._test_limiting = False
        # RFC 4449: home address -> a static Kbm shared with that MN out of band (bounded like the cache).
        self.binding_keys: dict[bytes, bytes] = {}
        self._binding_key_capacity = cache_capacity
        # home address -> [(parsed, BU, esp_protected, arrival)], oldest first
        self._keyless_bus: dict[bytes, list[tuple]] = {}

    def set_binding_key(self, home_address: bytes, kbm: Optional[bytes], now: float) -> None:
        """Accept BUs for ``home_address`` authenticated with ``kbm`` and no Nonce Indices option (RFC 4449;
        None: return routability only, again). Beyond the cache capacity the oldest key goes. A keyed BU
        from that address that came in the last KEYLESS_BU_HOLD_S, before the key, is processed now."""
        home_address = bytes(home_address)
        self.binding_keys.pop(home_address, None)
        held = self._keyless_bus.pop(home_address, [])
        if kbm is None:
            return
        if self._binding_key_capacity is not None and len(self.binding_keys) >= self._binding_key_capacity:
            self.binding_keys.pop(next(iter(self.binding_keys)), None)
        if self._binding_key_capacity != 0:
            self.binding_keys[home_address] = bytes(kbm)
        for parsed, bu, esp_protected, arrival in held:
            if now - arrival <= KEYLESS_BU_HOLD_S:
                self.counters["keyless_bu_replayed"] += 1
                self._on_binding_update(parsed, bu, now, esp_protected)

    def _hold_keyless(self, home_address: bytes, parsed, bu, now: float, esp_protected: bool) -> None:
        """A BU that may be signed with a key still on its way to us: kept (bounded per home address and
        in all), checked when the key comes."""
        held = self._keyless_bus.pop(home_address, [])   # re-inserted last: the freshest address
        if len(self._keyless_bus) >= MAX_KEYLESS_BUS:
            self._keyless_bus.pop(next(iter(self._keyless_bus)))
        self._keyless_bus[home_address] = (held + [(parsed, bu, esp_protected, now)])[-MAX_KEYLESS_BUS_PER_HOME:]

    # ---- return routability: RFC 6275 §9.4 ----
    def _on_other_message(self, parsed, message, now: float, esp_protected: bool) -> None:
        if isinstance(message, (m.HomeTestInit, m.CareOfTestInit)):
            if parsed.home_address is not None or parsed.routing_address is not None:
                # RFC 6275 §9.4.1/§9.4.2: test init messages never carry a HAO (nor are they sent with RH2).
                self._drop("test_init_with_mobility_header", message.name)
                return
            if not self._test_limit.allow(now):
                self._drop("rate_limited", "test init flood", event=not self._test_limiting)
                self._test_limiting = True
                return
            self._test_limiting = False
            index, nonce = self.nonces.current(now)
            if isinstance(message, m.HomeTestInit):
                token = rr.home_keygen_token(self.nonces.kcn, parsed.src, nonce)
                reply = m.HomeTest(index, message.cookie, token)
            else:
                token = rr.care_of_keygen_token(self.nonces.kcn, parsed.src, nonce)
                reply = m.CareOfTest(index, message.cookie, token)
            kind = "HoT" if isinstance(reply, m.HomeTest) else "CoT"
            self._queue(m.build_mobility_packet(parsed.dst, parsed.src, reply), "%s index %d" % (kind, index))
            return
        super()._on_other_message(parsed, message, now, esp_protected)

    # ---- binding updates: RFC 6275 §9.5.1 ----
    def _on_binding_update(self, parsed, bu: m.BindingUpdate, now: float, esp_protected: bool) -> None:
        home_address, care_of = self._addresses_of(parsed, bu)
        correspondent = parsed.dst

        def answer(status: int, sequence: int = bu.sequence, lifetime_units: int = 0, kbm: Optional[bytes] = None):
            ack = m.BindingAcknowledgement(status, sequence, lifetime_units)
            if kbm is not None:
                # RFC 6275 §6.1.8 / §9.5.4: a CN's BA carries an authenticator computed like the BU's.
                ack = rr.sign(ack, kbm, care_of, correspondent)
            self._send_ack(parsed, home_address, ack)

        if bu.home_registration:
            answer(BA_HOME_REGISTRATION_NOT_SUPPORTED)  # RFC 6275 §9.5.1: we are not a home agent
            return
        indices = bu.option(m.NonceIndices)
        auth = bu.option(m.BindingAuthorizationData)
        static_kbm = self.binding_keys.get(home_address)
        if auth is None or (indices is None and static_kbm is None):
            self._drop("missing_rr_options", ipv6.ntop(home_address))  # silently discarded, §9.5.1
            if auth is not None:
                self._hold_keyless(home_address, parsed, bu, now, esp_protected)
            return
        if not self._usable_addresses(home_address, care_of):
            return
        deregistration = bu.lifetime == 0 or care_of == home_address
        if indices is None:
            kbm = static_kbm   # RFC 4449: the pre-shared key stands in for the keygen tokens
        else:
            kbm = self._return_routability_key(home_address, care_of, indices, deregistration, now, answer)
            if kbm is None:
                return
        if not rr.verify(parsed.mh, kbm, care_of, correspondent):
            self._drop("bad_authenticator", ipv6.ntop(home_address))
            return
        self._accept_binding_update(home_address, care_of, bu, kbm, deregistration, now, answer)

    def _return_routability_key(self, home_address: bytes, care_of: bytes, indices, deregistration: bool,
                                now: float, answer) -> Optional[bytes]:
        """Kbm from the keygen tokens the nonce indices name, or None (answered where §9.5.1 says)."""
        home_token = self.nonces.home_token(home_address, indices.home_nonce_index, now)
        care_of_token = None if deregistration else self.nonces.care_of_token(care_of, indices.care_of_nonce_index,
                                                                               now)
        if home_token is None or (care_of_token is None and not deregistration):
            # RFC 6275 §9.5.1: expired nonce indices are reported with 136/137/138 (no authenticator possible).
            if home_token is None and care_of_token is None and not deregistration:
                answer(BA_EXPIRED_NONCES)
            elif home_token is None:
                answer(BA_EXPIRED_HOME_NONCE_INDEX)
            else:
                answer(BA_EXPIRED_CARE_OF_NONCE_INDEX)
            return None
        return rr.binding_management_key(home_token, None if deregistration else care_of_token)

    def _accept_binding_update(self, home_address: bytes, care_of: bytes, bu: m.BindingUpdate, kbm: bytes,
                               deregistration: bool, now: float, answer) -> None:
        if not self._binding_update_allowed(now):
            return
        ok, last = self.cache.sequence_acceptable(home_address, bu.sequence, now)
        if not ok:
            answer(BA_SEQUENCE_OUT_OF_WINDOW, sequence=last, kbm=kbm)  # §9.5.1: always answered
            return
        if deregistration:
            self._delete_binding(home_address)
            if bu.ack:
                answer(BA_ACCEPTED, kbm=kbm)
            return
        if self.cache.full(home_address):
            # RFC 6275 §9.6: a correspondent may drop any binding to make room (the MN's traffic then goes
            # through its home agent again); the oldest goes, so a burst of new bindings cannot lock us out.
            evicted = self.cache.evict_oldest()
            if evicted is None:   # no room at all (capacity 0)
                answer(BA_INSUFFICIENT_RESOURCES, kbm=kbm)  # §9.5.4: answered even without the A flag
                return
            self.counters["bindings_evicted"] += 1
            self._emit(BindingRemoved(evicted.home_address, evicted.care_of_address, "evicted", False))
        granted_units = max(1, seconds_to_units(min(bu.lifetime_seconds, self.max_lifetime)))
        self._store_binding(home_address, care_of, bu.sequence, units_to_seconds(granted_units), now, False)
        if bu.ack:
            answer(BA_ACCEPTED, lifetime_units=granted_units, kbm=kbm)

    # ---- data plane ----
    def add_routing_header(self, packet: bytes, now: float) -> bytes:
        """``packet`` with a type 2 routing header to the care-of address if its destination has a binding,
        else unchanged. RFC 6275 §9.3.2."""
        if len(packet) < ipv6.HEADER_LEN:
            return packet
        care_of = self.route(packet[24:40], now)
        if care_of is None:
            return packet
        return m.insert_routing_header(packet, care_of)
