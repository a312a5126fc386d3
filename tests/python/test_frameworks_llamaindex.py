"""llama-index's `OpenAILike` (llama-index-llms-openai-like) against the gateway and the mock
Gemini API. With its defaults (is_chat_model=False) it speaks the legacy /v1/completions; once with
is_chat_model=True it speaks chat completions.

This file runs in a virtualenv of its own (.venv-llamaindex, from requirements-llamaindex.txt;
see scripts/test.sh): llama-index-llms-openai requires openai<3, the other tests pin openai 3.
"""

import json
import urllib.request

import httpx
import pytest
from llama_index.core.llms import ChatMessage
from llama_index.llms.openai_like import OpenAILike

from conftest import CLIENT_KEY
from loopback_only import loopback_only  # noqa: F401  (autouse fixture)

FLASH = "gemini-2.5-flash"


class Recorder:
    """An httpx client that keeps the paths and JSON bodies llama-index sends to the gateway."""

    def __init__(self):
        self.requests = []
        self.client = httpx.Client(event_hooks={"request": [self.record]})

    def record(self, request):
        self.requests.append((request.url.path, json.loads(request.content) if request.content else None))


@pytest.fixture
def recorder():
    recorder = Recorder()
    yield recorder
    recorder.client.close()


def generate_calls(mock):
    with urllib.request.urlopen(f"{mock.url}/__mock/requests") as response:
        calls = json.load(response)
    return [call for call in calls if "enerateContent" in call["path"]]


def test_llamaindex_complete_with_the_defaults_uses_legacy_completions(gateway, mock_gemini, recorder):
    llm = OpenAILike(model=FLASH, api_base=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, http_client=recorder.client)
    assert llm.metadata.is_chat_model is False
    response = llm.complete("Hello there")
    assert response.text == "Echo: Hello there"
    assert response.raw.object == "text_completion"
    assert response.raw.choices[0].finish_reason == "stop"
    assert response.raw.usage.prompt_tokens == 2
    assert response.raw.usage.completion_tokens == 3 + 5
    path, body = recorder.requests[-1]
    assert path == "/v1/completions"
    assert body["prompt"] == "Hello there" and body["stream"] is False
    call = generate_calls(mock_gemini)[-1]
    assert call["path"] == f"/v1beta/models/{FLASH}:generateContent"
    assert call["body"]["contents"] == [{"role": "user", "parts": [{"text": "Hello there"}]}]
    # llama-index's default temperature reaches Gemini.
    assert call["body"]["generationConfig"]["temperature"] == 0.1


def test_llamaindex_stream_complete(gateway, mock_gemini, recorder):
    llm = OpenAILike(model=FLASH, api_base=f"{gateway.url}/v1", api_key=CLIENT_KEY, max_retries=0, http_client=recorder.client)
    chunks = list(llm.stream_complete("Tell me a story please"))
    deltas = [chunk.delta for chunk in chunks if chunk.delta]
    assert len(deltas) >= 2, deltas  # one chunk per upstream event
    assert "".join(deltas) == "Echo: Tell me a story please"
    assert chunks[-1].text == "Echo: Tell me a story please"
    path, body = recorder.requests[-1]
    assert path == "/v1/completions" and body["stream"] is True
    assert generate_calls(mock_gemini)[-1]["path"] == f"/v1beta/models/{FLASH}:streamGenerateContent"


def test_llamaindex_chat_model(gateway, mock_gemini, recorder):
    llm = OpenAILike(
        model=FLASH,
        api_base=f"{gateway.url}/v1",
        api_key=CLIENT_KEY,
        is_chat_model=True,
        max_retries=0,
        http_client=recorder.client,
    )
    response = llm.chat([ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="Hello chat")])
    assert response.message.role == "assistant"
    assert response.message.content == "Echo: Hello chat"
    assert response.raw.choices[0].finish_reason == "stop"
    assert response.additional_kwargs == {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}
    assert recorder.requests[-1][0] == "/v1/chat/completions"
    body = generate_calls(mock_gemini)[-1]["body"]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello chat"}]}]
    # complete() on a chat model goes through chat completions too.
    assert llm.complete("Hello via chat").text == "Echo: Hello via chat"
    assert recorder.requests[-1][0] == "/v1/chat/completions"
