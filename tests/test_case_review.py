"""A case's review against the running stack: corrections through the API (relabel, delete,
split, merge, exclude) re-render the karyogram and report next to the machine's, replace the
rows, recompute the consensus and are audited; sign-off locks the case and a reopen is
audited; the report as PDF; `karyo cases` verbs and the labelme export read back with the
corrected labels; and the review in a real browser (Debian's Chromium via Playwright)."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import AuditEvent, CaseImage, ChromosomeRow
from infra.storage import ObjectStore
from karyoflow.data.bioimlab import read_mci
from karyoflow.data.split import validation_cells_among
from karyoflow.joint_eval import true_karyotype
from karyoflow.karyotype import karyotype_from_labels
from karyoflow.labels import LABEL_TO_INDEX
from karyoflow.segment.dataset import load_samples
from service.client.http import ApiError
from service.devstack.stack import Stack
from tests.helpers import ARTIFACTS, client, logged_in_page, submit, wait_done

pytestmark = pytest.mark.system

REVIEWER = "Dr. Ada Rossi"


def _labels(image: dict) -> list[str]:
    return [c["label"] for c in image["chromosomes"]]


def _call(labels: list[str]) -> str:
    return karyotype_from_labels([LABEL_TO_INDEX[label] for label in labels]).iscn


def _first(image: dict, label: str) -> dict:
    return next(c for c in image["chromosomes"] if c["label"] == label)


def _audit_count(db: Session, case_id: str) -> int:
    db.expire_all()
    return db.scalar(select(func.count()).select_from(AuditEvent).where(AuditEvent.case_id == case_id))


@pytest.fixture(scope="module")
def two_cell_case(stack: Stack, labelled_dir: Path) -> tuple[str, str]:
    """A finished case of two validation metaphases, and its clinic's key."""
    key = stack.create_clinic("Clinic Review")
    mcis = [labelled_dir / "mci" / name for name in ("original_2.json", "original_106.json")]
    case_id = submit(stack, key, mcis, reference="R-1")
    wait_done(stack, key, [case_id])
    return key, case_id


def test_corrections_rerender_recompute_and_are_audited(
    stack: Stack, db: Session, store: ObjectStore, two_cell_case: tuple[str, str]
) -> None:
    key, case_id = two_cell_case
    with client(stack, key) as api:
        review = api.review(case_id)
        assert review["review_status"] == "unreviewed" and review["consensus"]["cells"] == 2
        first = review["images"][0]
        machine_call = first["machine_karyotype"]
        assert first["karyotype"] == machine_call == _call(_labels(first))
        assert all(len(c["outline"]) >= 4 for c in first["chromosomes"])
        original_png = api.image_karyogram(case_id, 0)

        # relabel a 1 as a 21: the metaphase's call follows; a change in one of two cells is no clone
        one = _first(first, "1")
        review = api.correct(case_id, REVIEWER, 0, "relabel", chromosome=one["number"], label="21")
        first = review["images"][0]
        labels = _labels(first)
        assert first["karyotype"] == _call(labels) != machine_call and first["machine_karyotype"] == machine_call
        assert first["revision"] == 1 and review["review_status"] == "in_review"
        relabelled = next(c for c in first["chromosomes"] if c["number"] == one["number"])
        assert (relabelled["label"], relabelled["machine_label"]) == ("21", "1")
        assert any("+21 in 0" in reason for reason in review["consensus"]["reasons"])
        event = review["audit"][0]
        assert (event["action"], event["actor"]) == ("case.corrected", REVIEWER)
        assert event["detail"]["before"] == {"chromosome": one["number"], "label": "1"}
        assert event["detail"]["after"] == {"chromosome": one["number"], "label": "21"}
        assert event["detail"]["metaphase"] == {"before": machine_call, "after": first["karyotype"]}

        # the karyogram and report re-rendered; the machine's kept
        current = api.image_karyogram(case_id, 0)
        kept = api.image_karyogram(case_id, 0, "original")
        assert current.startswith(b"\x89PNG") and current != original_png and kept == original_png
        db.expire_all()
        image = db.scalar(select(CaseImage).where(CaseImage.case_id == case_id, CaseImage.position == 0))
        reviewed = json.loads(store.get(image.reviewed_report_key))
        assert reviewed["karyotype"] == first["karyotype"] and reviewed["review"]["reviewed_by"] == REVIEWER
        assert json.loads(store.get(image.report_key))["karyotype"] == machine_call

        # excluding the other metaphase leaves one cell: its changes are the case's karyotype
        review = api.correct(case_id, REVIEWER, 1, "exclude")
        assert review["consensus"]["cells"] == 1 and review["consensus"]["karyotype"] == first["karyotype"]
        assert review["images"][1]["excluded"]
        review = api.correct(case_id, REVIEWER, 1, "include")
        assert review["consensus"]["cells"] == 2

        # split one chromosome in two, merge the pieces back, delete one: the count follows
        count = len(first["chromosomes"])
        target = _first(first, "2")
        review = api.correct(case_id, REVIEWER, 0, "split", chromosome=target["number"], labels=["4", "5"])
        pieces = [c for c in review["images"][0]["chromosomes"] if c["origin"] == "split"]
        assert len(review["images"][0]["chromosomes"]) == count + 1 and [p["label"] for p in pieces] == ["4", "5"]
        assert all(len(p["outline"]) >= 3 for p in pieces)
        db.expire_all()
        rows = db.scalars(
            select(ChromosomeRow).where(ChromosomeRow.image_id == image.id, ChromosomeRow.origin == "split")
        ).all()
        assert len(rows) == 2 and all(store.exists(row.ici_key) and store.exists(row.mask_key) for row in rows)
        review = api.correct(case_id, REVIEWER, 0, "merge", chromosomes=[p["number"] for p in pieces], label="2")
        merged = [c for c in review["images"][0]["chromosomes"] if c["origin"] == "merged"]
        assert len(merged) == 1 and len(review["images"][0]["chromosomes"]) == count
        review = api.correct(case_id, REVIEWER, 0, "delete", chromosome=merged[0]["number"])
        assert len(review["images"][0]["chromosomes"]) == count - 1
        assert review["images"][0]["karyotype"] == _call(_labels(review["images"][0]))

        # bad corrections: 422 with the reason, nothing changed or audited
        events = _audit_count(db, case_id)
        existing = review["images"][0]["chromosomes"][0]["number"]
        for fields, reason in (
            ({"action": "relabel", "chromosome": existing, "label": "23"}, "unknown chromosome label"),
            ({"action": "relabel", "chromosome": 999, "label": "3"}, "no chromosome 999"),
            ({"action": "split", "chromosome": existing, "labels": ["3"]}, "split needs `labels`"),
            ({"action": "exclude", "image": 5}, "has no image 5"),
        ):
            with pytest.raises(ApiError, match=reason) as refused:
                api.correct(case_id, REVIEWER, **{"image": 0, **fields})
            assert refused.value.status_code in (404, 422)
        assert _audit_count(db, case_id) == events
        other = stack.create_clinic("Clinic Review Other")
        with client(stack, other) as stranger, pytest.raises(ApiError) as hidden:
            stranger.review(case_id)
        assert hidden.value.status_code == 404

        # sign-off locks; a reopen is explicit and audited
        signed = api.sign_off(case_id, REVIEWER)
        assert (signed["review_status"], signed["signed_by"]) == ("signed", REVIEWER)
        with pytest.raises(ApiError, match="signed off by") as locked:
            api.correct(case_id, REVIEWER, 0, "relabel", chromosome=1, label="3")
        assert locked.value.status_code == 409
        pdf = api.report_pdf(case_id)
        assert pdf.startswith(b"%PDF-") and pdf.count(b"/Subtype /Image") >= 2
        reopened = api.reopen(case_id, "Dr. Bo Chen", "second opinion on chromosome 2")
        assert reopened["review_status"] == "in_review" and reopened["signed_by"] is None
        event = reopened["audit"][0]
        assert (event["action"], event["actor"]) == ("case.reopened", "Dr. Bo Chen")
        assert event["detail"]["signed_by"] == REVIEWER and event["detail"]["reason"].startswith("second opinion")
        with pytest.raises(ApiError) as twice:
            api.reopen(case_id, "Dr. Bo Chen", "again")
        assert twice.value.status_code == 409
    listing = httpx.get(f"{stack.api_url}/v1/cases/{case_id}/review", timeout=30)
    assert listing.status_code == 401  # neither key nor login cookie


def test_cli_verbs_and_the_labelme_export_round_trip(stack: Stack, labelled_dir: Path, tmp_path: Path, capsys) -> None:
    from service.cli import main as karyo

    key = stack.create_clinic("Clinic Export")
    case_id = submit(stack, key, [labelled_dir / "mci" / "original_107c.json"], reference="2")
    wait_done(stack, key, [case_id])
    connection = ["--api", stack.api_url, "--key", key]
    with client(stack, key) as api:
        image = api.review(case_id)["images"][0]
    three = _first(image, "3")
    assert karyo(["cases", "correct", case_id, "--image", "0", "--reviewer", REVIEWER, "--relabel",
                  str(three["number"]), "Y", *connection]) == 0  # fmt: skip
    assert karyo(["cases", "correct", case_id, "--image", "0", "--reviewer", REVIEWER, "--relabel", "x", "1",
                  *connection]) == 2  # fmt: skip
    assert "is not a chromosome number" in capsys.readouterr().err
    since = "2000-01-01T00:00:00+00:00"
    empty = tmp_path / "none"
    assert karyo(["cases", "export", "--labelme", str(empty), "--since", since, *connection]) == 0
    assert list(empty.glob("*.json")) == []  # not signed yet: not training data
    assert karyo(["cases", "sign", case_id, "--reviewer", REVIEWER, *connection]) == 0
    assert karyo(["cases", "correct", case_id, "--image", "0", "--reviewer", REVIEWER, "--delete", "1",
                  *connection]) == 2  # fmt: skip
    assert "HTTP 409" in capsys.readouterr().err
    assert karyo(["cases", "review", case_id, *connection]) == 0
    shown = capsys.readouterr().out
    assert f"signed by {REVIEWER}" in shown and "case.corrected" in shown
    pdf = tmp_path / "report.pdf"
    assert karyo(["cases", "report", case_id, "--out", str(pdf), *connection]) == 0
    assert pdf.read_bytes().startswith(b"%PDF-")

    out = tmp_path / "reviewed"
    assert karyo(["cases", "export", "--labelme", str(out), "--since", since, *connection]) == 0
    [path] = out.glob("*.json")
    with client(stack, key) as api:
        reviewed = api.review(case_id)["images"][0]
    mci = read_mci(path)
    assert mci.case == f"{case_id}.0" and mci.karyotype == reviewed["karyotype"]
    assert Counter(mci.labels) == Counter(_labels(reviewed)) and "Y" in mci.labels
    assert mci.labels.count("3") == _labels(image).count("3") - 1
    assert true_karyotype(out, mci) == reviewed["karyotype"]
    # readable by the training and evaluation readers; never taken for a validation cell
    assert validation_cells_among(out, {"1", "2", "107"}) == []
    sample = load_samples(out)[0]
    assert len(sample.masks) == len(mci.labels) and sample.image.shape == (mci.image.shape[0], mci.image.shape[1])
    later = tmp_path / "later"
    assert karyo(["cases", "export", "--labelme", str(later), "--since", "2999-01-01T00:00:00+00:00", *connection]) == 0
    assert list(later.glob("*.json")) == []


def test_review_in_the_browser(stack: Stack, labelled_dir: Path) -> None:
    """Log in, open the case from the list, relabel a chromosome: the karyogram, the consensus
    and the audit trail change; sign off; an edit after sign-off is refused. Screenshots go
    to out/test-artifacts/review-*.png."""
    key = stack.create_clinic("Clinic Browser Review")
    case_id = submit(stack, key, [labelled_dir / "mci" / "original_1.json"], reference="B-7")
    wait_done(stack, key, [case_id])
    with client(stack, key) as api:
        before = api.review(case_id)
    one = _first(before["images"][0], "1")
    with logged_in_page(f"{stack.api_url}/cases", key, 1500, 1100) as page:
        page.wait_for_selector(f"tr[data-case='{case_id}']")
        assert before["consensus"]["karyotype"] in page.text_content(f"tr[data-case='{case_id}']")
        page.screenshot(path=str(ARTIFACTS / "review-list.png"), full_page=True)
        page.click(f"tr[data-case='{case_id}'] a")
        page.wait_for_selector("body[data-loaded='1']")
        assert page.text_content("#consensus") == before["consensus"]["karyotype"]
        assert page.locator("polygon").count() == len(before["images"][0]["chromosomes"])
        karyogram = page.get_attribute(".karyogram img", "src")
        page.fill("#reviewer", REVIEWER)
        page.locator(f"polygon[data-number='{one['number']}']").dispatch_event("click")
        assert f"chromosome #{one['number']} (1)" in page.text_content("#selection")
        page.select_option("#label-a", "21")
        page.click("#relabel")
        page.wait_for_function(
            "before => document.getElementById('consensus').textContent !== before",
            arg=before["consensus"]["karyotype"],
        )
        expected = _call(
            [("21" if c["number"] == one["number"] else c["label"]) for c in before["images"][0]["chromosomes"]]
        )
        assert page.text_content("#consensus") == expected  # one cell: its changes are the karyotype
        assert page.get_attribute(".karyogram img", "src") != karyogram  # the re-rendered karyogram
        page.wait_for_function("document.querySelector('.karyogram img').complete")
        row = page.locator("#audit tr[data-action='case.corrected']").first
        assert REVIEWER in row.text_content() and re.search(r"#\d+ 1 .*#\d+ 21", row.text_content())
        page.screenshot(path=str(ARTIFACTS / "review-corrected.png"), full_page=True)
        page.click("#sign-off")
        page.wait_for_selector("#review-status.signed")
        assert REVIEWER in page.text_content("#signed-line")
        page.locator("polygon").first.dispatch_event("click")
        page.select_option("#label-a", "22")
        page.click("#relabel")
        page.wait_for_selector("#message.error")
        assert "Refused (409)" in page.text_content("#message") and "signed off" in page.text_content("#message")
        assert page.text_content("#consensus") == expected
        page.screenshot(path=str(ARTIFACTS / "review-signed.png"), full_page=True)
        page.goto(f"{stack.api_url}/cases/{case_id}/report")
        assert expected in page.text_content("#karyotype") and REVIEWER in page.text_content("#signed")
        page.screenshot(path=str(ARTIFACTS / "review-report.png"), full_page=True)
    for name in ("review-list", "review-corrected", "review-signed", "review-report"):
        assert (ARTIFACTS / f"{name}.png").stat().st_size > 10_000
