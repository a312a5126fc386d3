"""The official `openai` SDK, with only its base URL swapped, against the gateway."""

import json
import urllib.request

import urllib.error
import openai
import pytest
from pydantic import BaseModel

from conftest import CLIENT_KEY, assert_log_has_no_secrets, start_gateway, start_mock

FLASH = "gemini-2.5-flash"
GEMINI3 = "gemini-3-flash-preview"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def client(gateway):
    # No SDK-side retries: every failure must come from the gateway as it is.
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def upstream_requests(mock):
    with urllib.request.urlopen(f"{mock.url}/__mock/requests") as response:
        return json.load(response)


def last_generate_body(mock):
    calls = [r for r in upstream_requests(mock) if "enerateContent" in r["path"]]
    return calls[-1]["body"]


def test_plain_chat_counts_reasoning_in_completion_tokens(client):
    completion = client.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "Hello there"}]
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == FLASH
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Echo: Hello there"
    assert choice.finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens == 2
    assert usage.completion_tokens_details.reasoning_tokens == 5
    assert usage.completion_tokens == 3 + 5
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_system_developer_and_multi_turn_messages_reach_gemini_as_expected(client, mock_gemini):
    completion = client.chat.completions.create(
        model=f"models/{FLASH}",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "First question"},
            {"role": "assistant", "content": "First answer"},
            {"role": "user", "content": "Second question"},
        ],
    )
    assert completion.model == FLASH
    assert completion.choices[0].message.content == "Echo: Second question"
    body = last_generate_body(mock_gemini)
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Answer in English."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]


def test_stream_without_usage(client):
    chunks = list(
        client.chat.completions.create(
            model=FLASH, messages=[{"role": "user", "content": "one two three four"}], stream=True
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three four"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


def test_stream_with_usage_ends_with_exactly_one_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model=FLASH,
            messages=[{"role": "user", "content": "count my tokens"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1
    assert with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == 5
    assert chunks[-1].usage.prompt_tokens == 3


def run_tool_round_trip(client, mock, stream, drop_extra_content):
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        calls = {}
        finish = None
        for chunk in client.chat.completions.create(
            model=GEMINI3, messages=messages, tools=[WEATHER_TOOL], stream=True
        ):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for delta in choice.delta.tool_calls or []:
                    assert delta.index is not None
                    entry = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": "", "extra": None})
                    entry["id"] += delta.id or ""
                    entry["name"] += (delta.function.name or "") if delta.function else ""
                    entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
                    entry["extra"] = (delta.model_extra or {}).get("extra_content") or entry["extra"]
        assert finish == "tool_calls"
        assert list(calls) == [0]
        call = calls[0]
        tool_calls = [{"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}]
        if not drop_extra_content:
            tool_calls[0]["extra_content"] = call["extra"]
        assistant = {"role": "assistant", "content": None, "tool_calls": tool_calls}
        signature = call["extra"]["google"]["thought_signature"]
    else:
        first = client.chat.completions.create(model=GEMINI3, messages=messages, tools=[WEATHER_TOOL])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        tool_call = choice.message.tool_calls[0]
        assert tool_call.id.startswith("call_")
        assert tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == {"city": "Weather in Paris?"}
        signature = tool_call.model_extra["extra_content"]["google"]["thought_signature"]
        if drop_extra_content:
            assistant = {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": tool_call.id, "type": "function", "function": {"name": "get_weather", "arguments": tool_call.function.arguments}}],
            }
        else:
            # The SDK's own message object goes back as it came (extra_content included).
            assistant = choice.message
        call = {"id": tool_call.id}
    assert signature == "mock-sig:get_weather"
    messages += [assistant, {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 21}'}]
    second = client.chat.completions.create(model=GEMINI3, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == 'Tool results: get_weather={"temp_c":21}'
    # The upstream got the real signature back (not the sentinel), beside the functionCall.
    model_turn = last_generate_body(mock)["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["thoughtSignature"] == "mock-sig:get_weather"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("drop_extra_content", [False, True])
def test_two_turn_tool_call_keeps_the_thought_signature(client, mock_gemini, stream, drop_extra_content):
    run_tool_round_trip(client, mock_gemini, stream, drop_extra_content)


def test_tool_choice_forms(client):
    messages = [{"role": "user", "content": "What now?"}]
    none = client.chat.completions.create(model=FLASH, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL], tool_choice="none")
    assert none.choices[0].message.tool_calls is None
    assert none.choices[0].message.content == "Echo: What now?"
    named = client.chat.completions.create(
        model=FLASH, messages=messages, tools=[WEATHER_TOOL, TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert [c.function.name for c in named.choices[0].message.tool_calls] == ["get_time"]
    required = client.chat.completions.create(model=FLASH, messages=messages, tools=[WEATHER_TOOL], tool_choice="required")
    assert required.choices[0].finish_reason == "tool_calls"
    parallel = client.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "PARALLEL please"}], tools=[WEATHER_TOOL, TIME_TOOL]
    )
    names = [c.function.name for c in parallel.choices[0].message.tool_calls]
    assert names == ["get_weather", "get_time"]
    extras = [c.model_extra.get("extra_content") for c in parallel.choices[0].message.tool_calls]
    assert extras[0] is not None and extras[1] is None, "only the first parallel call is signed"


class CityReport(BaseModel):
    city: str
    population: int
    capital: bool


def test_json_schema_output_parses(client, mock_gemini):
    completion = client.chat.completions.parse(
        model=FLASH, messages=[{"role": "user", "content": "Paris"}], response_format=CityReport
    )
    report = completion.choices[0].message.parsed
    assert report == CityReport(city="Paris", population=1, capital=True)
    config = last_generate_body(mock_gemini)["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert "$schema" not in config["responseJsonSchema"]
    json_object = client.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "x"}], response_format={"type": "json_object"}
    )
    assert json.loads(json_object.choices[0].message.content) == {"echo": "x"}


def test_image_data_url(client, mock_gemini):
    pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
    completion = client.chat.completions.create(
        model=FLASH,
        messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{pixel}"}},
        ]}],
    )
    assert completion.choices[0].message.content == "Echo: What is this? [inline: image/png]"
    part = last_generate_body(mock_gemini)["contents"][0]["parts"][1]
    assert part == {"inlineData": {"mimeType": "image/png", "data": pixel}}


def test_n_two_choices(client):
    completion = client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}], n=2)
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[1].message.content == "Echo: hi (candidate 1)"


def test_max_tokens_gives_length(client):
    completion = client.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "a long sentence with many words"}], max_tokens=7
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "Echo: a"


def test_reasoning_effort_returns_reasoning_tokens_and_thoughts(client, mock_gemini):
    completion = client.chat.completions.create(
        model=FLASH, messages=[{"role": "user", "content": "think"}], reasoning_effort="low"
    )
    assert completion.usage.completion_tokens_details.reasoning_tokens == 5
    assert completion.choices[0].message.model_extra["reasoning_content"] == "Thinking about the question."
    assert completion.choices[0].message.content == "Echo: think"
    thinking = last_generate_body(mock_gemini)["generationConfig"]["thinkingConfig"]
    assert thinking == {"thinkingBudget": 1024, "includeThoughts": True}


def test_blocked_prompt_is_a_content_filter_choice(client):
    completion = client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "BLOCK_ME"}])
    assert completion.choices[0].finish_reason == "content_filter"
    assert completion.choices[0].message.content is None
    stream = list(client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "BLOCK_ME"}], stream=True))
    assert stream[-1].choices[0].finish_reason == "content_filter"


def test_embeddings_float_and_base64(client):
    single = client.embeddings.create(model="gemini-embedding-001", input="hello", encoding_format="float")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 768
    # The SDK asks for base64 by default and decodes it itself.
    batch = client.embeddings.create(model="gemini-embedding-001", input=["a", "b", "c"], dimensions=32)
    assert [d.index for d in batch.data] == [0, 1, 2]
    assert all(len(d.embedding) == 32 for d in batch.data)
    assert batch.usage.prompt_tokens == 0


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert "gemini-2.5-flash" in ids and "gemini-embedding-001" in ids
    assert not any(i.startswith("imagen") for i in ids), "predict-only models are left out"
    assert not any(i.startswith("models/") for i in ids)
    model = client.models.retrieve("gemini-2.5-pro")
    assert model.id == "gemini-2.5-pro" and model.owned_by == "google"


def test_request_errors_raise_the_matching_sdk_exceptions(client, gateway, mock_gemini):
    before = len(upstream_requests(mock_gemini))
    with pytest.raises(openai.BadRequestError) as bad_n:
        client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}], n=9)
    assert bad_n.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad_role:
        client.chat.completions.create(model=FLASH, messages=[{"role": "wizard", "content": "x"}])
    assert bad_role.value.param == "messages[0].role"
    with pytest.raises(openai.BadRequestError) as missing_result:
        client.chat.completions.create(model=FLASH, messages=[
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        ])
    assert "must be followed by tool messages" in missing_result.value.message
    with pytest.raises(openai.BadRequestError) as bad_part:
        client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": [{"type": "video", "video": "x"}]}])
    assert bad_part.value.param == "messages[0].content[0].type"
    malformed = urllib.request.Request(
        f"{gateway.url}/v1/chat/completions",
        data=b'{"model": "gemini-2.5-flash", "messages": [',
        headers={"Authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(malformed)
    assert refused.value.code == 400
    assert json.load(refused.value)["error"]["type"] == "invalid_request_error"
    assert len(upstream_requests(mock_gemini)) == before, "bad requests never reach the upstream"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gemini-1.5-flash", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    assert missing.value.param == "model"
    bad_key = openai.OpenAI(api_key="wrong-key-123", base_url=f"{gateway.url}/v1", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad_key.models.list()


def test_rate_limits_and_dead_keys_map_to_429_and_503():
    keys = "AIzaSyLimitedKey00000000000000000000000@limited"
    mock = start_mock("--keys", keys, "--rpm", "1")
    gateway = start_gateway(mock, keys + ",AIzaSyRevokedKey00000000000000000000000@other")
    try:
        client = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway.url}/v1", max_retries=0)
        # One request fits the quota (the revoked key, if tried first, is taken out of service).
        client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}])
        assert limited.value.code == "rate_limit_exceeded"
        assert int(limited.value.response.headers["retry-after"]) > 0
        with pytest.raises(openai.RateLimitError):
            list(client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}], stream=True))
        revoked = [r for r in upstream_requests(mock) if r["api_key"] and r["api_key"].startswith("AIzaSyRevoked")]
        # Used for one client request at most; the only other call with it is the gateway's own
        # probe (a models list) that confirmed the key error before the key left service.
        assert len([r for r in revoked if "enerateContent" in r["path"]]) <= 1, "an invalid key is used at most once"
        assert all(r["path"].endswith("/models") for r in revoked if "enerateContent" not in r["path"])
    finally:
        gateway.stop()
        mock.stop()
    assert_log_has_no_secrets(gateway, keys)

    dead = "AIzaSyDeadKey000000000000000000000000000@dead"
    mock = start_mock("--keys", "AIzaSyOtherKey00000000000000000000000000@x")
    gateway = start_gateway(mock, dead)
    try:
        client = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway.url}/v1", max_retries=0)
        with pytest.raises(openai.InternalServerError) as auth_failed:
            client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}])
        assert auth_failed.value.status_code == 503
        assert auth_failed.value.code == "upstream_auth_failed"
        with pytest.raises(openai.InternalServerError) as no_key:
            client.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "x"}])
        assert no_key.value.status_code == 503
        assert no_key.value.code == "no_usable_upstream_key"
    finally:
        gateway.stop()
        mock.stop()


def set_outage(mock, mode):
    request = urllib.request.Request(f"{mock.url}/__mock/outage?mode={mode}", method="POST")
    with urllib.request.urlopen(request) as response:
        assert response.status == 200


def test_the_sdks_own_retries_ride_out_an_overload_of_every_key():
    """Every key answers 503 "overloaded" for a second and a half: the gateway answers 503 with a
    Retry-After of a second at once, the SDK (its default retries, honouring Retry-After) tries
    again, and gets the answer once the upstream recovers; the gateway never claims no key is
    configured."""
    import threading
    import time

    keys = "AIzaSyMockOverloadA0000000000000000000@po-a,AIzaSyMockOverloadB0000000000000000000@po-b"
    mock = start_mock("--keys", keys)
    try:
        gateway = start_gateway(mock, keys)
    except Exception:
        mock.stop()
        raise
    try:
        plain = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway.url}/v1", max_retries=0)
        set_outage(mock, "overloaded")
        with pytest.raises(openai.InternalServerError) as refused:
            plain.chat.completions.create(model=FLASH, messages=[{"role": "user", "content": "hi"}])
        assert refused.value.status_code == 503
        assert refused.value.response.headers["retry-after"] == "1"
        body = refused.value.response.json()
        assert body["error"]["code"] in ("upstream_overloaded", "upstream_unavailable"), body
        assert "No usable upstream key" not in body["error"]["message"]

        lifted = threading.Timer(1.5, set_outage, (mock, "off"))
        started = time.monotonic()
        lifted.start()
        retrying = openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway.url}/v1", max_retries=6)
        completion = retrying.chat.completions.create(
            model=FLASH, messages=[{"role": "user", "content": "after the storm"}]
        )
        took = time.monotonic() - started
        lifted.join()
        assert completion.choices[0].message.content == "Echo: after the storm"
        assert 1.4 <= took <= 8, took
    finally:
        gateway.stop()
        mock.stop()
