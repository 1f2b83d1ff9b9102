"""`karyo cases` verbs of a case's review, on a running deployment:

karyo cases review ID [--json]                          consensus, metaphases, sign-off, audit trail
karyo cases correct ID --image N --reviewer R ACTION    ACTION: --relabel C LABEL | --delete C |
                                                        --split C LABEL LABEL | --merge C C LABEL |
                                                        --exclude | --include
karyo cases sign ID --reviewer R                        sign off (locks the case)
karyo cases reopen ID --reviewer R --reason TEXT
karyo cases report ID --out FILE.pdf                    the case report as PDF
karyo cases export --labelme DIR [--since T]            reviewed metaphases as labelme training data
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from karyoflow.cli.common import UsageError
from karyoflow.files import write_atomically
from service.client.connection import add_client_args, client_of
from service.client.export import export_labelme


def print_review(review: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(review, indent=1))
        return
    consensus = review.get("consensus") or {}
    signed = f" by {review['signed_by']} at {review['signed_at']}" if review["review_status"] == "signed" else ""
    print(f"{review['case_id']}  {review['review_status']}{signed}")
    print(f"  consensus {consensus.get('karyotype', '-')}  ({consensus.get('cells', 0)} cells analysed)")
    for reason in consensus.get("reasons", []):
        print(f"  needs review: {reason}")
    for image in review["images"]:
        machine = "" if image["karyotype"] == image["machine_karyotype"] else f" (machine {image['machine_karyotype']})"
        excluded = "  EXCLUDED" if image["excluded"] else ""
        print(f"  [{image['position']}] {image['filename']:<24} {image['karyotype'] or '-'}{machine}{excluded}")
    for event in review["audit"]:
        print(f"  {event['at']}  {event['action']:<15} {event.get('actor') or ''}  {json.dumps(event.get('detail'))}")


def correction_fields(args: argparse.Namespace) -> tuple[str, dict]:
    if args.relabel:
        return "relabel", {"chromosome": _number(args.relabel[0]), "label": args.relabel[1]}
    if args.delete is not None:
        return "delete", {"chromosome": args.delete}
    if args.split:
        return "split", {"chromosome": _number(args.split[0]), "labels": args.split[1:]}
    if args.merge:
        return "merge", {"chromosomes": [_number(args.merge[0]), _number(args.merge[1])], "label": args.merge[2]}
    return ("exclude", {}) if args.exclude else ("include", {})


def _number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a chromosome number") from None


def cmd_review(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        print_review(client.review(args.id, outlines=args.json), args.json)
    return 0


def cmd_correct(args: argparse.Namespace) -> int:
    action, fields = correction_fields(args)
    with client_of(args) as client:
        review = client.correct(args.id, args.reviewer, args.image, action, **fields)
    print(f"{action} done; consensus now {(review.get('consensus') or {}).get('karyotype', '-')}")
    return 0


def cmd_sign(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        review = client.sign_off(args.id, args.reviewer)
    print(f"signed off by {review['signed_by']}: {(review.get('consensus') or {}).get('karyotype', '-')}")
    return 0


def cmd_reopen(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        client.reopen(args.id, args.reviewer, args.reason)
    print(f"reopened {args.id}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    with client_of(args) as client:
        write_atomically(args.out, client.report_pdf(args.id))
    print(f"wrote {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.labelme.exists() and not args.labelme.is_dir():
        raise UsageError(f"--labelme {args.labelme} is a file, not a folder")
    with client_of(args) as client:
        paths = export_labelme(client, args.labelme, args.since)
    print(f"wrote {len(paths)} reviewed metaphases to {args.labelme}")
    return 0


def add_case_commands(cases: argparse._SubParsersAction) -> None:
    review = cases.add_parser("review", help="a case's consensus, metaphases, sign-off and audit trail")
    review.add_argument("id")
    review.add_argument("--json", action="store_true")
    review.set_defaults(func=cmd_review)
    correct = cases.add_parser("correct", help="correct one metaphase of a case")
    correct.add_argument("id")
    correct.add_argument("--image", type=int, required=True, help="the metaphase's position in the case (0, 1, ...)")
    correct.add_argument("--reviewer", required=True)
    action = correct.add_mutually_exclusive_group(required=True)
    action.add_argument("--relabel", nargs=2, metavar=("CHROMOSOME", "LABEL"))
    action.add_argument("--delete", type=int, metavar="CHROMOSOME", help="a false detection")
    action.add_argument("--split", nargs=3, metavar=("CHROMOSOME", "LABEL", "LABEL"), help="one detection is two")
    action.add_argument("--merge", nargs=3, metavar=("CHROMOSOME", "CHROMOSOME", "LABEL"), help="two are one")
    action.add_argument("--exclude", action="store_true", help="leave the metaphase out of the consensus")
    action.add_argument("--include", action="store_true")
    correct.set_defaults(func=cmd_correct)
    sign = cases.add_parser("sign", help="sign a case off (locks it)")
    sign.add_argument("id")
    sign.add_argument("--reviewer", required=True)
    sign.set_defaults(func=cmd_sign)
    reopen = cases.add_parser("reopen", help="open a signed case again")
    reopen.add_argument("id")
    reopen.add_argument("--reviewer", required=True)
    reopen.add_argument("--reason", required=True)
    reopen.set_defaults(func=cmd_reopen)
    report = cases.add_parser("report", help="the case report as PDF")
    report.add_argument("id")
    report.add_argument("--out", type=Path, required=True)
    report.set_defaults(func=cmd_report)
    export = cases.add_parser("export", help="reviewed metaphases as labelme training data")
    export.add_argument("--labelme", type=Path, required=True, metavar="DIR")
    export.add_argument("--since", help="signed off at or after this ISO time")
    export.set_defaults(func=cmd_export)
    for parser in (review, correct, sign, reopen, report, export):
        add_client_args(parser)
