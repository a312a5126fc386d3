//! Stored Responses: what `previous_response_id`, `item_reference`, `GET /v1/responses/{id}`,
//! its `input_items` and `DELETE` read.
//!
//! A response is kept in memory (bounded by [`MEMORY_BYTES`], oldest dropped first) and written
//! to the database by a background writer, so a request that continues a recent response makes
//! no database round trip. A response not in memory (older, created before a restart, or by
//! another instance on the same PostgreSQL) is read from the database. Responses belong to the
//! client key that created them: another key is told they do not exist. They are kept for the
//! request-log retention period (`log_retention_days`), like the request log; one older than
//! that is no longer served from memory either, and leaves it as newer ones come.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use translate::openai::responses::types::Response;

use store::{Storage, StorageError};

/// Bytes of stored responses kept in memory.
pub const MEMORY_BYTES: usize = 64 * 1024 * 1024;
/// Responses waiting for the database writer.
const WRITE_QUEUE: usize = 256;
/// How far back `previous_response_id` is followed.
pub const MAX_CHAIN: usize = 256;
/// How long a read waits for a response another instance has just created to reach the
/// database (its writer works in the background).
const CROSS_INSTANCE_WAIT: Duration = Duration::from_millis(1500);

/// A stored response.
#[derive(Debug)]
pub struct StoredResponse {
    /// `resp_…`.
    pub id: String,
    /// The client key that created it (`None`: the gateway has no client keys).
    pub owner: Option<i64>,
    /// When it was created (unix milliseconds).
    pub created_at_ms: u64,
    /// The response it continued.
    pub previous: Option<String>,
    /// The response, thought signatures included.
    pub response: Response,
    /// Its input items, references resolved, each with an id.
    pub input_items: Vec<Value>,
    /// Its size as stored, for the memory bound.
    size: usize,
}

impl StoredResponse {
    /// A response to store.
    pub fn new(
        owner: Option<i64>,
        created_at_ms: u64,
        response: Response,
        input_items: Vec<Value>,
    ) -> Self {
        let size = serde_json::to_vec(&response).map_or(0, |bytes| bytes.len())
            + serde_json::to_vec(&input_items).map_or(0, |bytes| bytes.len());
        Self {
            id: response.id.clone(),
            previous: response.previous_response_id.clone(),
            owner,
            created_at_ms,
            response,
            input_items,
            size,
        }
    }

    /// Its output items as JSON, signatures included.
    pub fn output_items(&self) -> Vec<Value> {
        self.response
            .output
            .iter()
            .filter_map(|item| serde_json::to_value(item).ok())
            .collect()
    }
}

#[derive(Default)]
struct Memory {
    responses: HashMap<String, Arc<StoredResponse>>,
    /// Output item id → (response id, index in its output).
    items: HashMap<String, (String, usize)>,
    /// Oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

impl Memory {
    fn insert(&mut self, stored: Arc<StoredResponse>) {
        if self.responses.contains_key(&stored.id) {
            return;
        }
        for (index, item) in stored.response.output.iter().enumerate() {
            self.items
                .insert(item.id().to_owned(), (stored.id.clone(), index));
        }
        self.bytes += stored.size;
        self.order.push_back(stored.id.clone());
        self.responses.insert(stored.id.clone(), stored);
        while self.bytes > MEMORY_BYTES {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.remove(&oldest);
        }
    }

    fn remove(&mut self, id: &str) -> Option<Arc<StoredResponse>> {
        let stored = self.responses.remove(id)?;
        self.bytes = self.bytes.saturating_sub(stored.size);
        for item in &stored.response.output {
            self.items.remove(item.id());
        }
        Some(stored)
    }
}

/// The store.
pub struct ResponseStore {
    storage: Storage,
    memory: Mutex<Memory>,
    writes: mpsc::Sender<Arc<StoredResponse>>,
    /// Several instances share the database: a miss may be a response another instance is
    /// still writing.
    shared: bool,
}

impl std::fmt::Debug for ResponseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseStore").finish_non_exhaustive()
    }
}

/// Whether `stored` is still within the retention period at `now_ms`.
fn is_fresh(stored: &StoredResponse, now_ms: u64, retention: Duration) -> bool {
    let retention_ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(stored.created_at_ms) < retention_ms
}

impl ResponseStore {
    /// A store on `storage`, with its background writer.
    pub fn start(storage: Storage, shared: bool) -> Self {
        let (writes, mut queue) = mpsc::channel::<Arc<StoredResponse>>(WRITE_QUEUE);
        let writer = storage.clone();
        tokio::spawn(async move {
            while let Some(stored) = queue.recv().await {
                if let Err(error) = save(&writer, &stored).await {
                    tracing::warn!(response = %stored.id, %error, "a stored response could not be written");
                }
            }
        });
        Self {
            storage,
            memory: Mutex::default(),
            writes,
            shared,
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `stored`: in memory at once, in the database soon.
    pub async fn save(&self, stored: StoredResponse) {
        let stored = Arc::new(stored);
        self.memory().insert(Arc::clone(&stored));
        // Waits when the writer is behind, so that a slow database slows the clients rather
        // than growing a queue without bound.
        if self.writes.send(stored).await.is_err() {
            tracing::warn!("the stored-response writer stopped");
        }
    }

    /// The response `id` if `owner` may see it.
    pub async fn get(
        &self,
        id: &str,
        owner: Option<i64>,
        now_ms: u64,
        retention: Duration,
    ) -> Result<Option<Arc<StoredResponse>>, StorageError> {
        let remembered = self.memory().responses.get(id).cloned();
        let stored = match remembered {
            Some(stored) => Some(stored),
            None => {
                let mut found = load(&self.storage, id).await?;
                if found.is_none() && self.shared && looks_like_ours(id, "resp_") {
                    tokio::time::sleep(CROSS_INSTANCE_WAIT).await;
                    found = load(&self.storage, id).await?;
                }
                found.map(|stored| {
                    let stored = Arc::new(stored);
                    self.memory().insert(Arc::clone(&stored));
                    stored
                })
            }
        };
        Ok(stored.filter(|stored| stored.owner == owner && is_fresh(stored, now_ms, retention)))
    }

    /// The output item `id` of a response `owner` may see.
    pub async fn item(
        &self,
        id: &str,
        owner: Option<i64>,
        now_ms: u64,
        retention: Duration,
    ) -> Result<Option<Value>, StorageError> {
        let place = self.memory().items.get(id).cloned();
        let response_id = match place {
            Some((response_id, _)) => response_id,
            None => match self.storage.response_of_item(id).await? {
                Some(response_id) => response_id,
                None => return Ok(None),
            },
        };
        let Some(stored) = self.get(&response_id, owner, now_ms, retention).await? else {
            return Ok(None);
        };
        Ok(stored
            .response
            .output
            .iter()
            .find(|item| item.id() == id)
            .and_then(|item| serde_json::to_value(item).ok()))
    }

    /// The items of the conversation that `id` ends: every response back to the first, each
    /// with its input then its output.
    pub async fn conversation(
        &self,
        id: &str,
        owner: Option<i64>,
        now_ms: u64,
        retention: Duration,
    ) -> Result<Option<Vec<Value>>, StorageError> {
        let mut chain = Vec::new();
        let mut next = Some(id.to_owned());
        while let Some(id) = next.take() {
            if chain.len() == MAX_CHAIN {
                break;
            }
            let Some(stored) = self.get(&id, owner, now_ms, retention).await? else {
                // The first is required; an older one that expired or was deleted ends the
                // history there, as it does at OpenAI.
                if chain.is_empty() {
                    return Ok(None);
                }
                break;
            };
            next.clone_from(&stored.previous);
            chain.push(stored);
        }
        let mut items = Vec::new();
        for stored in chain.iter().rev() {
            items.extend(stored.input_items.iter().cloned());
            items.extend(stored.output_items());
        }
        Ok(Some(items))
    }

    /// Deletes the response `id` if `owner` may see it; whether it existed.
    pub async fn delete(
        &self,
        id: &str,
        owner: Option<i64>,
        now_ms: u64,
        retention: Duration,
    ) -> Result<bool, StorageError> {
        if self.get(id, owner, now_ms, retention).await?.is_none() {
            return Ok(false);
        }
        self.forget(id);
        self.storage.delete_response(id).await?;
        Ok(true)
    }

    /// Drops `id` from memory (deleted here or by another instance).
    pub fn forget(&self, id: &str) {
        let mut memory = self.memory();
        if memory.remove(id).is_some() {
            memory.order.retain(|kept| kept != id);
        }
    }
}

/// Whether `id` has the shape of the ids this gateway makes.
fn looks_like_ours(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|rest| rest.len() == 48 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `prefix` and 48 random hex digits, the shape of OpenAI's ids (`resp_…`, `msg_…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(rand::random::<[u8; 24]>()))
}

/// Writes `stored` to the database.
async fn save(storage: &Storage, stored: &StoredResponse) -> Result<(), StorageError> {
    let response = serde_json::to_string(&stored.response).unwrap_or_default();
    let input_items = serde_json::to_string(&stored.input_items).unwrap_or_default();
    let output_items: Vec<(&str, String)> = stored
        .response
        .output
        .iter()
        .map(|item| (item.id(), serde_json::to_string(item).unwrap_or_default()))
        .collect();
    storage
        .save_response(store::NewResponse {
            id: &stored.id,
            client_key_id: stored.owner,
            created_at_ms: stored.created_at_ms,
            previous_response_id: stored.previous.as_deref(),
            response: &response,
            input_items: &input_items,
            output_items: &output_items,
        })
        .await
}

/// Reads the stored response `id` from the database; one that cannot be read is logged and
/// treated as absent.
async fn load(storage: &Storage, id: &str) -> Result<Option<StoredResponse>, StorageError> {
    let Some(row) = storage.load_response(id).await? else {
        return Ok(None);
    };
    let (Ok(response), Ok(input_items)) = (
        serde_json::from_str::<Response>(&row.response),
        serde_json::from_str::<Vec<Value>>(&row.input_items),
    ) else {
        tracing::warn!(
            response = id,
            "a stored response could not be read; ignored"
        );
        return Ok(None);
    };
    Ok(Some(StoredResponse::new(
        row.client_key_id,
        row.created_at_ms,
        response,
        input_items,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use translate::openai::responses::types::{CreateResponse, OutputItem, OutputText, Status};

    fn response(id: &str, previous: Option<&str>, text: &str, size: usize) -> Response {
        let request: CreateResponse = serde_json::from_value(serde_json::json!({
            "model": "gemini-2.5-flash", "previous_response_id": previous}))
        .unwrap();
        let mut response = Response::started(&request, id.to_owned(), "gemini-2.5-flash".into(), 1);
        response.output.push(OutputItem::Message {
            id: format!("msg_{id}"),
            status: Status::Completed,
            role: "assistant".into(),
            content: vec![OutputText::new(
                format!("{text}{}", "x".repeat(size)),
                Vec::new(),
            )],
        });
        response
    }

    async fn store() -> (ResponseStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
        (
            ResponseStore::start(Storage::open(&url).await.unwrap(), false),
            dir,
        )
    }

    const DAY: Duration = Duration::from_secs(86_400);

    #[tokio::test]
    async fn a_conversation_is_rebuilt_from_memory_and_from_the_database_for_its_owner_only() {
        let (store, _dir) = store().await;
        let input = vec![
            serde_json::json!({"type": "message", "id": "msg_in1", "role": "user", "content": "one"}),
        ];
        store
            .save(StoredResponse::new(
                Some(1),
                1000,
                response("resp_a", None, "A", 0),
                input,
            ))
            .await;
        store
            .save(StoredResponse::new(
                Some(1),
                2000,
                response("resp_b", Some("resp_a"), "B", 0),
                Vec::new(),
            ))
            .await;
        let items = store
            .conversation("resp_b", Some(1), 3000, DAY)
            .await
            .unwrap()
            .unwrap();
        let ids: Vec<&str> = items
            .iter()
            .map(|item| item["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["msg_in1", "msg_resp_a", "msg_resp_b"]);
        assert!(
            store
                .get("resp_b", Some(2), 3000, DAY)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .get("resp_b", Some(1), 3000 + DAY.as_millis() as u64, DAY)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .item("msg_resp_a", Some(2), 3000, DAY)
                .await
                .unwrap()
                .is_none()
        );

        // A new process (or another instance) reads the database.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = ResponseStore::start(store.storage.clone(), false);
        let items = fresh
            .conversation("resp_b", Some(1), 3000, DAY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(
            fresh
                .item("msg_resp_a", Some(1), 3000, DAY)
                .await
                .unwrap()
                .unwrap()["content"][0]["text"],
            "A"
        );

        assert!(fresh.delete("resp_a", Some(1), 3000, DAY).await.unwrap());
        assert!(!fresh.delete("resp_a", Some(1), 3000, DAY).await.unwrap());
        store.forget("resp_a");
        // The first response gone, the conversation starts at the second.
        let items = store
            .conversation("resp_b", Some(1), 3000, DAY)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(store.storage.prune_responses(2500).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn memory_holds_a_bounded_number_of_bytes() {
        let (store, _dir) = store().await;
        let size = MEMORY_BYTES / 4;
        for index in 0..6 {
            let id = format!("resp_{index}");
            store
                .save(StoredResponse::new(
                    None,
                    1,
                    response(&id, None, "", size),
                    Vec::new(),
                ))
                .await;
        }
        let memory = store.memory();
        assert!(memory.bytes <= MEMORY_BYTES);
        assert_eq!(memory.responses.len(), 3);
        assert!(!memory.responses.contains_key("resp_0"));
        assert!(!memory.items.contains_key("msg_resp_0"));
    }
}
