"""`karyo submit` and `karyo cases`: one clinic's cases on a running deployment.

    karyo submit FILE... [--reference R] [--wait] [--json]
    karyo cases list [--status S] [--karyotype K] [--abnormal|--normal] [--reference R]
                     [--since T] [--until T] [--limit N] [--json]
    karyo cases show ID [--json]
    karyo cases karyogram ID [--image N] --out FILE
    karyo cases delete ID                    erase a finished case (objects, then rows)
    karyo cases review|correct|sign|reopen|report|export ...   a case's review (service.client.review_commands)

The API and the key come from --api / --key, else KARYO_API_URL / KARYO_API_KEY, else the
development stack's state file (`karyo stack up`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.cli.common import UsageError
from karyoflow.files import write_atomically
from service.client.connection import add_client_args, client_of
from service.client.http import Case, CaseTimeout
from service.client.review_commands import add_case_commands


def print_case(case: Case, as_json: bool) -> None:
    if as_json:
        print(json.dumps(case, indent=1))
        return
    print(f"{case['id']}  {case['status']:<11} {case.get('karyotype') or '-':<20} {case.get('reference') or ''}")
    if case.get("error"):
        print(f"  error: {case['error']}")
    for image in case.get("images", []):
        print(
            f"  [{image['position']}] {image['filename']:<24} {image['status']:<11} "
            f"{image.get('karyotype') or '-':<20} {image.get('chromosome_count') or '-'} chromosomes"
        )


def cmd_submit(args: argparse.Namespace) -> int:
    for path in args.files:
        if not path.is_file():
            raise UsageError(f"{path}: no such file")
    with client_of(args) as client:
        case = client.submit_case([(path.name, path.read_bytes()) for path in args.files], args.reference, args.stain)
        if args.wait:
            try:
                case = client.wait_finished([case["id"]], args.timeout)[case["id"]]
            except CaseTimeout as error:
                raise UsageError(f"case {case['id']} not finished after {args.timeout} s") from error
    if args.json:
        print(json.dumps(case, indent=1))
    elif args.wait:
        print_case(case, False)
    else:
        print(case["id"])
    return 0 if case["status"] != "failed" else 1


def cmd_cases_list(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        page = client.list_cases(
            status=args.status,
            karyotype=args.karyotype,
            reference=args.reference,
            since=args.since,
            until=args.until,
            limit=args.limit,
            abnormal=args.abnormal,
        )
    if args.json:
        print(json.dumps(page, indent=1))
        return 0
    for case in page["items"]:
        print_case(case, False)
    if page.get("next_cursor"):
        print(f"(more: --cursor {page['next_cursor']})")
    return 0


def cmd_cases_show(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        print_case(client.case(args.id), args.json)
    return 0


def cmd_cases_karyogram(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        write_atomically(args.out, client.karyogram(args.id, args.image))
    print(f"wrote {args.out}")
    return 0


def cmd_cases_delete(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        client.delete_case(args.id)
    print(f"deleted {args.id}")
    return 0


def add_commands(commands: argparse._SubParsersAction) -> None:
    submit = commands.add_parser("submit", help="upload one case (one or more MCIs)")
    submit.add_argument("files", nargs="+", type=Path)
    submit.add_argument("--reference", default="", help="patient or sample reference")
    submit.add_argument(
        "--stain", choices=["q", "g", "auto"], default="auto", help="the images' banding (auto: detected per image)"
    )
    submit.add_argument("--wait", action="store_true", help="block until the case is done or failed")
    submit.add_argument("--timeout", type=float, default=900)
    submit.add_argument("--json", action="store_true")
    add_client_args(submit)
    submit.set_defaults(func=cmd_submit)

    cases = commands.add_parser("cases", help="query the case history").add_subparsers(dest="what", required=True)
    listing = cases.add_parser("list")
    listing.add_argument("--status")
    listing.add_argument("--karyotype")
    listing.add_argument("--reference")
    listing.add_argument("--since", help="ISO time")
    listing.add_argument("--until", help="ISO time")
    listing.add_argument("--limit", type=int, default=50)
    flag = listing.add_mutually_exclusive_group()
    flag.add_argument("--abnormal", dest="abnormal", action="store_const", const="true", default=None)
    flag.add_argument("--normal", dest="abnormal", action="store_const", const="false")
    listing.add_argument("--json", action="store_true")
    add_client_args(listing)
    listing.set_defaults(func=cmd_cases_list)
    show = cases.add_parser("show")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    add_client_args(show)
    show.set_defaults(func=cmd_cases_show)
    karyogram = cases.add_parser("karyogram")
    karyogram.add_argument("id")
    karyogram.add_argument("--image", type=int, default=0)
    karyogram.add_argument("--out", type=Path, required=True)
    add_client_args(karyogram)
    karyogram.set_defaults(func=cmd_cases_karyogram)
    erase = cases.add_parser("delete", help="erase a finished case: its images, results and rows")
    erase.add_argument("id")
    add_client_args(erase)
    erase.set_defaults(func=cmd_cases_delete)
    add_case_commands(cases)
