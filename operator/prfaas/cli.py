"""``prfaas``: one command line for planner, simulator, operator, router and engine."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points

from prfaas import __version__
from prfaas.commands import crds, engine, link, operator, plan, router, simulate
from prfaas.commands.errors import CommandError

EXIT_USAGE = 2
# each module adds its own subcommand; keep one per line
COMMANDS = [
    plan,
    simulate,
    crds,
    operator,
    router,
    engine,
    link,
]
# Subcommands of other installed distributions: entry points naming a ``register(sub)`` like
# the modules above. prfaas-dev (devtools/) adds `demo` this way, so the runtime wheel and the
# image carry no development tooling and `prfaas demo` works wherever that is installed.
PLUGIN_GROUP = "prfaas.commands"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prfaas",
        description=(
            "Prefill-as-a-Service: offload long-context prefill to a remote PrefillPool and "
            "ship the KVCache to local PD clusters. Plan, simulate and operate it."
        ),
    )
    parser.add_argument("--version", action="version", version=f"prfaas {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    for plugin in sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name):
        plugin.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return func(args)
    except CommandError as exc:
        print(f"prfaas {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"prfaas {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
