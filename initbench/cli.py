"""The `initbench` command: parses arguments and calls the library; user mistakes exit 2 in one line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from initbench.errors import InitbenchError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        raise InitbenchError(f"{self.prog}: {message}")


def _list(args: argparse.Namespace) -> None:
    from initbench.inits import REQUIRED, WALK_HELP, list_inits

    if args.what == "inits":
        for s in list_inits(args.pattern):
            params = ", ".join(f"{k}={'<required>' if v is REQUIRED else v}" for k, v in s.params.items())
            origin = "" if s.source == "builtin" else f"  [{s.source}]"
            print(f"{s.name:<18} {s.description}{origin}")
            if params:
                print(f"{'':<18}   params: {params}")
        print("\nevery init also takes: " + "; ".join(f"{k} ({v})" for k, v in WALK_HELP.items()))
        print("spec syntax: NAME or NAME(key=value, ...), e.g. 'kaiming_normal(mode=fan_out, nonlinearity=relu)'")
        print("             or package.module:function (a function that fills a tensor in place)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="initbench", description="Which weight-initialization scheme trains best?")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list init strategies")
    p.add_argument("what", choices=["inits"])
    p.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'kaiming*'")
    p.set_defaults(func=_list)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        args.func(args)
    except InitbenchError as exc:
        print(f"initbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("initbench: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
