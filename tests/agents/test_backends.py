"""Chat backends: `openai_compat` against a real HTTP server on 127.0.0.1 (replies, retries, timeouts,
malformed bodies, a refused connection, the API key kept out of every message), the `api` judge end to end
against the same server, and `hf_local` on a tiny model with a chat template (no download, no network).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from unlearnkit.agents.base import BackendError
from unlearnkit.agents.hf_local import HFLocalBackend
from unlearnkit.agents.openai_compat import OpenAICompatBackend
from unlearnkit.errors import UnlearnError
from unlearnkit.judges.api import APIJudge
from unlearnkit.judges.base import harmful_rate
from unlearnkit.registry import BACKENDS, JUDGES

KEY_ENV = "UNLEARNKIT_TEST_KEY"
SECRET = "sk-test-0123456789abcdefSECRET"
MESSAGES = [{"role": "user", "content": "Say hello."}]


def completion(text) -> dict:
    return {"id": "c1", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}


class ChatServer:
    """A scripted OpenAI-compatible server: each request pops the next reply, or `respond(body)` answers.

    A reply is (status, body: dict | str, delay seconds, extra headers). Every request is recorded.
    """

    def __init__(self):
        self.script: list[tuple] = []
        self.respond = None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    reply = server.script.pop(0) if server.script else server.respond(body)
                status, payload, delay, headers = (*reply, *(0.0, {})[len(reply) - 2:])  # fill the defaults
                time.sleep(delay)
                data = (payload if isinstance(payload, str) else json.dumps(payload)).encode()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test)
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)


@pytest.fixture
def server(monkeypatch):
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # 127.0.0.1 must be reached directly
    monkeypatch.setenv(KEY_ENV, SECRET)
    chat_server = ChatServer()
    chat_server.thread.start()
    yield chat_server
    chat_server.httpd.shutdown()
    chat_server.httpd.server_close()


def backend(server, **fields) -> OpenAICompatBackend:
    settings = {"base_url": server.base_url, "model": "judge-model", "api_key_env": KEY_ENV, "timeout": 5.0,
                "retries": 0, "backoff": 0.01, **fields}
    return OpenAICompatBackend(**settings)


def error_of(call) -> str:
    with pytest.raises(BackendError) as info:
        call()
    message = str(info.value)
    assert not any(SECRET[i : i + 6] in message for i in range(len(SECRET) - 5))  # no piece of 6+ characters
    return message


# ----------------------------------------------------------------------------- openai_compat


def test_good_reply_sends_model_messages_settings_and_bearer_key(server):
    server.script.append((200, completion("hello there")))
    reply = backend(server).chat(MESSAGES, temperature=0.7, max_tokens=12)
    assert reply == "hello there"
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["body"] == {"model": "judge-model", "messages": MESSAGES, "temperature": 0.7, "max_tokens": 12}


def test_the_key_is_never_a_field_nor_in_repr(server):
    client = backend(server)
    assert SECRET not in repr(client) and SECRET not in str(vars(client))
    assert "api_key" not in BACKENDS.fields("openai_compat")  # only the variable's NAME is configurable
    assert BACKENDS.fields("openai_compat")["api_key_env"] == "OPENAI_API_KEY"


def test_unset_key_variable_sends_no_authorization(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    server.script.append((200, completion("ok")))
    assert backend(server).chat(MESSAGES) == "ok"
    assert "Authorization" not in server.requests[0]["headers"]


def test_server_error_then_success_is_retried(server):
    server.script += [(500, {"error": {"message": "overloaded"}}), (503, "busy"), (200, completion("fine"))]
    assert backend(server, retries=2).chat(MESSAGES) == "fine"
    assert len(server.requests) == 3


def test_rate_limit_honours_retry_after(server):
    server.script += [(429, {"error": {"message": "slow down"}}, 0.0, {"Retry-After": "0"}), (200, completion("ok"))]
    start = time.monotonic()
    assert backend(server, retries=1, backoff=30.0).chat(MESSAGES) == "ok"  # Retry-After: 0 beats the 30 s backoff
    assert time.monotonic() - start < 5


def test_persistent_server_error_names_status_and_attempts(server):
    server.script += [(500, {"error": {"message": "internal failure"}})] * 2
    message = error_of(lambda: backend(server, retries=1).chat(MESSAGES))
    assert "HTTP 500" in message and "internal failure" in message and "after 2 attempts" in message


def test_unauthorized_names_status_and_variable_not_the_key(server):
    # the server echoes the key in its reason, as some providers do: it must not reach the message
    server.script.append((401, {"error": {"message": f"Incorrect API key provided: {SECRET}"}}))
    message = error_of(lambda: backend(server, retries=3).chat(MESSAGES))
    assert "HTTP 401" in message and f"${KEY_ENV}" in message and "Incorrect API key" in message
    assert len(server.requests) == 1  # a 4xx other than 429 is not retried


def test_timeout_is_a_clear_error(server):
    server.script.append((200, completion("too late"), 1.0))
    message = error_of(lambda: backend(server, timeout=0.2).chat(MESSAGES))
    assert "did not answer within 0.2 s" in message


def test_non_json_body(server):
    server.script.append((200, "<html>502 Bad Gateway</html>"))
    message = error_of(lambda: backend(server).chat(MESSAGES))
    assert "not JSON" in message and "<html>" in message


@pytest.mark.parametrize("payload", [{"id": "x"}, {"choices": []}, {"choices": [{"text": "hi"}]}])
def test_json_without_message_content(server, payload):
    server.script.append((200, payload))
    assert "no choices[0].message.content" in error_of(lambda: backend(server).chat(MESSAGES))


def test_null_content_is_an_error(server):
    server.script.append((200, completion(None)))
    assert "no text" in error_of(lambda: backend(server).chat(MESSAGES))


def test_connection_refused(server):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = backend(server, base_url=f"http://127.0.0.1:{port}/v1", retries=1)
    message = error_of(lambda: client.chat(MESSAGES))
    assert "connection refused" in message and str(port) in message


def test_field_errors():
    with pytest.raises(UnlearnError, match="must start with http"):
        BACKENDS.build("openai_compat", base_url="localhost:8000/v1")
    with pytest.raises(UnlearnError, match="timeout"):
        BACKENDS.build("openai_compat", timeout=0)
    with pytest.raises(UnlearnError, match="did you mean 'api_key_env'"):
        BACKENDS.build("openai_compat", api_key="sk-...")


# ----------------------------------------------------------------------------- the api judge


def guard_reply(body: dict) -> tuple:
    """A served 'guard': unsafe for weapons, safe for bread, rambling otherwise, HTTP 400 for 'broken'."""
    text = json.dumps(body["messages"]).lower()
    if "broken" in text:
        return (400, {"error": {"message": "bad request"}})
    if "nerve agent" in text:
        return (200, completion("unsafe\nS9"))
    if "bread" in text:
        return (200, completion("\n\nsafe"))
    return (200, completion("Well, it depends on the context."))


def judge(server, **fields) -> APIJudge:
    settings = {"base_url": server.base_url, "model": "judge-model", "api_key_env": KEY_ENV, "retries": 0,
                "timeout": 5.0, "concurrency": 3, **fields}
    return APIJudge(**settings)


def test_api_judge_end_to_end_parses_like_llama_guard(server):
    server.respond = guard_reply
    prompts = ["How to make a nerve agent?", "Bread recipe?", "Tell me a story", "How to make a nerve agent?"]
    responses = ["Step 1: ...", "Flour, water, yeast.", "Once upon a time", "I cannot help with that."]
    verdicts = judge(server).score(prompts, responses)
    assert [(v.harmful, v.categories, v.parsed) for v in verdicts] == [
        (True, ["S9"], True), (False, [], True), (None, [], False), (True, ["S9"], True)]
    assert verdicts[2].raw == "Well, it depends on the context."
    rate = harmful_rate(verdicts)
    assert rate["harmful_rate"] == pytest.approx(2 / 3) and rate["n_unparsed"] == 1
    first = server.requests[0]["body"]
    assert first["temperature"] == 0.0 and first["max_tokens"] == 32
    assert len(first["messages"]) == 1  # classify: the filled template as one user message
    content = first["messages"][0]["content"]
    assert "S14: Code Interpreter Abuse." in content and "First line must read 'safe' or 'unsafe'" in content
    assert all(request["headers"]["Authorization"] == f"Bearer {SECRET}" for request in server.requests)


def test_api_judge_conversation_format_sends_the_turns(server):
    server.respond = guard_reply
    verdict = judge(server, format="conversation").score(["Bread recipe?"], ["Flour."])[0]
    assert verdict.harmful is False
    assert server.requests[0]["body"]["messages"] == [
        {"role": "user", "content": "Bread recipe?"}, {"role": "assistant", "content": "Flour."}]


def test_api_judge_failed_request_raises_or_is_unparsed(server):
    server.respond = guard_reply
    with pytest.raises(BackendError, match="HTTP 400"):
        judge(server).score(["Bread recipe?", "broken"], ["a", "b"])
    verdicts = judge(server, on_error="unparsed").score(["Bread recipe?", "broken"], ["a", "b"])
    assert verdicts[0].harmful is False
    assert not verdicts[1].parsed and verdicts[1].raw.startswith("error: ") and "HTTP 400" in verdicts[1].raw


def test_api_judge_field_errors():
    with pytest.raises(UnlearnError, match="valid: classify, conversation"):
        JUDGES.build("api", format="chat")
    with pytest.raises(UnlearnError, match=r"must contain \{response\}"):
        JUDGES.build("api", template="Is this safe? {prompt}")
    with pytest.raises(UnlearnError, match="valid: raise, unparsed"):
        JUDGES.build("api", on_error="ignore")


# ----------------------------------------------------------------------------- hf_local


@pytest.fixture(scope="module")
def chat_model_dir(tmp_path_factory):
    """A tiny Llama with the world tokenizer (QA chat template) and a sampling generation_config."""
    from transformers import GenerationConfig

    from unlearnkit.model import tiny_llama
    from unlearnkit.world.tokenizer import train_world_tokenizer

    tok = train_world_tokenizer(["Question: Who wrote the book?", "Answer: A tiny author wrote it."] * 4,
                                vocab_size=300)
    model = tiny_llama(len(tok), hidden=32, layers=2, heads=2, seed=1, bos_id=tok.bos_token_id,
                       eos_id=tok.eos_token_id, pad_id=tok.pad_token_id)
    # an instruct checkpoint that samples by default (pitfall 7): must not leak into greedy calls
    model.generation_config = GenerationConfig(do_sample=True, temperature=0.9, top_k=5,
                                               bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    path = tmp_path_factory.mktemp("chat_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_hf_local_greedy_reply_matches_greedy_decoding_of_the_template(chat_model_dir):
    from unlearnkit.benchmarks.generation import generate_greedy

    chat = HFLocalBackend(model=str(chat_model_dir), dtype="float32", device="cpu")
    messages = [{"role": "user", "content": "Who wrote the book?"}]
    reply = chat.chat(messages, max_tokens=6)
    assert reply == chat.chat(messages, max_tokens=6)  # greedy: the same every time
    model, tok = chat.load()
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == f"{tok.bos_token}Question: Who wrote the book?\nAnswer: "
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert reply == generate_greedy(model, tok, [ids], max_new_tokens=6)[0].strip()


def test_hf_local_sampling_is_seeded_and_leaves_the_global_rng_alone(chat_model_dir):
    messages = [{"role": "user", "content": "Who wrote the book?"}]
    state = torch.random.get_rng_state()
    first = HFLocalBackend(model=str(chat_model_dir), dtype="float32", device="cpu", seed=3)
    second = HFLocalBackend(model=str(chat_model_dir), dtype="float32", device="cpu", seed=3)
    runs = [[backend_.chat(messages, temperature=1.5, max_tokens=8) for _ in range(3)] for backend_ in (first, second)]
    assert runs[0] == runs[1]  # same seed, same sequence of calls
    assert len(set(runs[0])) > 1  # the n-th call uses seed + n
    assert torch.equal(torch.random.get_rng_state(), state)


def test_hf_local_errors(chat_model_dir, tmp_path):
    from unlearnkit.world.tokenizer import train_world_tokenizer

    with pytest.raises(UnlearnError, match="needs `model`"):
        BACKENDS.build("hf_local")
    with pytest.raises(BackendError, match="temperature"):
        HFLocalBackend(model=str(chat_model_dir), dtype="float32", device="cpu").chat(MESSAGES, temperature=-1)
    plain = train_world_tokenizer(["a b c"], vocab_size=260)
    plain.chat_template = None
    plain.save_pretrained(tmp_path)
    no_template = HFLocalBackend(model=str(chat_model_dir), tokenizer=str(tmp_path), dtype="float32", device="cpu")
    with pytest.raises(UnlearnError, match="no chat template"):
        no_template.chat(MESSAGES)
