//! Test harness: a `mock-gemini` on port 0 and the gateway's real router on port 0 in front of it.

#![allow(
    dead_code,
    clippy::unwrap_used,
    reason = "shared by several test crates, each using a part"
)]

use std::collections::HashMap;
use std::net::SocketAddr;

use mock_gemini::{MockConfig, MockGemini, MockKey};
use server::AppState;
use server::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod admin;

/// The client key every test uses.
pub const CLIENT_KEY: &str = "test-client-key-0001";

pub struct Harness {
    pub mock: MockGemini,
    pub mock_addr: SocketAddr,
    pub addr: SocketAddr,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    pub http: reqwest::Client,
}

/// Gateway settings for a harness, on top of the defaults below.
pub struct Setup {
    pub mock: MockConfig,
    /// `GEMINI_API_KEYS`; by default every mock key with its project.
    pub gemini_keys: Option<String>,
    pub env: Vec<(&'static str, String)>,
}

impl Setup {
    pub fn with_keys(keys: &[(&str, &str)]) -> Self {
        Self {
            mock: MockConfig {
                keys: keys.iter().map(|(k, p)| MockKey::new(*k, *p)).collect(),
                ..MockConfig::default()
            },
            gemini_keys: None,
            env: Vec::new(),
        }
    }
}

impl Harness {
    pub async fn start(setup: Setup) -> Self {
        let (mock, mock_addr) = MockGemini::start(setup.mock.clone()).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let gemini_keys = setup.gemini_keys.clone().unwrap_or_else(|| {
            setup
                .mock
                .keys
                .iter()
                .map(|k| format!("{}@{}", k.key, k.project))
                .collect::<Vec<_>>()
                .join(",")
        });
        let mut env: HashMap<&str, String> = HashMap::from([
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            (
                "DATABASE_URL",
                format!("sqlite://{}/gateway.db?mode=rwc", dir.path().display()),
            ),
            ("GEMINI_API_KEYS", gemini_keys),
            ("GEMINI_BASE_URL", format!("http://{mock_addr}")),
            ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
            // Tests that are not about quotas must not run into the default 10 per minute.
            ("DEFAULT_RPM_LIMIT", "100000".to_owned()),
            ("DEFAULT_RPD_LIMIT", "1000000".to_owned()),
        ]);
        env.extend(setup.env.iter().cloned());
        let (state, addr) = Self::serve_gateway(&env).await;
        Self {
            mock,
            mock_addr,
            addr,
            state,
            dir,
            http: reqwest::Client::new(),
        }
    }

    async fn serve_gateway(env: &HashMap<&str, String>) -> (AppState, SocketAddr) {
        let config = Config::from_lookup(|name| env.get(name).cloned()).unwrap();
        let state = AppState::initialize(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = server::build_router(state.clone());
        let serving = state.clone();
        tokio::spawn(async move { server::serve(listener, router, &serving).await });
        (state, addr)
    }

    /// A second gateway on the same database and mock (a restart, as far as state goes).
    pub async fn restart(&self) -> (AppState, SocketAddr) {
        self.restart_with(&[]).await
    }

    /// [`Harness::restart`] with `env` on top (a changed `ADMIN_PASSWORD`, say).
    pub async fn restart_with(&self, extra: &[(&'static str, String)]) -> (AppState, SocketAddr) {
        let keys = self
            .state
            .config
            .upstream_keys
            .iter()
            .map(|k| {
                let secret = secrecy::ExposeSecret::expose_secret(&k.key).to_owned();
                match &k.project {
                    Some(p) => format!("{secret}@{p}"),
                    None => secret,
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        let mut env = HashMap::from([
            ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("DATABASE_URL", self.state.config.database_url.clone()),
            ("GEMINI_API_KEYS", keys),
            ("GEMINI_BASE_URL", format!("http://{}", self.mock_addr)),
            ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
            (
                "DEFAULT_RPM_LIMIT",
                self.state.config.default_rpm_limit.to_string(),
            ),
            (
                "DEFAULT_RPD_LIMIT",
                self.state.config.default_rpd_limit.to_string(),
            ),
        ]);
        env.extend(extra.iter().cloned());
        Self::serve_gateway(&env).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the client key in `x-goog-api-key`, as the google-genai SDK sends it.
    pub fn native(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.native_as(CLIENT_KEY, method, path)
    }

    /// [`Harness::native`] with another client key (a second tenant).
    pub fn native_as(
        &self,
        client_key: &str,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .header("x-goog-api-key", client_key)
    }

    pub async fn generate(&self, model: &str, body: serde_json::Value) -> reqwest::Response {
        self.native(
            reqwest::Method::POST,
            &format!("/v1beta/models/{model}:generateContent"),
        )
        .json(&body)
        .send()
        .await
        .unwrap()
    }

    /// Sends `request_line` and headers as raw bytes (no client-side URL normalisation) and
    /// returns the status code.
    pub async fn raw_status(&self, request_line: &str) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let request = format!(
            "{request_line}\r\nhost: {}\r\nx-goog-api-key: {CLIENT_KEY}\r\nconnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response);
        text.split_whitespace().nth(1).unwrap().parse().unwrap()
    }
}

pub fn text_request(text: &str) -> serde_json::Value {
    serde_json::json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

/// Polls `condition` every 10 ms for up to 5 s.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// [`eventually`] for a condition that must await.
pub async fn eventually_async(mut condition: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..500 {
        if condition().await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

/// The path of the `gemini-pool` binary Cargo built for the tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_gemini-pool");

/// Spawns the real binary with an empty environment plus `env`, in `dir`, listening on a port of
/// its choosing; waits for its "listening on" line and returns the process and its base URL.
pub async fn spawn_binary(
    dir: &std::path::Path,
    env: &[(&str, String)],
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(BINARY)
        .current_dir(dir)
        .env_clear()
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(at) = line.find("listening on http://") {
                return line[at + "listening on http://".len()..].trim().to_owned();
            }
        }
        panic!("the gateway exited before listening");
    })
    .await
    .unwrap();
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, format!("http://{addr}"))
}
