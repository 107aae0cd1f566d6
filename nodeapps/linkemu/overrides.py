"""Command-line link overrides: ``--link SELECTOR:key=value,key=value`` for the experiments.

Values are checked as soon as they are parsed (against the profiles and the parameter rules), so a bad
``--link`` fails with one line before any network is built.
"""
from __future__ import annotations

from typing import Any, Mapping

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.params import BACKENDS, NONE_WORDS, PARAM_KEYS, parse_size
from nodeapps.linkemu.profiles import make_config


def parse_override(text: str) -> tuple[str, dict[str, str]]:
    """``"mn1-ar1:profile=lte,delay=30ms"`` -> (``"mn1-ar1"``, {"profile": "lte", "delay": "30ms"}).

    Keys may be prefixed ``fwd.`` / ``rev.`` for one direction (e.g. ``rev.rate=5mbit``); values are kept as
    strings and checked when the link is made (use :func:`override_to_kwargs` to check them early)."""
    selector, sep, body = text.partition(":")
    if not sep or not selector.strip() or not body.strip():
        raise LinkConfigError(f"link override {text!r} must look like LINK:key=value[,key=value...]")
    values: dict[str, str] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LinkConfigError(f"link override {text!r}: {item!r} is not key=value")
        values[key.strip()] = value.strip()
    override_to_kwargs(values)  # fail now on unknown keys or bad values, with a one-line message
    return selector.strip(), values


def override_to_kwargs(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat override dict (``fwd.``/``rev.`` prefixes allowed) -> keyword arguments for :func:`make_config`."""
    kwargs: dict[str, Any] = {}
    forward: dict[str, Any] = {}
    reverse: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("profile", "backend"):
            kwargs[key] = None if str(value).lower() in NONE_WORDS else str(value)
        elif key == "seed":
            kwargs["seed"] = int(parse_size("seed", value, {"": 1}))
        elif key.startswith(("fwd.", "forward.")):
            forward[key.split(".", 1)[1]] = value
        elif key.startswith(("rev.", "reverse.")):
            reverse[key.split(".", 1)[1]] = value
        else:
            kwargs[key] = value
    if forward:
        kwargs["forward"] = forward
    if reverse:
        kwargs["reverse"] = reverse
    make_config(**kwargs)  # validation only
    return kwargs


def add_link_arguments(parser) -> None:
    """``--link SELECTOR:key=value,...`` (repeatable) and ``--link-backend`` for an experiment's argparse."""
    parser.add_argument("--link", action="append", default=[], metavar="LINK:key=value[,key=value]",
                        help="override a link, e.g. mn1-ar1:profile=lte,delay=30ms,rev.rate=5mbit "
                             "(repeatable; keys: profile, backend, seed, " + ", ".join(sorted(PARAM_KEYS))
                        + "; fwd./rev. prefix for one direction)")
    parser.add_argument("--link-backend", choices=BACKENDS, default=None,
                        help="backend for links that do not name one (default: auto)")


def link_overrides(texts) -> dict[str, dict[str, Any]]:
    """``--link`` values -> {selector: keyword arguments for EmulatedLink}; later values win per key."""
    merged: dict[str, dict[str, str]] = {}
    for text in texts:
        selector, values = parse_override(text)
        merged.setdefault(selector, {}).update(values)
    return {selector: override_to_kwargs(values) for selector, values in merged.items()}
