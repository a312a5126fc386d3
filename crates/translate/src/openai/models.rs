//! `/v1/models` from Gemini's model list (translation.md §7.2).

use serde_json::{Value, json};

/// The OpenAI model object for a Gemini model entry, if it can serve chat or embeddings
/// (`predict`-only models such as Imagen are left out).
pub fn openai_model(entry: &Value) -> Option<Value> {
    let name = entry.get("name")?.as_str()?;
    let id = name.strip_prefix("models/").unwrap_or(name);
    let methods = entry.get("supportedGenerationMethods")?.as_array()?;
    let useful = methods
        .iter()
        .filter_map(Value::as_str)
        .any(|method| method == "generateContent" || method == "embedContent");
    // `created` must be an integer for the SDKs; Gemini has no creation time.
    useful.then(|| json!({"id": id, "object": "model", "created": 0, "owned_by": "google"}))
}

/// The OpenAI list from every page of `GET /v1beta/models`.
pub fn openai_model_list<'a>(pages: impl IntoIterator<Item = &'a Value>) -> Value {
    let data: Vec<Value> = pages
        .into_iter()
        .filter_map(|page| page.get("models")?.as_array())
        .flatten()
        .filter_map(openai_model)
        .collect();
    json!({"object": "list", "data": data})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pages_are_merged_and_predict_only_models_dropped() {
        let page1: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/gemini/models_list_page1.json"
        ))
        .unwrap();
        let page2: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/gemini/models_list_page2.json"
        ))
        .unwrap();
        let expected: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/openai/models_list.json"))
                .unwrap();
        assert_eq!(openai_model_list([&page1, &page2]), expected);
    }
}
