"""No secret leaks: the whole offline flow with recognisable secrets, then a scan of everything.

The demo (fake backend, the test bed as the providers) runs every login mode,
an API-key login, a few errors and a prompt per provider. The secrets of the
run are the test bed's codes, device codes and tokens (its token generator
is made to mark them ``SECRETtb``), the API keys, the API tokens, the VM
tokens and the vault key. None may appear in a controller log record, an HTTP
response the test received, an agent's console log or a database column
(the vault's ciphertext columns are checked not to hold them in the clear).
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from remotecli.controller.context import AppContext
from remotecli.controller.fleet.store import token_aad
from remotecli.controller.settings import Settings
from remotecli.controller.vault.cipher import Sealed, Vault
from remotecli.server import app as server_app
from remotecli.server.demo import Demo
from remotecli.testbed import OAuthServer, approve_device, authority, login, tokens
from tests.support.controller import run_controller
from tests.support.faults import Recorder, find, mask
from tests.support.poll import eventually
from tests.support.user import PASSWORD, USER

pytestmark = pytest.mark.timeout(300)

MARK = "SECRETtb"
VAULT_KEY = base64.b64encode(b"VAULT-KEY-SECRET-0123456789abcde").decode()
API_KEY = "sk-SECRET-apikey-4f1c9a7e2b6d8035"
BAD_API_KEY = "sk-SECRET-badkey 7a1e"
MODES = [
    ("claude_code", "paste_code"),
    ("codex", "localhost_callback"),
    ("codex", "device_code"),
    ("gemini_cli", "paste_code"),
]
#: The vault's columns: sealed, so scanned only to be sure they are not plaintext.
CIPHERTEXT = {
    ("credentials", "ciphertext"),
    ("credentials", "nonce"),
    ("vms", "token_ciphertext"),
    ("vms", "token_nonce"),
}


class RecordingTransport(httpx.HTTPTransport):
    """Keeps every response (status line, headers, whole body) the test received."""

    def __init__(self, seen: list[tuple[str, str]]) -> None:
        super().__init__()
        self.seen = seen

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = super().handle_request(request)
        body = response.read()
        where = f"{request.method} {request.url.path}"
        headers = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        self.seen.append(
            (where, f"{response.status_code}\n{headers}\n\n{body.decode(errors='replace')}")
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )


@pytest.fixture
def marked_testbed(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[str]]:
    """The test bed's random tokens carry MARK; its codes, device codes and tokens are kept."""
    issued: dict[str, set[str]] = {"codes": set(), "device_codes": set(), "tokens": set()}
    plain = tokens.random_token
    monkeypatch.setattr(authority, "random_token", lambda nbytes=32: MARK + plain(nbytes))

    def keep(kind: str, pick: Callable[[Any], list[str]]) -> Callable[[Any], Any]:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            @wraps(fn)
            def inner(*args: Any, **kwargs: Any) -> Any:
                out = fn(*args, **kwargs)
                issued[kind].update(v for v in pick(out) if isinstance(v, str) and v)
                return out

            return inner

        return wrap

    cls = authority.Authority
    monkeypatch.setattr(cls, "issue_code", keep("codes", lambda c: [c])(cls.issue_code))
    monkeypatch.setattr(
        cls,
        "device_start",
        keep("device_codes", lambda b: [b.get("device_code")])(cls.device_start),
    )
    monkeypatch.setattr(
        cls,
        "_issue",
        keep("tokens", lambda b: [b.get(k) for k in ("access_token", "refresh_token", "id_token")])(
            cls._issue
        ),
    )
    return issued


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The app's context (first service started), and every controller log record."""
    holder: dict[str, Any] = {}

    async def capture(context: AppContext) -> None:
        holder["context"] = context

    monkeypatch.setattr(server_app, "SERVICES", [(capture, None), *server_app.SERVICES])
    recorder = Recorder()
    root, ours = logging.getLogger(), logging.getLogger("remotecli")
    root.addHandler(recorder)
    old_level = ours.level
    ours.setLevel(logging.DEBUG)
    holder["logs"] = recorder.lines
    try:
        yield holder
    finally:
        root.removeHandler(recorder)
        ours.setLevel(old_level)


def snapshot_logs(state_dir: Path, files: dict[str, str]) -> None:
    """Every console/log file under the state dir as it is now (instances go when destroyed)."""
    for path in state_dir.rglob("*"):
        if path.is_file() and (path.suffix == ".log" or "console" in path.name):
            try:
                files[str(path.relative_to(state_dir))] = path.read_text(errors="replace")
            except OSError:
                pass  # destroyed meanwhile: the previous snapshot stays


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_no_secret_reaches_a_log_a_response_a_console_or_a_clear_column(
    make_settings: Callable[..., Settings],
    state_dir: Path,
    marked_testbed: dict[str, set[str]],
    captured: dict[str, Any],
) -> None:
    settings = make_settings(demo=True, vault_keys=f"k1:{VAULT_KEY}")
    responses: list[tuple[str, str]] = []
    consoles: dict[str, str] = {}
    pasted: set[str] = set()
    user_tokens: list[str] = []

    with run_controller(settings) as controller:
        context: AppContext = captured["context"]
        server: OAuthServer = cast(Demo, context.addons["demo"]).server

        def client(token: str) -> httpx.Client:
            return httpx.Client(
                base_url=controller.url,
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
                transport=RecordingTransport(responses),
            )

        admin = client(controller.admin_token)
        assert admin.post("/api/users", json={"id": "ada"}).status_code == 201
        assert admin.post("/api/users", json={"id": "bob"}).status_code == 201
        for user in ("ada", "bob"):
            made = admin.post("/api/tokens", json={"kind": "user", "userId": user})
            assert made.status_code == 201, made.text
            user_tokens.append(made.json()["token"])
        # The token is shown once, by design, in its creation's answer: not scanned.
        del responses[-2:]
        ada, bob = client(user_tokens[0]), client(user_tokens[1])

        for provider, mode in MODES:
            started = ada.post(
                "/api/auth/start", json={"userId": "ada", "provider": provider, "mode": mode}
            )
            assert started.status_code == 201, started.text
            session = started.json()
            sid = session["id"]
            snapshot_logs(state_dir, consoles)
            if mode == "device_code":
                approve_device(session["loginUrl"], session["userCode"], USER, PASSWORD)
                done = _wait_ended(ada, sid)
            else:
                outcome = login(session["loginUrl"], USER, PASSWORD)
                if mode == "localhost_callback":
                    assert outcome.redirect_url is not None
                    answer = {"callbackUrl": outcome.redirect_url}
                    pasted.add(outcome.redirect_url)
                else:
                    assert outcome.pasted is not None
                    answer = {"code": outcome.pasted}
                    pasted.add(outcome.pasted)
                    if provider == "claude_code":  # a wrong pasted code first
                        wrong = outcome.pasted.split("#")[0] + "#other"
                        refused = ada.post(f"/api/auth/sessions/{sid}/code", json={"code": wrong})
                        assert refused.status_code == 400, refused.text
                snapshot_logs(state_dir, consoles)
                done = ada.post(f"/api/auth/sessions/{sid}/code", json=answer).json()
            assert done["phase"] == "authenticated", (provider, mode, done)
            snapshot_logs(state_dir, consoles)

        # An API-key login, a key that is refused, an unknown session.
        keyed = bob.post(
            "/api/auth/start",
            json={"userId": "bob", "provider": "claude_code", "mode": "api_key", "apiKey": API_KEY},
        )
        assert keyed.status_code == 201 and keyed.json()["phase"] == "authenticated", keyed.text
        bad = bob.post(
            "/api/auth/start",
            json={"userId": "bob", "provider": "codex", "mode": "api_key", "apiKey": BAD_API_KEY},
        )
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_api_key", bad.text
        assert ada.get("/api/auth/sessions/auth_0123456789abcdef").status_code == 404

        for user, web, provider in [
            ("ada", ada, "claude_code"),
            ("ada", ada, "codex"),
            ("ada", ada, "gemini_cli"),
            ("bob", bob, "claude_code"),
        ]:
            said = _prompt(web, user, provider)
            if user == "ada":  # bob's key is unknown to the test bed: an error, scanned too
                assert "You said: hi" in said, (user, provider, said[-2000:])
            snapshot_logs(state_dir, consoles)
        for web in (ada, bob):
            assert web.get(f"/api/users/{'ada' if web is ada else 'bob'}/credentials").is_success
        assert admin.get("/api/vms").is_success
        snapshot_logs(state_dir, consoles)
        issued_tokens = {
            v for t in server.issued_tokens() for v in (t.access_token, t.refresh_token)
        }
        for web in (admin, ada, bob):
            web.close()

    snapshot_logs(state_dir, consoles)
    assert settings.database_url is not None
    db_path = Path(settings.database_url.removeprefix("sqlite+aiosqlite:///"))
    rows = _rows(db_path)
    vault = Vault.from_spec(f"k1:{VAULT_KEY}")
    vm_tokens = {
        vault.open(
            Sealed(r["token_key_id"], r["token_nonce"], r["token_ciphertext"]), token_aad(r["id"])
        ).decode()
        for table, r in rows
        if table == "vms"
    }

    secrets: dict[str, str] = {}
    groups: dict[str, set[str]] = {
        "auth code": marked_testbed["codes"],
        "device code": marked_testbed["device_codes"],
        "oauth token": marked_testbed["tokens"] | issued_tokens,
        "pasted answer": pasted,
        "api key": {API_KEY, BAD_API_KEY},
        "user API token": set(user_tokens),
        "admin API token": {controller.admin_token},
        "VM token": vm_tokens,
        "vault key": {VAULT_KEY},
    }
    for name, values in groups.items():
        for value in values:
            secrets[f"{name} #{len(secrets)}"] = value
    assert (
        issued_tokens and marked_testbed["codes"] and marked_testbed["device_codes"] and vm_tokens
    )
    assert all(MARK in t for t in issued_tokens if not t.startswith("ey"))

    found: list[str] = []
    log_lines = captured["logs"]
    found += find(secrets, "controller log", "\n".join(log_lines))
    for where, text in responses:
        found += find(secrets, f"response to {where}", text)
    for name, text in consoles.items():
        found += find(secrets, name, text)
    columns = 0
    for table, row in rows:
        for column, value in row.items():
            columns += 1
            if (table, column) in CIPHERTEXT:
                raw = bytes(value)
                found += [
                    f"{n} {mask(s)} in the clear in {table}.{column}"
                    for n, s in secrets.items()
                    if s.encode() in raw
                ]
                continue
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            found += find(secrets, f"{table}.{column} (row {row.get('id', '?')})", text)

    print(
        f"scanned {len(secrets)} secrets in {len(log_lines)} log records, "
        f"{len(responses)} responses, {len(consoles)} console/log files, "
        f"{columns} column values of {len({t for t, _ in rows})} tables"
    )
    assert log_lines and responses and consoles and columns
    assert not found, "secrets leaked:\n" + "\n".join(found)


def _rows(db_path: Path) -> list[tuple[str, dict[str, Any]]]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return [(t, dict(r)) for t in tables for r in db.execute(f'SELECT * FROM "{t}"')]  # noqa: S608 (names from sqlite_master)
    finally:
        db.close()


def _prompt(web: httpx.Client, user: str, provider: str) -> str:
    response = web.post("/api/prompts", json={"userId": user, "provider": provider, "prompt": "hi"})
    assert response.status_code == 200, response.text
    text = ""
    event = None
    for line in response.text.splitlines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "text":
            data = json.loads(line.removeprefix("data: "))
            text += "" if data.get("thinking") else data["text"]
    return text or response.text


def _wait_ended(web: httpx.Client, session_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        session: dict[str, Any] = web.get(f"/api/auth/sessions/{session_id}").json()
        return session if session["ended"] else None

    return eventually(f"login {session_id} to end", ended, 60)
