"""Microsoft's Python SDK for Graph (PyPI msgraph-sdk) against calbridge's
fake Graph: a client no one on the project wrote walks the fake through what
a calendar bridge does, and every answer must parse into the SDK's models.

Run by tests/tests/e2e/graph_sdk.rs with the fake's base URL, a registered
OAuth client and user, and the certificate of a small HTTPS endpoint this
script serves for subscription validation (the fake validates notification
URLs over HTTPS only, trusting the CA the test gave it):

  - sign-in: the authorization code flow with PKCE at the fake's identity
    platform, for a real access token the SDK sends as a bearer token;
  - delta: rounds over calendarView/delta with `Prefer:
    odata.maxpagesize=2` following each nextLink (empty pages included) to
    the deltaLink; after changes, the next round from the deltaLink shows
    them, a deleted event as `@removed`;
  - throttling: a 429 with `Retry-After` injected through the control API,
    which the SDK's retry handler waits out before its one retry;
  - events: create (POST), get, update (PATCH), delete, and a 404 after;
  - subscriptions: create (with the validationToken handshake to this
    script's endpoint), list, get, renew (PATCH), delete, and a 404 after.

Every answer is checked against the model the SDK parsed it into: a
property the model does not know (left in `additional_data`; `@`
annotations aside), or a value the SDK read as nothing, fails the run. On
success it prints one JSON line of what it saw; on failure it exits 1
naming the step.
"""

import argparse
import asyncio
import base64
import datetime as dt
import enum
import hashlib
import json
import secrets
import ssl
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import AnonymousAuthenticationProvider
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_abstractions.serialization import Parsable
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.date_time_time_zone import DateTimeTimeZone
from msgraph.generated.models.event import Event
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.subscription import Subscription
from msgraph.generated.users.item.calendars.item.calendar_view.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.graph_request_adapter import options as GRAPH_OPTIONS
from msgraph_core import GraphClientFactory

SCOPES = "offline_access User.Read Calendars.ReadWrite"
PAGE_SIZE = 2
RETRY_AFTER = 2


class CheckFailed(Exception):
    """A step saw something other than what Graph would answer."""


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


# --- answers against the SDK's models -------------------------------------

_FIELDS = {}


class _Probe:
    """A parse node whose every read returns itself, to learn which
    attribute a model's deserializer for a JSON name sets."""

    def __getattr__(self, name):
        return lambda *a, **k: self


def fields_of(model):
    """JSON name -> attribute name, for the model's class."""
    cls = type(model)
    if cls not in _FIELDS:
        probe, blank = _Probe(), cls()
        found = {}
        for name, read in blank.get_field_deserializers().items():
            before = dict(vars(blank))
            read(probe)
            for attr, value in vars(blank).items():
                if value is probe and before.get(attr) is not probe:
                    found[name] = attr
        _FIELDS[cls] = found
    return _FIELDS[cls]


def strict(parsed, raw, where, problems):
    """Records where `parsed` (the SDK's model) lost or did not know part of
    `raw` (the JSON it was parsed from)."""
    if raw is None:
        return
    if isinstance(raw, list):
        if not isinstance(parsed, list) or len(parsed) != len(raw):
            problems.append(f"{where}: a list of {len(raw)} parsed as {parsed!r}")
            return
        for i, (p, r) in enumerate(zip(parsed, raw)):
            strict(p, r, f"{where}[{i}]", problems)
        return
    if isinstance(raw, dict):
        if not isinstance(parsed, Parsable):
            problems.append(f"{where}: an object parsed as {type(parsed).__name__}")
            return
        names = fields_of(parsed)
        extra = sorted(k for k in (parsed.additional_data or {}) if not k.startswith("@"))
        if extra:
            problems.append(
                f"{where}: properties {type(parsed).__name__} does not have: {extra}"
            )
        for key, value in raw.items():
            if key in names:
                strict(getattr(parsed, names[key]), value, f"{where}.{key}", problems)
        return
    if parsed is None:
        problems.append(f"{where}: {raw!r} was read as nothing")
    elif isinstance(parsed, enum.Enum):
        if str(parsed.value).lower() != str(raw).lower():
            problems.append(f"{where}: {raw!r} was read as {parsed.value!r}")
    elif isinstance(raw, str) and isinstance(parsed, str) and parsed != raw:
        problems.append(f"{where}: {raw!r} was read as {parsed!r}")


class Graph:
    """The SDK's client over the fake, keeping the last JSON answer."""

    def __init__(self, base, token):
        self.last_raw = None

        async def keep(response):
            await response.aread()
            kind = response.headers.get("content-type", "")
            self.last_raw = response.json() if "json" in kind and response.content else None

        http = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {token}"},
            event_hooks={"response": [keep]},
            trust_env=False,
            timeout=30,
        )
        adapter = GraphRequestAdapter(
            AnonymousAuthenticationProvider(),
            client=GraphClientFactory.create_with_default_middleware(
                client=http, options=GRAPH_OPTIONS
            ),
        )
        adapter.base_url = f"{base}/v1.0"
        self.client = GraphServiceClient(request_adapter=adapter)

    def check(self, parsed, what):
        """`parsed` must hold all of the last answer."""
        expect(parsed is not None, f"{what}: the SDK parsed no model")
        problems = []
        strict(parsed, self.last_raw, what, problems)
        expect(not problems, f"{what}: the answer does not fit the SDK's model:\n  "
               + "\n  ".join(problems))
        return parsed


async def not_found(call, what):
    try:
        await call
    except APIError as e:
        expect(e.response_status_code == 404, f"{what}: {e}")
        return
    raise CheckFailed(f"{what}: answered, not 404")


# --- the fake's identity platform and control API --------------------------


def sign_in(base, client_id, secret, redirect, user):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest())
    with httpx.Client(trust_env=False, follow_redirects=False) as h:
        consent = h.get(
            f"{base}/organizations/oauth2/v2.0/authorize",
            params={
                "client_id": client_id,
                "response_type": "code",
                "redirect_uri": redirect,
                "scope": SCOPES,
                "code_challenge": challenge.decode().rstrip("="),
                "code_challenge_method": "S256",
                "login_hint": user,
                "state": "sdk",
            },
        )
        expect(consent.status_code == 302, f"authorize answered {consent.status_code}")
        back = urllib.parse.urlparse(consent.headers["location"])
        code = urllib.parse.parse_qs(back.query)["code"][0]
        token = h.post(
            f"{base}/organizations/oauth2/v2.0/token",
            data={
                "client_id": client_id,
                "client_secret": secret,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
                "scope": SCOPES,
            },
        )
        expect(token.status_code == 200, f"token answered {token.status_code}: {token.text}")
        return token.json()["access_token"]


class Control:
    """What the test does as the user in Outlook, or as Microsoft."""

    def __init__(self, base, user):
        self.base = f"{base}/fake/v1"
        self.user = urllib.parse.quote(user, safe="")
        self.http = httpx.Client(trust_env=False, timeout=30)

    def call(self, method, path, body=None):
        r = self.http.request(method, f"{self.base}{path}", json=body)
        expect(r.is_success, f"control {method} {path}: {r.status_code} {r.text}")
        return r.json() if r.content else None

    def insert(self, body):
        return self.call("POST", f"/users/{self.user}/events", body)

    def patch(self, id, body):
        return self.call("PATCH", f"/users/{self.user}/events/{urllib.parse.quote(id, safe='')}", body)

    def delete(self, id):
        self.call("DELETE", f"/users/{self.user}/events/{urllib.parse.quote(id, safe='')}")

    def stats(self):
        return self.call("GET", "/stats")


def at(day, hour):
    """A timed Graph dateTimeTimeZone, UTC, `day` days from today."""
    t = dt.datetime.now(dt.timezone.utc).replace(hour=hour, minute=0, second=0, microsecond=0)
    return (t + dt.timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%S")


def outlook_event(subject, day):
    return {
        "subject": subject,
        "start": {"dateTime": at(day, 10), "timeZone": "UTC"},
        "end": {"dateTime": at(day, 11), "timeZone": "UTC"},
    }


# --- the steps -------------------------------------------------------------


async def delta_round(g, calendar, delta_link=None):
    """One delta round, page by page; returns (items, deltaLink, pages,
    empty pages)."""
    builder = g.client.me.calendars.by_calendar_id(calendar).calendar_view.delta

    def config(query=None):
        c = RequestConfiguration(query_parameters=query)
        c.headers.add("Prefer", f"odata.maxpagesize={PAGE_SIZE}")
        return c

    if delta_link is None:
        today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        query = DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
            start_date_time=(today - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            end_date_time=(today + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        page = await builder.get(request_configuration=config(query))
    else:
        page = await builder.with_url(delta_link).get(request_configuration=config())
    items, pages, empty = [], 0, 0
    while True:
        g.check(page, f"delta page {pages + 1}")
        pages += 1
        expect(len(page.value or []) <= PAGE_SIZE, f"a page of {len(page.value)} > {PAGE_SIZE}")
        empty += not page.value
        items.extend(page.value or [])
        if page.odata_next_link:
            expect(not page.odata_delta_link, "a page with both a nextLink and a deltaLink")
            expect(pages < 100, "more than 100 delta pages")
            page = await builder.with_url(page.odata_next_link).get(request_configuration=config())
            continue
        expect(page.odata_delta_link, "the last page has no deltaLink")
        return items, page.odata_delta_link, pages, empty


async def delta(g, control, calendar, seen):
    seeded = [control.insert(outlook_event(f"seeded {i}", i + 1))["id"] for i in range(5)]
    items, link, pages, empty = await delta_round(g, calendar)
    ids = {e.id for e in items}
    expect(set(seeded) <= ids, f"the first round missed {set(seeded) - ids}")
    expect(pages >= 3, f"5 events in {pages} pages of {PAGE_SIZE}")
    expect(empty >= 1, "no empty page with a nextLink (the fake serves one every third page)")
    for e in items:
        expect(e.subject and e.start and e.start.date_time, f"a delta item without its content: {e}")
    seen.update(first_round_pages=pages, first_round_empty_pages=empty)

    gone, changed = seeded[0], seeded[1]
    control.delete(gone)
    control.patch(changed, {"subject": "changed in Outlook"})
    added = control.insert(outlook_event("added in Outlook", 3))["id"]
    items, link, pages, _ = await delta_round(g, calendar, link)
    by_id = {e.id: e for e in items}
    removed = [e for e in items if (e.additional_data or {}).get("@removed")]
    expect(gone in by_id, "the deleted event is not in the next round")
    expect(
        by_id[gone].additional_data["@removed"].get("reason") == "deleted",
        f"the deleted event is not @removed/deleted: {by_id[gone].additional_data}",
    )
    expect(by_id.get(changed) and by_id[changed].subject == "changed in Outlook",
           "the changed event is not in the next round with its new subject")
    expect(added in by_id, "the added event is not in the next round")
    expect(set(by_id) == {gone, changed, added}, f"the next round has more: {sorted(by_id)}")
    seen.update(second_round_pages=pages, removed=len(removed))
    items, _, _, _ = await delta_round(g, calendar, link)
    expect(not items, f"a round without changes lists {len(items)} items")
    return changed


async def throttled(g, control, event_id, seen):
    before = control.stats()
    control.call("POST", "/faults", {"status": 429, "retry_after": RETRY_AFTER, "method": "GET"})
    started = time.monotonic()
    got = g.check(await g.client.me.events.by_event_id(event_id).get(), "get after a 429")
    waited = time.monotonic() - started
    after = control.stats()
    expect(got.id == event_id, "the retried get answered another event")
    expect(waited >= RETRY_AFTER, f"the SDK retried after {waited:.2f} s, before Retry-After")
    expect(after["early_retries"] == before["early_retries"], "the fake saw a retry before Retry-After")
    sent = after["requests"][len(before["requests"]):]
    expect(len(sent) == 2 and sent[0] == sent[1], f"expected the 429 and one retry, the fake saw {sent}")
    seen.update(retry_waited_s=round(waited, 2))


async def crud(g, calendar, seen):
    events = g.client.me.calendars.by_calendar_id(calendar).events
    new = Event(
        subject="written by the SDK",
        body=ItemBody(content_type=BodyType.Text, content="from msgraph-sdk"),
        start=DateTimeTimeZone(date_time=at(4, 14), time_zone="UTC"),
        end=DateTimeTimeZone(date_time=at(4, 15), time_zone="UTC"),
        transaction_id=str(uuid.uuid4()),
    )
    created = g.check(await events.post(new), "create")
    expect(created.id and created.subject == "written by the SDK", f"create answered {created}")
    one = g.client.me.events.by_event_id(created.id)
    got = g.check(await one.get(), "get")
    expect(got.id == created.id and got.start.date_time.startswith(at(4, 14)),
           f"get answered {got.start}")
    patched = g.check(await one.patch(Event(subject="updated by the SDK")), "update")
    expect(patched.subject == "updated by the SDK", "update did not change the subject")
    expect(patched.change_key != created.change_key, "update kept the changeKey")
    await one.delete()
    await not_found(one.get(), "get after delete")
    seen.update(crud="ok")


class Webhook:
    """An HTTPS endpoint that echoes Graph's validationToken as text/plain
    and accepts notifications."""

    def __init__(self, cert, key):
        tokens, notified = [], []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
                if "validationToken" in q:
                    token = q["validationToken"][0].encode()
                    tokens.append(token)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(token)))
                    self.end_headers()
                    self.wfile.write(token)
                    return
                notified.append(body)
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/graph/notify"
        self.tokens, self.notified = tokens, notified
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


async def subscriptions(g, webhook, seen):
    def expiry(minutes):
        return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=minutes)).replace(microsecond=0)

    created = g.check(
        await g.client.subscriptions.post(
            Subscription(
                change_type="created,updated,deleted",
                notification_url=webhook.url,
                resource="/me/events",
                expiration_date_time=expiry(60),
                client_state="sdk-check",
            )
        ),
        "subscription create",
    )
    expect(created.id, "the subscription has no id")
    expect(webhook.tokens, "the fake created a subscription without validating its URL")
    expect(created.notification_url == webhook.url and created.resource == "/me/events",
           f"create answered {created}")
    listed = g.check(await g.client.subscriptions.get(), "subscription list")
    expect(created.id in {s.id for s in listed.value or []}, "the subscription is not listed")
    one = g.client.subscriptions.by_subscription_id(created.id)
    got = g.check(await one.get(), "subscription get")
    expect(got.id == created.id and got.client_state == "sdk-check", f"get answered {got}")
    renewed = g.check(await one.patch(Subscription(expiration_date_time=expiry(120))),
                      "subscription renew")
    expect(renewed.expiration_date_time > created.expiration_date_time,
           f"renewal kept the expiry {renewed.expiration_date_time}")
    await one.delete()
    await not_found(one.get(), "subscription get after delete")
    seen.update(subscriptions="ok", validations=len(webhook.tokens))


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the fake's base URL, http://ADDR")
    p.add_argument("--client-id", required=True)
    p.add_argument("--client-secret", required=True)
    p.add_argument("--redirect-uri", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--webhook-cert", help="PEM certificate for 127.0.0.1 (no subscriptions without)")
    p.add_argument("--webhook-key", help="its PEM private key")
    a = p.parse_args()
    seen = {}
    step = "sign-in"
    try:
        g = Graph(a.base, sign_in(a.base, a.client_id, a.client_secret, a.redirect_uri, a.user))
        control = Control(a.base, a.user)
        step = "calendars"
        calendars = g.check(await g.client.me.calendars.get(), "calendars")
        default = [c for c in calendars.value if c.is_default_calendar]
        expect(len(default) == 1, "not one default calendar")
        calendar = default[0].id
        step = "delta"
        changed = await delta(g, control, calendar, seen)
        step = "throttling"
        await throttled(g, control, changed, seen)
        step = "events"
        await crud(g, calendar, seen)
        if a.webhook_cert:
            step = "subscriptions"
            await subscriptions(g, Webhook(a.webhook_cert, a.webhook_key), seen)
    except CheckFailed as e:
        print(f"graph_sdk_check: {step}: {e}", file=sys.stderr)
        sys.exit(1)
    except Exception as e:  # the SDK refused an answer (APIError, a parse error)
        traceback.print_exc()
        print(f"graph_sdk_check: {step}: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps(seen))


if __name__ == "__main__":
    asyncio.run(main())
