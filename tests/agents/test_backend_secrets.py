"""Secrets against a real HTTP server on 127.0.0.1 that echoes them back: credentials in base_url go out as
Basic auth (never in the request line) and never into a message; a server quoting the key's head, middle
or tail leaks nothing; an `api_key_env` holding a key is refused by the backend and the `api` judge."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from unlearnkit.agents.base import BackendError
from unlearnkit.agents.openai_compat import OpenAICompatBackend
from unlearnkit.errors import UnlearnError
from unlearnkit.judges.api import APIJudge
from unlearnkit.secrets import MIN_FRAGMENT

KEY_ENV = "UNLEARNKIT_TEST_ECHO_KEY"
KEY = "sk-live-Hq4Zr9Wm2Lx7Tb5Nc8Vf3Jd6"
PASSWORD = "Pw-7yG2kR9sQ4vX"
MESSAGES = [{"role": "user", "content": "hi"}]


def leaked(text: str, secret: str) -> str | None:
    k = MIN_FRAGMENT
    return next((secret[i : i + k] for i in range(len(secret) - k + 1) if secret[i : i + k] in text), None)


class EchoServer:
    """Answers every POST with `self.reply(request) -> (status, body)`; records path and headers."""

    def __init__(self):
        self.requests: list[dict] = []
        self.reply = lambda request: (200, {"choices": [{"message": {"content": "ok"}}]})
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                request = {"path": self.path, "headers": dict(self.headers)}
                server.requests.append(request)
                status, body = server.reply(request)
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(KEY_ENV, raising=False)
    echo = EchoServer()
    yield echo
    echo.httpd.shutdown()
    echo.httpd.server_close()


def client(base_url: str, **fields) -> OpenAICompatBackend:
    return OpenAICompatBackend(base_url=base_url, model="m", api_key_env=KEY_ENV, retries=0, timeout=5.0, **fields)


def failure(call) -> str:
    with pytest.raises(BackendError) as info:
        call()
    return str(info.value)


def test_url_credentials_go_out_as_basic_auth_never_in_the_url(server):
    server.reply = lambda request: (200, {"choices": [{"message": {"content": "fine"}}]})
    assert client(f"http://alice:{PASSWORD}@{server.host}/v1?api-version=2024").chat(MESSAGES) == "fine"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions?api-version=2024"  # the query stays at the end
    expected = base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert request["headers"]["Authorization"] == f"Basic {expected}"


def test_a_key_variable_wins_over_url_credentials(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    client(f"http://alice:{PASSWORD}@{server.host}/v1").chat(MESSAGES)
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("echo", [KEY[-10:], KEY[:9], KEY[8:16], "..." + KEY[-MIN_FRAGMENT:]])
def test_an_echoed_piece_of_the_key_never_reaches_the_message(server, monkeypatch, echo):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.reply = lambda request: (401, {"error": {"message": f"Incorrect API key provided: {echo}"}})
    message = failure(lambda: client(f"http://{server.host}/v1").chat(MESSAGES))
    assert "HTTP 401" in message and "Incorrect API key provided: " in message and f"${KEY_ENV}" in message
    assert leaked(message, KEY) is None, message


def test_echoed_url_credentials_never_reach_the_message(server):
    # a misbehaving server quotes the request's authority and the password in a non-JSON body
    server.reply = lambda request: (200, f"<html>bad gateway for alice:{PASSWORD}@{server.host}</html>")
    message = failure(lambda: client(f"http://alice:{PASSWORD}@{server.host}/v1").chat(MESSAGES))
    assert "not JSON" in message and f"http://***@{server.host}/v1/chat/completions" in message
    assert leaked(message, PASSWORD) is None, message


def test_api_judge_unparsed_verdict_is_redacted(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)
    server.reply = lambda request: (400, {"error": {"message": f"bad request from key ending {KEY[-12:]}"}})
    judge = APIJudge(base_url=f"http://u:{PASSWORD}@{server.host}/v1", model="m",
                     api_key_env=KEY_ENV, retries=0, on_error="unparsed")
    (verdict,) = judge.score(["p"], ["r"])
    assert not verdict.parsed and "HTTP 400" in verdict.raw and "ending ***" in verdict.raw
    assert leaked(verdict.raw, KEY) is None and leaked(verdict.raw, PASSWORD) is None


def test_an_api_key_env_holding_a_key_is_refused_without_echo():
    for build in (lambda: OpenAICompatBackend(api_key_env=KEY), lambda: APIJudge(api_key_env=KEY)):
        with pytest.raises(UnlearnError) as info:
            build()
        message = str(info.value)
        assert "api_key_env must name an environment variable (e.g. OPENAI_API_KEY), not hold the key itself" in message
        assert leaked(message, KEY) is None


def test_bad_base_urls_are_shown_redacted():
    for url, fragment in [(f"ftp://u:{PASSWORD}@h/v1", "must start with http"),
                          (f"http://u:{PASSWORD}@h:port/v1", "is not a valid URL"), ("http:///v1", "is not a valid URL")]:
        with pytest.raises(UnlearnError, match=fragment) as info:
            OpenAICompatBackend(base_url=url)
        assert leaked(str(info.value), PASSWORD) is None


def test_reprs_hide_url_credentials():
    url = f"http://u:{PASSWORD}@h/v1"
    for component in (OpenAICompatBackend(base_url=url), APIJudge(base_url=url)):
        assert "http://***@h/v1" in repr(component) and leaked(repr(component), PASSWORD) is None
