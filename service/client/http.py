"""The typed HTTP client of the Karyoflow API (`/v1`), used by `karyo submit`, `karyo cases`,
`karyo throughput` and the service tests.

Every call sends the clinic's API key; an answer of 400 or above raises `ApiError` with the
status and the API's reason (`detail`); a network failure raises httpx's own `httpx.HTTPError`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import httpx

FINISHED = ("done", "failed")

Case = dict[str, Any]  # GET /v1/cases/{id}: id, status, karyotype, reference, images, ...


class ApiError(Exception):
    """The API answered with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class CaseTimeout(Exception):
    """Cases not finished within the time given."""

    def __init__(self, unfinished: list[str], timeout: float) -> None:
        super().__init__(f"{len(unfinished)} cases not finished after {timeout:g} s: {', '.join(unfinished)}")
        self.unfinished = unfinished


class KaryoflowClient:
    """One connection pool to one deployment, as one clinic (its API key)."""

    def __init__(self, url: str, key: str, timeout: float = 30.0) -> None:
        self.url, self.key = url.rstrip("/"), key
        self._http = httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> KaryoflowClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _checked(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail))
        return response

    def submit_case(self, images: Iterable[tuple[str, bytes]], reference: str = "", stain: str = "auto") -> Case:
        """A new case of these (file name, encoded image) uploads; the API answers 202 at once.
        `stain`: q (Q-band), g (G-band) or auto (detected per image)."""
        files = [("files", (name, content)) for name, content in images]
        data = {"reference": reference, "stain": stain}
        response = self._http.post("/v1/cases", files=files, data=data, timeout=120)
        return self._checked(response).json()

    def case(self, case_id: str) -> Case:
        return self._checked(self._http.get(f"/v1/cases/{case_id}")).json()

    def list_cases(self, **filters: str | int | None) -> dict[str, Any]:
        """One page of the clinic's case history (`items`, `next_cursor`); filters left None are
        not sent."""
        params = {name: value for name, value in filters.items() if value is not None}
        return self._checked(self._http.get("/v1/cases", params=params)).json()

    def karyogram(self, case_id: str, image: int = 0) -> bytes:
        response = self._http.get(f"/v1/cases/{case_id}/karyogram", params={"image": image}, timeout=60)
        return self._checked(response).content

    def reports(self, case_id: str) -> list[dict[str, Any]]:
        """The JSON reports of a finished case's images."""
        return self._checked(self._http.get(f"/v1/cases/{case_id}/report")).json()["reports"]

    def delete_case(self, case_id: str) -> None:
        self._checked(self._http.delete(f"/v1/cases/{case_id}", timeout=120))

    # -- review --

    def review(self, case_id: str, outlines: bool = True) -> dict[str, Any]:
        """The case's review: consensus, metaphases with chromosomes, sign-off, audit trail."""
        response = self._http.get(f"/v1/cases/{case_id}/review", params={"outlines": outlines}, timeout=60)
        return self._checked(response).json()

    def correct(self, case_id: str, reviewer: str, image: int, action: str, **fields: Any) -> dict[str, Any]:
        """One correction (relabel, delete, split, merge, exclude, include); the review after it."""
        body = {"reviewer": reviewer, "image": image, "action": action, **fields}
        return self._checked(self._http.post(f"/v1/cases/{case_id}/corrections", json=body, timeout=120)).json()

    def sign_off(self, case_id: str, reviewer: str) -> dict[str, Any]:
        return self._checked(self._http.post(f"/v1/cases/{case_id}/sign-off", json={"reviewer": reviewer})).json()

    def reopen(self, case_id: str, reviewer: str, reason: str) -> dict[str, Any]:
        body = {"reviewer": reviewer, "reason": reason}
        return self._checked(self._http.post(f"/v1/cases/{case_id}/reopen", json=body)).json()

    def report_pdf(self, case_id: str) -> bytes:
        return self._checked(self._http.get(f"/v1/cases/{case_id}/report.pdf", timeout=120)).content

    def image_karyogram(self, case_id: str, image: int = 0, version: str = "current") -> bytes:
        """A metaphase's karyogram: `current` (the reviewed one where corrected) or `original`."""
        response = self._http.get(f"/v1/cases/{case_id}/images/{image}/karyogram", params={"version": version})
        return self._checked(response).content

    def original(self, case_id: str, image: int) -> bytes:
        """The metaphase as uploaded, as PNG."""
        return self._checked(self._http.get(f"/v1/cases/{case_id}/images/{image}/original", timeout=60)).content

    def reviewed_metaphases(self, since: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Metaphases of signed-off cases (oldest sign-off first) with outlines and labels."""
        params = {"limit": limit, **({"since": since} if since else {})}
        return self._checked(self._http.get("/v1/reviewed-metaphases", params=params, timeout=120)).json()

    def wait_finished(self, case_ids: list[str], timeout: float, poll_s: float = 1.0) -> dict[str, Case]:
        """Poll until every case is done or failed; `CaseTimeout` past `timeout` seconds."""
        deadline = time.monotonic() + timeout
        finished: dict[str, Case] = {}
        while True:
            for case_id in case_ids:
                if case_id not in finished:
                    case = self.case(case_id)
                    if case["status"] in FINISHED:
                        finished[case_id] = case
            if len(finished) == len(case_ids):
                return {case_id: finished[case_id] for case_id in case_ids}
            if time.monotonic() > deadline:
                raise CaseTimeout([c for c in case_ids if c not in finished], timeout)
            time.sleep(poll_s)

    def wait_status(self, case_id: str, status: str, timeout: float, poll_s: float = 0.2) -> Case:
        """Poll until the case reaches `status` (e.g. a stage); `CaseTimeout` past `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            case = self.case(case_id)
            if case["status"] == status:
                return case
            if time.monotonic() > deadline:
                raise CaseTimeout([case_id], timeout)
            time.sleep(poll_s)
