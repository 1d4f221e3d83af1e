"""What the ``h5pool`` commands share: usage errors, option types, output."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

EXIT_USAGE, EXIT_DATA, EXIT_DESCRIPTORS = 2, 3, 4


class UsageError(Exception):
    """A combination of options that cannot work; reported by argparse."""


def positive(text: str) -> int:
    return _integer(text, 1)


def non_negative(text: str) -> int:
    return _integer(text, 0)


def _integer(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is below the least allowed, {least}")
    return value


def json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON ({exc}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"must be a JSON object {{...}}, got {text!r}")
    return value


def check_output(path: str | None, option: str) -> None:
    """Refuse an output path that cannot be written, before minutes of work."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a folder; give a file name")
    if not os.path.isdir(folder):
        raise UsageError(f"{option} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (os.path.exists(path) and not os.access(path, os.W_OK)):
        raise UsageError(f"{option} {path}: cannot be written")


#: Every command that reads a corpus takes the same layouts as PooledH5Dataset.
LAYOUTS = ("rows", "members", "groups")


def add_layout_options(command: argparse.ArgumentParser, key_help: str) -> None:
    """``--key``, ``--layout`` and ``--group``, the same for every command."""
    command.add_argument("--key", nargs="+", action="extend", help=key_help)
    command.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="rows",
        help="rows: samples along axis 0 of --key; members: one sample per dataset under "
        "--group; groups: one sample per group under --group (robomimic demos), with --key "
        "the datasets inside each group",
    )
    command.add_argument(
        "--group", default="/", help="the group holding the members or the sample groups"
    )


def check_layout_options(args: argparse.Namespace) -> None:
    """The combinations ``PooledH5Dataset`` refuses, refused before any work."""
    if args.layout == "groups" and not args.key:
        raise UsageError("--layout groups needs --key (the datasets inside each group)")


def write(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def plural(count: int, noun: str) -> str:
    return f"{count:,} {noun}" + ("" if count == 1 else "s")
