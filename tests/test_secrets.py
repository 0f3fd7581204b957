"""Secrets never reach what the toolkit prints or writes: URL credentials, API keys and any piece of 6+
characters of one (an echoed head, middle or tail), in error lines, in `Recipe.resolved()` (report.json,
eval.json, `unlearn show`) and in `unlearn craft`'s error line; `api_key_env` holding a key is refused."""

from __future__ import annotations

import socket

import pytest
import yaml
from typer.testing import CliRunner

from unlearnkit.errors import UnlearnError
from unlearnkit.recipe import validate_recipe
from unlearnkit.secrets import (MIN_FRAGMENT, check_key_env, looks_like_key, redact, redact_config, redact_url,
                                register_key_env, url_secrets)

KEY = "sk-proj-Q7vLm2Xc9RtB4nWz8KpE1yHs"
PASSWORD = "pa55-Wd8xTq3ZmK"


def leaked_fragment(text: str, secret: str, k: int = MIN_FRAGMENT) -> str | None:
    """The first run of `k` characters of `secret` found in `text`, or None."""
    return next((secret[i : i + k] for i in range(len(secret) - k + 1) if secret[i : i + k] in text), None)


def free_port() -> int:
    with socket.socket() as sock:  # bound then released: nobody listens there
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------------------- URLs


@pytest.mark.parametrize("url, shown", [
    (f"http://user:{KEY}@host:8000/v1", "http://***@host:8000/v1"),
    (f"https://{KEY}@host/v1", "https://***@host/v1"),
    (f"user:{KEY}@host/v1", "***@host/v1"),  # no scheme
    (f"https://h/v1?api-version=2024-02-01&api_key={KEY}#x", "https://h/v1?api-version=2024-02-01&api_key=***#x"),
    (f"https://h/x?sig={KEY}&Token={KEY}", "https://h/x?sig=***&Token=***"),
    ("https://api.example.com/run/@cf/meta/llama", "https://api.example.com/run/@cf/meta/llama"),  # '@' in the path
    ("http://localhost:8000/v1", "http://localhost:8000/v1"),
])
def test_redact_url(url, shown):
    assert redact_url(url) == shown


def test_url_secrets_are_the_password_and_key_shaped_users():
    assert url_secrets(f"http://alice:{PASSWORD}@h/v1") == {PASSWORD}  # a plain user name is not a secret
    assert url_secrets(f"http://{KEY}@h/v1") == {KEY}  # the key as the user name
    assert url_secrets("http://h/v1?key=abc%2Fdef") == {"abc%2Fdef", "abc/def"}  # raw and decoded


# ----------------------------------------------------------------------------------------- free text


def test_a_secret_and_every_piece_of_it_is_redacted():
    k = MIN_FRAGMENT
    text = (f"full {KEY}; head {KEY[:k]}; tail {KEY[-k - 3:]}; middle {KEY[9:9 + k + 2]};"
            f" url http://user:{PASSWORD}@127.0.0.1:9/v1; too short to matter {KEY[3:3 + k - 1]}.")
    out = redact(text, [KEY])
    assert leaked_fragment(out, KEY) is None and PASSWORD not in out
    assert out == (f"full ***; head ***; tail ***; middle ***; url http://***@127.0.0.1:9/v1;"
                   f" too short to matter {KEY[3:3 + k - 1]}.")
    assert redact("nothing secret here", [KEY]) == "nothing secret here"


def test_watched_key_variables_are_redacted_without_being_passed(monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_TEST_WATCHED", KEY)
    register_key_env("UNLEARNKIT_TEST_WATCHED")
    assert redact(f"the server said: invalid key ...{KEY[-10:]}") == "the server said: invalid key ...***"


# ----------------------------------------------------------------------------------------- api_key_env


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "TOGETHER_API_KEY", "AZURE_OPENAI_API_KEY_2024", "my_key",
                                   "openai_api_key", "HF_TOKEN"])
def test_variable_names_are_not_keys(value):
    assert not looks_like_key(value)
    check_key_env("judge 'api'", value)


@pytest.mark.parametrize("value", [KEY, "sk-0123456789abcdefghijklmnop", "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345",
                                   "0123456789abcdef0123456789abcdef", "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6",
                                   "Zk3R8qLw2NvB7xTm4YcP9s", "AIzaSyA-1234567890abcdefghij"])
def test_keys_look_like_keys_and_are_refused_without_echo(value):
    assert looks_like_key(value)
    with pytest.raises(UnlearnError) as info:
        check_key_env("backend 'openai_compat'", value)
    message = str(info.value)
    assert "api_key_env must name an environment variable (e.g. OPENAI_API_KEY)" in message
    assert "export the key and give the variable's name" in message
    assert leaked_fragment(message, value) is None


def test_an_odd_name_that_is_set_is_accepted(monkeypatch):
    monkeypatch.setenv("Zk3R8qLw2NvB7xTm4YcP9s", "value")  # key-shaped but an existing variable: a name
    check_key_env("judge 'api'", "Zk3R8qLw2NvB7xTm4YcP9s")


# ----------------------------------------------------------------------------------------- recipes


def test_resolved_recipe_hides_judge_credentials_and_keys(monkeypatch):
    monkeypatch.setenv("UNLEARNKIT_TEST_JUDGE_KEY", KEY)
    recipe = validate_recipe({"safety": {"judge": {"name": "api", "base_url": f"http://user:{PASSWORD}@judge:8000/v1",
                                                   "api_key_env": "UNLEARNKIT_TEST_JUDGE_KEY"}},
                              "data": {"system_prompt": f"keys end in {KEY[-8:]}"}})
    resolved = recipe.resolved()
    dumped = yaml.safe_dump(resolved)  # what `unlearn show` prints and report.json / eval.json hold
    assert resolved["safety"]["judge"]["base_url"] == "http://***@judge:8000/v1"
    assert resolved["safety"]["judge"]["api_key_env"] == "UNLEARNKIT_TEST_JUDGE_KEY"
    assert resolved["data"]["system_prompt"] == "keys end in ***"
    assert leaked_fragment(dumped, PASSWORD) is None and leaked_fragment(dumped, KEY) is None
    assert resolved["method"]["name"] == "npo" and resolved["model"]["name"] == "world:target"  # the rest intact


def test_resolved_recipe_hides_a_key_pasted_into_api_key_env():
    recipe = validate_recipe({"safety": {"judge": {"name": "api", "api_key_env": KEY, "api_key": KEY}}})
    judge = recipe.resolved()["safety"]["judge"]
    assert judge == {"name": "api", "api_key_env": "***", "api_key": "***"}


def test_redact_config_leaves_ordinary_configs_alone():
    config = {"model": {"name": "meta-llama/Llama-3.2-1B-Instruct"}, "data": {"data_dir": "world:tiny"},
              "url": "http://localhost:8000/v1", "list": [1, 2.5, None, True, "a"], "api_key_env": "OPENAI_API_KEY"}
    assert redact_config(config) == config


def test_show_prints_the_recipe_redacted(tmp_path, env):
    from unlearnkit.cli import app

    path = tmp_path / "judge.yaml"
    path.write_text(yaml.safe_dump({"safety": {"judge": {"name": "api",
                                                         "base_url": f"https://bob:{PASSWORD}@judge/v1?key={KEY}"}}}))
    result = CliRunner().invoke(app, ["show", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "https://***@judge/v1?key=***" in result.stdout
    assert leaked_fragment(result.output, PASSWORD) is None and leaked_fragment(result.output, KEY) is None


# ----------------------------------------------------------------------------------------- the CLI


def test_craft_against_an_unreachable_host_prints_one_redacted_error_line(tmp_path, env, monkeypatch):
    from unlearnkit.cli import app

    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    port = free_port()
    result = CliRunner().invoke(app, ["craft", "--backend", "openai_compat", "--limit", "1", "--out",
                                      str(tmp_path / "crafted.jsonl"), "--quiet",
                                      "--backend-opt", f"base_url=http://user:{KEY}@127.0.0.1:{port}/v1",
                                      "--backend-opt", "retries=0", "--backend-opt", "timeout=5"], env=env)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and f"http://***@127.0.0.1:{port}/v1" in lines[0], lines[0]
    assert leaked_fragment(result.output, KEY) is None


def test_craft_refuses_a_key_in_api_key_env_without_echoing_it(tmp_path, env):
    from unlearnkit.cli import app

    result = CliRunner().invoke(app, ["craft", "--backend", "openai_compat", "--out", str(tmp_path / "c.jsonl"),
                                      "--backend-opt", f"api_key_env={KEY}"], env=env)
    assert result.exit_code == 2 and "api_key_env must name an environment variable" in result.stderr
    assert leaked_fragment(result.output, KEY) is None
