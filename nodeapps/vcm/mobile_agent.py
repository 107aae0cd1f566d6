"""Mobile-node side of the VCM protocol (sans-IO).

The agent receives key material from the VCM and tells its shell which SAs and SPD rules to install or
remove, in an order that never lets a packet reach a peer that cannot decrypt it:

1. KEYS (206/210) arrives: emit :class:`InstallInbound` (inbound SA, then inbound SPD rule) and queue
   KEYS_ACK. **Contract: the shell applies the ops of every event from** :meth:`pop_events` **before it
   sends what** :meth:`datagrams_to_send` **returns**, so the ACK leaves only once inbound is in place.
2. PEER_READY (the peer's relayed 208/212) arrives: the peer has its inbound SA, so emit
   :class:`SwitchOutbound` (outbound SA, peer-specific outbound SPD rule; on a rekey also the removal of
   the previous outbound rule and SA).
3. FALLBACK, return to the office, or lifetime end without a newer generation: emit :class:`FallBackToSg`
   which removes the direct SAs and the peer-specific rules; the MN's standing VPN rule through its SG SA
   then matches the peer's traffic again.

Outbound rules produced here are /128 peer-specific and must sit ahead of the MN's broad VPN rule via the
SG. During a rekey two inbound SAs (old and new generation) coexist for the same selectors; the old one is
removed when its lifetime plus ``inbound_grace`` has passed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Optional

from . import protocol as p
from .channel import ControlChannel
from .deadlines import DeadlineQueue

PATH_VIA_SG = "via-sg"
PATH_DIRECT = "direct"
# UNKEYED_PEER: one per peer address per this long (the VCM answers in one round trip; the peer falls back
# within another), and at most this many peer addresses at a time.
UNKEYED_REPORT_INTERVAL_S = 1.0
# Keep an old inbound SA this long past its lifetime (and after a fall-back). It must exceed the spread
# between the two MNs' receipt of the same KEYS, bounded by the VCM's retransmission span (~32 s).
INBOUND_GRACE_S = 45.0
MAX_UNKEYED_PEERS = 16


@dataclass(frozen=True)
class SaOp:
    """One SAD/SPD change: action is add-sa | del-sa | add-spd | del-spd; config is the SA or rule dict
    (for del-sa only ``name`` matters; del-spd carries the rule dict add-spd installed, whose ``name``
    identifies it). add-spd rules are peer-specific and go ahead of the MN's broad VPN rule (index 0)."""
    action: str
    config: dict


@dataclass(frozen=True)
class InstallInbound:
    """``binding_key``: the pair's static Kbm when the VCM sent one (RFC 4449), to accept the peer's BUs
    with from now on, and the peer's care-of address the VCM knew (``peer_care_of``)."""
    peer: int
    session_id: int
    generation: int
    ops: tuple
    peer_external_hoa: Optional[str] = None
    binding_key: Optional[bytes] = field(default=None, repr=False)
    peer_care_of: Optional[str] = None


@dataclass(frozen=True)
class SwitchOutbound:
    peer: int
    session_id: int
    generation: int
    ops: tuple


@dataclass(frozen=True)
class FallBackToSg:
    peer: int
    session_id: int
    reason: str   # vcm-command | returned-inside | lifetime-expired | replaced
    ops: tuple
    peer_external_hoa: Optional[str] = None


@dataclass(frozen=True)
class RetireInbound:
    """An old generation's inbound SA is no longer needed (after a rekey or a fall-back)."""
    peer: int
    session_id: int
    generation: int
    ops: tuple


@dataclass(frozen=True)
class KeysRejected:
    peer: int
    session_id: int
    reason: str


@dataclass(frozen=True)
class PathStatus:
    """One row of the MN status table (like a mesh VPN client's relay/direct column)."""
    peer: int
    peer_external_hoa: Optional[str]
    path: str                 # via-sg | direct
    since: float
    session_id: Optional[int] = None
    generation: Optional[int] = None
    spi_out: Optional[int] = None
    spi_in: Optional[int] = None
    pending: bool = False     # inbound installed, waiting for the peer's ACK


@dataclass(frozen=True)
class MobileAgentConfig:
    node_id: int
    vcm_id: int
    vcm_path: Hashable
    external_hoa: str
    internal_hoa: Optional[str] = None   # embodiment 1: VPN-internal address carried inside the tunnel
    inbound_grace: float = INBOUND_GRACE_S
    replay_window: int = 64


@dataclass
class _Generation:
    session_id: int
    number: int
    in_sa: dict
    in_rule: dict
    out_sa: dict
    out_rule: dict
    expires: float            # outbound use ends here
    retire_at: float          # inbound SA removed here (expires + inbound_grace, or sooner on fall-back)
    inbound_up: bool = True
    outbound_up: bool = False
    serial: int = 0           # unique within the agent: names the generation's timers


@dataclass
class _PeerLink:
    peer: int
    external_hoa: Optional[str]
    since: float
    session_id: Optional[int] = None
    vcm_process: int = 0                               # process_start() of the VCM that keyed the session
    generations: dict = field(default_factory=dict)   # number -> _Generation
    active_out: Optional[int] = None
    ready: set = field(default_factory=set)            # generations the peer has confirmed
    closed: bool = False                               # fallen back: this session gets no more keys
    retiring: list = field(default_factory=list)        # inbound SAs of superseded sessions
    binding_key: Optional[bytes] = field(default=None, repr=False)   # the session's RFC 4449 Kbm, if any


# A generation's two timers in MobileAgent._timers: (serial, _EXPIRES) while outbound is up,
# (serial, _RETIRE) while inbound is up.
_EXPIRES, _RETIRE = 0, 1


def _all_generations(link: _PeerLink) -> list:
    return list(link.generations.values()) + link.retiring


def _host(address: str) -> str:
    return f"{address}/128"


class MobileAgent:
    def __init__(self, config: MobileAgentConfig, *, initial_counter: int = 0, **channel_options):
        self.config = config
        self.channel = ControlChannel(config.node_id, {config.vcm_id: config.vcm_path},
                                      initial_counter=initial_counter, **channel_options)
        self._links: dict[int, _PeerLink] = {}
        self._events: list = []
        self.inside = False
        self._unkeyed_told: dict[str, float] = {}   # peer address -> when we last told the VCM
        # Every generation's expiry and retirement, kept as they change: get_timer runs after every datagram
        # and must not scan every link (an MN of a large VPN has many peers).
        self._timers = DeadlineQueue()
        self._serials = 0

    # -- sans-IO surface --------------------------------------------------------------------------
    def receive(self, data: bytes, peer: Hashable, now: float) -> None:
        got = self.channel.receive(data, peer, now)
        if got is None:
            return
        msg, _request = got
        if msg.sender != self.config.vcm_id:
            return
        handler = {p.KEYS: self._on_keys, p.PEER_READY: self._on_peer_ready, p.FALLBACK: self._on_fallback}
        if msg.type in handler:
            handler[msg.type](msg, now)
        # responses never flow towards an MN; the channel already ignores them

    def handle_timer(self, now: float) -> None:
        self.channel.handle_timer(now)
        if not self._timers.pop_due(now):
            return   # no generation is due: the scan below would change nothing
        for link in list(self._links.values()):
            for gen in sorted(_all_generations(link), key=lambda g: g.number):
                if gen.outbound_up and now >= gen.expires:
                    self._expire_outbound(link, gen, now)
                if gen.inbound_up and now >= gen.retire_at:
                    self._retire_inbound(link, gen)

    def get_timer(self) -> Optional[float]:
        deadlines = [d for d in (self.channel.get_timer(), self._timers.earliest()) if d is not None]
        return min(deadlines, default=None)

    def datagrams_to_send(self, now: float) -> list:
        return self.channel.datagrams_to_send()

    def pop_events(self) -> list:
        events = self.channel.events + self._events
        self.channel.events, self._events = [], []
        return events

    # -- local API --------------------------------------------------------------------------------
    def started(self, now: float) -> None:
        """The MN's process has just started and holds no direct SA. Peers of a session set up before may
        still send under one we no longer have: tell the VCM (RESTARTED), which moves those peers back to
        the SG path and sets the sessions up anew. Retransmitted until answered, like any request."""
        self.channel.send_request(self.config.vcm_id, p.RESTARTED, [], now)

    def unkeyed_peer(self, address: str, now: float) -> bool:
        """A peer's direct ESP (its home address proven by the MN–MN binding) arrived under an SA we do not
        hold: a VCM that did not key that pair (it restarted since) could not tell the peer when we did.
        Tell it (UNKEYED_PEER); it moves the peer back to the SG path, where the pair is detected and keyed
        anew. At most once per UNKEYED_REPORT_INTERVAL_S per address, for at most MAX_UNKEYED_PEERS
        addresses at a time (the packets are the peer's to send, or an attacker's). True if sent."""
        told = self._unkeyed_told
        last = told.get(address)
        if last is not None and now - last < UNKEYED_REPORT_INTERVAL_S:
            return False
        if len(told) >= MAX_UNKEYED_PEERS:
            for old in [a for a, t in told.items() if now - t >= UNKEYED_REPORT_INTERVAL_S]:
                del told[old]
            if len(told) >= MAX_UNKEYED_PEERS:
                return False
        told[address] = now
        self.channel.send_request(self.config.vcm_id, p.UNKEYED_PEER, [p.Peer(0, address)], now)
        return True

    def returned_inside(self, now: float) -> None:
        """The MN is back in the office: stop direct outbound at once; inbound SAs linger for the grace."""
        self.inside = True
        for link in list(self._links.values()):
            self._fall_back(link, "returned-inside", now)

    def left_office(self, now: float) -> None:
        self.inside = False

    def path_status(self) -> dict:
        """Per peer: via-sg or direct, SPIs in use and since when."""
        table = {}
        for peer, link in self._links.items():
            gen = link.generations.get(link.active_out) if link.active_out else None
            waiting = [g for g in link.generations.values()
                       if g.inbound_up and not g.outbound_up and g.number > (link.active_out or 0)]
            shown = gen or max(waiting, key=lambda g: g.number, default=None)
            table[peer] = PathStatus(
                peer=peer, peer_external_hoa=link.external_hoa,
                path=PATH_DIRECT if gen else PATH_VIA_SG, since=link.since, session_id=link.session_id,
                generation=gen.number if gen else None,
                spi_out=gen.out_sa["spi"] if gen else None,
                spi_in=shown.in_sa["spi"] if shown else None,
                pending=bool(waiting))
        return table

    # -- message handlers -------------------------------------------------------------------------
    @staticmethod
    def _session_key(msg: p.Message, ref: p.SessionRef) -> tuple[int, int]:
        """Sessions in the order they were made: by the VCM process that sent the message (its counters
        name it, in an authenticated message), then by session id. A restarted VCM numbers from its start
        second, which need not be above every id its predecessor handed out; its sessions are newer all the
        same."""
        return p.process_start(msg.counter), ref.session_id

    def _new_link(self, peer: p.Peer, key: tuple[int, int], now: float) -> _PeerLink:
        old = self._links.get(peer.node_id)
        if old is not None:
            self._fall_back(old, "replaced", now)   # a newer session supersedes the old one
            leftovers = old.retiring + [g for g in old.generations.values() if g.inbound_up]
        else:
            leftovers = []
        link = _PeerLink(peer.node_id, peer.external_hoa, now, key[1], vcm_process=key[0])
        link.retiring = leftovers
        self._links[peer.node_id] = link
        return link

    def _on_keys(self, msg: p.Message, now: float) -> None:
        ref = msg.one(p.SessionRef)
        peer = msg.one(p.Peer)
        if peer.node_id in (self.config.node_id, self.config.vcm_id) or self.inside:
            reason = "inside the office" if self.inside else "peer names this node or the VCM"
            self._events.append(KeysRejected(peer.node_id, ref.session_id, reason))
            self.channel.respond(msg, [ref, p.Status(p.STATUS_BAD_REQUEST)])
            return
        link = self._links.get(peer.node_id)
        key = self._session_key(msg, ref)
        held = (link.vcm_process, link.session_id) if link is not None else None
        if link is not None and (key < held or (key == held and link.closed)):
            self._events.append(KeysRejected(peer.node_id, ref.session_id, "stale session"))
            self.channel.respond(msg, [ref, p.Status(p.STATUS_STALE)])
            return
        if link is None or key > held:
            link = self._new_link(peer, key, now)
        link.external_hoa = peer.external_hoa
        if ref.generation in link.generations or (link.active_out or 0) >= ref.generation:
            self.channel.respond(msg, [ref])   # already installed or superseded: idempotent
            return
        sa_out = next(sa for sa in msg.all(p.SaParams) if sa.direction == p.DIR_OUT)
        sa_in = next(sa for sa in msg.all(p.SaParams) if sa.direction == p.DIR_IN)
        gen = self._build_generation(peer, ref, sa_in, sa_out, now)
        link.generations[ref.generation] = gen
        self._timers.set((gen.serial, _RETIRE), gen.retire_at)
        binding = msg.one(p.BindingKey)
        if binding is not None:
            link.binding_key = binding.key
        self._events.append(InstallInbound(peer.node_id, ref.session_id, ref.generation,
                                           (SaOp("add-sa", gen.in_sa), SaOp("add-spd", gen.in_rule)),
                                           peer.external_hoa, link.binding_key,
                                           binding.peer_care_of if binding is not None else None))
        self.channel.respond(msg, [ref])
        if ref.generation in link.ready:   # the peer's ACK overtook our keys
            self._switch_outbound(link, gen, now)

    def _on_peer_ready(self, msg: p.Message, now: float) -> None:
        ref = msg.one(p.SessionRef)
        peer = msg.one(p.Peer)
        self.channel.respond(msg, [ref])
        link = self._links.get(peer.node_id)
        key = self._session_key(msg, ref)
        held = (link.vcm_process, link.session_id) if link is not None else None
        if link is not None and (key < held or (key == held and link.closed)):
            return
        if link is None or key > held:
            # Our KEYS are still on their way: remember that the peer is ready.
            link = self._new_link(peer, key, now)
        link.ready.add(ref.generation)
        gen = link.generations.get(ref.generation)
        if gen is not None and not gen.outbound_up and (link.active_out or 0) < gen.number:
            self._switch_outbound(link, gen, now)

    def _on_fallback(self, msg: p.Message, now: float) -> None:
        ref = msg.one(p.SessionRef)
        peer = msg.one(p.Peer)
        self.channel.respond(msg, [ref])
        link = self._links.get(peer.node_id)
        if link is not None and (link.vcm_process, link.session_id) <= self._session_key(msg, ref):
            self._fall_back(link, "vcm-command", now)

    # -- SA bookkeeping ---------------------------------------------------------------------------
    def _build_generation(self, peer: p.Peer, ref: p.SessionRef, sa_in: p.SaParams, sa_out: p.SaParams,
                          now: float) -> _Generation:
        cfg = self.config
        base = f"vcm-{cfg.node_id}-{peer.node_id}-s{ref.session_id}g{ref.generation}"
        # Embodiment 1 carries VPN-internal addresses inside the tunnel between external HoAs.
        internal = bool(cfg.internal_hoa and peer.internal_hoa)
        own_inner = cfg.internal_hoa if internal else cfg.external_hoa
        peer_inner = peer.internal_hoa if internal else peer.external_hoa

        def sa_config(name, direction, sa: p.SaParams):
            return {"name": name, "direction": direction, "spi": sa.spi, "algorithm": sa.algorithm,
                    "key": sa.key.hex(), "salt": sa.salt.hex(), "mode": sa.mode, "local": cfg.external_hoa,
                    "remote": peer.external_hoa, "replay_window": cfg.replay_window}

        in_sa = sa_config(base + "-in", "in", sa_in)
        out_sa = sa_config(base + "-out", "out", sa_out)
        in_rule = {"direction": "in", "src": _host(peer_inner), "dst": _host(own_inner), "proto": None,
                   "sport": None, "dport": None, "action": "protect", "sa": in_sa["name"],
                   "name": in_sa["name"] + "-spd"}
        out_rule = {"direction": "out", "src": _host(own_inner), "dst": _host(peer_inner), "proto": None,
                    "sport": None, "dport": None, "action": "protect", "sa": out_sa["name"],
                    "name": out_sa["name"] + "-spd"}
        expires = now + min(sa_in.lifetime, sa_out.lifetime)
        self._serials += 1
        return _Generation(ref.session_id, ref.generation, in_sa, in_rule, out_sa, out_rule, expires,
                           expires + cfg.inbound_grace, serial=self._serials)

    def _switch_outbound(self, link: _PeerLink, gen: _Generation, now: float) -> None:
        if now >= gen.expires:
            return
        ops = [SaOp("add-sa", gen.out_sa), SaOp("add-spd", gen.out_rule)]
        old = link.generations.get(link.active_out) if link.active_out else None
        if old is not None and old.outbound_up:   # make-before-break: new rule first, then the old goes
            ops += [SaOp("del-spd", old.out_rule), SaOp("del-sa", {"name": old.out_sa["name"]})]
            old.outbound_up = False
            self._timers.discard((old.serial, _EXPIRES))
        gen.outbound_up = True
        self._timers.set((gen.serial, _EXPIRES), gen.expires)
        link.active_out = gen.number
        link.since = now
        self._events.append(SwitchOutbound(link.peer, link.session_id, gen.number, tuple(ops)))

    def _expire_outbound(self, link: _PeerLink, gen: _Generation, now: float) -> None:
        """No newer generation arrived in time: the key must not be used past its lifetime."""
        gen.outbound_up = False
        self._timers.discard((gen.serial, _EXPIRES))
        link.active_out = None
        link.since = now
        self._events.append(FallBackToSg(link.peer, link.session_id, "lifetime-expired",
                                         (SaOp("del-spd", gen.out_rule), SaOp("del-sa", {"name": gen.out_sa["name"]})),
                                         link.external_hoa))

    def _retire_inbound(self, link: _PeerLink, gen: _Generation) -> None:
        gen.inbound_up = False
        self._timers.discard((gen.serial, _RETIRE))
        self._timers.discard((gen.serial, _EXPIRES))   # it leaves the link: no timer of its own any more
        self._events.append(RetireInbound(link.peer, gen.session_id, gen.number,
                                          (SaOp("del-spd", gen.in_rule), SaOp("del-sa", {"name": gen.in_sa["name"]}))))
        if link.generations.get(gen.number) is gen:
            del link.generations[gen.number]
        else:
            link.retiring = [old for old in link.retiring if old is not gen]

    def _fall_back(self, link: _PeerLink, reason: str, now: float) -> None:
        """Back to the SG path for one peer: outbound direct goes at once; inbound SAs stay for
        ``inbound_grace`` so packets the peer sent before it heard of the change still decrypt."""
        ops = []
        for gen in sorted(link.generations.values(), key=lambda g: g.number):
            if gen.outbound_up:
                ops += [SaOp("del-spd", gen.out_rule), SaOp("del-sa", {"name": gen.out_sa["name"]})]
                gen.outbound_up = False
                self._timers.discard((gen.serial, _EXPIRES))
            gen.retire_at = min(gen.retire_at, now + self.config.inbound_grace)
            if gen.inbound_up:
                self._timers.set((gen.serial, _RETIRE), gen.retire_at)
        was_direct = link.active_out is not None
        link.active_out = None
        link.ready.clear()
        link.closed = True
        if was_direct:
            link.since = now
        # Also before any outbound switch when the KEYS brought a binding key: the shell takes it back.
        if ops or was_direct or link.binding_key is not None:
            self._events.append(FallBackToSg(link.peer, link.session_id, reason, tuple(ops), link.external_hoa))
