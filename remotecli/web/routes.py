"""The dashboard's pages and static files; ``controller/api/app.py`` includes ``router``.

Adding a page: a template extending ``base.html``, a route that calls
``render`` after ``page_caller``, and one ``NavItem`` in ``NAV``.

A page needs the session cookie (``POST /api/session``); without a valid one
it redirects to the sign-in page with a relative ``next``. Pages carry no
token and no secret: their scripts read everything through the API.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from remotecli import __version__
from remotecli.controller.api.deps import get_context
from remotecli.controller.db.models import TokenKind
from remotecli.controller.errors import NotFound, Unauthorized
from remotecli.controller.security import SESSION_COOKIE, Principal, authenticate_token
from remotecli.providers import PROVIDERS
from remotecli.providers.base import LoginMode
from remotecli.providers.gemini_cli import POLICY_NOTE

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"
PREFIX = "/remote-cli"
HOME = f"{PREFIX}/auth"

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")

#: Pages may load only this origin's scripts, styles and API; no frames, no inline script.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    #: Shown only to admin tokens (their API needs one).
    admin_only: bool = False


NAV: tuple[NavItem, ...] = (
    NavItem("Connect accounts", HOME),
    NavItem("VMs", f"{PREFIX}/vms", admin_only=True),
    NavItem("Playground", f"{PREFIX}/playground"),
)


def _fingerprints() -> dict[str, str]:
    """name → short content hash: URLs change when a file does, so caches never serve stale JS."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12]
        for p in sorted(STATIC_DIR.iterdir())
        if p.is_file()
    }


STATIC = _fingerprints()


def static_url(name: str) -> str:
    return f"{PREFIX}/static/{name}?v={STATIC[name]}"


templates.env.globals.update(static_url=static_url, version=__version__)


# -- who is looking ---------------------------------------------------------------------------


async def page_caller(request: Request) -> Principal | None:
    """The session cookie's principal, or None (no cookie, unknown or revoked token)."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    context = get_context(request)
    async with context.sessions() as session:
        try:
            principal = await authenticate_token(session, token)
        except Unauthorized:
            return None
        await session.commit()
    return principal


PageCaller = Annotated[Principal | None, Depends(page_caller)]


def safe_next(value: str | None) -> str:
    """Only a path on this site: never ``//host``, ``/\\host`` or a scheme (no open redirect)."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return HOME
    if any(ord(c) < 0x20 for c in value):
        return HOME
    return value


def to_login(request: Request) -> RedirectResponse:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{PREFIX}/login?next={quote(here, safe='')}", status_code=303)


def render(
    request: Request, template: str, caller: Principal | None, title: str, **values: Any
) -> HTMLResponse:
    nav = [
        item
        for item in NAV
        if caller is not None and (not item.admin_only or caller.kind is TokenKind.ADMIN)
    ]
    response = templates.TemplateResponse(
        request,
        template,
        {"title": title, "caller": caller, "nav": nav, "current": request.url.path, **values},
    )
    response.headers.update(SECURITY_HEADERS)
    return response


# -- pages ------------------------------------------------------------------------------------


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse(HOME, status_code=303)


@router.get(f"{PREFIX}/login")
async def login_page(request: Request, caller: PageCaller, next: str | None = None) -> Response:
    return render(request, "login.html", caller, "Sign in", next=safe_next(next))


#: The API's user ids (schemas.UserId); anything else in ``?user=`` is ignored.
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


@dataclass(frozen=True)
class ProviderCard:
    name: str
    title: str
    #: (mode, button label) of the browser logins, in the provider's order.
    logins: tuple[tuple[str, str], ...]
    api_key: bool
    note: str | None


_LOGIN_LABELS = {
    LoginMode.PASTE_CODE: "Connect",
    LoginMode.LOCALHOST_CALLBACK: "Connect",
    LoginMode.DEVICE_CODE: "Connect with a device code",
}


def provider_cards() -> list[ProviderCard]:
    return [
        ProviderCard(
            name=p.name,
            title=p.display_name,
            logins=tuple((m.value, _LOGIN_LABELS[m]) for m in p.login_modes if m in _LOGIN_LABELS),
            api_key=LoginMode.API_KEY in p.login_modes,
            note=POLICY_NOTE if p.name == "gemini_cli" else None,
        )
        for p in PROVIDERS.values()
    ]


@router.get(f"{PREFIX}/auth")
async def connect_page(request: Request, caller: PageCaller, user: str | None = None) -> Response:
    """Connect accounts: a user token acts for itself; service/admin tokens pick a user."""
    if caller is None:
        return to_login(request)
    if caller.kind is TokenKind.USER:
        user_id: str | None = caller.user_id
    else:
        user_id = user if user and _USER_ID.match(user) else None
    return render(
        request,
        "connect.html",
        caller,
        "Connect accounts",
        user_id=user_id,
        can_pick=caller.kind is not TokenKind.USER,
        providers=provider_cards(),
    )


def _acts_for(caller: Principal, user: str | None) -> str | None:
    """A user token acts for itself; service/admin tokens for the user they picked (``?user=``)."""
    if caller.kind is TokenKind.USER:
        return caller.user_id
    return user if user and _USER_ID.match(user) else None


@router.get(f"{PREFIX}/vms")
async def vms_page(request: Request, caller: PageCaller) -> Response:
    """Operators: every VM, the backend and the golden snapshot (the API needs an admin token)."""
    if caller is None:
        return to_login(request)
    return render(request, "vms.html", caller, "VMs", admin=caller.kind is TokenKind.ADMIN)


_VM_ID = re.compile(r"^vm_[0-9a-f]{16}$")


@router.get(PREFIX + "/vms/{vm_id}")
async def vm_page(request: Request, caller: PageCaller, vm_id: str) -> Response:
    """One VM: readiness timeline, claim trace, evidence, the live console, the agent, destroy."""
    if caller is None:
        return to_login(request)
    if not _VM_ID.match(vm_id):
        raise NotFound(f"no VM {vm_id!r}", code="unknown_vm")
    admin = caller.kind is TokenKind.ADMIN
    return render(request, "vm.html", caller, "VM", admin=admin, vm_id=vm_id)


@router.get(f"{PREFIX}/playground")
async def playground_page(
    request: Request, caller: PageCaller, user: str | None = None
) -> Response:
    """Run a prompt on one provider or several side by side (POST /api/prompts, /perspectives)."""
    if caller is None:
        return to_login(request)
    return render(
        request,
        "playground.html",
        caller,
        "Playground",
        user_id=_acts_for(caller, user),
        can_pick=caller.kind is not TokenKind.USER,
        providers=provider_cards(),
    )


@router.get(PREFIX + "/static/{name}")
async def static_file(name: str) -> FileResponse:
    if name not in STATIC:  # only the files that were there at start: no path tricks
        raise NotFound(f"no static file {name!r}", code="not_found")
    response = FileResponse(STATIC_DIR / name)
    # The URL carries the content hash (static_url): a changed file is a new URL.
    response.headers["Cache-Control"] = "public, max-age=86400"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


@router.get("/favicon.ico")
async def favicon() -> Response:
    return RedirectResponse(static_url("favicon.svg"), status_code=301)
