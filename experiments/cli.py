"""Command-line pieces shared by the experiment scripts: one-line argument errors, link overrides, where
results go."""
import argparse
import os
import sys

from experiments import strategies
from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.overrides import add_link_arguments, link_overrides
from topologies.links import set_default_backend


RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results")


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments get one line (``prog: message``) and exit status 2, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def strategy_parser(doc: str, script: str) -> OneLineErrorParser:
    """A script's parser: its docstring's first paragraph as the description, the rest and the registered
    strategies (one line each) as the epilog. A broken strategy module: one line, exit."""
    try:
        listing = strategies.describe()
    except strategies.StrategyError as exc:
        sys.exit(f"{script}: {exc}")
    return OneLineErrorParser(description=doc.split("\n\n")[0],
                              epilog=doc.split("\n\n", 1)[1] + f"\nStrategies:\n{listing}\n",
                              formatter_class=argparse.RawDescriptionHelpFormatter)


def add_link_options(parser: argparse.ArgumentParser) -> None:
    """``--ideal-links``, ``--link LINK:key=value,...`` (repeatable) and ``--link-backend``."""
    parser.add_argument("--ideal-links", action="store_true", help="no link emulation (default: link profiles)")
    add_link_arguments(parser)


def add_output_options(parser: argparse.ArgumentParser, *, plots: bool = True) -> None:
    """``--results`` (the folder the run's results folder goes into) and, if the script draws, ``--no-plots``."""
    parser.add_argument("--results", default=RESULTS, help="results parent folder")
    if plots:
        parser.add_argument("--no-plots", action="store_true", help="do not draw the figures")


def apply_link_options(parser: argparse.ArgumentParser, args) -> None:
    """Check every ``--link`` (the error names the one at fault), set ``args.link_params`` and the
    default emulation backend."""
    for text in args.link:
        try:
            link_overrides([text])
        except LinkConfigError as exc:
            parser.error(f"--link {text}: {exc}")
    args.link_params = link_overrides(args.link)
    set_default_backend(args.link_backend)


def redraw(prog: str, folder: str, kind: str, marker: str, draw) -> int:
    """``--plot FOLDER``: redraw a results folder's figures with ``draw(folder)`` (returns the paths);
    a folder without ``marker`` is not one of ``kind``'s."""
    if not os.path.exists(os.path.join(folder, marker)):
        print(f"{prog}: {folder}: no {marker} (not a {kind} results folder)", file=sys.stderr)
        return 2
    for path in draw(folder):
        print(path)
    return 0


def not_root(prog: str) -> bool:
    """True (after saying so) when the script lacks the root that Mininet needs."""
    if os.geteuid() != 0:
        print(f"{prog}: needs root (Mininet); run with sudo", file=sys.stderr)
        return True
    return False
