"""The ``diffdefect-edge`` command."""

from __future__ import annotations

import argparse
import json
import sys

from diffdefect_edge import __version__


def _cmd_build_info(args: argparse.Namespace) -> int:
    from diffdefect_edge.kernels import build_info

    print(json.dumps(build_info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="diffdefect-edge", description="diffdefect-edge runtime SDK")
    parser.add_argument("--version", action="version", version=f"diffdefect-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-info", help="print how the compiled kernels were built (JSON)")
    p.set_defaults(func=_cmd_build_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
