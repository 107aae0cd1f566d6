"""Link profiles for topologies: ``get(name, **overrides)`` -> validated LinkConfig. Needs no Mininet.

The definitions live in :mod:`nodeapps.linkemu.profiles`; sources are cited in docs/links.md.
"""
from nodeapps.linkemu.profiles import PROFILES, definition, get, names

__all__ = ["PROFILES", "definition", "get", "names"]
