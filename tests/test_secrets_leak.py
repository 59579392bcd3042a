"""No secret leaves sbtc-ops, and nothing that is not a secret is hidden (issue 13).

Every form a secret takes in configuration (URL userinfo, `?password=`, keyword DSN, `#`, `?`,
`@` and `%` in passwords, `sslpassword`, multi-host URLs, API keys in endpoint URLs, the
signer's private key in SIGNER_SIGNER__PRIVATE_KEY, webhook tokens) goes through every
output channel: stdout and stderr of `config show [--json]`, of a failing `backup` and of
`serve --once`, `history --json`, the state database's bytes, webhook bodies, the status
page and /metrics, and the argv of pg_dump sampled from /proc while it runs. libpq's
conventions (PGPASSWORD, PGPASSFILE, PGSERVICE, multi-host URLs) make real backups work, and
the API key goes only to the https endpoints it is meant for.
"""

from __future__ import annotations

import json
import secrets
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from sbtc_ops import redact
from sbtc_ops.config import Settings
from sbtc_ops.discover.load import load_settings
from sbtc_ops.errors import ConfigError
from sbtc_ops.pg.cluster import free_tcp_port
from sbtc_ops.pg.libpq import ClientTarget, client_invocation
from sbtc_ops.redact import REDACTED, redact_dsn, redact_url, scrub
from sbtc_ops.serve.metrics import exposition, registry_for
from sbtc_ops.serve.page import render_page
from sbtc_ops.serve.snapshot import read_snapshot
from sbtc_ops.stacks import api_key_for
from tests.fakes.stacks_node import FakeStacksNode
from tests.support.backup import cmdlines, sbtc_ops_popen, stopped, wait_for_dump
from tests.support.cli import CliResult
from tests.support.pg import SourceServer
from tests.support.serve import WebhookSink, write_config

if TYPE_CHECKING:
    from sbtc_ops.devtools.signer_db import GeneratedDb

Cli = Callable[..., CliResult]


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    """What this process registered must not hide a leak in what it renders here."""
    redact.forget_all()
    yield
    redact.forget_all()


# -- the forms a database secret takes ---------------------------------------------------


@dataclass(frozen=True)
class DbForm:
    name: str
    url: str
    marks: tuple[str, ...]  # unique parts of every secret in the URL: none may show
    shown: tuple[str, ...]  # non-secret parts that must still show


def _token() -> str:
    return secrets.token_hex(8)


def db_forms(port: int, port2: int) -> list[DbForm]:
    a, b, c, d, e, f, g, h, i = (_token() for _ in range(9))
    host = f"127.0.0.1:{port}"
    keep = ("127.0.0.1", str(port), "signer")
    return [
        DbForm("userinfo", f"postgresql://signer:pw-{a}@{host}/signer", (a,), keep),
        DbForm("query", f"postgresql://signer@{host}/signer?password=pw-{b}", (b,), keep),
        DbForm("hash", f"postgresql://signer:pw#{c}@{host}/signer", (c,), keep),
        DbForm("question", f"postgresql://signer:pw?{d}@{host}/signer", (d,), keep),
        DbForm(
            "at-percent",
            f"postgresql://signer:{quote(f'p@w%{e}', safe='')}@{host}/signer",
            (e, quote(e)),
            keep,
        ),
        DbForm(
            "keyword",
            f"host=127.0.0.1 port={port} dbname=signer user=signer password='p w\\'{f}'",
            (f,),
            keep,
        ),
        DbForm(
            "sslpassword",
            f"postgresql://signer:pw-{g}@{host}/signer?sslmode=disable&sslpassword=ssl-{h}",
            (g, h),
            (*keep, "sslmode=disable"),
        ),
        DbForm(
            "multi-host",
            f"postgresql://signer:pw-{i}@{host},127.0.0.1:{port2}/signer",
            (i,),
            (*keep, str(port2)),
        ),
    ]


FORM_NAMES = [form.name for form in db_forms(1, 2)]


def form_named(name: str) -> DbForm:
    # Two closed ports: nothing listens there, so every backup fails at connect.
    return next(f for f in db_forms(free_tcp_port(), free_tcp_port()) if f.name == name)


def assert_clean(text: str, marks: tuple[str, ...], where: str) -> None:
    for mark in marks:
        assert mark not in text, f"secret {mark!r} leaked in {where}"


@pytest.mark.parametrize("name", FORM_NAMES)
def test_redact_dsn_hides_only_the_secret(name: str) -> None:
    form = form_named(name)
    shown = redact_dsn(form.url)
    assert_clean(shown, form.marks, "redact_dsn")
    assert REDACTED in shown
    for part in form.shown:
        assert part in shown, (part, shown)
    assert scrub(f"error: {form.url}: boom").endswith(f"{shown}: boom")
    assert redact_dsn(shown) == shown and scrub(shown) == shown  # idempotent


def test_passwordless_urls_keep_everything() -> None:
    url = "postgresql://postgres@127.0.0.1:5499/signer?sslmode=require"
    assert redact_dsn(url) == url
    assert redact_url("http://node:20443/v2") == "http://node:20443/v2"


def test_config_show_keeps_a_passwordless_url_whole(cli: Cli) -> None:
    url = "postgresql://postgres@127.0.0.1:5499/signer"
    shown = cli("config", "show", "--json", env={"SBTC_OPS_DB__URL": url})
    assert shown.code == 0, shown.stderr
    assert shown.json()["db"]["url"] == url == shown.json()["effective"]["db_url"]


def test_other_urls_hide_userinfo_and_key_parameters_only() -> None:
    assert redact_url("https://api.example/v2?api_key=k3y-123&tip=latest") == (
        f"https://api.example/v2?api_key={REDACTED}&tip=latest"
    )
    assert redact_url("http://rpc:pass-123@bitcoin:8332/") == f"http://rpc:{REDACTED}@bitcoin:8332/"
    assert redact_url("https://ghp_token123@github.com/x") == f"https://{REDACTED}@github.com/x"


def test_scrubbing_json_text_keeps_it_valid_json() -> None:
    doc = {
        "error": 'bad "host=h password=pw-x1" at https://h/?api_key=k-1\\"x" and PGPASSWORD=p-2\\',
        "url": 'postgresql://u:pa"ss@h/db',
    }
    text = json.dumps(doc)
    cleaned = json.loads(scrub(text))  # the stream-level pass over an emitted document
    assert all(s not in json.dumps(cleaned) for s in ("pw-x1", "k-1", "p-2"))
    # Documents are scrubbed value by value before they are encoded (emit_json), which also
    # sees through quotes inside a URL; the stream pass over the result changes nothing.
    scrubbed = redact.scrub_data(doc)
    assert scrubbed["url"] == f"postgresql://u:{REDACTED}@h/db"
    assert json.loads(scrub(json.dumps(scrubbed))) == scrubbed


def test_registered_values_are_scrubbed_in_every_quoted_form() -> None:
    value = f"s3c'r\"et/{_token()}&<x>"
    redact.register(value)
    for form in (value, quote(value, safe=""), json.dumps(value)[1:-1], value.upper()):
        assert scrub(f"before {form} after") == f"before {REDACTED} after"
    assert scrub(scrub(value)) == REDACTED  # idempotent
    redact.register("postgres", "abc")  # published defaults and short values are not scrubbed
    assert scrub("postgresql://postgres@h/abc") == "postgresql://postgres@h/abc"


# -- every channel, every form -------------------------------------------------------------


@dataclass
class Secrets:
    private_key: str
    api_key: str
    url_api_key: str
    s3_secret: str
    hook_token: str

    @property
    def marks(self) -> tuple[str, ...]:
        return (self.private_key, self.api_key, self.url_api_key, self.s3_secret, self.hook_token)


@pytest.fixture
def other_secrets() -> Secrets:
    return Secrets(secrets.token_hex(32), _token(), _token(), _token(), _token())


def _environment(form: DbForm, other: Secrets, stacks_url: str) -> dict[str, str]:
    return {
        "SBTC_OPS_DB__URL": form.url,
        "SIGNER_SIGNER__PRIVATE_KEY": other.private_key,
        "SBTC_OPS_STACKS__API_KEY": f"api-{other.api_key}",
        "SBTC_OPS_STACKS__ENDPOINTS": json.dumps([f"{stacks_url}/?api_key={other.url_api_key}"]),
        "SBTC_OPS_BACKUP__S3__SECRET_ACCESS_KEY": f"s3-{other.s3_secret}",
    }


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", FORM_NAMES)
def test_no_secret_in_any_channel(
    name: str, cli: Cli, workdir: Path, tmp_path: Path, other_secrets: Secrets
) -> None:
    form = form_named(name)
    marks = (*form.marks, *other_secrets.marks)
    state = workdir / "state"
    with WebhookSink([]) as sink, FakeStacksNode() as node:
        hook = sink.url(f"/hooks/{other_secrets.hook_token}")
        config = write_config(
            workdir / "sbtc-ops.toml",
            {
                "serve": {"webhooks": [hook], "prune_after_backup": False, "dkg_watch": False},
                "backup": {"local_dir": str(tmp_path / "served-repo")},
            },
            state_dir=str(state),
        )
        env = _environment(form, other_secrets, node.url)

        shown = cli("config", "show", env=env)
        shown_json = cli("config", "show", "--json", env=env)
        backup = cli("backup", "--to", str(tmp_path / "repo"), "--json", env=env)
        once = cli("--config", str(config), "-v", "serve", "--once", "backup", env=env)
        history = cli("history", "--json", env=env)
        deadline = time.monotonic() + 30
        while not sink.bodies and time.monotonic() < deadline:
            time.sleep(0.05)

    assert shown.code == 0 and shown_json.code == 0, shown.stderr + shown_json.stderr
    assert backup.code == 2 and backup.json()["ok"] is False
    assert once.code != 0 and history.code == 0
    outputs = {
        "config show": shown,
        "config show --json": shown_json,
        "backup": backup,
        "serve --once": once,
        "history --json": history,
    }
    for where, result in outputs.items():
        assert "Traceback" not in result.stderr, (where, result.stderr)
        assert_clean(result.stdout + result.stderr, marks, where)
    # What is not secret still shows: host, port(s), database and user; the webhook's host.
    view = shown_json.json()
    for part in form.shown:
        assert part in view["db"]["url"], (part, view["db"]["url"])
        assert part in shown.stdout
    assert "cannot connect to" in backup.json()["error"] and "127.0.0.1" in backup.json()["error"]
    assert "127.0.0.1" in view["serve"]["webhooks"][0]
    assert history.json()  # the failed run is there, scrubbed

    assert sink.bodies, "the failure was not notified"
    assert_clean(json.dumps([body for _, body in sink.bodies]), marks, "webhook bodies")
    assert "backup failed" in sink.bodies[0][1]["text"]

    for path in state.rglob("*"):  # state.db, its WAL, anything else
        if path.is_file():
            assert_clean(path.read_bytes().decode(errors="replace"), marks, str(path))
    page = render_page(read_snapshot(state, time.time()))
    assert_clean(page, marks, "status page")
    assert "cannot connect to" in page
    assert_clean(exposition(registry_for(state)).decode(), marks, "/metrics")


def test_status_page_scrubs_history_written_before_scrubbing(tmp_path: Path) -> None:
    from sbtc_ops.state import StateStore

    password = f"pw-{_token()}"
    with StateStore.open(tmp_path) as store:  # as an older version wrote it: unscrubbed
        store._conn.execute(
            "INSERT INTO events(kind, subject, at, outcome, data) VALUES (?, ?, ?, ?, ?)",
            ("backup", "-", time.time(), "error", json.dumps({"error": f"x {password} y"})),
        )
    redact.register(password)
    assert password not in render_page(read_snapshot(tmp_path, time.time()))


# -- pg_dump: argv, environment, libpq conventions ----------------------------------------


pg = pytest.mark.postgres


def _url(server: SourceServer, password: str | None, dbname: str = "signer_shared") -> str:
    auth = "signer" if password is None else f"signer:{quote(password, safe='')}"
    return f"postgresql://{auth}@127.0.0.1:{server.port}/{dbname}"


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {name: value for name, _, value in pairs}


def test_client_invocation_keeps_secrets_out_of_the_conninfo(tmp_path: Path) -> None:
    target = ClientTarget({"host": "db", "port": "5432", "dbname": "signer"}, "pw-1", "ssl-2")
    with client_invocation(target, environ={"PGSSLMODE": "require"}) as invocation:
        service_file = Path(invocation.env["PGSERVICEFILE"])
        assert "pw-1" not in invocation.conninfo and "ssl-2" not in invocation.conninfo
        assert (
            "host=db" in invocation.conninfo and "service=sbtc-ops-secrets" in invocation.conninfo
        )
        assert invocation.env["PGPASSWORD"] == "pw-1"
        assert invocation.env["PGSSLMODE"] == "require"  # the operator's libpq environment
        assert service_file.stat().st_mode & 0o777 == 0o600
    assert not service_file.parent.exists()
    plain = ClientTarget({"host": "db"}, None, None)
    with client_invocation(plain, environ={"PGPASSWORD": "from-env"}) as invocation:
        assert invocation.env["PGPASSWORD"] == "from-env" and "PGSERVICEFILE" not in invocation.env


@pytest.mark.parametrize(
    ("target", "environ", "message"),
    [
        (ClientTarget({"service": "mine"}, None, "ssl-2"), {}, "names a libpq service"),
        (ClientTarget({"host": "db"}, None, "ssl-2"), {"PGSERVICE": "x"}, "names a libpq"),
        (ClientTarget({"host": "db"}, None, "ssl\n2"), {}, "line break"),
    ],
)
def test_an_sslpassword_that_cannot_be_passed_is_a_config_error(
    target: ClientTarget, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message), client_invocation(target, environ):
        pass


@pg
@pytest.mark.timeout(300)
def test_pg_dump_argv_never_holds_a_password_or_sslpassword(
    tmp_path: Path,
    workdir: Path,
    source_server: SourceServer,
    signer_db: tuple[str, GeneratedDb],
) -> None:
    password = source_server.signer_password
    sslpassword = f"ssl-{_token()}"
    url = f"{_url(source_server, password)}?sslmode=disable&sslpassword={sslpassword}"
    state = workdir / "state"
    proc = sbtc_ops_popen(
        "backup", "--to", str(tmp_path / "repo"), "--json",
        state_dir=state, cwd=workdir, env={"SBTC_OPS_DB__URL": url},
    )  # fmt: skip
    try:
        pg_dump = wait_for_dump(proc)
        with stopped(pg_dump):  # frozen mid-dump: read every argv on the host at leisure
            everyone = cmdlines()
            env = _environ(pg_dump)
            service_file = Path(env["PGSERVICEFILE"])
            mode = service_file.stat().st_mode & 0o777
            directory_mode = service_file.parent.stat().st_mode & 0o777
            service_text = service_file.read_text()
    finally:
        stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    for argv in everyone.values():
        assert password not in " ".join(argv) and sslpassword not in " ".join(argv)
    dump_argv = " ".join(everyone[pg_dump])
    assert "host=127.0.0.1" in dump_argv and f"port={source_server.port}" in dump_argv
    assert "service=sbtc-ops-secrets" in dump_argv
    assert env["PGPASSWORD"] == password  # secrets via the environment or a 0600 file only
    assert (mode, directory_mode) == (0o600, 0o700)
    assert f"sslpassword={sslpassword}" in service_text
    assert not service_file.exists() and not service_file.parent.exists()
    for channel in (stdout, stderr):
        assert password not in channel and sslpassword not in channel


@pg
@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["PGPASSWORD", "PGPASSFILE", "PGSERVICE"])
def test_libpq_conventions_supply_the_password_to_backup(
    how: str, cli: Cli, tmp_path: Path, source_server: SourceServer, signer_db: object
) -> None:
    password = source_server.signer_password
    url = _url(source_server, None)
    env: dict[str, str] = {}
    if how == "PGPASSWORD":
        env["PGPASSWORD"] = password
    elif how == "PGPASSFILE":
        passfile = tmp_path / "pgpass"
        passfile.write_text(f"127.0.0.1:{source_server.port}:signer_shared:signer:{password}\n")
        passfile.chmod(0o600)
        env["PGPASSFILE"] = str(passfile)
    else:
        services = tmp_path / "pg_service.conf"
        services.write_text(
            f"[signerdb]\nhost=127.0.0.1\nport={source_server.port}\ndbname=signer_shared\n"
            f"user=signer\npassword={password}\n"
        )
        services.chmod(0o600)
        env |= {"PGSERVICEFILE": str(services), "PGSERVICE": "signerdb"}
        url = "postgresql://"  # everything from the service
    env["SBTC_OPS_DB__URL"] = url

    result = cli("backup", "--to", str(tmp_path / "repo"), "--json", env=env)

    assert result.code == 0, result.stderr
    source = result.json()["backup"]["source"]
    assert source["port"] == source_server.port and source["dbname"] == "signer_shared"
    assert password not in result.stdout + result.stderr


@pg
@pytest.mark.timeout(300)
def test_without_any_password_backup_says_so(
    cli: Cli, tmp_path: Path, source_server: SourceServer, signer_db: object
) -> None:
    result = cli("backup", "--db", _url(source_server, None), "--to", str(tmp_path / "r"))
    assert result.code == 2
    assert "password" in result.stderr and "Traceback" not in result.stderr


@pg
@pytest.mark.timeout(300)
def test_multi_host_url_backs_up_from_the_server_that_answers(
    cli: Cli, tmp_path: Path, source_server: SourceServer, signer_db: object
) -> None:
    password = source_server.signer_password
    dead = free_tcp_port()
    url = (
        f"postgresql://signer:{quote(password, safe='')}@127.0.0.1:{dead},"
        f"127.0.0.1:{source_server.port}/signer_shared"
    )
    shown = cli("config", "show", "--json", env={"SBTC_OPS_DB__URL": url})
    assert shown.code == 0, shown.stderr
    assert (
        f"127.0.0.1:{dead},127.0.0.1:{source_server.port}/signer_shared"
        in (shown.json()["db"]["url"])
    )

    result = cli("backup", "--db", url, "--to", str(tmp_path / "repo"), "--json")

    assert result.code == 0, result.stderr
    source = result.json()["backup"]["source"]
    assert (source["host"], source["port"]) == ("127.0.0.1", source_server.port)
    assert password not in result.stdout + result.stderr


# -- the Stacks API key ------------------------------------------------------------------


def _settings(network: str = "mainnet", **stacks: object) -> Settings:
    return load_settings(
        overrides={"network": network, "stacks": {"api_key": "the-key-123", **stacks}},
        environ={},
    )


@pytest.mark.parametrize(
    ("network", "hosts", "url", "gets_key"),
    [
        ("mainnet", None, "https://api.hiro.so", True),
        ("mainnet", None, "https://API.hiro.so:443/", True),
        ("mainnet", None, "http://api.hiro.so", False),  # never over plain HTTP
        ("mainnet", None, "https://api.testnet.hiro.so", False),
        ("mainnet", None, "http://127.0.0.1:20443", False),  # the operator's own node
        ("mainnet", None, "https://evil.example", False),
        ("mainnet", None, "https://api.hiro.so.evil.example", False),
        ("testnet", None, "https://api.testnet.hiro.so", True),
        ("devnet", None, "http://127.0.0.1:20443", False),
        ("mainnet", ["node.example:8443"], "https://node.example:8443", True),
        ("mainnet", ["node.example:8443"], "https://node.example", False),
        ("mainnet", ["node.example:8443"], "https://api.hiro.so", False),
        ("mainnet", ["127.0.0.1"], "http://127.0.0.1:20443", False),
    ],
)
def test_api_key_goes_only_to_https_api_hosts(
    network: str, hosts: list[str] | None, url: str, gets_key: bool
) -> None:
    extra = {} if hosts is None else {"api_key_hosts": hosts}
    settings = _settings(network, **extra)
    assert (api_key_for(settings, url) == "the-key-123") is gets_key


def test_api_key_in_an_endpoint_url_is_used_but_never_shown(cli: Cli) -> None:
    key = f"url-key-{_token()}"
    with FakeStacksNode() as node:
        endpoint = f"{node.url}/?api_key={key}"
        result = cli("chain", "aggregate-key", "--json", "--stacks-url", endpoint)
        shown = cli(
            "config", "show", "--json", env={"SBTC_OPS_STACKS__ENDPOINTS": json.dumps([endpoint])}
        )
        queries = [request.query for request in node.requests]
    assert result.code == 0, result.stderr
    assert key not in result.stdout + result.stderr + shown.stdout + shown.stderr
    assert result.json()["endpoints"][0]["url"] == f"{node.url}/?api_key={REDACTED}"
    assert shown.json()["effective"]["stacks_endpoints"] == [f"{node.url}/?api_key={REDACTED}"]
    assert any(key in str(query) for query in queries)  # the node did get it


class TlsStacksNode(FakeStacksNode):
    """The fake node behind TLS, as a hosted API is: https://localhost:PORT."""

    def __init__(self, cert: Path, key: Path) -> None:
        super().__init__()
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)

    def start(self) -> TlsStacksNode:
        super().start()
        assert self._server is not None
        self._server.socket = self.context.wrap_socket(self._server.socket, server_side=True)
        return self

    @property
    def url(self) -> str:
        return f"https://localhost:{self.port}"


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_api_key_reaches_only_the_https_api_host(cli: Cli, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    api_key = f"api-{_token()}"
    with TlsStacksNode(cert, key) as hosted, FakeStacksNode() as own:
        hosted.require_api_key(api_key)
        env = {
            "SSL_CERT_FILE": str(cert),  # httpx trusts the test certificate
            "SBTC_OPS_STACKS__API_KEY": api_key,
            "SBTC_OPS_STACKS__API_KEY_HOSTS": '["localhost"]',
            "SBTC_OPS_STACKS__RETRIES": "0",
        }
        urls = ["--stacks-url", hosted.url, "--stacks-url", own.url]
        result = cli("chain", "aggregate-key", "--json", *urls, env=env)
        hosted_keys = [r.headers.get("x-api-key") for r in hosted.requests]
        own_keys = [r.headers.get("x-api-key") for r in own.requests]
    assert result.code == 0, result.stderr
    assert [o["ok"] for o in result.json()["endpoints"]] == [True, True]
    assert hosted_keys and set(hosted_keys) == {api_key}
    assert own_keys and set(own_keys) == {None}  # the operator's own node, plain HTTP
    assert api_key not in result.stdout + result.stderr
