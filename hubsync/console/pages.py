"""The console's pages: server-rendered HTML over the same data the API answers, at `/`.

Each page is rendered here in full (what a person needs is in the HTML the server sends); the
little JavaScript in ``static/console.js`` signs in, calls the API for what changes state, and
keeps the pages live from the status stream (`/api/v1/events`) by fetching the fragments below
again, so every number is formatted in one place: here.

Pages need the session cookie the sign-in sets; without one they send the browser to `/signin`.
Nothing in a page comes from the internet, and no page ever holds a HubSpot token.
"""

from __future__ import annotations

import html
import re
import time
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from events.activations import Activations, ActivationSpec
from events.catalog import Catalog as CatalogState
from events.model import InvalidEvent, normalise_email
from events.projections import Projections
from events.property_keys import PropertyKey
from events.streams import ensure_partitions
from hubsync.api import schemas as s
from hubsync.api.auth import SESSION_COOKIE
from hubsync.api.contacts import lookup_contact
from hubsync.api.deadletters import read_dead_letters
from hubsync.api.protocol import Context, activation_view, all_activations
from hubsync.token_check import REQUIRED_SCOPES

__all__ = ["console_routes"]

HERE = Path(__file__).parent
DASH = "\u2013"  # what a table shows for "not known"
GROUP_LABEL = "Raptor Smart Advisor CDP"
_PLACEHOLDER = re.compile(r"{{({)?\s*(\w+)\s*}?}}")
# Scripts and styles only from this server; no framing; no referrer leaks an email in a URL.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
SCOPE_HELP = {
    "crm.objects.contacts.read": "read contacts (to find them by email)",
    "crm.objects.contacts.write": "write contacts (to set the properties)",
    "crm.schemas.contacts.read": "read contact properties (to check they exist)",
    "crm.schemas.contacts.write": "create contact properties and their group",
}


# --- rendering -------------------------------------------------------------------------------------


def h(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


@cache
def _template(name: str) -> str:
    return (HERE / "templates" / name).read_text()


def render(template: str, /, **values: object) -> str:
    """``{{x}}`` is replaced escaped, ``{{{x}}}`` as it is (HTML built here)."""

    def fill(match: re.Match[str]) -> str:
        value = values.get(match.group(2), "")
        return str(value) if match.group(1) else h(value)

    return _PLACEHOLDER.sub(fill, _template(template))


def page(title: str, body: str, *, name: str, signed_in: bool = True) -> HTMLResponse:
    return HTMLResponse(
        render(
            "base.html",
            title=title,
            page=name,
            nav=_nav() if signed_in else "",
            body=body,
            version=version("hubsync"),
        ),
        headers=_HEADERS,
    )


def _nav() -> str:
    return """<nav aria-label="Main">
  <a href="/">Activations</a>
  <a href="/activations/new" class="button">New activation</a>
  <form class="search" action="/contacts" method="get" role="search">
    <label for="contact-search">Find a contact</label>
    <input id="contact-search" name="email" type="email" placeholder="name@example.com" required>
    <button type="submit" class="secondary">Look up</button>
  </form>
  <button type="button" id="sign-out" class="link">Sign out</button>
</nav>"""


def number(value: str | float | None) -> str:
    """A count with thousands separators (what status holds: a number, or text that is one); a
    dash when unknown, the text itself when it is no number."""
    if value is None or value == "":
        return DASH
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return h(value)


def duration(seconds: str | float | None) -> str:
    """3 s, 4 min 10 s, 2 h 5 min; a dash when unknown."""
    if seconds is None:
        return DASH
    s_ = float(seconds)
    if s_ < 1:
        return f"{s_:.2f} s"
    if s_ < 60:
        return f"{s_:.0f} s"
    if s_ < 3600:
        return f"{int(s_ // 60)} min {int(s_ % 60)} s"
    return f"{int(s_ // 3600)} h {int(s_ % 3600 // 60)} min"


_STATE_WORDS = {
    "running": "Running",
    "paused": "Paused",
    "degraded": "Needs attention",
    "stale": "Not reporting",
    "starting": "Starting",
    "deleted": "Deleted",
}


def state_badge(state: str) -> str:
    """The state in words (colour only repeats it), with a symbol for a quick scan."""
    symbol = {"running": "●", "paused": "❚❚", "degraded": "▲", "stale": "○"}.get(state, "◌")
    return (
        f'<span class="badge state-{h(state)}"><span aria-hidden="true">{symbol}</span> '
        f"{h(_STATE_WORDS.get(state, state))}</span>"
    )


def backfill_totals(status: dict[str, Any]) -> tuple[int, int, float | None]:
    backfills = (status.get("backfills") or {}).values()
    done = sum(int(b.get("done") or 0) for b in backfills)
    total = sum(int(b.get("total") or 0) for b in backfills)
    etas = [b["eta_s"] for b in backfills if b.get("eta_s") is not None and b["done"] < b["total"]]
    return done, total, max(etas) if etas else None


def progress_bar(done: int, total: int, label: str) -> str:
    if total <= 0:
        return '<span class="muted">nothing to backfill</span>'
    share = min(100, 100 * done // total)
    words = f"{done:,} of {total:,} ({share}%)"
    return (
        f'<progress max="{total}" value="{min(done, total)}" aria-label="{h(label)}: {words}">'
        f"</progress> <span>{words}</span>"
    )


def backfill_cell(status: dict[str, Any]) -> str:
    done, total, eta = backfill_totals(status)
    if total <= 0:
        return f'<span class="muted">{DASH}</span>'
    cell = progress_bar(done, total, "backfill")
    if done >= total:
        return cell + ' <span class="ok">done</span>'
    return cell + f'<br><span class="muted">about {duration(eta)} left</span>'


def calls_cell(budget: dict[str, Any] | None) -> str:
    if not budget:
        return '<span class="muted">no calls yet</span>'
    limit, left = budget.get("window_limit"), budget.get("window_left")
    used = max(0, int(limit) - int(left)) if limit is not None and left is not None else None
    text = f"{number(used)} / {number(limit)} <span class='muted'>this 10 s</span>"
    daily, daily_left = budget.get("daily_limit"), budget.get("daily_left")
    if daily is not None and daily_left is not None:
        text += f"<br>{number(max(0, daily - daily_left))} / {number(daily)} <span class='muted'>today</span>"
    return text


def last_error(status: dict[str, Any], view: s.Activation) -> str:
    text = status.get("last_error") or (view.pause_reason if view.paused else "")
    return (
        f'<span class="error-text">{h(text)}</span>' if text else '<span class="muted">none</span>'
    )


def activation_row(view: s.Activation) -> str:
    st = view.status
    return f"""<tr id="row-{h(view.id)}" data-activation="{h(view.id)}">
  <th scope="row"><a href="/activations/{quote(view.id)}">{h(view.name)}</a><br><span class="muted mono">{h(view.id)}</span></th>
  <td>{state_badge(st.get("state", "starting"))}</td>
  <td>{number(st.get("written"))} <span class="muted">written</span><br>{number(st.get("pending"))} <span class="muted">pending</span></td>
  <td>{backfill_cell(st)}</td>
  <td>{calls_cell(view.budget)}</td>
  <td>{duration(st.get("lag_s"))}</td>
  <td>{last_error(st, view)}</td>
</tr>"""


def activations_table(views: list[s.Activation]) -> str:
    rows = "\n".join(activation_row(v) for v in sorted(views, key=lambda v: v.name.lower()))
    empty = (
        ""
        if views
        else (
            '<tr class="empty"><td colspan="7">No activations yet. '
            '<a href="/activations/new">Create the first one</a>: it takes a HubSpot token and a '
            "few minutes.</td></tr>"
        )
    )
    return f"""<table class="grid" id="activations">
<caption class="sr-only">Activations and their live status</caption>
<thead><tr><th scope="col">Activation</th><th scope="col">State</th><th scope="col">Contacts written / pending</th>
<th scope="col">Backfill</th><th scope="col">HubSpot calls used</th><th scope="col">Lag</th><th scope="col">Last error</th></tr></thead>
<tbody>{rows}{empty}</tbody></table>"""


# --- pages -------------------------------------------------------------------------------------------


def _signed_in(ctx: Context, request: Request) -> bool:
    cookie = request.cookies.get(SESSION_COOKIE)
    return cookie is not None and ctx.auth.session_valid(cookie)


def _to_sign_in(request: Request) -> Response:
    return RedirectResponse(f"/signin?next={quote(request.url.path)}", status_code=303)


async def sign_in_page(ctx: Context, request: Request) -> Response:
    nxt = request.query_params.get("next") or "/"
    if not nxt.startswith("/") or nxt.startswith("//"):
        nxt = "/"  # only places on this server
    body = f"""<section class="card narrow">
<h1>Sign in</h1>
<p>Enter the hubsync API key once; the console then keeps a session for 12 hours.
On the machine running hubsync, <code>hubsync api-key</code> prints it.</p>
<form id="sign-in" data-next="{h(nxt)}">
  <label for="api-key">API key</label>
  <input id="api-key" name="api_key" type="password" autocomplete="current-password" required autofocus>
  <p id="sign-in-error" class="error-text" role="alert"></p>
  <button type="submit">Sign in</button>
</form>
</section>"""
    return page("Sign in", body, name="signin", signed_in=False)


async def home_page(ctx: Context, request: Request) -> Response:
    if not _signed_in(ctx, request):
        return _to_sign_in(request)
    views = await all_activations(ctx)
    body = f"""<div class="heading"><h1>Activations</h1>
<a class="button" href="/activations/new">New activation</a></div>
<p class="lede">Each activation keeps a HubSpot account's contacts in step with CDP audiences and
calculated attributes. This page updates by itself.</p>
{activations_table(views)}
<p class="muted" id="live-note" aria-live="polite"></p>"""
    return page("Activations", body, name="home")


async def row_fragment(ctx: Context, request: Request) -> Response:
    if not _signed_in(ctx, request):
        return Response(status_code=401)
    spec = await _spec(ctx, request.path_params["id"])
    if spec is None:
        return Response(status_code=404)
    return HTMLResponse(activation_row(await activation_view(ctx, spec)), headers=_HEADERS)


async def _spec(ctx: Context, activation_id: str) -> ActivationSpec | None:
    state = Activations()
    await state.refresh(ctx.redis, ctx.keys)
    return state.by_id.get(activation_id)


async def new_activation_page(ctx: Context, request: Request) -> Response:
    if not _signed_in(ctx, request):
        return _to_sign_in(request)
    catalog = CatalogState()
    await catalog.refresh(ctx.redis, ctx.keys)
    partitions = await ensure_partitions(ctx.redis, ctx.keys, ctx.config.partitions)
    projections = Projections(ctx.redis, ctx.keys)
    audiences = []
    for a in sorted(catalog.audiences.values(), key=lambda a: a.name.lower()):
        members = await projections.count_members(a.audience_id, partitions)
        audiences.append(
            f"""<li data-search="{h((a.name + " " + a.audience_id).lower())}"><label>
<input type="checkbox" name="audiences" value="{h(a.audience_id)}"> <span class="name">{h(a.name)}</span>
<span class="muted mono">{h(a.audience_id)}</span> <span class="count">{members:,} members</span></label></li>"""
        )
    attributes = []
    for t in sorted(catalog.attributes.values(), key=lambda t: t.name.lower()):
        contacts = await projections.count_values(t.attribute_id, partitions)
        attributes.append(
            f"""<li data-search="{h((t.name + " " + t.attribute_id).lower())}"><label>
<input type="checkbox" name="attributes" value="{h(t.attribute_id)}"> <span class="name">{h(t.name)}</span>
<span class="muted mono">{h(t.attribute_id)}</span> <span class="muted">{h(t.value_type)}</span>
<span class="count">{contacts:,} contacts with a value</span></label></li>"""
        )
    scopes = "\n".join(
        f"<li><code>{h(scope)}</code>: {h(SCOPE_HELP.get(scope, ''))}</li>"
        for scope in REQUIRED_SCOPES
    )
    none_defined = '<li class="muted">The CDP has defined none yet.</li>'
    body = render(
        "new.html",
        scopes=scopes,
        audiences="\n".join(audiences) or none_defined,
        attributes="\n".join(attributes) or none_defined,
        group=GROUP_LABEL,
    )
    return page("New activation", body, name="new")


async def _properties_table(ctx: Context, view: s.Activation) -> str:
    from hubsync.operations import plan_activation

    planned = await plan_activation(
        ctx.redis,
        ctx.keys,
        plan=view.plan,
        audiences=tuple(view.audiences),
        attributes=tuple(view.attributes),
    )
    created: dict[str, str] = view.status.get("properties") or {}
    rows = []
    for p in planned.properties:
        name = created.get(p["key"])
        where = (
            f"<code>{h(name)}</code>"
            if name
            else f'<code>{h(p["name"])}</code> <span class="muted">(not created yet)</span>'
        )
        key = PropertyKey.parse(p["key"])
        ident, what = key.cdp_id, "audience" if key.is_audience else "attribute"
        rows.append(
            f"""<tr><td>{h(p["label"])}</td><td>{where}</td><td>{h(p["type"])} / {h(p["fieldType"])}</td>
<td>{what} <span class="mono">{h(ident)}</span></td>
<td><button type="button" class="link danger-text" data-method="DELETE"
 data-path="/api/v1/activations/{h(view.id)}/{what}s/{h(ident)}" data-after="reload"
 data-title="Stop syncing this {what}?"
 data-confirm="hubsync stops writing {h(p["label"])} for this activation. Its HubSpot property {h(name or p["name"])} and the values it holds stay in place; nothing is archived or cleared. (When the CDP deletes an audience, hubsync archives its property instead.)"
 >Stop syncing</button></td></tr>"""
        )
    if not rows:
        rows.append('<tr><td colspan="5" class="muted">No audiences or attributes.</td></tr>')
    return f"""<table class="grid">
<caption>HubSpot contact properties in the group “{GROUP_LABEL}”</caption>
<thead><tr><th scope="col">Label</th><th scope="col">Internal name</th><th scope="col">Type</th>
<th scope="col">From the CDP</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
<tbody>{"".join(rows)}</tbody></table>"""


def status_panel(view: s.Activation) -> str:
    """The activation page's live part: state, numbers, backfills, and the actions that fit."""
    st = view.status
    backfills = []
    for key, b in sorted((st.get("backfills") or {}).items()):
        done, total = int(b.get("done") or 0), int(b.get("total") or 0)
        eta = (
            '<span class="ok">done</span>'
            if done >= total
            else f"about {duration(b.get('eta_s'))} left"
        )
        backfills.append(
            f"<li><span class='mono'>{h(key)}</span> {progress_bar(done, total, key)} {eta}</li>"
        )
    state = st.get("state", "starting")
    aid = h(view.id)
    pause_or_resume = (
        f"""<button type="button" data-method="POST" data-path="/api/v1/activations/{aid}/resume"
 data-title="Resume this activation?" data-confirm="hubsync writes to HubSpot again, starting with the changes recorded while it was paused."
 data-after="refresh">Resume</button>"""
        if view.paused
        else f"""<button type="button" data-method="POST" data-path="/api/v1/activations/{aid}/pause"
 data-title="Pause this activation?" data-confirm="hubsync stops writing to HubSpot for this activation. Nothing in HubSpot changes; CDP changes keep being recorded and go out when you resume."
 data-after="refresh">Pause</button>"""
    )
    return f"""<div id="status-panel" data-state="{h(state)}">
<dl class="facts">
  <div><dt>State</dt><dd>{state_badge(state)}</dd></div>
  <div><dt>Pending contacts</dt><dd>{number(st.get("pending"))}
    <span class="muted">({number(st.get("pending_realtime"))} live, {number(st.get("pending_backfill"))} backfill, {number(st.get("in_flight"))} in flight)</span></dd></div>
  <div><dt>Contact writes accepted</dt><dd>{number(st.get("written"))} <span class="muted">({number(st.get("coalesced"))} changes coalesced away)</span></dd></div>
  <div><dt>HubSpot calls used</dt><dd>{calls_cell(view.budget)}</dd></div>
  <div><dt>Lag</dt><dd>{duration(st.get("lag_s"))}</dd></div>
  <div><dt>Last error</dt><dd>{last_error(st, view)}</dd></div>
</dl>
<h3>Backfill</h3>
<ul class="backfills">{"".join(backfills) or '<li class="muted">nothing to backfill yet</li>'}</ul>
<div class="actions" role="group" aria-label="Activation actions">
  {pause_or_resume}
  <button type="button" class="secondary" data-method="POST" data-path="/api/v1/activations/{aid}/resync"
   data-title="Send every value again?" data-confirm="hubsync writes every current value of this activation's audiences and attributes to HubSpot again, using API calls from the token's budget. Values in HubSpot end up as the CDP says."
   data-after="refresh">Resync</button>
  <button type="button" class="secondary" data-method="POST" data-path="/api/v1/activations/{aid}/verify"
   data-body='{{"rate": 10}}' data-title="Verify against HubSpot?" data-confirm="hubsync reads every contact's values back from HubSpot (10 calls per 10 seconds, read only) and reports what differs. Nothing in HubSpot changes."
   data-after="job">Verify</button>
  <button type="button" class="danger" data-method="DELETE" data-path="/api/v1/activations/{aid}"
   data-title="Delete this activation?" data-confirm="hubsync stops syncing and forgets this activation. In HubSpot nothing is removed: its properties and the values they hold stay in place (archive them in HubSpot if you no longer want them)."
   data-after="home">Delete</button>
</div>
<p id="job" class="muted" aria-live="polite"></p>
</div>"""


async def activation_page(ctx: Context, request: Request) -> Response:
    if not _signed_in(ctx, request):
        return _to_sign_in(request)
    spec = await _spec(ctx, request.path_params["id"])
    if spec is None:
        body = (
            f"<h1>No such activation</h1><p>There is no activation “{h(request.path_params['id'])}”. "
            '<a href="/">See all activations</a>.</p>'
        )
        response = page("Not found", body, name="missing")
        response.status_code = 404
        return response
    view = await activation_view(ctx, spec)
    ids_a, ids_t = set(spec.audiences), set(spec.attributes)
    letters, _, _ = await read_dead_letters(
        ctx.redis,
        ctx.keys,
        limit=20,
        match=lambda letter, raw: letter.audience_id in ids_a or letter.attribute_id in ids_t,
        max_scan=5000,
    )
    body = render(
        "activation.html",
        id=view.id,
        name=view.name,
        plan=view.plan,
        fingerprint=view.token_fingerprint,
        mode="update only (contacts HubSpot has)" if view.update_only else "create and update",
        base_url=view.base_url,
        status=status_panel(view),
        properties=await _properties_table(ctx, view),
        add_form=await _add_form(ctx, spec),
        dead_letters=dead_letters_table(letters),
        limit=(view.budget or {}).get("window_limit") or "",
    )
    return page(view.name, body, name="activation")


async def _add_form(ctx: Context, spec: ActivationSpec) -> str:
    catalog = CatalogState()
    await catalog.refresh(ctx.redis, ctx.keys)
    options = [
        f'<option value="audiences:{h(a.audience_id)}">Audience: {h(a.name)}</option>'
        for a in sorted(catalog.audiences.values(), key=lambda a: a.name.lower())
        if a.audience_id not in spec.audiences
    ] + [
        f'<option value="attributes:{h(t.attribute_id)}">Attribute: {h(t.name)}</option>'
        for t in sorted(catalog.attributes.values(), key=lambda t: t.name.lower())
        if t.attribute_id not in spec.attributes
    ]
    if not options:
        return '<p class="muted">It syncs everything the CDP defines.</p>'
    return f"""<form id="add-subscription" data-activation="{h(spec.activation_id)}" class="inline">
<label for="add-what">Sync one more</label>
<select id="add-what" name="what" required>{"".join(options)}</select>
<button type="submit" class="secondary">Add (its contacts are backfilled)</button></form>"""


async def status_fragment(ctx: Context, request: Request) -> Response:
    if not _signed_in(ctx, request):
        return Response(status_code=401)
    spec = await _spec(ctx, request.path_params["id"])
    if spec is None:
        return Response(status_code=404)
    return HTMLResponse(status_panel(await activation_view(ctx, spec)), headers=_HEADERS)


def dead_letters_table(
    letters: list[s.DeadLetter],
    empty: str = "None: every entry naming these audiences and attributes was usable.",
) -> str:
    if not letters:
        return f'<p class="muted">{h(empty)}</p>'
    rows = "".join(
        f"""<tr><td>{time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(d.at))} UTC</td><td>{h(d.reason)}</td>
<td>{h(d.email or DASH)}</td><td>{h(d.audience_id or d.attribute_id or DASH)}</td>
<td><details><summary>entry</summary><code class="raw">{h(d.raw[:600])}</code></details></td></tr>"""
        for d in letters
    )
    return f"""<table class="grid"><caption class="sr-only">Dead letters</caption>
<thead><tr><th scope="col">When</th><th scope="col">Why</th><th scope="col">Email</th><th scope="col">Audience / attribute</th><th scope="col">Entry</th></tr></thead>
<tbody>{rows}</tbody></table>"""


async def contact_page(ctx: Context, request: Request) -> Response:
    if not _signed_in(ctx, request):
        return _to_sign_in(request)
    raw = (request.query_params.get("email") or "").strip()
    try:
        email = normalise_email(raw)
    except InvalidEvent as exc:
        body = f"""<h1>Find a contact</h1><p class="error-text" role="alert">“{h(raw[:200])}”
is not an email address hubsync can look up: {h(exc.reason)}.</p>"""
        return page("Find a contact", body, name="contact")
    found = await lookup_contact(ctx, email, read_hubspot=True)
    return page(email, contact_view(found), name="contact")


def contact_view(c: s.ContactLookup) -> str:
    """The lookup side by side: CDP, pending, HubSpot, dead letters; differences in words."""
    cdp = "".join(
        f"<li>{h(a.name or a.id)}: <strong>{'member' if a.member else 'not a member'}</strong></li>"
        for a in c.audiences
    ) + "".join(
        f"<li>{h(t.name or t.id)}: <strong>{h(t.value) if t.value is not None else 'no value'}</strong></li>"
        for t in c.attributes
    )
    blocks = []
    for a in c.activations:
        if a.hubspot_error:
            hubspot_note = f'<p class="error-text">HubSpot was not read: {h(a.hubspot_error)}</p>'
        elif a.hubspot_found is False:
            hubspot_note = '<p class="warn-text">Not in HubSpot.</p>'
        else:
            hubspot_note = ""
        rows = "".join(
            f"""<tr><td><code>{h(p.property or "(not created yet)")}</code></td><td>{h(p.cdp if p.cdp is not None else "no value")}</td>
<td>{h(p.hubspot if p.hubspot is not None else ("nothing" if a.hubspot_read else "not read"))}</td>
<td>{"<span class='ok'>✓ same</span>" if p.in_step else ("<span class='error-text'>✗ differs</span>" if p.in_step is False else DASH)}</td></tr>"""
            for p in a.properties
        )
        pending = (
            "no change pending for anyone"
            if a.contact_pending is False
            else f"{number(a.pending)} contacts pending, {number(a.in_flight)} in flight (this one may be among them)"
        )
        differences = (
            "<ul class='differences'>"
            + "".join(f"<li>{h(d)}</li>" for d in a.differences)
            + "</ul>"
            if a.differences
            else (
                "<p class='ok'>HubSpot holds what the CDP says.</p>"
                if a.hubspot_read and a.hubspot_found
                else ""
            )
        )
        blocks.append(
            f"""<section class="card"><h3><a href="/activations/{quote(a.id)}">{h(a.name)}</a> {state_badge(a.state)}</h3>
<p><strong>Pending:</strong> {pending}</p>{hubspot_note}
<table class="grid"><thead><tr><th scope="col">HubSpot property</th><th scope="col">CDP says</th><th scope="col">HubSpot holds</th><th scope="col">Same?</th></tr></thead>
<tbody>{rows}</tbody></table>{differences}</section>"""
        )
    letters = dead_letters_table(c.dead_letters, "None: no unusable entry names this email.")
    return f"""<h1>Contact <span class="mono">{h(c.email)}</span></h1>
<div class="columns">
<section class="card"><h2>CDP</h2><ul>{cdp or '<li class="muted">The CDP says nothing about this contact.</li>'}</ul>
<p class="muted">Partition {c.partition}</p></section>
<section class="card"><h2>Dead letters naming this email</h2>{letters}
<p class="muted">{c.dead_letters_scanned:,} recent entries searched.</p></section>
</div>
<h2>Per activation: pending and HubSpot</h2>
{"".join(blocks) or '<p class="muted">No activations.</p>'}"""


def console_routes(ctx: Context) -> list[BaseRoute]:
    def bind(handler: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            return await handler(ctx, request)

        endpoint.__name__ = handler.__name__
        return endpoint

    return [
        Route("/", bind(home_page), methods=["GET"]),
        Route("/signin", bind(sign_in_page), methods=["GET"]),
        Route("/activations/new", bind(new_activation_page), methods=["GET"]),
        Route("/activations/{id}", bind(activation_page), methods=["GET"]),
        Route("/contacts", bind(contact_page), methods=["GET"]),
        Route("/fragments/rows/{id}", bind(row_fragment), methods=["GET"]),
        Route("/fragments/status/{id}", bind(status_fragment), methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
