"""Where the `karyo` client commands find the API and the key: --api / --key, else
KARYO_API_URL / KARYO_API_KEY, else the development stack's state file (`karyo stack up`)."""

from __future__ import annotations

import argparse
import os

from karyoflow.cli.common import UsageError
from service.client.http import KaryoflowClient
from service.devstack.stack import read_state


def add_client_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api", default=None, help="API URL (default: the stack's, or $KARYO_API_URL)")
    parser.add_argument("--key", default=None, help="API key (default: the stack's, or $KARYO_API_KEY)")


def client_of(args: argparse.Namespace) -> KaryoflowClient:
    state = read_state()
    url = args.api or os.environ.get("KARYO_API_URL") or state.get("api_url")
    key = args.key or os.environ.get("KARYO_API_KEY") or state.get("dev_api_key")
    if not url or not key:
        raise UsageError("no API URL/key: run 'karyo stack up', or set KARYO_API_URL and KARYO_API_KEY")
    return KaryoflowClient(url, key)
