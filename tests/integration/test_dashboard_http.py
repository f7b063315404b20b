"""The operator dashboard over real HTTP (uvicorn on loopback, a real database): tokens,
tenant scoping, filters, escaping. The browser test (tests/acceptance) clicks through it."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from chimeway import Chimeway, ConfigurationError
from chimeway.http.dashboard import COOKIE, Operator, Operators, esc, tag
from tests.integration.conftest import Recorders
from tests.integration.dashboard_support import (
    ACME,
    ACME_TOKEN,
    ADMIN_TOKEN,
    GLOBEX,
    HOSTILE,
    ORDER,
    TOKENS,
    RefusesBob,
    Seeded,
    seed,
)
from tests.integration.inbox_support import (  # noqa: F401 (serve_fixture: the fixture)
    Serve,
    bearer,
    serve_fixture,
)


@pytest.fixture
def served(
    make_cw: Callable[..., Chimeway], adapters: Recorders, serve: Serve
) -> tuple[str, Seeded]:
    cw = make_cw(adapters={"email": RefusesBob(), "sms": adapters["sms"]})
    seeded = seed(cw)
    return serve(cw, operator_tokens=TOKENS), seeded


def get(base: str, path: str, token: str | None = None, **params: str) -> httpx.Response:
    return httpx.get(
        f"{base}/dashboard{path}", headers=bearer(token) if token else {}, params=params
    )


def test_every_page_needs_a_token(served: tuple[str, Seeded]) -> None:
    base, seeded = served
    delivery = seeded.acme.delivery_ids[0]
    for path in ("/", "/runs", "/deliveries", f"/deliveries/{delivery}", "/diagrams"):
        for token in (None, "wrong-token-0123456789abcdefgh", ACME_TOKEN[:-1]):
            answer = get(base, path, token)
            assert answer.status_code == 401, (path, token)
            assert "acme-ana" not in answer.text
            assert answer.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(f"{base}/dashboard").status_code == 401


def test_a_tenant_token_reads_its_tenant_only(served: tuple[str, Seeded]) -> None:
    base, seeded = served
    overview = get(base, "/", ACME_TOKEN)
    assert overview.status_code == 200
    assert overview.headers["cache-control"] == "no-store"
    assert "acme-bob" in overview.text or "deliveries" in overview.text
    listing = get(base, "/deliveries", ACME_TOKEN)
    assert "acme-ana" in listing.text and "acme-bob" in listing.text
    assert "globex" not in listing.text
    # Another tenant's rows are missing, not forbidden; asking for another tenant is 403.
    theirs = seeded.globex.delivery_ids[0]
    assert get(base, f"/deliveries/{theirs}", ACME_TOKEN).status_code == 404
    assert get(base, f"/runs/{seeded.globex.run_ids[0]}", ACME_TOKEN).status_code == 404
    assert get(base, "/deliveries", ACME_TOKEN, tenant=GLOBEX).status_code == 403
    assert get(base, "/deliveries", ACME_TOKEN, tenant=ACME).status_code == 200


def test_an_admin_token_chooses_a_tenant(served: tuple[str, Seeded]) -> None:
    base, _ = served
    picker = get(base, "/deliveries", ADMIN_TOKEN)
    assert picker.status_code == 200 and 'name="tenant"' in picker.text
    assert "acme-ana" not in picker.text and "globex-gus" not in picker.text
    globex = get(base, "/deliveries", ADMIN_TOKEN, tenant=GLOBEX)
    assert "globex-gus" in globex.text and "acme-ana" not in globex.text
    # Links carry the tenant along.
    assert "tenant=globex" in globex.text


def test_filters(served: tuple[str, Seeded]) -> None:
    base, seeded = served
    failed = get(base, "/deliveries", ACME_TOKEN, status="cancelled")
    assert failed.status_code == 200
    assert "acme-bob" in failed.text and "acme-ana" not in failed.text
    sms = get(base, "/deliveries", ACME_TOKEN, channel="sms")
    assert "acme-ana" in sms.text and "acme-bob" not in sms.text
    ana = get(base, "/deliveries", ACME_TOKEN, recipient="acme-ana")
    assert ana.text.count("/dashboard/deliveries/") >= 2 and "acme-bob" not in ana.text
    completed = get(base, "/runs", ACME_TOKEN, state="completed")
    assert str(seeded.acme.run_ids[0]) in completed.text
    assert get(base, "/deliveries", ACME_TOKEN, status="bogus").status_code == 400
    assert get(base, "/runs", ACME_TOKEN, state="bogus").status_code == 400


def test_a_delivery_page_explains_it(served: tuple[str, Seeded]) -> None:
    base, seeded = served
    page = get(base, f"/deliveries/{seeded.acme.delivery_ids[1]}", ACME_TOKEN)
    assert page.status_code == 200
    assert 'id="why"' in page.text and "mailbox unknown" in page.text
    run = get(base, f"/runs/{seeded.acme.run_ids[0]}", ACME_TOKEN)
    assert run.status_code == 200 and 'id="trace"' in run.text
    assert get(base, "/deliveries/not-a-uuid", ACME_TOKEN).status_code == 404


def test_everything_is_escaped_and_no_payload_is_shown(served: tuple[str, Seeded]) -> None:
    base, seeded = served
    listing = get(base, "/deliveries", ADMIN_TOKEN, tenant=GLOBEX)
    assert HOSTILE not in listing.text
    assert esc(HOSTILE) in listing.text
    for delivery in seeded.globex.delivery_ids:
        page = get(base, f"/deliveries/{delivery}", ADMIN_TOKEN, tenant=GLOBEX)
        assert HOSTILE not in page.text and ORDER not in page.text
        assert "@example.test" not in page.text
    assert "<script" not in get(base, "/", ADMIN_TOKEN, tenant=GLOBEX).text


def test_signing_in_sets_a_strict_cookie(served: tuple[str, Seeded]) -> None:
    base, _ = served
    with httpx.Client(base_url=base) as client:
        refused = client.post("/dashboard/login", data={"token": "nope-nope-nope-nope-nope-nope"})
        assert refused.status_code == 401 and COOKIE not in refused.cookies
        signed = client.post("/dashboard/login", data={"token": ACME_TOKEN})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert client.get("/dashboard/deliveries").status_code == 200
        client.post("/dashboard/logout")
        assert client.get("/dashboard/deliveries").status_code == 401


def test_without_tokens_the_dashboard_is_off(
    make_cw: Callable[..., Chimeway], serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CHIMEWAY_OPERATOR_TOKENS", raising=False)
    base = serve(make_cw())
    answer = httpx.get(f"{base}/dashboard/deliveries", headers=bearer(ADMIN_TOKEN))
    assert answer.status_code == 404 and "CHIMEWAY_OPERATOR_TOKENS" in answer.text
    monkeypatch.setenv("CHIMEWAY_OPERATOR_TOKENS", f"{ACME}:{ACME_TOKEN}")
    base = serve(make_cw())
    assert get(base, "/deliveries", ACME_TOKEN).status_code == 200


def test_operator_tokens() -> None:
    operators = Operators(TOKENS)
    assert operators.check(ACME_TOKEN) == Operator(ACME)
    assert operators.check(ADMIN_TOKEN) == Operator(None)
    assert operators.check(ACME_TOKEN + "x") is None
    assert operators.check("") is None and operators.check(None) is None
    assert not Operators([])
    for bad in ("short", "acme:short", " :" + ACME_TOKEN, "acme:" + "x" * 10 + " " + "y" * 20):
        with pytest.raises(ConfigurationError):
            Operators([bad])


def test_tag_escapes_children_and_attributes() -> None:
    html = tag("a", '<b>"x"</b>', href='/p?a=1&b="2"', class_="c")
    assert html == (
        '<a href="/p?a=1&amp;b=&quot;2&quot;" class="c">&lt;b&gt;&quot;x&quot;&lt;/b&gt;</a>'
    )
    assert tag("input", name="n", value="<v>") == '<input name="n" value="&lt;v&gt;">'
