"""Security Association Database.

Outbound SAs are found by name (the SPD's "protect" action names one). Inbound SAs are found the way
RFC 4301 §4.1 describes for unicast: by SPI and destination address first, then by SPI alone, the latter only
while exactly one inbound SA carries that SPI. An SPI may appear once per destination address.
"""
from __future__ import annotations

from .errors import ConfigError
from .sa import SecurityAssociation


class SAD:
    def __init__(self, sas=()):
        self._by_name: dict[str, SecurityAssociation] = {}
        self._by_spi_dst: dict[tuple[int, bytes], SecurityAssociation] = {}
        self._inbound_by_spi: dict[int, list[SecurityAssociation]] = {}
        # destination (16 octets) || SPI (4 octets): for an ESP packet right after the IPv6 header this is
        # one slice of the packet, octets 24..44.
        self._inbound_by_key: dict[bytes, SecurityAssociation] = {}
        for sa in sas:
            self.add(sa)

    def add(self, sa: SecurityAssociation) -> None:
        if sa.name in self._by_name:
            raise ConfigError(f"SA {sa.name!r}: name: already in the SAD")
        key = (sa.spi, sa.destination_bytes)
        if key in self._by_spi_dst:
            other = self._by_spi_dst[key]
            raise ConfigError(f"SA {sa.name!r}: spi: 0x{sa.spi:08x} to {sa.remote if sa.outbound else sa.local} "
                              f"is already used by SA {other.name!r}")
        self._by_name[sa.name] = sa
        self._by_spi_dst[key] = sa
        if not sa.outbound:
            self._inbound_by_spi.setdefault(sa.spi, []).append(sa)
            self._inbound_by_key[sa.local_bytes + sa.spi.to_bytes(4, "big")] = sa

    def remove(self, sa_or_name) -> SecurityAssociation:
        """Remove an SA (object or name) and return it; KeyError if it is not here."""
        name = sa_or_name if isinstance(sa_or_name, str) else sa_or_name.name
        sa = self._by_name.pop(name)
        del self._by_spi_dst[(sa.spi, sa.destination_bytes)]
        if not sa.outbound:
            del self._inbound_by_key[sa.local_bytes + sa.spi.to_bytes(4, "big")]
            same_spi = self._inbound_by_spi[sa.spi]
            same_spi.remove(sa)
            if not same_spi:
                del self._inbound_by_spi[sa.spi]
        return sa

    def get(self, name: str) -> SecurityAssociation | None:
        return self._by_name.get(name)

    def outbound(self, name: str) -> SecurityAssociation | None:
        sa = self._by_name.get(name)
        return sa if sa is not None and sa.outbound else None

    def inbound(self, spi: int, destination: bytes) -> SecurityAssociation | None:
        """Inbound SA for an ESP packet with this SPI sent to ``destination`` (16 bytes); None if none."""
        sa = self._by_spi_dst.get((spi, destination))
        if sa is not None and not sa.outbound:
            return sa
        # RFC 4301 §4.1: fall back to the SPI alone, if it is unambiguous.
        same_spi = self._inbound_by_spi.get(spi)
        if same_spi is not None and len(same_spi) == 1:
            return same_spi[0]
        return None

    def inbound_key(self, key: bytes) -> SecurityAssociation | None:
        """:meth:`inbound` for ``key`` = destination (16 octets) || SPI (4 octets)."""
        sa = self._inbound_by_key.get(key)
        if sa is not None:
            return sa
        same_spi = self._inbound_by_spi.get(int.from_bytes(key[16:20], "big"))
        if same_spi is not None and len(same_spi) == 1:
            return same_spi[0]  # RFC 4301 §4.1 fallback, as in inbound()
        return None

    def __iter__(self):
        return iter(list(self._by_name.values()))

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def status(self) -> list[dict]:
        return [sa.status() for sa in self._by_name.values()]
