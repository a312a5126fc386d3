//! Native Gemini requests: which paths the gateway relays, and which owned resources
//! (`files/…`, `cachedContents/…`) a request names.
//!
//! Files and cached contents live in the Google Cloud project of the key that created them; any
//! other project's key gets 403 PERMISSION_DENIED for them. The gateway therefore has to know,
//! before it picks a key, which such resources a request refers to, whether in the path
//! (`GET files/abc`) or in the body (`fileData.fileUri`, `cachedContent`).

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The API versions a native path may start with.
pub const API_VERSIONS: [&str; 2] = ["v1beta", "v1"];

/// First path segments of the Gemini API surface. Anything else is refused, so that the
/// gateway cannot be used to reach other Google endpoints with a pool key.
const COLLECTIONS: [&str; 9] = [
    "models",
    "tunedModels",
    "files",
    "cachedContents",
    "batches",
    "operations",
    "corpora",
    "fileSearchStores",
    "generatedFiles",
];

/// Kinds of resources that belong to one Google Cloud project.
const OWNED_COLLECTIONS: [&str; 2] = ["files", "cachedContents"];

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or has an empty segment (`a//b`, trailing `/`).
    #[error("the path has an empty segment")]
    EmptySegment,
    /// A `.` or `..` segment, or a character outside the Gemini resource-name alphabet
    /// (which also rules out percent-encoding, backslashes and absolute URLs).
    #[error("the path has a character or segment the Gemini API does not use")]
    IllegalCharacter,
    /// The first segment is not a Gemini API collection.
    #[error("`{0}` is not part of the Gemini API")]
    UnknownCollection(String),
}

/// A validated native path below the API version, such as `models/gemini-2.5-flash:generateContent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NativePath {
    path: String,
}

impl NativePath {
    /// Validates `path` (without the leading `/{version}/`).
    pub fn parse(path: &str) -> Result<Self, PathError> {
        if path.is_empty() {
            return Err(PathError::EmptySegment);
        }
        for segment in path.split('/') {
            if segment.is_empty() {
                return Err(PathError::EmptySegment);
            }
            if segment == "." || segment == ".." || !segment.bytes().all(is_name_byte) {
                return Err(PathError::IllegalCharacter);
            }
        }
        let collection = path.split(['/', ':']).next().unwrap_or_default();
        if !COLLECTIONS.contains(&collection) {
            return Err(PathError::UnknownCollection(collection.to_owned()));
        }
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// The validated path.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The model of a `models/{model}` or `models/{model}:{action}` path.
    pub fn model(&self) -> Option<&str> {
        let rest = self.path.strip_prefix("models/")?;
        let model = rest.split([':', '/']).next()?;
        (!model.is_empty()).then_some(model)
    }

    /// The action after the colon: `generateContent`, `streamGenerateContent`, `countTokens`, …
    pub fn action(&self) -> Option<&str> {
        let last_segment = self.path.rsplit('/').next()?;
        last_segment.split_once(':').map(|(_, action)| action)
    }

    /// Whether the upstream answers with a stream that must be relayed as it arrives.
    pub fn is_streaming(&self) -> bool {
        matches!(
            self.action(),
            Some("streamGenerateContent" | "streamBidiGenerateContent")
        )
    }

    /// The owned resource the path itself names (`files/abc`, `cachedContents/xyz`).
    pub fn owned_resource(&self) -> Option<String> {
        let mut segments = self.path.split('/');
        let collection = segments.next()?;
        let id = segments.next()?.split(':').next()?;
        (OWNED_COLLECTIONS.contains(&collection) && !id.is_empty())
            .then(|| format!("{collection}/{id}"))
    }

    /// Whether a successful answer to `method` on this path creates an owned resource whose name
    /// is in the response body (file registration, cached content creation).
    pub fn creates_owned_resource(&self, method: &str) -> bool {
        method == "POST" && OWNED_COLLECTIONS.contains(&self.path.as_str())
    }

    /// The collection (`files`, `cachedContents`) a `method` call on this path lists; it is
    /// also the name of the answer's array of entries.
    pub fn lists_owned_resources(&self, method: &str) -> Option<&'static str> {
        if method != "GET" {
            return None;
        }
        OWNED_COLLECTIONS
            .into_iter()
            .find(|collection| *collection == self.path)
    }
}

/// Characters of Gemini resource names and actions: `models/gemini-2.5-flash:generateContent`,
/// `files/abc-123`, `tunedModels/x/operations/y`.
fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':')
}

/// Owned resources a native request body refers to: every `fileData.fileUri` that points at a
/// Gemini file (`https://…/v1beta/files/abc` or `files/abc`), every `fileName` naming one (a
/// batch's `inputConfig`, a file imported into a file search store) and a `cachedContent`.
/// Google accepts snake_case field names too, so both spellings are read.
pub fn referenced_resources(body: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_references(body, &mut found);
    sorted_unique(found)
}

/// The references found, each once, in order.
pub(crate) fn sorted_unique(mut found: Vec<String>) -> Vec<String> {
    found.sort();
    found.dedup();
    found
}

/// Collects the references anywhere in `value`.
pub(crate) fn collect_references(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (field, child) in map {
                collect_field_references(field, child, found);
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_references(item, found)),
        _ => {}
    }
}

/// Collects the references of one field of an object: a referencing field's string names a
/// resource; any other value is walked.
pub(crate) fn collect_field_references(field: &str, value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(reference) => collect_string_field_references(field, reference, found),
        _ => collect_references(value, found),
    }
}

/// The reference a string field names, if it is a referencing field.
pub(crate) fn collect_string_field_references(field: &str, value: &str, found: &mut Vec<String>) {
    if let Some(collection) = referencing_field(field) {
        found.extend(resource_from_reference(value, collection));
    }
}

/// [`referenced_resources`] read straight from a JSON body, in one pass that builds no tree.
/// Every occurrence counts, also a field given twice in one object: a parser that keeps the
/// first and one that keeps the last would otherwise disagree on which resource is named, and
/// the gateway's check must see whatever the upstream might use. Escapes (`files\/x`,
/// `\u0066ileUri`) are decoded as the upstream decodes them.
pub fn referenced_resources_in(body: &[u8]) -> Result<Vec<String>, serde_json::Error> {
    let mut found = Vec::new();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    References(&mut found).deserialize(&mut deserializer)?;
    deserializer.end()?;
    Ok(sorted_unique(found))
}

/// The collection whose resources a field names, for the fields that name one.
fn referencing_field(field: &str) -> Option<&'static str> {
    match field {
        "fileUri" | "file_uri" | "fileName" | "file_name" => Some("files"),
        "cachedContent" | "cached_content" => Some("cachedContents"),
        _ => None,
    }
}

/// Walks any JSON value, collecting references (see [`referenced_resources_in`]).
struct References<'a>(&'a mut Vec<String>);

impl<'de> DeserializeSeed<'de> for References<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for References<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let found = self.0;
        while let Some(field) = map.next_key::<String>()? {
            match referencing_field(&field) {
                Some(collection) => map.next_value_seed(Reference {
                    collection,
                    found: &mut *found,
                })?,
                None => map.next_value_seed(References(&mut *found))?,
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let found = self.0;
        while seq.next_element_seed(References(&mut *found))?.is_some() {}
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The value of a referencing field: a string names a resource; anything else is walked on.
struct Reference<'a> {
    collection: &'static str,
    found: &'a mut Vec<String>,
}

impl<'de> DeserializeSeed<'de> for Reference<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Reference<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_str<E>(self, reference: &str) -> Result<(), E> {
        self.found
            .extend(resource_from_reference(reference, self.collection));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        References(self.found).visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        References(self.found).visit_seq(seq)
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// Turns `files/abc`, `…/v1beta/files/abc` or `…/files/abc?x` into `files/abc`. External URLs
/// (YouTube, public HTTPS) are not owned by any project and give `None`.
fn resource_from_reference(reference: &str, collection: &str) -> Option<String> {
    let marker = format!("{collection}/");
    let start = if reference.starts_with(&marker) {
        0
    } else {
        let at = reference.find(&format!("/{marker}"))? + 1;
        let before = &reference[..at];
        // Only the Gemini API's own URLs name a project-owned resource.
        if !before.contains("generativelanguage.googleapis.com")
            && !API_VERSIONS
                .iter()
                .any(|version| before.ends_with(&format!("/{version}/")))
        {
            return None;
        }
        at
    };
    let rest = &reference[start + marker.len()..];
    let id: String = rest
        .bytes()
        .take_while(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_'))
        .map(char::from)
        .collect();
    (!id.is_empty()).then(|| format!("{marker}{id}"))
}

/// The name of the resource a creating call returned: `{"name": "files/abc"}` or
/// `{"file": {"name": "files/abc"}}` (the shape of a finished resumable upload).
pub fn created_resource_name(body: &Value) -> Option<String> {
    let name = body
        .get("file")
        .and_then(|file| file.get("name"))
        .or_else(|| body.get("name"))?
        .as_str()?;
    let (collection, id) = name.split_once('/')?;
    (OWNED_COLLECTIONS.contains(&collection) && !id.is_empty() && !id.contains('/'))
        .then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn gemini_paths_are_accepted_and_described() {
        let path = NativePath::parse("models/gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!(path.model(), Some("gemini-2.5-flash"));
        assert_eq!(path.action(), Some("streamGenerateContent"));
        assert!(path.is_streaming());
        assert_eq!(path.owned_resource(), None);

        let list = NativePath::parse("models").unwrap();
        assert_eq!(list.model(), None);
        assert_eq!(list.action(), None);

        let file = NativePath::parse("files/abc-123").unwrap();
        assert_eq!(file.owned_resource().as_deref(), Some("files/abc-123"));
        assert!(!file.creates_owned_resource("POST"));
        assert!(
            NativePath::parse("files")
                .unwrap()
                .creates_owned_resource("POST")
        );
        assert!(
            !NativePath::parse("files")
                .unwrap()
                .creates_owned_resource("GET")
        );

        let cached = NativePath::parse("cachedContents/xyz").unwrap();
        assert_eq!(
            cached.owned_resource().as_deref(),
            Some("cachedContents/xyz")
        );
        for (path, method, listed) in [
            ("files", "GET", Some("files")),
            ("cachedContents", "GET", Some("cachedContents")),
            ("files", "POST", None),
            ("files/abc", "GET", None),
            ("models", "GET", None),
        ] {
            let path = NativePath::parse(path).unwrap();
            assert_eq!(
                path.lists_owned_resources(method),
                listed,
                "{path:?} {method}"
            );
        }
        let batch = NativePath::parse("models/gemini-2.5-flash:batchEmbedContents").unwrap();
        assert!(!batch.is_streaming());
    }

    #[test]
    fn path_escapes_and_foreign_paths_are_refused() {
        let cases = [
            ("", PathError::EmptySegment),
            ("models//x", PathError::EmptySegment),
            ("models/", PathError::EmptySegment),
            ("../admin", PathError::IllegalCharacter),
            ("models/../../oauth2", PathError::IllegalCharacter),
            ("models/%2e%2e/x", PathError::IllegalCharacter),
            ("models/x%2Fy", PathError::IllegalCharacter),
            ("models/x\\y", PathError::IllegalCharacter),
            ("models/a b", PathError::IllegalCharacter),
            ("models/x?key=1", PathError::IllegalCharacter),
            ("models/x#f", PathError::IllegalCharacter),
            ("models/x@evil.example", PathError::IllegalCharacter),
            ("models/.", PathError::IllegalCharacter),
            ("https:", PathError::UnknownCollection("https".to_owned())),
            (
                "storage/v1/b",
                PathError::UnknownCollection("storage".to_owned()),
            ),
        ];
        for (path, expected) in cases {
            assert_eq!(NativePath::parse(path), Err(expected), "{path:?}");
        }
    }

    #[test]
    fn body_references_to_files_and_cached_contents_are_found() {
        let body = json!({
            "cachedContent": "cachedContents/cache-1",
            "contents": [{"role": "user", "parts": [
                {"text": "describe"},
                {"fileData": {"mimeType": "image/png",
                    "fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc-1"}},
                {"file_data": {"file_uri": "files/def_2"}},
                {"fileData": {"fileUri": "https://www.youtube.com/watch?v=x"}},
                {"fileData": {"fileUri": "https://example.com/files/not-gemini"}},
                {"fileData": {"fileUri": "http://127.0.0.1:9/v1beta/files/ghi"}},
            ]}],
            "batch": {"input_config": {"file_name": "files/batch-in"}},
        });
        assert_eq!(
            referenced_resources(&body),
            vec![
                "cachedContents/cache-1".to_owned(),
                "files/abc-1".to_owned(),
                "files/batch-in".to_owned(),
                "files/def_2".to_owned(),
                "files/ghi".to_owned(),
            ]
        );
        assert!(referenced_resources(&json!({"contents": []})).is_empty());
        // The body read directly finds the same.
        assert_eq!(
            referenced_resources_in(body.to_string().as_bytes()).unwrap(),
            referenced_resources(&body)
        );
    }

    #[test]
    fn references_hidden_by_escapes_or_duplicate_fields_are_found_in_the_body() {
        let body = br#"{
            "cachedContent": "cachedContents/first",
            "cachedContent": "cachedContents/second",
            "contents": [{"parts": [
                {"fileData": {"fileUri": "files\/escaped-slash"}},
                {"fileData": {"\u0066ileUri": "files/escaped-key", "fileUri": "files/twice"}},
                {"fileData": {"fileUri": "\u0066iles\u002Funicode"}},
                {"text": "files/only-text", "n": 1, "f": 1.5, "b": true, "z": null}
            ]}]
        }"#;
        assert_eq!(
            referenced_resources_in(body).unwrap(),
            [
                "cachedContents/first",
                "cachedContents/second",
                "files/escaped-key",
                "files/escaped-slash",
                "files/twice",
                "files/unicode",
            ]
        );
        assert!(referenced_resources_in(b"{").is_err());
        assert!(referenced_resources_in(b"{} {}").is_err());
    }

    #[test]
    fn created_resource_names_are_read_from_both_shapes() {
        assert_eq!(
            created_resource_name(&json!({"file": {"name": "files/abc", "uri": "u"}})),
            Some("files/abc".to_owned())
        );
        assert_eq!(
            created_resource_name(&json!({"name": "cachedContents/c1", "model": "models/m"})),
            Some("cachedContents/c1".to_owned())
        );
        assert_eq!(created_resource_name(&json!({"name": "models/m"})), None);
        assert_eq!(created_resource_name(&json!({"name": "files/a/b"})), None);
        assert_eq!(created_resource_name(&json!([])), None);
    }
}
