"""Command-line pieces shared by the experiment scripts: one-line argument errors and link overrides."""
import argparse

from nodeapps.linkemu.errors import LinkConfigError
from nodeapps.linkemu.params import add_link_arguments, link_overrides
from topologies.links import set_default_backend


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments get one line (``prog: message``) and exit status 2, without the usage block."""

    def error(self, message):
        self.exit(2, f"{self.prog}: {message}\n")


def add_link_options(parser: argparse.ArgumentParser) -> None:
    """``--link LINK:key=value,...`` (repeatable) and ``--link-backend``."""
    add_link_arguments(parser)


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
