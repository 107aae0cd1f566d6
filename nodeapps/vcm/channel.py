"""Reliable, replay-checked exchange of VCM control messages with a set of known peers (sans-IO).

Shared by the three cores (SG monitor, VCM, mobile agent). One :class:`ControlChannel` per node:

* every message sent to a peer takes the next value of a per-peer 64-bit counter; a receiver accepts
  only counters above the last one it accepted from that peer. A byte-identical copy of a message that
  was already accepted (a network duplicate) is answered again instead; anything else below the mark
  is a replay and is dropped.
* requests are retransmitted with exponential backoff until the matching response (same transaction id,
  type + 1) arrives. A retransmission is re-encoded with a fresh counter, so a request overtaken by a
  later one (reordering) still gets through on its next attempt.
* a request whose transaction id was already handled is not handed to the core again; the cached
  response is sent once more with a fresh counter (idempotent handling of repeated requests).
* a datagram must come over the path configured for its sender id: a node cannot speak for another
  node through its own SA.

Addresses are opaque hashables chosen by the shell; :class:`ControlPath` is the suggested shape.
"""
from __future__ import annotations

import hashlib
import heapq
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Hashable, Optional

from . import protocol as p

# How a control message reaches a node; the shell maps the carrier to a socket / SA.
CARRIER_VCM_SA = "vcm-sa"                    # MN<->VCM ESP SA, sent directly (embodiment 2 option)
CARRIER_VCM_SA_IN_SG_SA = "vcm-sa-in-sg-sa"  # MN<->VCM ESP SA carried inside the MN<->SG SA
CARRIER_SG_SA = "sg-sa"                      # MN<->SG SA (VCM built into the SG)
CARRIER_SG_VCM_SA = "sg-vcm-sa"              # SG<->VCM SA
CARRIER_LOCAL = "local"                      # same process (VCM built into the SG)
# First retransmission timeout of a request (docs/vcm-protocol.md), doubled per retransmission.
INITIAL_RTO_S = 0.25


@dataclass(frozen=True)
class ControlPath:
    carrier: str
    address: str          # inner IPv6 address of the node on that carrier
    port: int = p.DEFAULT_PORT


def mn_control_path(mn_inner_address: str, *, vcm_in_sg: bool, encapsulate: bool = True) -> ControlPath:
    """Path between the VCM and an MN: embodiment 1 always encapsulates; embodiment 2 may choose."""
    if vcm_in_sg:
        return ControlPath(CARRIER_SG_SA, mn_inner_address)
    return ControlPath(CARRIER_VCM_SA_IN_SG_SA if encapsulate else CARRIER_VCM_SA, mn_inner_address)


def vcm_control_path(vcm_address: str, *, vcm_in_sg: bool, encapsulate: bool = True) -> ControlPath:
    """Path from an MN to the VCM (the SG's inner address when the VCM is built into the SG)."""
    return mn_control_path(vcm_address, vcm_in_sg=vcm_in_sg, encapsulate=encapsulate)


def sg_vcm_path(address: str, *, vcm_in_sg: bool) -> ControlPath:
    return ControlPath(CARRIER_LOCAL if vcm_in_sg else CARRIER_SG_VCM_SA, address)


@dataclass(frozen=True)
class ControlDrop:
    """A datagram dropped before the core saw it (counted in ``ControlChannel.stats``)."""
    reason: str           # malformed | unknown-node | wrong-path | replay
    address: Hashable
    sender: Optional[int]
    detail: str


@dataclass(frozen=True)
class RequestGaveUp:
    """A request got no response after the last retransmission."""
    peer: int
    request: p.Message


@dataclass
class _Pending:
    peer: int
    msg_type: int
    txid: int
    tlvs: tuple
    flags: int
    attempts: int
    interval: float
    deadline: float


class _PeerState:
    __slots__ = ("address", "tx_counter", "rx_counter", "seen", "handled")

    def __init__(self, address, initial_counter):
        self.address = address
        self.tx_counter = initial_counter
        self.rx_counter = 0
        self.seen: OrderedDict = OrderedDict()     # counter -> digest of an accepted datagram
        self.handled: OrderedDict = OrderedDict()  # (request type, txid) -> (response type, tlvs, flags)


class ControlChannel:
    def __init__(self, node_id: int, peers: dict, *, initial_counter: int = 0, initial_rto: float = INITIAL_RTO_S,
                 max_rto: float = 8.0, max_attempts: int = 8, memory: int = 256, initial_txid: int = 1):
        """``initial_counter`` must grow across restarts (protocol.first_counter of the start time) or peers
        that remember the old counters reject everything until they forget. ``initial_txid``: a node whose own
        requests a peer may still remember from an earlier process (an MN's RESTARTED) starts its
        transaction ids at a random point, or the peer would answer from its cache instead of acting."""
        if not 0 < node_id <= 0xFFFFFFFF:
            raise ValueError(f"node id {node_id} outside 1..2^32-1")
        self.node_id = node_id
        self.initial_rto = initial_rto
        self.max_rto = max_rto
        self.max_attempts = max_attempts
        self.memory = memory
        self._initial_counter = initial_counter
        self._peers: dict[int, _PeerState] = {}
        for peer_id, address in peers.items():
            self.add_peer(peer_id, address)
        self._pending: dict[tuple[int, int], _Pending] = {}
        # (deadline, peer, txid) of every pending request, plus superseded entries that get_timer drops
        # when they reach the top: the next deadline without a scan of all pending requests.
        self._deadlines: list = []
        if not 0 < initial_txid <= 0xFFFFFFFF:
            raise ValueError(f"initial transaction id {initial_txid} outside 1..2^32-1")
        self._next_txid = initial_txid
        self._outbox: list[tuple[bytes, Hashable]] = []
        self.events: list = []
        self.stats: Counter = Counter()

    # -- peers ------------------------------------------------------------------------------------
    def add_peer(self, peer_id: int, address: Hashable) -> None:
        state = self._peers.get(peer_id)
        if state is None:
            self._peers[peer_id] = _PeerState(address, self._initial_counter)
        else:
            state.address = address

    def address_of(self, peer_id: int) -> Hashable:
        return self._peers[peer_id].address

    def knows(self, peer_id: int) -> bool:
        return peer_id in self._peers

    # -- sending ----------------------------------------------------------------------------------
    def _emit(self, peer_id: int, msg_type: int, txid: int, tlvs: tuple, flags: int) -> None:
        state = self._peers[peer_id]
        state.tx_counter += 1
        data = p.encode(p.Message(msg_type, self.node_id, state.tx_counter, txid, tuple(tlvs), flags))
        self._outbox.append((data, state.address))
        self.stats["sent"] += 1

    def send_request(self, peer_id: int, msg_type: int, tlvs, now: float, flags: int = 0) -> int:
        """Send a request and keep retransmitting it until answered; returns its transaction id."""
        assert msg_type in p.REQUEST_TYPES
        txid = self._next_txid
        self._next_txid = self._next_txid % 0xFFFFFFFF + 1
        tlvs = tuple(tlvs)
        self._emit(peer_id, msg_type, txid, tlvs, flags)
        self._pending[(peer_id, txid)] = _Pending(peer_id, msg_type, txid, tlvs, flags, 1,
                                                  self.initial_rto, now + self.initial_rto)
        heapq.heappush(self._deadlines, (now + self.initial_rto, peer_id, txid))
        return txid

    def cancel(self, peer_id: int, txid: int) -> None:
        self._pending.pop((peer_id, txid), None)

    def respond(self, request: p.Message, tlvs, flags: int = 0) -> None:
        """Answer a request handed out by :meth:`receive`; the answer is remembered for repeated copies."""
        response = (request.type + 1, tuple(tlvs), flags)
        handled = self._peers[request.sender].handled
        handled[(request.type, request.txid)] = response
        while len(handled) > self.memory:
            handled.popitem(last=False)
        self._emit(request.sender, response[0], request.txid, response[1], flags)

    def reject(self, request: p.Message, code: int) -> None:
        """Answer a request this node does not serve, in a form that still decodes."""
        ref = request.one(p.SessionRef)
        self.respond(request, ([ref] if ref is not None and request.type != p.REPORT else []) + [p.Status(code)])

    def datagrams_to_send(self) -> list:
        out, self._outbox = self._outbox, []
        return out

    # -- timers -----------------------------------------------------------------------------------
    def get_timer(self) -> Optional[float]:
        heap = self._deadlines
        while heap:
            deadline, peer_id, txid = heap[0]
            pending = self._pending.get((peer_id, txid))
            if pending is not None and pending.deadline == deadline:
                return deadline
            heapq.heappop(heap)   # answered, cancelled, given up or re-armed since
        return None

    def handle_timer(self, now: float) -> list:
        """Retransmit what is due; returns the requests given up on now (also queued as events)."""
        gave_up = []
        for key, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            if pending.attempts >= self.max_attempts:
                del self._pending[key]
                self.stats["gave-up"] += 1
                request = p.Message(pending.msg_type, self.node_id, 0, pending.txid, pending.tlvs, pending.flags)
                gave_up.append(RequestGaveUp(pending.peer, request))
                continue
            pending.attempts += 1
            pending.interval = min(pending.interval * 2, self.max_rto)
            pending.deadline = now + pending.interval
            heapq.heappush(self._deadlines, (pending.deadline, pending.peer, pending.txid))
            self.stats["retransmit"] += 1
            self._emit(pending.peer, pending.msg_type, pending.txid, pending.tlvs,
                       pending.flags | p.FLAG_RETRANSMIT)
        self.events.extend(gave_up)
        return gave_up

    # -- receiving --------------------------------------------------------------------------------
    def _drop(self, reason: str, address, sender, detail: str) -> None:
        self.stats[reason] += 1
        self.events.append(ControlDrop(reason, address, sender, detail))

    def receive(self, data: bytes, address: Hashable, now: float):
        """Check a datagram; returns ``(message, request)`` for the core, or None if it was consumed here.

        ``request`` is the answered request (type, txid, tlvs) for a response that completes one, else None.
        Responses that complete nothing (late or duplicate answers) are consumed here.
        """
        try:
            msg = p.decode(data)
        except p.VcmParseError as exc:
            self._drop("malformed", address, None, str(exc))
            return None
        state = self._peers.get(msg.sender)
        if state is None:
            self._drop("unknown-node", address, msg.sender, f"{msg.name} from unknown node {msg.sender}")
            return None
        # (identity first: shells hand back their own path objects, and a dataclass compare costs a call)
        if state.address is not address and state.address != address:
            self._drop("wrong-path", address, msg.sender,
                       f"{msg.name} claims node {msg.sender} but came over {address!r}")
            return None
        digest = hashlib.sha256(data).digest()  # keys never stay in memory for duplicate checks
        if msg.counter <= state.rx_counter:
            if state.seen.get(msg.counter) == digest:
                self.stats["duplicate"] += 1
                self._answer_again(state, msg)
                return None
            self._drop("replay", address, msg.sender,
                       f"{msg.name} counter {msg.counter} not above {state.rx_counter}")
            return None
        state.rx_counter = msg.counter
        state.seen[msg.counter] = digest
        while len(state.seen) > self.memory:
            state.seen.popitem(last=False)
        self.stats["received"] += 1
        if msg.type in p.REQUEST_TYPES:
            if (msg.type, msg.txid) in state.handled:
                self.stats["duplicate"] += 1
                self._answer_again(state, msg)
                return None
            return msg, None
        pending = self._pending.get((msg.sender, msg.txid))
        if pending is None or pending.msg_type + 1 != msg.type:
            self.stats["stale-response"] += 1
            return None
        del self._pending[(msg.sender, msg.txid)]
        return msg, p.Message(pending.msg_type, self.node_id, 0, pending.txid, pending.tlvs, pending.flags)

    def _answer_again(self, state: _PeerState, msg: p.Message) -> None:
        response = state.handled.get((msg.type, msg.txid))
        if response is not None:
            self._emit(msg.sender, response[0], msg.txid, response[1], response[2])
