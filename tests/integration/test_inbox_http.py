"""The inbox over HTTP (design §14): uvicorn serving ``cw.asgi()`` on a real port, requests
with httpx, the stream read as a browser reads it. Tokens: no token, a forged, tampered,
expired or other-purpose one is 401; a token never reads another recipient."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from chimeway import Chimeway
from chimeway.policy import InboxClaims, PreferenceScope, TokenSigner, UnsubscribeClaims
from tests.acceptance.conftest import wait_until
from tests.integration.conftest import count
from tests.integration.inbox_support import (  # noqa: F401 (serve_fixture: the fixture)
    SECRET,
    Serve,
    Stream,
    bearer,
    send,
    serve_fixture,
)

READ = "chimeway.notification.read"
ROUTES = [
    ("GET", "/v1/inbox"),
    ("GET", "/v1/inbox/counts"),
    ("POST", "/v1/inbox/mark"),
    ("GET", "/v1/inbox/stream"),
]


@pytest.fixture
def icw(make_cw: Callable[..., Chimeway]) -> Chimeway:
    return make_cw(secret=SECRET)


def call(base: str, method: str, path: str, token: str | None, **kw: Any) -> httpx.Response:
    headers = {} if token is None else bearer(token)
    if method == "POST":
        kw.setdefault("json", {"ids": "all", "action": "read"})
    return httpx.request(method, base + path, headers=headers, timeout=10, **kw)


def bad_tokens(cw: Chimeway) -> dict[str, str]:
    good = cw.inbox.token("t", "ana")
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    other = TokenSigner(["a different secret, long enough to sign tokens"])
    mine = TokenSigner([SECRET])
    head, _, tail = good.rpartition(".")
    return {
        "forged": other.sign_inbox(InboxClaims("t", "ana", past + dt.timedelta(days=1))),
        "tampered": f"{head}.{'A' if tail[0] != 'A' else 'B'}{tail[1:]}",
        "expired": cw.inbox.token("t", "ana", dt.timedelta(hours=1), now=past),
        "unsubscribe": mine.sign_unsubscribe(
            UnsubscribeClaims(
                "t", "ana", PreferenceScope(channel="email"), past + dt.timedelta(days=9)
            )
        ),
        "garbage": "not a token",
    }


def test_no_route_answers_without_a_valid_token(icw: Chimeway, serve: Serve) -> None:
    send(icw, "ana")
    base = serve(icw)
    for method, path in ROUTES:
        response = call(base, method, path, None)
        assert response.status_code == 401, path
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "an inbox token is required (Authorization: Bearer)"}
        for kind, token in bad_tokens(icw).items():
            response = call(base, method, path, token)
            assert response.status_code == 401, (path, kind)
            assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            expected = "has expired" if kind == "expired" else "is not valid"
            assert expected in response.json()["error"], (path, kind)
    assert count(icw.database_url, "SELECT count(*) FROM chimeway_signals") == 0


def test_a_token_reads_and_marks_its_own_recipient_only(icw: Chimeway, serve: Serve) -> None:
    ana, bob = send(icw, "ana"), send(icw, "bob")
    other_tenant = send(icw, "ana", tenant="t2")
    base = serve(icw)
    token = icw.inbox.token("t", "ana")
    listed = call(base, "GET", "/v1/inbox", token).json()
    assert [i["id"] for i in listed["items"]] == [str(ana)]
    assert call(base, "GET", "/v1/inbox/counts", token).json() == {
        "unseen": 1,
        "unread": 1,
        "total": 1,
    }
    # Bob's item and the other tenant's are out of reach: nothing changes, nothing is said.
    marked = call(
        base,
        "POST",
        "/v1/inbox/mark",
        token,
        json={"ids": [str(bob), str(other_tenant)], "action": "read"},
    )
    assert marked.status_code == 200
    assert marked.json() == {"action": "read", "changed": [], "signals": 0}
    assert icw.inbox.counts("t", "bob").unread == 1
    assert icw.inbox.counts("t2", "ana").unread == 1
    marked = call(base, "POST", "/v1/inbox/mark", token, json={"ids": "all", "action": "read"})
    assert marked.json() == {"action": "read", "changed": [str(ana)], "signals": 2}
    with psycopg.connect(icw.database_url) as conn:
        actors = conn.execute(
            "SELECT DISTINCT tenant_id, actor_id FROM chimeway_signals"
        ).fetchall()
    assert actors == [("t", "ana")]


def test_pages_and_filters_over_http(icw: Chimeway, serve: Serve) -> None:
    ids = [send(icw, "ana") for _ in range(5)]
    base = serve(icw)
    token = icw.inbox.token("t", "ana")
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = call(base, "GET", "/v1/inbox", token, params=params).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [str(i) for i in reversed(ids)]
    call(base, "POST", "/v1/inbox/mark", token, json={"ids": [str(ids[0])], "action": "archived"})
    archived = call(base, "GET", "/v1/inbox", token, params={"archived": "true"}).json()
    assert [i["id"] for i in archived["items"]] == [str(ids[0])]
    assert archived["items"][0]["archived_at"] is not None
    unread = call(base, "GET", "/v1/inbox", token, params={"status": "unread"}).json()
    assert len(unread["items"]) == 4
    for params, message in [
        ({"status": "new"}, "status must be one of"),
        ({"limit": "x"}, "limit must be an integer"),
        ({"limit": "0"}, "limit must be an int from 1 to 100"),
        ({"cursor": "nope"}, "cursor is malformed"),
        ({"archived": "maybe"}, "archived must be true or false"),
    ]:
        response = call(base, "GET", "/v1/inbox", token, params=params)
        assert response.status_code == 400
        assert message in response.json()["error"]
    for body, message in [
        (b"{", "the body must be a JSON object"),
        (b"[]", "the body must be a JSON object"),
        (b'{"ids": 3, "action": "read"}', 'ids must be a list of item ids or "all"'),
        (b'{"ids": "all", "action": "delete"}', "action must be one of"),
        (b'{"ids": ["x"], "action": "read"}', "notification_ids[0] is not a UUID"),
    ]:
        response = httpx.post(f"{base}/v1/inbox/mark", content=body, headers=bearer(token))
        assert response.status_code == 400
        assert message in response.json()["error"]


def test_the_stream_brings_new_items_marks_and_counts_live(icw: Chimeway, serve: Serve) -> None:
    base = serve(icw)
    token = icw.inbox.token("t", "ana")
    stream = Stream(f"{base}/v1/inbox/stream", bearer(token))
    try:
        assert stream.status == 200
        assert stream.next("counts").data == {"unseen": 0, "unread": 0, "total": 0}
        send(icw, "bob")  # not ana's: nothing on her stream
        notification = send(icw, "ana")
        committed = time.monotonic()
        item = stream.next()
        assert item.name == "item"  # bob's changes never reached it
        assert item.data["id"] == str(notification)
        assert item.data["content"]["headline"] == "Welcome ana"
        assert item.id == item.data["cursor"]
        assert item.at - committed < 1.0
        assert stream.next("counts").data == {"unseen": 1, "unread": 1, "total": 1}
        icw.inbox.mark("t", "ana", "all", "read")  # as another tab would
        assert stream.next("marked").data == {"action": "read"}
        assert stream.next("counts").data == {"unseen": 0, "unread": 0, "total": 1}
    finally:
        stream.close()


def test_a_reconnecting_stream_replays_what_it_missed(icw: Chimeway, serve: Serve) -> None:
    base = serve(icw)
    token = icw.inbox.token("t", "ana")
    first = Stream(f"{base}/v1/inbox/stream", bearer(token))
    try:
        send(icw, "ana")
        last = first.next("item").id
    finally:
        first.close()
    assert last is not None
    missed = [send(icw, "ana"), send(icw, "ana")]
    again = Stream(f"{base}/v1/inbox/stream", {**bearer(token), "Last-Event-ID": last})
    try:
        replayed = []
        while True:
            event = again.next()
            if event.name == "counts":
                break
            replayed.append(event.data["id"])
        # From a little before the last item (it may come again: clients keep one per id).
        assert replayed[-2:] == [str(m) for m in missed]
        assert len(replayed) == len(set(replayed)) <= 3
        assert event.data["total"] == 3
    finally:
        again.close()
    bogus = Stream(f"{base}/v1/inbox/stream", {**bearer(token), "Last-Event-ID": "junk"})
    try:
        assert bogus.next().name == "reload"
    finally:
        bogus.close()


def test_one_listen_connection_serves_every_stream_and_stops_with_the_last(
    icw: Chimeway, serve: Serve
) -> None:
    base = serve(icw)
    users = [f"u{i}" for i in range(5)]
    streams = [Stream(f"{base}/v1/inbox/stream", bearer(icw.inbox.token("t", u))) for u in users]

    def listening() -> int:
        return count(
            icw.database_url,
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND query LIKE '%%LISTEN chimeway_inbox'",
        )

    try:
        for s in streams:
            s.next("counts")
        assert listening() == 1
        for user in users:
            send(icw, user)
        for user, s in zip(users, streams, strict=True):
            assert s.next("item").data["content"]["headline"] == f"Welcome {user}"
    finally:
        for s in streams:
            s.close()
    wait_until(lambda: listening() == 0, timeout=10)


def test_the_query_token_opens_the_stream_only(icw: Chimeway, serve: Serve) -> None:
    base = serve(icw)
    token = icw.inbox.token("t", "ana")
    stream = Stream(f"{base}/v1/inbox/stream?access_token={token}", {})
    try:
        assert stream.next("counts").data["total"] == 0
    finally:
        stream.close()
    response = httpx.get(f"{base}/v1/inbox", params={"access_token": token})
    assert response.status_code == 401


def test_a_stream_ends_when_its_token_expires(icw: Chimeway, serve: Serve) -> None:
    base = serve(icw)
    token = icw.inbox.token("t", "ana", dt.timedelta(seconds=2))
    stream = Stream(f"{base}/v1/inbox/stream", bearer(token))
    try:
        stream.next("counts")
        assert stream.ended(timeout=10)
    finally:
        stream.close()


def test_cors_allows_the_configured_origins_only(icw: Chimeway, serve: Serve) -> None:
    base = serve(icw, cors_origins=["https://app.example.com"])
    token = icw.inbox.token("t", "ana")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    allowed = httpx.options(
        f"{base}/v1/inbox/mark", headers={"Origin": "https://app.example.com", **preflight}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    refused = httpx.options(
        f"{base}/v1/inbox/mark", headers={"Origin": "https://evil.example", **preflight}
    )
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    got = httpx.get(
        f"{base}/v1/inbox/counts",
        headers={"Origin": "https://app.example.com", **bearer(token)},
    )
    assert got.headers["access-control-allow-origin"] == "https://app.example.com"
    plain = serve(icw)
    assert (
        "access-control-allow-origin"
        not in httpx.get(
            f"{plain}/v1/inbox/counts",
            headers={"Origin": "https://app.example.com", **bearer(token)},
        ).headers
    )


def test_the_bell_and_its_example_page_are_served(icw: Chimeway, serve: Serve) -> None:
    base = serve(icw)
    script = httpx.get(f"{base}/v1/inbox/widget.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "ChimewayInbox" in script.text
    page = httpx.get(f"{base}/v1/inbox/example")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="widget.js">' in page.text


def test_marks_unknown_ids_are_not_told_apart(icw: Chimeway, serve: Serve) -> None:
    send(icw, "bob")
    base = serve(icw)
    token = icw.inbox.token("t", "ana")
    missing = call(
        base, "POST", "/v1/inbox/mark", token, json={"ids": [str(uuid.uuid4())], "action": "read"}
    )
    assert missing.json() == {"action": "read", "changed": [], "signals": 0}


def test_without_a_secret_the_inbox_says_it_is_not_configured(
    make_cw: Callable[..., Chimeway], serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHIMEWAY_SECRET", raising=False)
    base = serve(make_cw())
    token = TokenSigner([SECRET]).sign_inbox(
        InboxClaims("t", "ana", dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    )
    response = httpx.get(f"{base}/v1/inbox/counts", headers=bearer(token))
    assert response.status_code == 503
    assert response.json() == {"error": "the inbox is not configured on this server"}


def test_a_lost_listen_connection_comes_back_and_streams_reload(
    icw: Chimeway, serve: Serve
) -> None:
    base = serve(icw)
    stream = Stream(f"{base}/v1/inbox/stream", bearer(icw.inbox.token("t", "ana")))
    try:
        stream.next("counts")
        with psycopg.connect(icw.database_url, autocommit=True) as admin:
            [(killed,)] = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "AND query LIKE '%%LISTEN chimeway_inbox'"
            ).fetchall()
        assert killed == 1
        assert stream.next("reload", timeout=10).data == {}  # changes may have been missed
        notification = send(icw, "ana")
        assert stream.next("item").data["id"] == str(notification)
    finally:
        stream.close()
