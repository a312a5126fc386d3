"""LangChain's `ChatOpenAI(use_responses_api=True)` (langchain-openai) against the gateway and the
mock Gemini API: invoke, stream, a tool-call round trip on Gemini 3 (the thought signature must
come back), and structured output into a pydantic model.

llama-index's OpenAILike is in test_frameworks_llamaindex.py, in a virtualenv of its own:
llama-index-llms-openai requires openai<3, while the other tests pin openai 3.
"""

import json
import urllib.request

import httpx
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from conftest import CLIENT_KEY
from loopback_only import loopback_only  # noqa: F401  (autouse fixture)

FLASH = "gemini-2.5-flash"
GEMINI3 = "gemini-3-flash-preview"


class Recorder:
    """An httpx client that keeps the JSON bodies LangChain sends to the gateway."""

    def __init__(self):
        self.bodies = []
        self.client = httpx.Client(event_hooks={"request": [self.record]})

    def record(self, request):
        self.bodies.append((request.url.path, json.loads(request.content) if request.content else None))


@pytest.fixture
def recorder():
    recorder = Recorder()
    yield recorder
    recorder.client.close()


def chat_model(gateway, model, recorder=None, **kwargs):
    return ChatOpenAI(
        model=model,
        base_url=f"{gateway.url}/v1",
        api_key=CLIENT_KEY,
        use_responses_api=True,
        max_retries=0,
        http_client=recorder.client if recorder else None,
        **kwargs,
    )


def generate_bodies(mock):
    with urllib.request.urlopen(f"{mock.url}/__mock/requests") as response:
        calls = json.load(response)
    return [call["body"] for call in calls if "enerateContent" in call["path"]]


def test_langchain_invoke(gateway, mock_gemini, recorder):
    llm = chat_model(gateway, FLASH, recorder, temperature=0.3)
    message = llm.invoke([SystemMessage("Be brief."), HumanMessage("Hello there")])
    assert isinstance(message, AIMessage)
    assert message.text == "Echo: Hello there"
    assert message.id.startswith("resp_")
    assert message.response_metadata["status"] == "completed"
    assert message.response_metadata["model_name"] == FLASH
    assert message.usage_metadata["input_tokens"] == 2
    assert message.usage_metadata["output_tokens"] == 3 + 5
    assert message.usage_metadata["output_token_details"]["reasoning"] == 5
    assert message.usage_metadata["total_tokens"] == 10
    assert [path for path, _ in recorder.bodies] == ["/v1/responses"]
    body = generate_bodies(mock_gemini)[-1]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "Hello there"}]}]
    assert body["generationConfig"]["temperature"] == 0.3


def test_langchain_stream(gateway):
    chunks = list(chat_model(gateway, FLASH).stream("Tell me a story please"))
    texts = [chunk.text for chunk in chunks if chunk.text]
    assert len(texts) >= 2, texts  # one chunk per upstream event, not the whole answer at the end
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole = whole + chunk
    assert whole.text == "Echo: Tell me a story please"
    assert whole.response_metadata["status"] == "completed"
    assert whole.usage_metadata["input_tokens"] == 5
    assert whole.usage_metadata["output_tokens"] == 6 + 5
    assert whole.usage_metadata["total_tokens"] == 16


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return json.dumps({"city": city, "sky": "clear"})


def test_langchain_tool_round_trip_sends_the_thought_signature_back(gateway, mock_gemini, recorder):
    llm = chat_model(gateway, GEMINI3, recorder).bind_tools([get_weather])
    history = [HumanMessage("Weather in Paris?")]
    call_message = llm.invoke(history)
    assert call_message.tool_calls == [
        {"name": "get_weather", "args": {"city": "Weather in Paris?"}, "id": call_message.tool_calls[0]["id"], "type": "tool_call"}
    ]
    history.append(call_message)
    for call in call_message.tool_calls:
        result = get_weather.invoke(call)
        assert isinstance(result, ToolMessage)
        history.append(result)
    answer = llm.invoke(history)
    assert answer.text == 'Tool results: get_weather={"city":"Weather in Paris?","sky":"clear"}'
    assert answer.tool_calls == []

    # LangChain replays the reasoning item by its id (no encrypted content): the gateway finds the
    # signature it stored with that item.
    second = recorder.bodies[-1][1]
    reasoning = [item for item in second["input"] if item.get("type") == "reasoning"]
    assert len(reasoning) == 1 and reasoning[0]["id"].startswith("rs_")
    assert "encrypted_content" not in reasoning[0]

    contents = generate_bodies(mock_gemini)[-1]["contents"]
    assert contents[0] == {"role": "user", "parts": [{"text": "Weather in Paris?"}]}
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Weather in Paris?"}}, "thoughtSignature": "mock-sig:get_weather"}
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"city": "Weather in Paris?", "sky": "clear"}}}],
    }


class Weather(BaseModel):
    city: str
    temperature: int


def test_langchain_structured_output_fills_a_pydantic_model(gateway, mock_gemini):
    weather = chat_model(gateway, FLASH).with_structured_output(Weather).invoke("Weather in Paris")
    # The mock fills strings with the prompt and integers with 1.
    assert weather == Weather(city="Weather in Paris", temperature=1)
    config = generate_bodies(mock_gemini)[-1]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"]["required"] == ["city", "temperature"]
    assert config["responseJsonSchema"]["properties"]["temperature"]["type"] == "integer"
