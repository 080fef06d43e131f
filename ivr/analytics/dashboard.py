"""`/dashboard`: one page for operators, and its sign-in.

Without `IVR_API_TOKEN` the page answers only a client on this machine. With it, an
operator signs in once through a form that POSTs the token (never in a URL, where proxy
logs and browser history would keep it) and gets a session cookie: HttpOnly (no script
reads it), SameSite=Strict (no other site's page sends it), Secure when we are served
over https. The page's own fetches of `/api` carry that cookie.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog
from aiohttp import web

from ivr.server import access
from ivr.server.services import SERVICES

log = structlog.get_logger("ivr.dashboard")

STATIC = Path(__file__).with_name("static")
DASHBOARD = STATIC / "dashboard.html"
SIGN_IN = STATIC / "sign-in.html"
_WRONG = '<p class="error" role="alert">That is not the API token.</p>'
# Relative, so they hold under any prefix a proxy adds: the form posts to the page's own
# URL, and sign-out (/dashboard/sign-out) leads back up to it.
_SIGNED_IN = "dashboard"
_SIGNED_OUT = "../dashboard"


def _page_headers() -> dict[str, str]:
    return {"Content-Type": "text/html; charset=utf-8",
            "Content-Security-Policy": access.PAGE_POLICY}


def _sign_in_page(*, wrong: bool) -> web.Response:
    html = SIGN_IN.read_text().replace("<!--error-->", _WRONG if wrong else "")
    return web.Response(status=401, text=html, headers=_page_headers())


async def dashboard(request: web.Request) -> web.StreamResponse:
    """The page (every asset inline, no CDN) to an operator; else the sign-in form."""
    settings = request.app[SERVICES].settings
    if access.operator(request):
        return web.FileResponse(DASHBOARD, headers=_page_headers())
    if not settings.api_token:
        raise access.refused(settings, "/dashboard")
    return _sign_in_page(wrong=False)


async def sign_in(request: web.Request) -> web.Response:
    """`POST /dashboard` (the form): the right token gets a session cookie and the page."""
    services = request.app[SERVICES]
    token = services.settings.api_token
    if not token:
        raise web.HTTPNotFound(text="no IVR_API_TOKEN is set: there is nothing to sign in to\n")
    given = (await request.post()).get("token")
    if not isinstance(given, str) or not access.matches(given, token):
        services.counters["dashboard_sign_in_failed"] += 1
        log.warning("dashboard_sign_in_failed", client=request.remote)
        return _sign_in_page(wrong=True)
    response = web.Response(status=303, headers={"Location": _SIGNED_IN})
    response.set_cookie(
        access.SESSION_COOKIE, access.SessionSigner.for_token(token).issue(time.time()),
        max_age=access.SESSION_TTL_S, path="/", httponly=True, samesite="Strict",
        secure=access.public_base(services.settings, request).startswith("https://"),
    )
    return response


async def sign_out(request: web.Request) -> web.Response:
    response = web.Response(status=303, headers={"Location": _SIGNED_OUT})
    response.del_cookie(access.SESSION_COOKIE, path="/")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get("/dashboard", dashboard)
    app.router.add_post("/dashboard", sign_in)
    app.router.add_post("/dashboard/sign-out", sign_out)
