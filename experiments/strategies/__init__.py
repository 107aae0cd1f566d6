"""Strategies as plug-ins: how the mobile nodes reach each other, one module per strategy.

A strategy is a small class (:class:`Strategy`): its name and one-line description, the ``SvpnLab``
options it needs, hooks before and after each scenario phase, and the rows it adds to the results
(``report``, ``costs``). Every module in this package (and in the folders named by the environment
variable ``SVPNLAB_STRATEGY_PATH``, separated by ``:``) is imported once, and each class it marks with
:func:`register` becomes available by name to ``handover.py``, ``sweep.py`` and ``scale.py``: adding a
strategy is adding one file (docs/strategies.md).

The experiments hand a strategy a :class:`StrategyRun`, the typed description of one run (scenario,
address plan, seed, links), never their command-line namespace.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import pkgutil
import sys
from typing import Any, ClassVar

from nodeapps.esp.sa_spec import ALGORITHMS, DEFAULT_ALGORITHM, SALT_LEN

ENV_PATH = "SVPNLAB_STRATEGY_PATH"
# The lab's one algorithm (RFC 4106 §8.1): its key and a 4-octet salt per SA.
KEY_MATERIAL_PER_SA = ALGORITHMS[DEFAULT_ALGORITHM] + SALT_LEN


class StrategyError(ValueError):
    """An unknown strategy name or a broken strategy module; the message is one line."""


@dataclasses.dataclass(frozen=True)
class StrategyRun:
    """One run of the scenario under a strategy: what the experiment decided, typed."""
    scenario: Any                       # experiments.scenario.Scenario
    addressing: str = "private"
    seed: int = 1
    vcm_host: bool = False              # the VCM on its own office host instead of built into the SG
    link_params: dict = dataclasses.field(default_factory=dict)
    ideal_links: bool = False
    cli_phase: str | None = None        # open the Mininet CLI at the start of this phase
    # Pairs of mobile nodes that talk, when the experiment knows them without a scenario (scale.py).
    pairs: tuple[tuple[str, str], ...] = ()
    # SSH destinations the mobile nodes run on (docs/scaling.md); empty: all on this machine.
    servers: tuple[str, ...] = ()
    ssh_config: str | None = None

    @property
    def links(self) -> str:
        return "ideal" if self.ideal_links else "default"


class Strategy:
    """Base class: a strategy overrides what it needs. Instances are made per run, so hooks may keep
    state between phases."""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # Place in listings (--help, the default run); plug-ins without one come after the built-in ones.
    order: ClassVar[int] = 100
    # Part of handover.py's run when --strategies is not given.
    default: ClassVar[bool] = False
    # Path between two external MNs once the strategy has done its work (sweep.py checks it): "via-sg" or
    # "direct".
    mn_mn_path: ClassVar[str] = "via-sg"

    def lab_options(self, run: StrategyRun) -> dict:
        """Keyword arguments for ``SvpnLab`` on top of the experiment's own (addressing, nodes, links)."""
        return {}

    def lab_summary(self, run: StrategyRun) -> str:
        """A few words for the "building the lab" line."""
        options = self.lab_options(run)
        return f"vcm={options.get('vcm')}"

    def before_phase(self, lab, phase, run: StrategyRun) -> None:
        """Called at the start of each phase, before its moves and traffic."""

    def after_phase(self, lab, phase, run: StrategyRun) -> None:
        """Called at the end of each phase (not after an interruption)."""

    def report(self, lab, run: StrategyRun) -> list[dict]:
        """counters.csv rows of the strategy's own ({"metric", "detail", "value"}), read once the lab has
        stopped; the experiment adds the strategy and the phase ("end")."""
        return []

    def costs(self, mobile_nodes: int, peers_per_mn: int = 1) -> dict:
        """What the MN–MN keys cost with ``mobile_nodes`` nodes of which each talks to ``peers_per_mn``
        others: MN–MN SAs per MN and their key material in octets, per MN and in total (the time to set
        a pair up is measured, not modelled: scale.py's setup time). Via the SG: nothing."""
        return {"mn_mn_sas_per_mn": 0, "key_bytes_per_mn": 0, "key_bytes_total": 0}


_REGISTRY: dict[str, type[Strategy]] = {}
_DISCOVERED = False


def register(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not isinstance(cls, type) or not issubclass(cls, Strategy):
        raise StrategyError(f"{cls!r} is not a Strategy subclass")
    if not cls.name or cls.name in ("all",) or "," in cls.name or cls.name != cls.name.strip():
        raise StrategyError(f"strategy class {cls.__name__} has no usable name ({cls.name!r})")
    known = _REGISTRY.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise StrategyError(f"strategy {cls.name!r} is defined twice ({known.__module__} and {cls.__module__})")
    _REGISTRY[cls.name] = cls
    return cls


def _plugin_folders() -> list[str]:
    return [p for p in os.environ.get(ENV_PATH, "").split(os.pathsep) if p]


def discover() -> None:
    """Import every strategy module once: this package's, then the plug-in folders'."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for module in pkgutil.iter_modules(__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{__name__}.{module.name}")
    for folder in _plugin_folders():
        if not os.path.isdir(folder):
            raise StrategyError(f"{ENV_PATH}: {folder} is not a folder")
        for module in pkgutil.iter_modules([folder]):
            if module.name.startswith("_"):
                continue
            qualified = f"svpnlab_strategy_{module.name}"
            spec = importlib.util.spec_from_file_location(qualified, os.path.join(folder, f"{module.name}.py"))
            if spec is None or spec.loader is None:
                continue
            loaded = importlib.util.module_from_spec(spec)
            sys.modules[qualified] = loaded
            try:
                spec.loader.exec_module(loaded)
            except StrategyError:
                raise
            except Exception as exc:   # noqa: BLE001  (a broken plug-in: one line naming it)
                raise StrategyError(f"strategy module {module.name} in {folder}: "
                                    f"{exc.__class__.__name__}: {exc}") from None


def rediscover() -> None:
    """Forget what was found and look again (tests that add a module)."""
    global _DISCOVERED
    _DISCOVERED = False
    for name in [n for n, cls in _REGISTRY.items() if not cls.__module__.startswith(__name__ + ".")]:
        del _REGISTRY[name]
    discover()


def names(*, default_only: bool = False) -> tuple[str, ...]:
    """Known strategy names in listing order."""
    discover()
    ordered = sorted(_REGISTRY.values(), key=lambda cls: (cls.order, cls.name))
    return tuple(cls.name for cls in ordered if cls.default or not default_only)


def get(name: str) -> Strategy:
    """A fresh instance of the strategy ``name``; StrategyError (one line, listing the known ones)."""
    discover()
    cls = _REGISTRY.get(name)
    if cls is None:
        raise StrategyError(f"unknown strategy {name!r} (available: {', '.join(names())})")
    return cls()


def describe() -> str:
    """One line per strategy: the --help text of the scripts."""
    discover()
    width = max((len(n) for n in _REGISTRY), default=0)
    return "\n".join(f"  {n.ljust(width)}  {_REGISTRY[n].description}" for n in names())


def parse_list(text: str) -> list[str]:
    """``--strategies`` text into names: comma-separated, in this order, each known and named once;
    StrategyError otherwise."""
    chosen = [s.strip() for s in text.split(",") if s.strip()]
    if chosen == ["all"]:
        return list(names())
    for name in chosen:
        get(name)
    if not chosen:
        raise StrategyError("name at least one strategy")
    if len(set(chosen)) != len(chosen):
        raise StrategyError("a strategy is named twice")
    return chosen
