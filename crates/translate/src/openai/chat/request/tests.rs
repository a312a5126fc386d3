//! The chat request translation, end to end.

use serde_json::{Value, json};

use super::*;
use crate::common::signatures::{NoMemory, RememberedCall, SIGNATURE_SENTINEL};

fn translate_with(request: Value, memory: &dyn CallMemory) -> Result<Value, String> {
    let request: ChatCompletionRequest = serde_json::from_value(request).unwrap();
    match translate_chat_request(request, memory) {
        Ok(translated) => Ok(serde_json::to_value(translated.body).unwrap()),
        Err(TranslateError::InvalidRequest { param, .. }) => Err(param.unwrap_or_default()),
        Err(other) => panic!("{other}"),
    }
}

fn translate(request: Value) -> Result<Value, String> {
    translate_with(request, &NoMemory)
}

fn chat(model: &str, messages: Value) -> Value {
    json!({"model": model, "messages": messages})
}

fn with(mut base: Value, extra: Value) -> Value {
    for (key, value) in extra.as_object().unwrap() {
        base[key] = value.clone();
    }
    base
}

const USER_HI: &str = r#"[{"role": "user", "content": "hi"}]"#;

fn hi(model: &str) -> Value {
    chat(model, serde_json::from_str(USER_HI).unwrap())
}

#[test]
fn local_refusals_name_the_field() {
    let two_calls = json!([
        {"role": "user", "content": "q"},
        {"role": "assistant", "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
            {"id": "b", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "a", "content": "1"}
    ]);
    let cases: Vec<(Value, &str)> = vec![
        (with(hi("gemini-2.5-flash"), json!({"n": 9})), "n"),
        (with(hi("gemini-2.5-flash"), json!({"n": 0})), "n"),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"stop": ["1", "2", "3", "4", "5", "6"]}),
            ),
            "stop",
        ),
        (
            with(hi("gemini-2.5-flash"), json!({"top_logprobs": 3})),
            "top_logprobs",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"stream_options": {"include_usage": true}}),
            ),
            "stream_options",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"logit_bias": {"50256": -100}}),
            ),
            "logit_bias",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"modalities": ["text", "audio"]}),
            ),
            "modalities",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"reasoning_effort": "extreme"}),
            ),
            "reasoning_effort",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"response_format": {"type": "xml"}}),
            ),
            "response_format.type",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"model": "gemini:streamGenerateContent?key=x"}),
            ),
            "model",
        ),
        (
            chat("gemini-2.5-flash", two_calls),
            "messages[1].tool_calls",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{\"x\": "}}]}, {"role": "tool", "tool_call_id": "a", "content": "r"}]),
            ),
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f"}}]}, {"role": "tool", "tool_call_id": "zzz", "content": "r"}]),
            ),
            "messages[1].tool_call_id",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "assistant", "tool_calls": [{"id": "a", "function": {"name": "f"}}]}, {"role": "tool", "tool_call_id": "a", "content": "r"}, {"role": "tool", "tool_call_id": "a", "content": "r"}]),
            ),
            "messages[2].tool_call_id",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "tool", "tool_call_id": "a", "content": "r"}]),
            ),
            "messages[0].role",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "user", "content": [{"type": "video_url", "video_url": "x"}]}]),
            ),
            "messages[0].content[0].type",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}]),
            ),
            "messages[0].content[0].image_url.url",
        ),
        (
            chat(
                "gemini-2.5-flash",
                json!([{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}, {"role": "user", "content": "q"}]),
            ),
            "messages[0].content[0]",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"tools": [{"type": "function", "function": {"name": "f"}}, {"type": "function", "function": {"name": "f"}}]}),
            ),
            "tools[1].function.name",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}),
            ),
            "tools[0].function.name",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"tools": [{"type": "retrieval"}]}),
            ),
            "tools[0].type",
        ),
        (
            with(hi("gemini-2.5-flash"), json!({"tool_choice": "required"})),
            "tool_choice",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            ),
            "tool_choice",
        ),
        (
            with(
                hi("gemini-2.5-flash"),
                json!({"tools": [{"type": "function", "function": {"name": "f", "parameters": "{not json"}}]}),
            ),
            "tools[0].function.parameters",
        ),
    ];
    for (request, param) in cases {
        assert_eq!(
            translate(request.clone()),
            Err(param.to_owned()),
            "{request}"
        );
    }
}

#[test]
fn conversation_edge_cases() {
    // System-only: Gemini needs a user turn.
    let body = translate(chat(
        "gemini-2.0-flash",
        json!([{"role": "system", "content": "Be brief."}]),
    ))
    .unwrap();
    assert_eq!(
        body["contents"],
        json!([{"role": "user", "parts": [{"text": "."}]}])
    );
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );

    // A history that starts with a tool call gets a placeholder user turn first.
    let body = translate(chat("gemini-2.5-flash", json!([
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "[1, 2]"}
    ]))).unwrap();
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "."}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"result": [1, 2]}}}]}
        ])
    );

    // Tool results: object as is, scalar/array/text wrapped; arguments that are not an
    // object are wrapped too; empty text and empty assistant messages disappear.
    let body = translate(chat("gemini-2.5-flash", json!([
        {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "go"}]},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "x", "type": "function", "function": {"name": "a", "arguments": "[1]"}},
            {"id": "y", "type": "function", "function": {"name": "b", "arguments": {"k": 1}}},
            {"id": "z", "type": "function", "function": {"name": "c", "arguments": null}}
        ]},
        {"role": "tool", "tool_call_id": "z", "content": "plain words"},
        {"role": "tool", "tool_call_id": "x", "content": "42"},
        {"role": "tool", "tool_call_id": "y", "content": [{"type": "text", "text": "{\"ok\": true}"}]}
    ]))).unwrap();
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "go"}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "a", "args": {"value": [1]}}},
                {"functionCall": {"name": "b", "args": {"k": 1}}},
                {"functionCall": {"name": "c", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "a", "response": {"result": 42}}},
                {"functionResponse": {"name": "b", "response": {"ok": true}}},
                {"functionResponse": {"name": "c", "response": {"result": "plain words"}}}
            ]}
        ])
    );

    // Legacy `function_call` and `role: function`.
    let body = translate(chat(
        "gemini-2.5-flash",
        json!([
            {"role": "user", "content": "q"},
            {"role": "assistant", "function_call": {"name": "f", "arguments": "{\"a\":1}"}},
            {"role": "function", "name": "f", "content": "{\"r\": 2}"}
        ]),
    ))
    .unwrap();
    assert_eq!(
        body["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {"r": 2}}}]})
    );
}

#[test]
fn signatures_come_from_the_client_then_memory_then_the_gemini_3_sentinel() {
    struct Memory;
    impl CallMemory for Memory {
        fn recall(&self, id: &str) -> Option<RememberedCall> {
            (id == "remembered").then(|| RememberedCall {
                signature: Some("sig-from-memory".into()),
                upstream_id: true,
            })
        }
    }
    let history = |id: &str| {
        chat(
            "gemini-3-pro-preview",
            json!([
                {"role": "user", "content": "q"},
                {"role": "assistant", "tool_calls": [
                    {"id": id, "type": "function", "function": {"name": "f", "arguments": "{}"}},
                    {"id": "second", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": id, "content": "1"},
                {"role": "tool", "tool_call_id": "second", "content": "2"}
            ]),
        )
    };
    let body = translate_with(history("remembered"), &Memory).unwrap();
    let parts = &body["contents"][1]["parts"];
    assert_eq!(
        parts[0],
        json!({"functionCall": {"name": "f", "args": {}, "id": "remembered"}, "thoughtSignature": "sig-from-memory"})
    );
    assert_eq!(
        parts[1],
        json!({"functionCall": {"name": "f", "args": {}}}),
        "only the first call is signed"
    );

    let body = translate_with(history("unknown"), &Memory).unwrap();
    assert_eq!(
        body["contents"][1]["parts"][0]["thoughtSignature"],
        SIGNATURE_SENTINEL
    );
    assert!(
        body["contents"][1]["parts"][1]
            .get("thoughtSignature")
            .is_none()
    );

    // Gemini 2.5 does not require signatures: none is invented.
    let mut older = history("unknown");
    older["model"] = json!("gemini-2.5-flash");
    let body = translate_with(older, &Memory).unwrap();
    assert!(
        body["contents"][1]["parts"][0]
            .get("thoughtSignature")
            .is_none()
    );
}

#[test]
fn tool_choice_forms() {
    let tools = json!([
        {"type": "function", "function": {"name": "f", "parameters": {"$schema": "x", "type": "object", "additionalProperties": false}}},
        {"type": "function", "function": {"name": "g", "strict": true}}
    ]);
    let cases = [
        (json!("auto"), json!({"mode": "AUTO"}), 2),
        (json!("none"), json!({"mode": "NONE"}), 2),
        (json!("required"), json!({"mode": "ANY"}), 2),
        (
            json!({"type": "function", "function": {"name": "g"}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["g"]}),
            2,
        ),
        (
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [{"type": "function", "function": {"name": "f"}}]}}),
            json!({"mode": "ANY", "allowedFunctionNames": ["f"]}),
            2,
        ),
        (
            json!({"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [{"type": "function", "function": {"name": "g"}}]}}),
            json!({"mode": "AUTO"}),
            1,
        ),
    ];
    for (choice, config, declared) in cases {
        let body = translate(with(
            hi("gemini-2.5-flash"),
            json!({"tools": tools, "tool_choice": choice}),
        ))
        .unwrap();
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": config}),
            "{choice}"
        );
        let declarations = body["tools"][0]["functionDeclarations"].as_array().unwrap();
        assert_eq!(declarations.len(), declared, "{choice}");
    }
    let body = translate(with(hi("gemini-2.5-flash"), json!({"tools": tools}))).unwrap();
    assert_eq!(
        body["tools"],
        json!([{"functionDeclarations": [
            {"name": "f", "parametersJsonSchema": {"type": "object", "additionalProperties": false}},
            {"name": "g"}
        ]}])
    );
    assert!(body.get("toolConfig").is_none());
    let legacy = translate(with(
        hi("gemini-2.5-flash"),
        json!({"functions": [{"name": "f"}], "function_call": {"name": "f"}}),
    ))
    .unwrap();
    assert_eq!(
        legacy["toolConfig"]["functionCallingConfig"],
        json!({"mode": "ANY", "allowedFunctionNames": ["f"]})
    );
    let builtins = translate(with(
        hi("gemini-3-flash-preview"),
        json!({"tools": [{"type": "google_search"}, {"codeExecution": {}}]}),
    ))
    .unwrap();
    assert_eq!(
        builtins["tools"],
        json!([{"googleSearch": {}}, {"codeExecution": {}}])
    );
}

#[test]
fn reasoning_effort_per_model_family() {
    let cases = [
        (
            "gemini-2.5-flash",
            "none",
            json!({"thinkingBudget": 0, "includeThoughts": false}),
        ),
        (
            "gemini-2.5-flash",
            "minimal",
            json!({"thinkingBudget": 512, "includeThoughts": true}),
        ),
        (
            "gemini-2.5-flash",
            "medium",
            json!({"thinkingBudget": 8192, "includeThoughts": true}),
        ),
        (
            "gemini-2.5-flash-lite",
            "high",
            json!({"thinkingBudget": 24576, "includeThoughts": true}),
        ),
        (
            "gemini-2.5-pro",
            "none",
            json!({"thinkingBudget": 128, "includeThoughts": false}),
        ),
        (
            "gemini-2.5-pro",
            "xhigh",
            json!({"thinkingBudget": 32768, "includeThoughts": true}),
        ),
        (
            "gemini-3-flash-preview",
            "none",
            json!({"thinkingLevel": "MINIMAL", "includeThoughts": false}),
        ),
        (
            "gemini-3-flash-preview",
            "medium",
            json!({"thinkingLevel": "MEDIUM", "includeThoughts": true}),
        ),
        (
            "gemini-3-pro-preview",
            "minimal",
            json!({"thinkingLevel": "LOW", "includeThoughts": true}),
        ),
        (
            "gemini-3-pro-preview",
            "medium",
            json!({"thinkingLevel": "HIGH", "includeThoughts": true}),
        ),
    ];
    for (model, effort, expected) in cases {
        let body = translate(with(hi(model), json!({"reasoning_effort": effort}))).unwrap();
        assert_eq!(
            body["generationConfig"]["thinkingConfig"], expected,
            "{model} {effort}"
        );
    }
    // `reasoning: {effort}` is the same thing.
    let body = translate(with(
        hi("gemini-2.5-flash"),
        json!({"reasoning": {"effort": "low"}}),
    ))
    .unwrap();
    assert_eq!(
        body["generationConfig"]["thinkingConfig"]["thinkingBudget"],
        1024
    );
    // Non-thinking models get no thinking config at all.
    let body = translate(with(
        hi("gemini-2.0-flash"),
        json!({"reasoning_effort": "high"}),
    ))
    .unwrap();
    assert!(body.get("generationConfig").is_none());
    // An explicit thinking_config wins; the level wins over a budget on Gemini 3.
    let explicit = json!({"reasoning_effort": "low", "extra_body": {"google": {"thinking_config": {"thinking_budget": 99, "thinking_level": "high", "include_thoughts": false}}}});
    let body = translate(with(hi("gemini-3-flash-preview"), explicit.clone())).unwrap();
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({"thinkingLevel": "HIGH", "includeThoughts": false})
    );
    let body = translate(with(hi("gemini-2.5-flash"), explicit)).unwrap();
    assert_eq!(
        body["generationConfig"]["thinkingConfig"],
        json!({"thinkingBudget": 99, "includeThoughts": false})
    );
}

#[test]
fn parameters_response_formats_and_google_extensions() {
    let body = translate(with(hi("gemini-2.5-flash"), json!({
        "max_tokens": 50, "n": 2, "stop": ["a", "b"], "logprobs": true, "top_logprobs": 2, "top_k": 5,
        "parallel_tool_calls": false, "user": "u", "metadata": {"a": "b"},
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "strict": true, "schema": {"$schema": "s", "type": "object"}}},
        "google": {"cached_content": "cachedContents/flat", "safety_settings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]},
        "extra_body": {"google": {"cached_content": "cachedContents/nested"}}
    }))).unwrap();
    assert_eq!(
        body["generationConfig"],
        json!({
            "maxOutputTokens": 50, "topK": 5, "candidateCount": 2, "stopSequences": ["a", "b"],
            "responseLogprobs": true, "logprobs": 2,
            "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}
        })
    );
    assert_eq!(
        body["cachedContent"], "cachedContents/nested",
        "extra_body.google wins"
    );
    assert!(
        body.get("safetySettings").is_none(),
        "the winning google object has none"
    );

    // Penalties are dropped for Gemini 3, where they are refused upstream.
    let body = translate(with(
        hi("gemini-3-flash-preview"),
        json!({"presence_penalty": 0.5, "temperature": 1.0}),
    ))
    .unwrap();
    assert_eq!(body["generationConfig"], json!({"temperature": 1.0}));
}

#[test]
fn media_parts() {
    let body = translate(chat("gemini-2.5-flash", json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/jpg;base64,AAAA", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.PNG?x=1"}},
        {"type": "input_audio", "input_audio": {"data": "BBBB", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,CCCC", "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "files/abc"}}
    ]}]))).unwrap();
    assert_eq!(
        body["contents"][0]["parts"],
        json!([
            {"inlineData": {"mimeType": "image/jpeg", "data": "AAAA"}},
            {"fileData": {"fileUri": "https://example.com/cat.PNG?x=1", "mimeType": "image/png"}},
            {"inlineData": {"mimeType": "audio/mp3", "data": "BBBB"}},
            {"inlineData": {"mimeType": "application/pdf", "data": "CCCC"}},
            {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc"}}
        ])
    );
}

#[test]
fn the_typed_body_keeps_the_key_order_and_names_what_its_json_names() {
    let request: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "gemini-2.5-flash", "temperature": 0.5, "max_tokens": 9,
        "messages": [
            {"role": "system", "content": "s"},
            {"role": "user", "content": [
                {"type": "file", "file": {"file_id": "files/abc"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]},
            {"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "{\"fileUri\": \"files/out\"}"}],
        "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "auto",
        "google": {"cached_content": "cachedContents/c1", "safety_settings": []}
    }))
    .unwrap();
    let body = translate_chat_request(request, &NoMemory).unwrap().body;
    // The bytes sent upstream: keys in the order the translation has always written them.
    assert_eq!(
        serde_json::to_string(&body).unwrap(),
        concat!(
            r#"{"contents":[{"role":"user","parts":[{"fileData":{"fileUri":"https://generativelanguage.googleapis.com/v1beta/files/abc"}},"#,
            r#"{"fileData":{"fileUri":"https://example.com/a.png","mimeType":"image/png"}}]},"#,
            r#"{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},"#,
            r#"{"role":"user","parts":[{"functionResponse":{"name":"f","response":{"fileUri":"files/out"}}}]}],"#,
            r#""systemInstruction":{"parts":[{"text":"s"}]},"#,
            r#""tools":[{"functionDeclarations":[{"name":"f"}]}],"toolConfig":{"functionCallingConfig":{"mode":"AUTO"}},"#,
            r#""generationConfig":{"maxOutputTokens":9,"temperature":0.5},"#,
            r#""cachedContent":"cachedContents/c1","safetySettings":[]}"#
        )
    );
    let names = body.referenced_resources();
    assert_eq!(
        names,
        ["cachedContents/c1", "files/abc", "files/out"].map(str::to_owned)
    );
    let json = serde_json::to_value(&body).unwrap();
    assert_eq!(names, crate::gemini::native::referenced_resources(&json));
}
