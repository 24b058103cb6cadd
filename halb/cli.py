"""The `halb` command line: tools beside the Pulumi program.

    python -m halb render --stack NAME [--config-file PATH] --out DIR

Exit codes: 0 done, 2 bad input (settings, flags, paths) with one line per
problem and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from components.settings import SettingsError, parse_settings
from halb.stackfile import StackFileError, known_stacks, load_stack_file, stack_path

BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: {message}", file=sys.stderr)
        raise SystemExit(BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m halb", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("render", help="render a stack's manifests and daemon configs offline")
    r.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    r.add_argument("--config-file", help="read this stack file instead of Pulumi.<stack>.yaml")
    r.add_argument("--out", required=True, type=Path, help="directory to write into")
    return p


def _fail(problems: Sequence[str]) -> int:
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    return BAD_INPUT


def cmd_render(args: argparse.Namespace) -> int:
    from halb.render import check_writable, render_files, write_files

    if args.config_file is None and args.stack not in known_stacks():
        return _fail([f"--stack {args.stack}: unknown stack (have: {', '.join(known_stacks())})"])
    try:
        raw = load_stack_file(stack_path(args.stack, args.config_file))
        parse_settings(raw)
    except StackFileError as err:
        return _fail([str(err)])
    except SettingsError as err:
        return _fail(err.problems)
    why = check_writable(args.out)
    if why is not None:
        return _fail([why])
    files = render_files(raw, args.stack)
    try:
        write_files(args.out, files)
    except OSError as err:
        return _fail([f"--out {args.out}: cannot write ({err.strerror})"])
    print(f"rendered stack {args.stack} into {args.out}:")
    for rel in sorted(files):
        print(f"  {args.out / rel}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "render":
        return cmd_render(args)
    raise AssertionError(args.command)
