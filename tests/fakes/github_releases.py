"""A fake GitHub REST API for tests: the releases endpoints sbtc-ops reads.

* ``GET /repos/{owner}/{repo}/releases[?per_page=&page=]`` → a JSON array, newest first;
* ``GET /repos/{owner}/{repo}/releases/latest`` → the newest non-draft, non-prerelease
  release, or 404 ``{"message": "Not Found", …}`` when there is none;
* unknown repositories → 404; every answer carries ``x-ratelimit-limit``,
  ``x-ratelimit-remaining``, ``x-ratelimit-used``, ``x-ratelimit-reset`` and
  ``x-ratelimit-resource``; when the budget is spent: 403 "API rate limit exceeded …" with
  ``x-ratelimit-remaining: 0`` (as GitHub does for unauthenticated clients);
* ``fake.require_token("t")``: requests without ``Authorization: Bearer t`` (or ``token t``)
  get 401 ``{"message": "Bad credentials", …}``.
"""

from __future__ import annotations

import time
from typing import Any

from tests.fakes.http_base import LocalServer, Request, Response, json_response

DOCS = "https://docs.github.com/rest/releases/releases"


def make_release(
    tag: str,
    published_at: str,
    *,
    prerelease: bool = False,
    draft: bool = False,
    name: str | None = None,
    number: int = 1,
) -> dict[str, Any]:
    return {
        "url": f"https://api.github.com/repos/o/r/releases/{number}",
        "html_url": f"https://github.com/o/r/releases/tag/{tag}",
        "id": number,
        "tag_name": tag,
        "target_commitish": "main",
        "name": name or tag,
        "draft": draft,
        "prerelease": prerelease,
        "created_at": published_at,
        "published_at": None if draft else published_at,
        "assets": [],
        "tarball_url": f"https://api.github.com/repos/o/r/tarball/{tag}",
        "zipball_url": f"https://api.github.com/repos/o/r/zipball/{tag}",
        "body": f"Release {tag}",
        "author": {"login": "release-bot", "id": 1, "type": "Bot"},
    }


class FakeGitHub(LocalServer):
    server_header = "github.com"

    def __init__(self, limit: int = 60) -> None:
        super().__init__()
        self.releases: dict[str, list[dict[str, Any]]] = {}
        self.limit = limit
        self.used = 0
        self.token: str | None = None
        self.reset_at = int(time.time()) + 3600

    def set_releases(self, repo: str, releases: list[dict[str, Any]]) -> None:
        self.releases[repo] = sorted(releases, key=lambda r: r["created_at"], reverse=True)

    def require_token(self, token: str | None) -> None:
        self.token = token

    def _rate_headers(self) -> dict[str, str]:
        return {
            "x-ratelimit-limit": str(self.limit),
            "x-ratelimit-remaining": str(max(0, self.limit - self.used)),
            "x-ratelimit-used": str(self.used),
            "x-ratelimit-reset": str(self.reset_at),
            "x-ratelimit-resource": "core",
        }

    def route(self, request: Request) -> Response:
        if self.token is not None:
            header = request.headers.get("authorization", "")
            if header not in (f"Bearer {self.token}", f"token {self.token}"):
                return json_response(
                    401, {"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}
                )
        if self.used >= self.limit:
            return json_response(
                403,
                {
                    "message": "API rate limit exceeded for 127.0.0.1. (But here's the good "
                    "news: Authenticated requests get a higher rate limit.)",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits",
                },
                self._rate_headers(),
            )
        self.used += 1
        parts = request.path.strip("/").split("/")
        not_found = {"message": "Not Found", "documentation_url": DOCS, "status": "404"}
        if len(parts) < 4 or parts[0] != "repos" or parts[3] != "releases":
            return json_response(404, not_found, self._rate_headers())
        repo = f"{parts[1]}/{parts[2]}"
        if repo not in self.releases:
            return json_response(404, not_found, self._rate_headers())
        releases = self.releases[repo]
        if parts[4:] == ["latest"]:
            stable = [r for r in releases if not r["draft"] and not r["prerelease"]]
            if not stable:
                return json_response(404, not_found, self._rate_headers())
            return json_response(200, stable[0], self._rate_headers())
        if parts[4:]:
            return json_response(404, not_found, self._rate_headers())
        per_page = int(request.query.get("per_page", ["30"])[0])
        page = int(request.query.get("page", ["1"])[0])
        visible = [r for r in releases if not r["draft"]]
        chunk = visible[(page - 1) * per_page : page * per_page]
        return json_response(200, chunk, self._rate_headers())


def reference_releases(github: FakeGitHub) -> None:
    """Releases as of late 2026 (tests pin `now` to 2026-11-24): sbtc v1.3.3, stacks-core
    3.1.0.0.5 (3 days old) next to its signer tag, Bitcoin Core v28.1."""
    github.set_releases(
        "stacks-sbtc/sbtc",
        [
            make_release("v1.3.3", "2026-10-01T10:00:00Z", number=3),
            make_release("v1.3.2", "2026-09-01T10:00:00Z", number=2),
            make_release("v1.4.0-rc1", "2026-11-20T10:00:00Z", prerelease=True, number=4),
            make_release("v1.5.0", "2026-11-22T10:00:00Z", draft=True, number=5),
        ],
    )
    github.set_releases(
        "stacks-network/stacks-core",
        [
            make_release("signer-3.1.0.0.5.1", "2026-11-21T10:00:00Z", number=12),
            make_release("3.1.0.0.5", "2026-11-21T10:00:00Z", number=11),
            make_release("3.1.0.0.4", "2026-09-10T10:00:00Z", number=10),
        ],
    )
    github.set_releases(
        "bitcoin/bitcoin",
        [
            make_release("v28.1", "2026-01-07T10:00:00Z", number=21),
            make_release("v27.2", "2025-11-18T10:00:00Z", number=20),
            make_release("v28.0", "2025-10-02T10:00:00Z", number=19),
        ],
    )
