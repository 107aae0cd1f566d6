"""The runnable parts of the lab hand-outs (docs/labs/*.md), so that hand-outs and their tests cannot drift.

A hand-out marks what the test runs and checks:

* a fenced block ```` ```svpnlab-shell OPTIONS ```` holds lab shell commands, piped into
  ``experiments/shell.py OPTIONS`` (one lab per block);
* a fenced block ```` ```svpnlab-sh ```` holds shell lines run after the blocks before it, with ``RUN`` set to
  the lab shell's results folder (the hand-out's own lines fall back to the newest ``results/shell-*``);
* after a block, ``<!-- expect: REGEX -->`` lines: REGEX must match (multi-line) in that block's output;
  ``<!-- expect-range: LOW HIGH REGEX -->``: REGEX's first group is a number within [LOW, HIGH].
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

FENCE = re.compile(r"^```(svpnlab-shell|svpnlab-sh)([^\n]*)\n(.*?)^```[ \t]*\n", re.M | re.S)
EXPECT = re.compile(r"\A\s*<!--\s*(expect|expect-range):\s*(.*?)\s*-->[ \t]*\n?", re.S)


@dataclass
class Expectation:
    pattern: str
    low: float | None = None
    high: float | None = None

    def check(self, output: str) -> str | None:
        """None when met, else what is wrong (one line)."""
        match = re.search(self.pattern, output, re.M)
        if match is None:
            return f"no match for {self.pattern!r}"
        if self.low is None:
            return None
        try:
            value = float(match[1])
        except (IndexError, TypeError, ValueError):
            return f"{self.pattern!r} matched {match[0]!r} without a number in its first group"
        if not self.low <= value <= self.high:
            return f"{self.pattern!r}: {value:g} outside {self.low:g}-{self.high:g}"
        return None


@dataclass
class Block:
    kind: str           # "svpnlab-shell" or "svpnlab-sh"
    options: list[str]  # the lab shell's options (svpnlab-shell)
    text: str
    expectations: list[Expectation] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        """The block's lines without comments and blank lines (a ``#`` comment ends a shell command)."""
        lines = [re.sub(r"\s+#.*$", "", line).rstrip() for line in self.text.splitlines()]
        return [line for line in lines if line.strip() and not line.lstrip().startswith("#")]


class HandoutError(ValueError):
    pass


def parse_expectation(kind: str, body: str) -> Expectation:
    if kind == "expect":
        return Expectation(body)
    parts = body.split(None, 2)
    try:
        return Expectation(parts[2], float(parts[0]), float(parts[1]))
    except (IndexError, ValueError):
        raise HandoutError(f"expect-range needs LOW HIGH REGEX: {body!r}") from None


def blocks(markdown: str) -> list[Block]:
    """The hand-out's runnable blocks, in order, each with the expectations written right after it."""
    found = []
    for match in FENCE.finditer(markdown):
        block = Block(match[1], match[2].split(), match[3])
        rest = markdown[match.end():]
        while (expect := EXPECT.match(rest)) is not None:
            block.expectations.append(parse_expectation(expect[1], expect[2]))
            rest = rest[expect.end():]
        for expectation in block.expectations:
            try:
                re.compile(expectation.pattern)
            except re.error as exc:
                raise HandoutError(f"bad expectation {expectation.pattern!r}: {exc}") from None
        found.append(block)
    return found
