"""The VPN Connectivity Manager core (sans-IO).

Keeps the MN context database, and for each session the SG reports between two external MNs it runs:

    SG --REPORT(202)--> VCM --REPORT_ACK(204)--> SG
    VCM --KEYS(206)--> MN2          VCM --KEYS(210)--> MN1
    MN2 --KEYS_ACK--> VCM --PEER_READY(208 relayed)--> MN1
    MN1 --KEYS_ACK--> VCM --PEER_READY(212 relayed)--> MN2

Every request is retransmitted with backoff until answered (see channel.py). Each session's keys are
renewed before their lifetime ends with a further generation of KEYS (make-before-break: the MNs switch
outbound only when the peer confirmed the new inbound SA, and keep the old inbound SA until it expires).
When the SG reports an MN back inside, the VCM sends FALLBACK to both ends of its sessions.

With ``vcm_in_sg`` the same core runs inside the SG: the MN paths use the MN-SG SAs and the SG's reports
arrive over a local path; nothing else changes.
"""
from __future__ import annotations

import heapq
import ipaddress
import os
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

from . import protocol as p
from .channel import ControlChannel, RequestGaveUp
from .protocol import process_start

# FALLBACK for a pair an earlier VCM process keyed (UNKEYED_PEER): once per pair per this long.
ORPHAN_FALLBACK_INTERVAL_S = 2.0
KEY_LIFETIME_S = 3600   # seconds of key use per generation, unless configured

# Session states
SETTING_UP = "setting-up"
ESTABLISHED = "established"
CLOSING = "closing"
CLOSED = "closed"


@dataclass(frozen=True)
class MnEntry:
    """Static membership of one MN: how to reach it and its configured addresses."""
    node_id: int
    path: Hashable
    external_hoa: Optional[str] = None
    internal_hoa: Optional[str] = None


@dataclass(frozen=True)
class ManagerConfig:
    node_id: int
    sg_id: int
    sg_path: Hashable
    mns: tuple                        # MnEntry, one per MN with which the VCM shares an SA
    algorithm: str = "aes128gcm16"
    mode: str = "tunnel"              # tunnel (embodiment 1: internal addresses inside) or transport
    lifetime: int = KEY_LIFETIME_S    # seconds of key use per generation
    rekey_at: float = 0.75            # start the next generation after this fraction of the lifetime
    vcm_in_sg: bool = False
    fallback_both: bool = True        # also tell the MN that went inside to drop its direct SAs
    reserved_spis: frozenset = frozenset()   # SPIs the MNs already use (e.g. their SG SAs)
    max_sessions: int = 8192          # sessions kept at most (100 MNs make 4950 pairs); beyond, the oldest goes
    binding_keys: bool = False        # KEYS also carry a static Kbm for the MN–MN bindings (RFC 4449)


@dataclass
class ManagedSa:
    """A managed SA as the context database records it; the key itself is held only until delivered."""
    key_id: str
    spi: int
    algorithm: str
    src_node: int
    dst_node: int
    session_id: int
    generation: int
    created: float
    lifetime: int


@dataclass
class MnContext:
    node_id: int
    external_hoa: Optional[str]
    internal_hoa: Optional[str]
    care_of: Optional[str] = None
    location: Optional[int] = None
    correspondents: set = field(default_factory=set)
    sessions: dict = field(default_factory=dict)      # peer node id -> session id
    managed_sas: dict = field(default_factory=dict)   # key id -> ManagedSa


@dataclass
class _Generation:
    number: int
    created: float
    a_to_b: p.SaParams
    b_to_a: p.SaParams
    keys_txid: dict = field(default_factory=dict)     # node -> KEYS txid while unanswered
    installed: set = field(default_factory=set)       # nodes that ACKed KEYS
    ready_txid: dict = field(default_factory=dict)    # node -> PEER_READY txid while unanswered
    told_ready: set = field(default_factory=set)      # nodes that ACKed PEER_READY


@dataclass
class Session:
    session_id: int
    node_a: int       # "MN1" (initiator as reported)
    node_b: int       # "MN2"
    trigger: int
    state: str
    created: float
    generations: dict = field(default_factory=dict)
    current: int = 0
    established_at: Optional[float] = None
    fallback_txid: dict = field(default_factory=dict)
    set_up_again: bool = False   # after the fall-back completes (an MN restarted)
    process_of: dict = field(default_factory=dict)   # node -> process_start() of its KEYS_ACK: which process holds the keys
    binding_key: Optional[bytes] = field(default=None, repr=False)   # one per session: rekeys keep the bindings

    def other(self, node: int) -> int:
        return self.node_b if node == self.node_a else self.node_a


# Events for the shell / logs
@dataclass(frozen=True)
class SessionEstablished:
    session_id: int
    node_a: int
    node_b: int
    generation: int


@dataclass(frozen=True)
class SessionClosed:
    session_id: int
    reason: str


@dataclass(frozen=True)
class ReportIgnored:
    """A REPORT item that names an unknown node or asks for something impossible (counted)."""
    reason: str
    detail: str


class VcmManager:
    def __init__(self, config: ManagerConfig, *, random_bytes: Callable[[int], bytes] = os.urandom,
                 initial_counter: int = 0, **channel_options):
        """``random_bytes`` must be a CSPRNG in production (os.urandom / secrets.token_bytes)."""
        if config.algorithm not in p.ALGORITHM_IDS or config.mode not in p.MODE_IDS:
            raise ValueError(f"unsupported algorithm/mode {config.algorithm}/{config.mode}")
        self.config = config
        self._random = random_bytes
        peers = {config.sg_id: config.sg_path}
        peers.update({mn.node_id: mn.path for mn in config.mns})
        self.channel = ControlChannel(config.node_id, peers, initial_counter=initial_counter, **channel_options)
        self.contexts: dict[int, MnContext] = {
            mn.node_id: MnContext(mn.node_id, mn.external_hoa, mn.internal_hoa) for mn in config.mns}
        self.sessions: dict[int, Session] = {}
        # Session ids grow within this process, from its start second. MN agents order sessions by the VCM
        # process that sent them (message counters) before the id, so a lower id than one an earlier
        # process handed out is still a newer session.
        self._next_session = max(1, process_start(initial_counter) // 1000)   # (32 bits: seconds)
        self._first_session = self._next_session
        # An MN's configured home addresses -> its node id (UNKEYED_PEER names the peer by address).
        self._node_by_address: dict[str, int] = {}
        for mn in config.mns:
            for address in (mn.external_hoa, mn.internal_hoa):
                if address:
                    self._node_by_address[_canonical(address)] = mn.node_id
        self._orphans_told: dict[tuple, float] = {}   # (told node, unkeyed node) -> when FALLBACK went out
        # SPIs are never handed out twice by one VCM: an MN may still hold a retired inbound SA with an
        # old SPI for a grace period, and 2 SPIs per generation make the set's growth negligible.
        self._spis_in_use: set = set(config.reserved_spis)
        # Session deadlines (rekey, hard end) as a heap of (deadline, session id): an entry is pushed after
        # every change to a session, and entries that no longer match the session are dropped when they
        # reach the top, so timers cost O(log sessions), not a scan of every session.
        self._deadlines: list = []
        self._events: list = []
        self.stats = self.channel.stats

    # -- sans-IO surface --------------------------------------------------------------------------
    def receive(self, data: bytes, peer: Hashable, now: float) -> None:
        got = self.channel.receive(data, peer, now)
        if got is None:
            return
        msg, request = got
        if msg.type == p.REPORT:
            if msg.sender == self.config.sg_id:
                self._on_report(msg, now)
            else:
                self._ignore("not-from-sg", f"REPORT from node {msg.sender}")
                self.channel.reject(msg, p.STATUS_BAD_REQUEST)
        elif msg.type == p.RESTARTED:
            self._on_restarted(msg, now)
        elif msg.type == p.UNKEYED_PEER:
            self._on_unkeyed_peer(msg, now)
        elif msg.type in p.REQUEST_TYPES:
            self._ignore("unexpected-request", f"{msg.name} from node {msg.sender}")
            self.channel.reject(msg, p.STATUS_BAD_REQUEST)
        elif msg.type == p.KEYS_ACK:
            self._on_keys_ack(msg, request, now)
        elif msg.type == p.PEER_READY_ACK:
            self._on_ready_ack(msg, request, now)
        elif msg.type == p.FALLBACK_ACK:
            self._on_fallback_ack(msg, request, now)

    def handle_timer(self, now: float) -> None:
        for event in self.channel.handle_timer(now):
            self._on_gave_up(event, now)
        due = set()
        heap = self._deadlines
        while heap and heap[0][0] <= now:
            due.add(heapq.heappop(heap)[1])
        for sid in sorted(due):   # session ids grow with creation: the order of self.sessions
            session = self.sessions.get(sid)
            if session is None:
                continue
            if session.state == ESTABLISHED and now >= self._rekey_time(session):
                self._start_generation(session, now, rekey=True)
            elif session.state in (SETTING_UP, ESTABLISHED) and now >= self._hard_end(session):
                self._fall_back(session, None, now, reason="lifetime ended without a usable generation")
            self._schedule(session)

    def get_timer(self) -> Optional[float]:
        heap = self._deadlines
        while heap:
            deadline, sid = heap[0]
            session = self.sessions.get(sid)
            if session is not None and self._deadline(session) == deadline:
                break
            heapq.heappop(heap)   # superseded by a later push for the same session, or the session is gone
        deadlines = [self.channel.get_timer(), heap[0][0] if heap else None]
        return min((d for d in deadlines if d is not None), default=None)

    def _deadline(self, session: Session) -> Optional[float]:
        """The session's next timer: its rekey time (established) or hard end (setting up or established)."""
        deadlines = []
        if session.state == ESTABLISHED:
            deadlines.append(self._rekey_time(session))
        if session.state in (SETTING_UP, ESTABLISHED):
            deadlines.append(self._hard_end(session))
        return min(deadlines, default=None)

    def _schedule(self, session: Session) -> None:
        deadline = self._deadline(session)
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, session.session_id))

    def datagrams_to_send(self, now: float) -> list:
        return self.channel.datagrams_to_send()

    def pop_events(self) -> list:
        events = self.channel.events + self._events
        self.channel.events, self._events = [], []
        return events

    # -- queries ----------------------------------------------------------------------------------
    def session_between(self, node_a: int, node_b: int) -> Optional[Session]:
        sid = self.contexts[node_a].sessions.get(node_b) if node_a in self.contexts else None
        return self.sessions.get(sid) if sid is not None else None

    # -- REPORT (202) -----------------------------------------------------------------------------
    def _ignore(self, reason: str, detail: str) -> None:
        self.stats["ignored-" + reason] += 1
        self._events.append(ReportIgnored(reason, detail))

    def _on_report(self, msg: p.Message, now: float) -> None:
        status = p.STATUS_OK
        for info in msg.all(p.MnInfo):
            ctx = self.contexts.get(info.node_id)
            if ctx is None:
                self._ignore("unknown-node", f"MN_INFO for node {info.node_id}")
                status = p.STATUS_UNKNOWN_NODE
                continue
            self._update_context(ctx, info, now)
        for seen in msg.all(p.SessionSeen):
            unknown = [n for n in (seen.node_a, seen.node_b) if n not in self.contexts]
            if unknown:
                self._ignore("unknown-node", f"SESSION_SEEN names node {unknown[0]}")
                status = p.STATUS_UNKNOWN_NODE
                continue
            self._on_session_seen(seen, now)
        self.channel.respond(msg, [p.Status(status)] if status else [])

    def _update_context(self, ctx: MnContext, info: p.MnInfo, now: float) -> None:
        if info.external_hoa is not None:
            ctx.external_hoa = info.external_hoa
        if info.internal_hoa is not None:
            ctx.internal_hoa = info.internal_hoa
        ctx.care_of = info.care_of
        went_inside = info.location == p.LOCATION_INSIDE and ctx.location != p.LOCATION_INSIDE
        ctx.location = info.location
        if went_inside:
            for sid in list(ctx.sessions.values()):
                session = self.sessions.get(sid)
                if session is not None and session.state in (SETTING_UP, ESTABLISHED):
                    self._fall_back(session, ctx.node_id, now)

    def _on_session_seen(self, seen: p.SessionSeen, now: float) -> None:
        a, b = self.contexts[seen.node_a], self.contexts[seen.node_b]
        a.correspondents.add(b.node_id)
        b.correspondents.add(a.node_id)
        if a.location != p.LOCATION_OUTSIDE or b.location != p.LOCATION_OUTSIDE:
            self._ignore("not-external", f"session {a.node_id}-{b.node_id} with a node not known outside")
            return
        if a.external_hoa is None or b.external_hoa is None:
            self._ignore("no-address", f"session {a.node_id}-{b.node_id} without external home addresses")
            return
        existing = self.session_between(a.node_id, b.node_id)
        if existing is not None and existing.state in (SETTING_UP, ESTABLISHED, CLOSING):
            return   # already handled: reports are idempotent
        if len(self.sessions) >= self.config.max_sessions and not self._evict_oldest_session(now):
            self._ignore("session-limit", f"session {a.node_id}-{b.node_id}: {len(self.sessions)} sessions")
            return
        session = Session(self._next_session, a.node_id, b.node_id, seen.trigger, SETTING_UP, now)
        self._next_session += 1
        self.sessions[session.session_id] = session
        a.sessions[b.node_id] = session.session_id
        b.sessions[a.node_id] = session.session_id
        self._start_generation(session, now, rekey=False)
        self._schedule(session)

    # -- key generation ---------------------------------------------------------------------------
    def _evict_oldest_session(self, now: float) -> bool:
        """Make room: the oldest live session falls back to the SG path (its MNs are told). False if every
        session is already closing."""
        for session in self.sessions.values():   # creation order
            if session.state in (SETTING_UP, ESTABLISHED):
                self.stats["sessions_evicted"] += 1
                self._fall_back(session, None, now, "evicted to make room")
                return True
        return False

    def _new_spi(self) -> int:
        while True:
            spi = int.from_bytes(self._random(4), "big")
            if spi >= 256 and spi not in self._spis_in_use:   # RFC 4303 §2.1: 0-255 are reserved
                self._spis_in_use.add(spi)
                return spi

    def _new_sa(self, direction: int) -> p.SaParams:
        _, key_len = p.ALGORITHM_IDS[self.config.algorithm]
        key = self._random(key_len)
        salt = self._random(p.SALT_LEN)
        return p.SaParams(direction, self._new_spi(), self.config.algorithm, key, salt,
                          self.config.lifetime, self.config.mode)

    def _start_generation(self, session: Session, now: float, *, rekey: bool) -> None:
        number = max(session.generations, default=0) + 1
        # SA a->b: outbound at A, inbound at B.
        a_to_b = self._new_sa(p.DIR_OUT)
        b_to_a = self._new_sa(p.DIR_OUT)
        gen = _Generation(number, now, a_to_b, b_to_a)
        session.generations[number] = gen
        if rekey:
            session.state = ESTABLISHED   # stays usable on the old generation meanwhile
        if self.config.binding_keys and session.binding_key is None:
            session.binding_key = self._random(p.BINDING_KEY_LEN)
        for node, out_sa, in_sa in ((session.node_a, a_to_b, b_to_a), (session.node_b, b_to_a, a_to_b)):
            peer = session.other(node)
            ctx = self.contexts[node]
            ctx.managed_sas[_key_id(session, number, node, peer)] = ManagedSa(
                _key_id(session, number, node, peer), out_sa.spi, out_sa.algorithm, node, peer,
                session.session_id, number, now, out_sa.lifetime)
            tlvs = [p.SessionRef(session.session_id, number), self._peer_tlv(peer),
                    out_sa, _as_direction(in_sa, p.DIR_IN)]
            if session.binding_key is not None:
                tlvs.append(p.BindingKey(session.binding_key, self.contexts[peer].care_of))
            gen.keys_txid[node] = self.channel.send_request(
                node, p.KEYS, tlvs, now, flags=p.FLAG_REKEY if rekey else 0)

    def _peer_tlv(self, node: int) -> p.Peer:
        ctx = self.contexts[node]
        return p.Peer(node, ctx.external_hoa, ctx.internal_hoa)

    def _rekey_time(self, session: Session) -> float:
        gen = session.generations[session.current]
        if max(session.generations) > session.current:
            return float("inf")   # the next generation is already on its way
        return gen.created + self.config.lifetime * self.config.rekey_at

    def _hard_end(self, session: Session) -> float:
        generations = session.generations   # number -> generation
        usable = generations.get(session.current) or generations[max(generations)]
        return usable.created + self.config.lifetime

    # -- acknowledgements -------------------------------------------------------------------------
    def _find(self, ref: p.SessionRef):
        session = self.sessions.get(ref.session_id)
        gen = session.generations.get(ref.generation) if session else None
        return session, gen

    def _on_keys_ack(self, msg: p.Message, request: p.Message, now: float) -> None:
        ref = request.one(p.SessionRef)
        session, gen = self._find(ref)
        if session is None or gen is None or session.state not in (SETTING_UP, ESTABLISHED):
            return
        gen.keys_txid.pop(msg.sender, None)
        session.process_of[msg.sender] = process_start(msg.counter)
        if msg.status != p.STATUS_OK:
            self._fall_back(session, None, now, reason=f"node {msg.sender} refused keys ({msg.status})")
            return
        self._forget_key(session, gen, msg.sender)
        gen.installed.add(msg.sender)
        other = session.other(msg.sender)
        # Relay the ACK: the other MN may now send to this one (208 / 212).
        gen.ready_txid[other] = self.channel.send_request(
            other, p.PEER_READY, [p.SessionRef(session.session_id, gen.number), self._peer_tlv(msg.sender)], now)

    def _on_ready_ack(self, msg: p.Message, request: p.Message, now: float) -> None:
        ref = request.one(p.SessionRef)
        session, gen = self._find(ref)
        if session is None or gen is None:
            return
        gen.ready_txid.pop(msg.sender, None)
        gen.told_ready.add(msg.sender)
        if gen.told_ready >= {session.node_a, session.node_b} and gen.number > session.current:
            session.current = gen.number
            if session.state == SETTING_UP:
                session.state = ESTABLISHED
                session.established_at = now
            self._events.append(SessionEstablished(session.session_id, session.node_a, session.node_b,
                                                   gen.number))
            self._drop_old_generations(session)
            self._schedule(session)

    def _on_fallback_ack(self, msg: p.Message, request: p.Message, now: float) -> None:
        session = self.sessions.get(request.one(p.SessionRef).session_id)
        if session is None:
            return
        session.fallback_txid.pop(msg.sender, None)
        if not session.fallback_txid and session.state == CLOSING:
            self._close(session, "fell back")
            if session.set_up_again:
                # The peer is back on the SG path: only now may new keys reach it (a KEYS overtaking the
                # FALLBACK would install inbound SAs the FALLBACK then removes).
                self._on_session_seen(p.SessionSeen(session.node_a, session.node_b, session.trigger), now)

    def _on_gave_up(self, event: RequestGaveUp, now: float) -> None:
        ref = event.request.one(p.SessionRef)
        session = self.sessions.get(ref.session_id) if ref else None
        if session is None:
            return
        if event.request.type == p.FALLBACK:
            session.fallback_txid.pop(event.peer, None)
            if not session.fallback_txid and session.state == CLOSING:
                self._close(session, f"node {event.peer} did not confirm the fall-back")
        elif session.state in (SETTING_UP, ESTABLISHED):
            self._fall_back(session, None, now, reason=f"node {event.peer} did not answer {event.request.name}")

    # -- a restarted MN ---------------------------------------------------------------------------
    def _on_restarted(self, msg: p.Message, now: float) -> None:
        """The MN's new process holds none of the direct SAs its sessions gave it: its peers must stop
        sending under them at once (FALLBACK to the peer only; the restarted MN has nothing to remove),
        and each session that was in use is set up again as soon as the peer has confirmed."""
        ctx = self.contexts.get(msg.sender)
        if ctx is None:   # the channel knows only configured nodes; an SG or VCM id is not an MN
            self._ignore("unknown-node", f"RESTARTED from node {msg.sender}")
            self.channel.reject(msg, p.STATUS_UNKNOWN_NODE)
            return
        self.stats["restarted"] += 1
        restarted_at = process_start(msg.counter)
        for sid in list(ctx.sessions.values()):
            session = self.sessions.get(sid)
            # Only keys an earlier process acknowledged are lost. Keys the new process acknowledged (RESTARTED
            # was late: the MN could not reach us before its registration) or not yet (KEYS retransmits to the
            # new process; its peer hears PEER_READY only after that) need nothing.
            acked_by = session.process_of.get(ctx.node_id) if session is not None else None
            if acked_by is not None and acked_by < restarted_at and session.state in (SETTING_UP, ESTABLISHED):
                session.set_up_again = True
                self._fall_back(session, None, now, reason=f"node {ctx.node_id} restarted",
                                targets=[session.other(ctx.node_id)])
        self.channel.respond(msg, [])

    def _on_unkeyed_peer(self, msg: p.Message, now: float) -> None:
        """An MN receives a peer's direct ESP under an SA it does not hold. A session we know is handled as
        for RESTARTED (only keys an earlier process of the MN acknowledged are lost). A pair we do not know
        was keyed by an earlier VCM process: tell the peer to drop whatever session with this MN is older
        than our first one (FALLBACK naming the id just below it), so the pair's traffic returns to the SG
        path, where it is detected and keyed anew."""
        ctx = self.contexts.get(msg.sender)
        address = msg.one(p.Peer).external_hoa
        peer = self._node_by_address.get(_canonical(address)) if address else None
        if ctx is None or peer is None or peer == msg.sender:
            self._ignore("unknown-node", f"UNKEYED_PEER from node {msg.sender} naming {address}")
            self.channel.reject(msg, p.STATUS_UNKNOWN_NODE)
            return
        self.stats["unkeyed_peer"] += 1
        sid = ctx.sessions.get(peer)
        session = self.sessions.get(sid) if sid is not None else None
        if session is not None:
            acked_by = session.process_of.get(ctx.node_id)
            if acked_by is not None and acked_by < process_start(msg.counter) \
                    and session.state in (SETTING_UP, ESTABLISHED):
                session.set_up_again = True
                self._fall_back(session, None, now, reason=f"node {ctx.node_id} lost its keys",
                                targets=[peer])
        else:
            key = (peer, ctx.node_id)
            last = self._orphans_told.get(key)
            # (a first session id of 1: no earlier process numbered any, so there is nothing older to drop)
            if self._first_session > 1 and (last is None or now - last >= ORPHAN_FALLBACK_INTERVAL_S):
                if len(self._orphans_told) >= len(self.contexts):   # bounded: stale entries go first
                    for old in [k for k, t in self._orphans_told.items() if now - t >= ORPHAN_FALLBACK_INTERVAL_S]:
                        del self._orphans_told[old]
                self._orphans_told[key] = now
                self.stats["orphan_fallback"] += 1
                self.channel.send_request(peer, p.FALLBACK, [p.SessionRef(self._first_session - 1, 1),
                                                             self._peer_tlv(ctx.node_id)], now)
        self.channel.respond(msg, [])

    # -- fall-back and teardown -------------------------------------------------------------------
    def _fall_back(self, session: Session, inside_node: Optional[int], now: float, reason: str = "",
                   targets: Optional[list] = None) -> None:
        """Tell the MN(s) (``targets``, by default both or the one not inside) to go back to the SG path;
        stop all outstanding key exchanges."""
        self._cancel_pending(session)
        session.state = CLOSING
        if targets is None:
            targets = [session.node_a, session.node_b]
            if inside_node is not None and not self.config.fallback_both:
                targets = [session.other(inside_node)]
        newest = max(session.generations)
        for node in targets:
            peer = session.other(node)
            session.fallback_txid[node] = self.channel.send_request(
                node, p.FALLBACK, [p.SessionRef(session.session_id, newest), self._peer_tlv(peer)], now)
        if reason:
            self._events.append(SessionClosed(session.session_id, "falling back: " + reason))

    def _cancel_pending(self, session: Session) -> None:
        for gen in session.generations.values():
            for node, txid in list(gen.keys_txid.items()) + list(gen.ready_txid.items()):
                self.channel.cancel(node, txid)
            gen.keys_txid.clear()
            gen.ready_txid.clear()
        for node, txid in session.fallback_txid.items():
            self.channel.cancel(node, txid)
        session.fallback_txid.clear()

    def _close(self, session: Session, reason: str) -> None:
        self._cancel_pending(session)
        session.state = CLOSED
        for node in (session.node_a, session.node_b):
            ctx = self.contexts[node]
            if ctx.sessions.get(session.other(node)) == session.session_id:
                del ctx.sessions[session.other(node)]
            for key_id in [k for k, sa in ctx.managed_sas.items() if sa.session_id == session.session_id]:
                del ctx.managed_sas[key_id]
        for gen in session.generations.values():
            gen.a_to_b = gen.b_to_a = None   # drop key material
        del self.sessions[session.session_id]
        self._events.append(SessionClosed(session.session_id, reason))

    def _forget_key(self, session: Session, gen: _Generation, node: int) -> None:
        """Both MNs hold their keys once both ACKed KEYS; the VCM then keeps only SPIs and key ids."""
        if gen.installed | {node} >= {session.node_a, session.node_b}:
            gen.a_to_b = _without_key(gen.a_to_b)
            gen.b_to_a = _without_key(gen.b_to_a)

    def _drop_old_generations(self, session: Session) -> None:
        for number in [n for n in session.generations if n < session.current]:
            for node in (session.node_a, session.node_b):
                ctx = self.contexts[node]
                ctx.managed_sas.pop(_key_id(session, number, node, session.other(node)), None)
            del session.generations[number]


def _canonical(address: str) -> str:
    try:
        return ipaddress.ip_address(address).compressed
    except ValueError:
        return address


def _key_id(session: Session, generation: int, src: int, dst: int) -> str:
    return f"s{session.session_id}g{generation}:{src}->{dst}"


def _as_direction(sa: p.SaParams, direction: int) -> p.SaParams:
    return p.SaParams(direction, sa.spi, sa.algorithm, sa.key, sa.salt, sa.lifetime, sa.mode)


def _without_key(sa: Optional[p.SaParams]) -> Optional[p.SaParams]:
    if sa is None:
        return None
    return p.SaParams(sa.direction, sa.spi, sa.algorithm, b"", b"", sa.lifetime, sa.mode)
