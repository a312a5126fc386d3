"""Google's own `google-genai` SDK, unchanged but for its base URL, against the gateway."""

import pytest
from google import genai
from google.genai import types

from conftest import CLIENT_KEY

MODEL = "gemini-2.5-flash"


@pytest.fixture(params=["v1beta", "v1"])
def client(request, gateway):
    return genai.Client(
        api_key=CLIENT_KEY,
        http_options=types.HttpOptions(base_url=gateway.url, api_version=request.param),
    )


def test_generate(client):
    response = client.models.generate_content(model=MODEL, contents="Hello through the pool")
    assert response.text == "Echo: Hello through the pool"
    assert response.usage_metadata.prompt_token_count == 4
    assert response.usage_metadata.thoughts_token_count == 5


def test_stream(client):
    chunks = list(
        client.models.generate_content_stream(model=MODEL, contents="one two three four five six")
    )
    assert len(chunks) == 3
    assert "".join(chunk.text for chunk in chunks) == "Echo: one two three four five six"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP


def test_count_tokens(client):
    response = client.models.count_tokens(model=MODEL, contents="count these four words")
    assert response.total_tokens == 4


def test_embed(client):
    single = client.models.embed_content(model="gemini-embedding-001", contents="embed me")
    assert len(single.embeddings) == 1
    assert len(single.embeddings[0].values) == 768
    batch = client.models.embed_content(
        model="gemini-embedding-001",
        contents=["first", "second", "third"],
        config=types.EmbedContentConfig(output_dimensionality=16),
    )
    assert [len(e.values) for e in batch.embeddings] == [16, 16, 16]


def test_list_models_follows_every_page(client):
    names = [model.name for model in client.models.list(config={"page_size": 3})]
    assert "models/gemini-2.5-flash" in names
    assert "models/gemini-embedding-001" in names
    assert len(names) == len(set(names)) == 8


def test_get_model(client):
    model = client.models.get(model=MODEL)
    assert model.name == f"models/{MODEL}"


def test_upload_then_use_the_file(client, tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("The gateway keeps files with the project that uploaded them.\n" * 50)
    uploaded = client.files.upload(file=path, config={"mime_type": "text/plain"})
    assert uploaded.name.startswith("files/")
    assert client.files.get(name=uploaded.name).size_bytes == path.stat().st_size
    # With two projects in the pool, a gateway without affinity would fail about half of these.
    for _ in range(6):
        response = client.models.generate_content(
            model=MODEL, contents=[uploaded, "Summarise the file"]
        )
        assert response.text == "Echo: Summarise the file"
    client.files.delete(name=uploaded.name)


def test_a_wrong_key_is_refused_in_gemini_dialect(gateway):
    bad = genai.Client(api_key="not-a-client-key", http_options=types.HttpOptions(base_url=gateway.url))
    with pytest.raises(genai.errors.ClientError) as caught:
        bad.models.generate_content(model=MODEL, contents="hi")
    assert caught.value.code == 401
    assert caught.value.status == "UNAUTHENTICATED"
