"""A fake OSV API (api.osv.dev) for tests.

* ``POST /v1/querybatch`` with ``{"queries": [{"package": {"ecosystem", "name"}, "version"}, …]}``
  → ``{"results": [{"vulns": [{"id", "modified"}, …]} | {}, …]}``, one result per query in
  order, ids only (like the real batch API); more than 1000 queries → 400;
* ``GET /v1/vulns/{id}`` → the full record (``id``, ``summary``, ``aliases``, ``severity``,
  ``affected`` with ``ranges`` of ``events`` ``introduced``/``fixed``, and for Debian
  ``database_specific``/``ecosystem_specific`` ``urgency``), 404 ``{"code": 5, "message":
  "Bug not found."}`` for unknown ids.

``fake.add_vuln(ecosystem, package, affected_versions, record)`` registers an advisory.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.http_base import LocalServer, Request, Response, json_response


def make_record(
    vuln_id: str,
    ecosystem: str,
    package: str,
    fixed: str | None,
    *,
    severity: str | None = None,
    cvss: str | None = None,
    summary: str = "",
) -> dict[str, Any]:
    events: list[dict[str, str]] = [{"introduced": "0"}]
    if fixed:
        events.append({"fixed": fixed})
    affected: dict[str, Any] = {
        "package": {"ecosystem": ecosystem, "name": package},
        "ranges": [{"type": "ECOSYSTEM", "events": events}],
    }
    record: dict[str, Any] = {
        "id": vuln_id,
        "modified": "2026-10-01T00:00:00Z",
        "published": "2026-09-01T00:00:00Z",
        "summary": summary or f"{package} vulnerability",
        "aliases": [],
        "affected": [affected],
    }
    if cvss:
        record["severity"] = [{"type": "CVSS_V3", "score": cvss}]
    if severity:
        affected["database_specific"] = {"severity": severity}
        affected["ecosystem_specific"] = {"urgency": severity.lower()}
    return record


class FakeOSV(LocalServer):
    server_header = "Google Frontend"

    def __init__(self) -> None:
        super().__init__()
        self.records: dict[str, dict[str, Any]] = {}
        self.affects: dict[tuple[str, str, str], list[str]] = {}

    def add_vuln(
        self, ecosystem: str, package: str, versions: list[str], record: dict[str, Any]
    ) -> None:
        self.records[record["id"]] = record
        for version in versions:
            self.affects.setdefault((ecosystem, package, version), []).append(record["id"])

    def route(self, request: Request) -> Response:
        if request.method == "POST" and request.path == "/v1/querybatch":
            return self._batch(request)
        if request.method == "GET" and request.path.startswith("/v1/vulns/"):
            vuln_id = request.path.rsplit("/", 1)[1]
            record = self.records.get(vuln_id)
            if record is None:
                return json_response(404, {"code": 5, "message": "Bug not found."})
            return json_response(200, record)
        return json_response(404, {"code": 5, "message": "Not Found"})

    def _batch(self, request: Request) -> Response:
        try:
            body = request.json()
            queries = body["queries"]
        except (ValueError, KeyError, TypeError):
            return json_response(400, {"code": 3, "message": "Invalid query."})
        if len(queries) > 1000:
            return json_response(400, {"code": 3, "message": "Too many queries."})
        results = []
        for query in queries:
            package = query.get("package", {})
            key = (package.get("ecosystem", ""), package.get("name", ""), query.get("version", ""))
            ids = self.affects.get(key, [])
            vulns = [{"id": i, "modified": self.records[i]["modified"]} for i in ids]
            results.append({"vulns": vulns} if vulns else {})
        return json_response(200, {"results": results})
