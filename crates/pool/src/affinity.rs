//! Which project owns a file or cached content, and which key started a resumable upload.
//!
//! Gemini files and cached contents are visible only to keys of the Google Cloud project that
//! created them. A resumable upload session is addressed by an unguessable `upload_id`; the
//! chunks after the first carry no API key, and must reach the key that started the upload so
//! that the finished file lands in that key's project.

use std::sync::Arc;

use dashmap::DashMap;

use crate::KeyId;

/// The affinity maps. Sharded maps: lookups on the request path do not contend on one lock.
#[derive(Debug, Default)]
pub struct Affinity {
    resource_projects: DashMap<String, Arc<str>>,
    upload_keys: DashMap<String, KeyId>,
}

impl Affinity {
    /// Remembers that `resource` (`files/abc`, `cachedContents/xyz`) belongs to `project`.
    pub fn remember_resource(&self, resource: String, project: Arc<str>) {
        self.resource_projects.insert(resource, project);
    }

    /// The project that owns `resource`, when the gateway saw it created (or loaded it at start).
    pub fn resource_project(&self, resource: &str) -> Option<Arc<str>> {
        self.resource_projects
            .get(resource)
            .map(|entry| Arc::clone(entry.value()))
    }

    /// Forgets a deleted resource.
    pub fn forget_resource(&self, resource: &str) {
        self.resource_projects.remove(resource);
    }

    /// Binds a resumable upload session to the key that started it.
    pub fn bind_upload(&self, upload_id: String, key: KeyId) {
        self.upload_keys.insert(upload_id, key);
    }

    /// The key that started the upload session `upload_id`.
    pub fn upload_key(&self, upload_id: &str) -> Option<KeyId> {
        self.upload_keys.get(upload_id).map(|entry| *entry.value())
    }

    /// Ends an upload session (after its final chunk).
    pub fn finish_upload(&self, upload_id: &str) {
        self.upload_keys.remove(upload_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_and_uploads_are_remembered_and_forgotten() {
        let affinity = Affinity::default();
        affinity.remember_resource("files/a".into(), "p1".into());
        assert_eq!(affinity.resource_project("files/a").as_deref(), Some("p1"));
        assert_eq!(affinity.resource_project("files/b"), None);
        affinity.forget_resource("files/a");
        assert_eq!(affinity.resource_project("files/a"), None);

        affinity.bind_upload("u1".into(), KeyId(3));
        assert_eq!(affinity.upload_key("u1"), Some(KeyId(3)));
        affinity.finish_upload("u1");
        assert_eq!(affinity.upload_key("u1"), None);
    }
}
