"""The official `openai` SDK's Responses and legacy Completions APIs, with only its base URL
swapped, against the gateway and the mock Gemini API."""

import json
import urllib.request

import openai
import pytest
from pydantic import BaseModel

from conftest import CLIENT_KEY, assert_log_has_no_secrets, start_gateway

FLASH = "gemini-2.5-flash"
GEMINI3 = "gemini-3-flash-preview"
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(api_key=CLIENT_KEY, base_url=f"{gateway.url}/v1", max_retries=0)


def generate_bodies(mock):
    with urllib.request.urlopen(f"{mock.url}/__mock/requests") as response:
        calls = json.load(response)
    return [call["body"] for call in calls if "enerateContent" in call["path"]]


def test_a_plain_response_has_openais_shape_and_usage(client, mock_gemini):
    response = client.responses.create(
        model=FLASH, input="Hello there", instructions="Be brief.", temperature=0.2, metadata={"team": "a"}
    )
    assert response.id.startswith("resp_")
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == FLASH
    assert response.output_text == "Echo: Hello there"
    message = response.output[0]
    assert message.type == "message" and message.id.startswith("msg_")
    assert message.content[0].annotations == []
    assert response.metadata == {"team": "a"}
    # Gemini's thinking counts as reasoning output, as OpenAI counts it.
    assert response.usage.input_tokens == 2  # the mock counts the words of `contents`
    assert response.usage.output_tokens_details.reasoning_tokens == 5
    assert response.usage.output_tokens == 3 + 5
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    body = generate_bodies(mock_gemini)[-1]
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["generationConfig"]["temperature"] == 0.2


def test_a_stream_follows_openais_event_sequence(client):
    events = list(client.responses.create(model=FLASH, input="Tell me a story please", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds.count("response.output_text.delta") >= 2
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "Echo: Tell me a story please"
    assert events[-1].response.output_text == text
    assert events[-1].response.usage.output_tokens > 0

    # The SDK's stream helper assembles the same response.
    with client.responses.stream(model=FLASH, input="Again please") as stream:
        for _ in stream:
            pass
        final = stream.get_final_response()
    assert final.output_text == "Echo: Again please"


class Weather(BaseModel):
    city: str
    temperature: int


def test_parse_fills_a_pydantic_model_through_a_json_schema(client, mock_gemini):
    response = client.responses.parse(model=FLASH, input="Weather in Paris", text_format=Weather)
    assert isinstance(response.output_parsed, Weather)
    config = generate_bodies(mock_gemini)[-1]["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    assert set(config["responseJsonSchema"]["properties"]) == {"city", "temperature"}


@pytest.mark.parametrize("continue_with", ["previous_response_id", "replayed_output", "encrypted_reasoning"])
def test_a_two_turn_function_call_sends_the_thought_signature_back(client, mock_gemini, continue_with):
    store = continue_with != "encrypted_reasoning"
    include = ["reasoning.encrypted_content"] if continue_with == "encrypted_reasoning" else []
    first = client.responses.create(
        model=GEMINI3, input="Weather in Paris?", tools=[WEATHER], store=store, include=include
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.id.startswith("fc_")
    assert json.loads(call.arguments) == {"city": "Weather in Paris?"}
    reasoning = [item for item in first.output if item.type == "reasoning"]
    assert len(reasoning) == 1
    if include:
        assert reasoning[0].encrypted_content == "mock-sig:get_weather"
    else:
        assert reasoning[0].encrypted_content is None
    output = {"type": "function_call_output", "call_id": call.call_id, "output": '{"sky": "clear"}'}
    if continue_with == "previous_response_id":
        second = client.responses.create(
            model=GEMINI3, previous_response_id=first.id, input=[output], tools=[WEATHER]
        )
    else:
        history = [{"role": "user", "content": "Weather in Paris?"}, *[item.model_dump(exclude_none=True) for item in first.output], output]
        second = client.responses.create(model=GEMINI3, input=history, tools=[WEATHER], store=store, include=include)
    assert second.output_text.startswith("Tool results: get_weather=")
    contents = generate_bodies(mock_gemini)[-1]["contents"]
    model_turn = [content for content in contents if content["role"] == "model"][-1]
    signed = [part for part in model_turn["parts"] if "functionCall" in part]
    assert signed[0]["thoughtSignature"] == "mock-sig:get_weather"
    if not store:
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(first.id)


def test_stored_responses_are_retrieved_listed_and_deleted(client):
    first = client.responses.create(model=FLASH, input=[{"role": "user", "content": "first question"}])
    second = client.responses.create(model=FLASH, input="second question", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    again = client.responses.retrieve(second.id)
    assert again.output_text == second.output_text == "Echo: second question"
    items = client.responses.input_items.list(second.id)
    assert [item.content[0].text for item in items.data] == ["second question"]
    assert items.data[0].id.startswith("msg_")

    # A third turn sees the whole conversation.
    client.responses.create(model=FLASH, input="third", previous_response_id=second.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model=FLASH, input="x", previous_response_id=first.id)
    assert refused.value.body["param"] == "previous_response_id"


def test_item_references_resolve_to_stored_output_items(client, mock_gemini):
    first = client.responses.create(model=FLASH, input="remember me")
    client.responses.create(
        model=FLASH,
        input=[
            {"role": "user", "content": "remember me"},
            {"type": "item_reference", "id": first.output[0].id},
            {"role": "user", "content": "and now?"},
        ],
    )
    contents = generate_bodies(mock_gemini)[-1]["contents"]
    assert contents[1] == {"role": "model", "parts": [{"text": "Echo: remember me"}]}


def test_another_client_key_cannot_see_a_stored_response(mock_gemini):
    keys = "AIzaSyMockKeyA000000000000000000000000@project-a"
    gateway = start_gateway(mock_gemini, keys, CLIENT_API_KEYS="owner-key-1,other-key-2")
    try:
        owner = openai.OpenAI(api_key="owner-key-1", base_url=f"{gateway.url}/v1", max_retries=0)
        other = openai.OpenAI(api_key="other-key-2", base_url=f"{gateway.url}/v1", max_retries=0)
        created = owner.responses.create(model=FLASH, input="mine")
        for attempt in (
            lambda: other.responses.retrieve(created.id),
            lambda: other.responses.input_items.list(created.id),
            lambda: other.responses.delete(created.id),
        ):
            with pytest.raises(openai.NotFoundError):
                attempt()
        with pytest.raises(openai.BadRequestError):
            other.responses.create(model=FLASH, input="x", previous_response_id=created.id)
        with pytest.raises(openai.BadRequestError):
            other.responses.create(model=FLASH, input=[{"type": "item_reference", "id": created.output[0].id}])
        assert owner.responses.retrieve(created.id).output_text == "Echo: mine"
    finally:
        gateway.stop()
    assert_log_has_no_secrets(gateway, keys)


def test_web_search_is_google_search_with_url_citations(client, mock_gemini):
    response = client.responses.create(model=FLASH, input="news today", tools=[{"type": "web_search"}])
    assert generate_bodies(mock_gemini)[-1]["tools"] == [{"googleSearch": {}}]
    message = next(item for item in response.output if item.type == "message")
    citation = message.content[0].annotations[0]
    assert citation.type == "url_citation"
    assert citation.url == "https://example.com/result"
    assert (citation.start_index, citation.end_index) == (0, len(message.content[0].text))
    search = next(item for item in response.output if item.type == "web_search_call")
    assert search.status == "completed"


def test_reasoning_summaries_and_max_output_tokens(client):
    reasoned = client.responses.create(
        model=FLASH, input="think", reasoning={"effort": "low", "summary": "auto"}
    )
    summary = next(item for item in reasoned.output if item.type == "reasoning")
    assert summary.summary[0].text == "Thinking about the question."
    cut = client.responses.create(model=FLASH, input="one two three four five six seven", max_output_tokens=7)
    assert cut.status == "incomplete"
    assert cut.incomplete_details.reason == "max_output_tokens"


def test_what_gemini_cannot_do_is_a_400_naming_the_field(client, mock_gemini):
    before = len(generate_bodies(mock_gemini))
    for params, field in [
        ({"background": True}, "background"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"tools": [{"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "browser"}]}, "tools[0].type"),
        ({"temperature": 5}, "temperature"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model=FLASH, input="x", **params)
        assert refused.value.body["param"] == field, refused.value.body
    assert len(generate_bodies(mock_gemini)) == before


def test_legacy_completions_plain_streamed_and_several_prompts(client):
    completion = client.completions.create(model=FLASH, prompt="Say hello", max_tokens=50)
    assert completion.object == "text_completion"
    assert completion.choices[0].text == "Echo: Say hello"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 2

    several = client.completions.create(model=FLASH, prompt=["first", "second"], echo=True, n=2)
    assert [choice.index for choice in several.choices] == [0, 1, 2, 3]
    assert several.choices[2].text == "secondEcho: second"
    assert several.usage.prompt_tokens == 2

    chunks = list(
        client.completions.create(
            model=FLASH, prompt="Stream this text", stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(choice.text for chunk in chunks for choice in chunk.choices)
    assert text == "Echo: Stream this text"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens > 0
    assert all(chunk.id == chunks[0].id for chunk in chunks)

    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=FLASH, prompt="x", suffix="y")
    assert refused.value.body["param"] == "suffix"
