"""Browser access control over HTTP: the sign-in cookie stands for the token, state changes from other sites are
refused (Sec-Fetch-Site, then Origin), and CORS answers only the origins named with --cors-origin. The same rules
in a real Chromium are in tests/browser/test_access_in_chromium.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server_harness import ServerProcess, check_json, check_problem, read_sse
from tornado.web import create_signed_value

from reference_server import access

pytestmark = pytest.mark.xdist_group("reliability-browser-access")

TOKEN = "browser-0123456789-abcdefghijk"
APP = "http://app.example:3000"
#: A body the schema refuses: reaching 422 proves the request got past origin and credential checks, and no
#: training starts.
REFUSED_BODY = {"steps": 0}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("browser-access")
    env: dict[str, str | None] = {"TRAINER_API_TOKEN": TOKEN, "TRAINER_PROTECT_READS": "1"}
    server = ServerProcess.in_folder(root, data_dir, ["--cors-origin", APP], env=env)
    yield server.start()
    assert server.stop() == 0


def sign_in(client: httpx.Client) -> httpx.Response:
    return client.post("/api/session", json={"token": TOKEN}, headers={"Sec-Fetch-Site": "same-origin"})


def test_the_session_says_a_token_is_needed_and_nothing_is_readable_before_sign_in(guarded: ServerProcess) -> None:
    with guarded.client() as client:
        state = check_json(client.get("/api/session"), "session.schema.json")
        assert state == {"token_required": True, "reads_protected": True, "signed_in": False}
        check_problem(client.get("/api/training/runs"), 401, "unauthorized")
        check_problem(client.get("/api/events/training"), 401, "unauthorized")


def test_sign_in_sets_an_httponly_strict_cookie_that_stands_for_the_token(guarded: ServerProcess) -> None:
    with guarded.client() as client:
        check_problem(client.post("/api/session", json={"token": TOKEN[::-1]}), 403, "forbidden")
        check_problem(client.post("/api/session"), 422, "validation_failed")
        check_problem(client.post("/api/session", json={"token": TOKEN, "extra": 1}), 422, "validation_failed")
        response = sign_in(client)
        assert check_json(response, "session.schema.json")["signed_in"] is True
        cookie = response.headers["Set-Cookie"]
        attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert cookie.startswith(f"{access.SESSION_COOKIE}=") and TOKEN not in cookie
        assert {"httponly", "samesite", "path", "max-age"} <= attributes and "secure" not in attributes  # plain HTTP
        assert "SameSite=Strict" in cookie and f"Max-Age={access.SESSION_HOURS * 3600}" in cookie
        # Readable with the cookie alone, the event stream included (an EventSource cannot send Authorization).
        assert check_json(client.get("/api/session"), "session.schema.json")["signed_in"] is True
        check_json(client.get("/api/training/runs"), "run-list.schema.json")
        with client.stream("GET", "/api/events/training") as stream:
            assert stream.status_code == 200 and next(stream.iter_lines()).startswith(":")
        # A state change from the dashboard's own page passes the origin and credential checks.
        check_problem(
            client.post("/api/training/runs", json=REFUSED_BODY, headers={"Sec-Fetch-Site": "same-origin"}), 422
        )
        # A bearer token sent beside the cookie is judged on its own: a wrong one is refused.
        wrong = {"Authorization": f"Bearer {TOKEN[::-1]}"}
        check_problem(client.get("/api/training/runs", headers=wrong), 403, "forbidden")
        out = client.delete("/api/session", headers={"Sec-Fetch-Site": "same-origin"})
        assert check_json(out, "session.schema.json")["signed_in"] is False
        assert "Max-Age=0" in out.headers["Set-Cookie"] or "expires=" in out.headers["Set-Cookie"].lower()
        check_problem(client.get("/api/training/runs"), 401, "unauthorized")
    assert TOKEN not in guarded.log() and TOKEN[::-1] not in guarded.log()


@pytest.mark.parametrize(
    ("what", "secret", "age_s"),
    [
        ("signed with another token's key", access.session_key("another-token-0123456789"), 0),
        ("twelve hours and a minute old", access.session_key(TOKEN), access.SESSION_HOURS * 3600 + 60),
        ("a value the server never signs", None, 0),
    ],
)
def test_a_forged_or_expired_cookie_is_no_credential(
    guarded: ServerProcess, what: str, secret: str | None, age_s: float
) -> None:
    if secret is None:
        value = "signed-in-v1"
    else:
        signed = create_signed_value(
            secret, access.SESSION_COOKIE, access.SESSION_VALUE, clock=lambda: time.time() - age_s
        )
        value = signed.decode()
    with guarded.client(cookies={access.SESSION_COOKIE: value}) as client:
        check_problem(client.get("/api/training/runs"), 401, "unauthorized")
        assert client.get("/api/session").json()["signed_in"] is False, what


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"Sec-Fetch-Site": "cross-site"}, True),
        ({"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"}, True),  # another port: SameSite lets it in
        ({"Origin": "http://evil.example"}, True),  # a browser too old for Sec-Fetch-Site
        ({"Origin": "null"}, True),  # a sandboxed frame or a file:// page
        ({"Sec-Fetch-Site": "same-origin"}, False),
        ({"Sec-Fetch-Site": "none"}, False),  # typed or bookmarked by the user
        ({}, False),  # not a browser: curl, the conformance suite
        ({"Sec-Fetch-Site": "cross-site", "Origin": APP}, False),  # an origin named with --cors-origin
    ],
)
def test_a_state_change_from_another_site_is_refused_whatever_it_carries(
    guarded: ServerProcess, headers: dict[str, str], refused: bool
) -> None:
    with guarded.client() as client:
        assert sign_in(client).status_code == 200
        for method, path, body in (
            ("POST", "/api/training/runs", REFUSED_BODY),
            ("POST", "/api/training/runs/run-ffffffffffffffffffff/cancel", None),
            ("DELETE", "/api/session", None),
        ):
            answer = client.request(method, path, json=body, headers=headers)
            if refused:
                problem = check_problem(answer, 403, "cross_site_request")
                assert "another site" in problem["detail"] or "not from this server" in problem["detail"]
            else:
                assert answer.status_code in (200, 404, 422), (method, path, answer.text[:200])
        # Reads are not state changes: a cross-site GET is answered (CORS decides whether its page may read it).
        assert sign_in(client).status_code == 200
        assert client.get("/api/training/runs", headers=headers).status_code == 200
        # The same-origin Origin header, as a browser sends it on a fetch POST, passes.
        host = guarded.url.removeprefix("http://")
        own = client.post("/api/training/runs", json=REFUSED_BODY, headers={"Origin": f"http://{host}"})
        check_problem(own, 422)


def test_cors_answers_only_the_named_origin_and_its_preflights(guarded: ServerProcess) -> None:
    with guarded.client() as client:
        named = client.get("/api/session", headers={"Origin": APP})
        assert named.headers["Access-Control-Allow-Origin"] == APP and named.headers["Vary"] == "Origin"
        assert "X-Request-ID" in named.headers["Access-Control-Expose-Headers"]
        assert "Access-Control-Allow-Credentials" not in named.headers  # cross-origin pages use the bearer token
        other = client.get("/api/session", headers={"Origin": "http://other.example"})
        assert "Access-Control-Allow-Origin" not in other.headers and other.headers["Vary"] == "Origin"
        # Errors carry the header too, so the page can read the problem.
        denied = client.get("/api/training/runs", headers={"Origin": APP})
        assert denied.status_code == 401 and denied.headers["Access-Control-Allow-Origin"] == APP

        preflight = {"Origin": APP, "Access-Control-Request-Method": "POST"}
        answer = client.options("/api/training/runs", headers=preflight | {"Access-Control-Request-Headers": "x"})
        assert answer.status_code == 204, answer.text
        assert answer.headers["Access-Control-Allow-Origin"] == APP
        assert answer.headers["Access-Control-Allow-Methods"] == "GET, HEAD, POST, OPTIONS"
        assert "Authorization" in answer.headers["Access-Control-Allow-Headers"]
        assert "Last-Event-ID" in answer.headers["Access-Control-Allow-Headers"]
        assert int(answer.headers["Access-Control-Max-Age"]) > 0
        check_problem(
            client.options("/api/training/runs", headers=preflight | {"Origin": "http://other.example"}),
            403,
            "origin_not_allowed",
        )
        check_problem(
            client.options("/api/training/runs", headers=preflight | {"Access-Control-Request-Method": "DELETE"}),
            405,
        )
        plain = client.options("/api/training/runs")  # not a preflight: what the path allows, no CORS grant
        assert plain.status_code == 204 and plain.headers["Allow"] == "GET, HEAD, POST, OPTIONS"
        assert "Access-Control-Allow-Methods" not in plain.headers
        # The named origin's page reads the protected API with the bearer token.
        bearer = {"Origin": APP, "Authorization": f"Bearer {TOKEN}"}
        listed = client.get("/api/training/runs", headers=bearer)
        assert listed.status_code == 200 and listed.headers["Access-Control-Allow-Origin"] == APP
        response, _ = read_sse(client, {}, bearer, seconds=0.5)
        assert response.headers["Access-Control-Allow-Origin"] == APP
