"""The dashboard's HTML pages and its login form."""

from __future__ import annotations

import html
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from anvyl.dashboard import auth
from anvyl.dashboard.state import STATIC_DIR, state_of

PAGES_DIR = Path(__file__).parent / "pages"
NAV = (
    ("models", "/models", "Models"),
    ("hosts", "/hosts", "Hosts"),
    ("start", "/start", "Start a model"),
    ("playground", "/playground", "Playground"),
)

router = APIRouter()


def render_page(page: str, title: str, *, data: dict[str, str] | None = None) -> HTMLResponse:
    """The layout around one page's body; `data` becomes data-* attributes of <main>."""
    layout = (PAGES_DIR / "layout.html").read_text()
    body = (PAGES_DIR / f"{page}.html").read_text()
    current = ' aria-current="page"'
    nav = "\n".join(
        f'<a href="{href}"{current if key == page else ""}>{label}</a>' for key, href, label in NAV
    )
    attrs = " ".join(f'data-{k}="{html.escape(v)}"' for k, v in (data or {}).items())
    script = ""
    if (STATIC_DIR / f"{page}.js").is_file():
        script = f'<script src="/static/{page}.js" defer></script>'
    text = (
        layout.replace("{{title}}", html.escape(title))
        .replace("{{script}}", script)
        .replace("{{nav}}", nav)
        .replace("{{page}}", page)
        .replace("{{data}}", attrs)
        .replace("{{body}}", body)
    )
    return HTMLResponse(text, headers={"Cache-Control": "no-store"})


@router.get("/", include_in_schema=False)
async def index() -> RedirectResponse:
    """The models page is the home page."""
    return RedirectResponse("/models", status_code=303)


@router.get("/models", include_in_schema=False)
async def models_page() -> HTMLResponse:
    """Every deployment with live charts."""
    return render_page("models", "Models")


@router.get("/models/{name}", include_in_schema=False)
async def model_page(name: str) -> HTMLResponse:
    """One deployment: settings, labels, health history, logs, stop."""
    return render_page("detail", name, data={"name": name})


@router.get("/hosts", include_in_schema=False)
async def hosts_page() -> HTMLResponse:
    """Every host with its usage and models."""
    return render_page("hosts", "Hosts")


@router.get("/start", include_in_schema=False)
async def start_page() -> HTMLResponse:
    """The start form."""
    return render_page("start", "Start a model")


@router.get("/playground", include_in_schema=False)
async def playground_page() -> HTMLResponse:
    """The chat playground."""
    return render_page("playground", "Playground")


@router.get("/login", include_in_schema=False)
async def login_page(request: Request) -> Response:
    """The login form (only useful when a token is configured)."""
    if state_of(request).token is None:
        return RedirectResponse("/models", status_code=303)
    return _login_form(request.query_params.get("next", "/"), "")


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    """Check the token; set the session cookie and go back, or show the form again."""
    token = state_of(request).token
    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    target = auth.safe_next((form.get("next") or ["/"])[0])
    if token is None:
        return RedirectResponse(target, status_code=303)
    given = (form.get("token") or [""])[0].strip()
    if not auth.token_matches(token, given):
        return _login_form(target, "That token is not right.", status=401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        auth.session_value(token),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout() -> Response:
    """Drop the session cookie."""
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(auth.SESSION_COOKIE, path="/")
    return response


def _login_form(target: str, error: str, status: int = 200) -> HTMLResponse:
    page = render_page("login", "Log in", data={"next": auth.safe_next(target)})
    body = page.body.decode()
    body = body.replace("{{next}}", html.escape(auth.safe_next(target)))
    body = body.replace("{{error}}", html.escape(error))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})
