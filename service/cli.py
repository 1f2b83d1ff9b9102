"""The `karyo` entry point: the core's commands (karyoflow.cli) and those of the service,
which this module adds without the core knowing.

    karyo stack up|status|down                  the development stack (service.devstack)
    karyo submit, karyo cases ...               one clinic's cases (service.client.commands)
    karyo throughput FILE|DIR... [--cases N]    MCIs per hour of a deployment (service.client.throughput)
    karyo latency FILE|DIR...                   GET latency while cases upload (service.client.latency)
"""

from __future__ import annotations

import argparse
import sys

import httpx

from karyoflow import cli as core_cli
from karyoflow.inputs import InputError
from service.client import commands as client_commands
from service.client import latency, throughput
from service.client.http import ApiError
from service.devstack import commands as stack_commands

SERVICE_COMMANDS = {"stack", "submit", "cases", "throughput", "latency"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="karyo", description="Karyoflow service commands")
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (stack_commands, client_commands, throughput, latency):
        group.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in SERVICE_COMMANDS:
        return core_cli.main(argv)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (core_cli.UsageError, InputError, ApiError) as error:
        print(f"karyo: error: {error}", file=sys.stderr)
        return 2
    except httpx.HTTPError as error:
        print(f"karyo: error: cannot reach the API ({error})", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
