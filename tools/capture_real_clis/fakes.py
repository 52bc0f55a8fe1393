"""Fake peers: an OAuth issuer for codex --experimental_issuer, provider hosts on 127.0.0.1:443."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tools.capture_real_clis.common import SCRATCH, Json
from tools.capture_real_clis.sandbox import LOOPBACK_HOSTS

# --------------------------------------------------------------------------
# codex against a fake OAuth issuer on loopback (--experimental_issuer)
# --------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwt(claims: Json) -> str:
    """An unsigned, obviously fake JWT (no real provider issued it)."""
    header = _b64url(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64url(json.dumps(claims).encode())}.{_b64url(b'fake-signature')}"


FAKE_CLAIMS: Json = {
    "iss": "http://127.0.0.1/fake-issuer",
    "aud": ["fake-audience"],
    "sub": "fake-subject",
    "email": "fake.user@example.invalid",
    "email_verified": True,
    "iat": 1_800_000_000,
    "exp": 4_000_000_000,
    "https://api.openai.com/auth": {
        "chatgpt_account_id": "00000000-fake-acct-0000-000000000000",
        "chatgpt_plan_type": "plus",
        "chatgpt_user_id": "user-FAKEFAKEFAKE",
        "user_id": "user-FAKEFAKEFAKE",
    },
    "https://api.openai.com/profile": {
        "email": "fake.user@example.invalid",
        "email_verified": True,
    },
}


class FakeIssuer:
    """Minimal fake of the OpenAI auth endpoints codex calls, on 127.0.0.1."""

    def __init__(self, pending_polls: int = 1) -> None:
        import http.server

        self.requests: list[Json] = []
        self.pending_polls = pending_polls
        issuer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: Json | str) -> None:
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(body, str) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                issuer.requests.append({"method": "GET", "path": self.path.split("?")[0]})
                self._reply(404, "not found")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace")
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    fields = sorted(json.loads(raw or "{}"))
                    grant: str | None = None
                else:
                    from urllib.parse import parse_qs

                    form = parse_qs(raw)
                    fields = sorted(form)
                    grant = form.get("grant_type", [""])[0] or None
                issuer.requests.append(
                    {
                        "method": "POST",
                        "path": self.path,
                        "content_type": ctype,
                        "body_fields": fields,
                        "grant_type": grant,
                    }
                )
                if self.path == "/api/accounts/deviceauth/usercode":
                    self._reply(
                        200,
                        {
                            "device_auth_id": "fake-device-auth-id",
                            "user_code": "FAKE-C0DE",
                            "interval": "1",
                        },
                    )
                elif self.path == "/api/accounts/deviceauth/token":
                    if issuer.pending_polls > 0:
                        issuer.pending_polls -= 1
                        self._reply(403, {"error": "authorization_pending"})
                    else:
                        self._reply(
                            200,
                            {
                                "authorization_code": "fake-authorization-code",
                                "code_challenge": "fake-code-challenge",
                                "code_verifier": "fake-code-verifier",
                            },
                        )
                elif self.path == "/oauth/token" and grant == "authorization_code":
                    self._reply(
                        200,
                        {
                            "id_token": fake_jwt(FAKE_CLAIMS),
                            "access_token": fake_jwt({**FAKE_CLAIMS, "scp": ["openid"]}),
                            "refresh_token": "fake-refresh-token",
                            "token_type": "Bearer",
                            "expires_in": 3600,
                        },
                    )
                elif self.path == "/oauth/token":
                    self._reply(400, {"error": "unsupported_grant_type"})
                else:
                    self._reply(404, "not found")

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --------------------------------------------------------------------------
# provider hosts faked on 127.0.0.1:443 (stub DNS + a throwaway CA)
# --------------------------------------------------------------------------

Route = Callable[[Json], "tuple[int, Json | str] | None"]


def make_tls(hosts: Sequence[str]) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf certificate for ``hosts`` (in SCRATCH, never committed)."""
    tls = SCRATCH / "tls"
    if tls.exists():
        shutil.rmtree(tls)
    tls.mkdir(parents=True)
    ca_key, ca_pem = tls / "ca.key", tls / "ca.pem"
    key, csr, pem = tls / "leaf.key", tls / "leaf.csr", tls / "leaf.pem"
    ext = tls / "ext.cnf"
    ext.write_text(
        "subjectAltName=" + ",".join(f"DNS:{h}" for h in hosts) + "\n"
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
    )

    def ossl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)

    ossl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key),
        "-out", str(ca_pem), "-days", "2", "-subj", "/CN=remotecli capture fake CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    ossl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/CN={hosts[0]}",
    )  # fmt: skip
    ossl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(pem), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return ca_pem, pem, key


class FakeProviders:
    """HTTPS on 127.0.0.1:443 answering for ``hosts``; every request is recorded."""

    def __init__(self, hosts: Sequence[str], route: Route) -> None:
        import http.server
        import ssl
        from urllib.parse import parse_qs, urlsplit

        self.ca, cert, key = make_tls(hosts)
        self.requests: list[Json] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode("utf-8", "replace") if length else ""
                ctype = self.headers.get("Content-Type", "")
                body: Json = {}
                if raw and "json" in ctype:
                    with contextlib.suppress(ValueError):
                        loaded = json.loads(raw)
                        body = loaded if isinstance(loaded, dict) else {"_": loaded}
                elif raw:
                    body = {k: v[0] for k, v in parse_qs(raw).items()}
                parts = urlsplit(self.path)
                req: Json = {
                    "method": method,
                    "host": (self.headers.get("Host") or "").split(":")[0],
                    "path": parts.path,
                    "query_keys": sorted(parse_qs(parts.query)),
                    "content_type": ctype,
                    "body": body,
                    "authorization": (self.headers.get("Authorization") or "").split(" ")[0],
                }
                answer = route(req)
                fake.requests.append(
                    {
                        **{k: v for k, v in req.items() if k != "body"},
                        "body_keys": sorted(body),
                        "grant_type": body.get("grant_type"),
                        "status": answer[0] if answer else 404,
                    }
                )
                status, payload = answer if answer else (404, {"error": "not_found"})
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                self.send_response(status)
                self.send_header(
                    "Content-Type", "text/plain" if isinstance(payload, str) else "application/json"
                )
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._handle("GET")

            def do_POST(self) -> None:
                self._handle("POST")

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 443), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        LOOPBACK_HOSTS.update(h.lower() for h in hosts)

    def close(self) -> None:
        LOOPBACK_HOSTS.clear()
        self.server.shutdown()
        self.server.server_close()
