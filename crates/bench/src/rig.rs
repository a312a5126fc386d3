//! The rig the scenarios run on: the binaries, a mock with a floor and a gateway in front of it
//! (and nginx, the second floor, where there is one), and the calls sent to them.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::load::Call;
use crate::nginx::Nginx;
use crate::procs::Server;

pub(crate) const CLIENT_KEY: &str = "bench-client-key";
pub(crate) const MODEL: &str = "gemini-2.5-flash";

pub(crate) struct Rig {
    pub(crate) bin: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) mock: Server,
    pub(crate) floor: Server,
    pub(crate) gateway: Server,
    /// The second floor, or why there is none.
    pub(crate) nginx: Result<Nginx, String>,
    /// Removes `data` when the rig goes: declared last, so that the servers writing there have
    /// been stopped by then.
    _folder: crate::nginx::Folder,
}

/// The folder holding the gateway and the mock: `BENCH_BINARIES` when set (binaries built
/// elsewhere, say from an earlier commit, to compare two builds on one rig), else the bench's own
/// folder, built first.
pub(crate) fn binaries() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("BENCH_BINARIES") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = exe.parent().ok_or("no binary folder")?.to_path_buf();
    let release = dir.ends_with("release");
    let mut build = std::process::Command::new("cargo");
    build.args(["build", "--quiet", "-p", "gemini-pool", "-p", "mock-gemini"]);
    if release {
        build.arg("--release");
    }
    let status = build.status().map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build of the gateway and the mock failed".to_owned());
    }
    Ok(dir)
}

pub(crate) fn gateway(
    bin: &Path,
    data: &Path,
    upstream: &str,
    keys: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<Server, String> {
    let env = gateway_env(data, upstream, keys, name, extra);
    Server::start(&bin.join("gemini-pool"), &[], &env, Some(1))
}

/// The gateway's settings in the rig: `keys` in front of `upstream`, its database `name` in
/// `data`, limits out of the way, and `extra` on top.
pub(crate) fn gateway_env<'a>(
    data: &Path,
    upstream: &str,
    keys: &str,
    name: &str,
    extra: &[(&'a str, &str)],
) -> Vec<(&'a str, String)> {
    let mut env = vec![
        ("LISTEN_ADDR", "127.0.0.1:0".to_owned()),
        (
            "DATABASE_URL",
            format!("sqlite://{}/{name}.db?mode=rwc", data.display()),
        ),
        ("GEMINI_API_KEYS", keys.to_owned()),
        ("GEMINI_BASE_URL", upstream.to_owned()),
        ("CLIENT_API_KEYS", CLIENT_KEY.to_owned()),
        ("ADMIN_PASSWORD", "bench-admin-password".to_owned()),
        ("DEFAULT_RPM_LIMIT", "1000000000".to_owned()),
        ("DEFAULT_RPD_LIMIT", "1000000000".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ];
    env.extend(
        extra
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned())),
    );
    env
}

/// Four keys in four projects.
pub(crate) const FOUR_KEYS: &str = "bench-key-1@p1,bench-key-2@p2,bench-key-3@p3,bench-key-4@p4";

/// A mock started with `mock_args` (on the load's core), and a floor and a gateway with `keys`
/// in front of it (on the other).
pub(crate) struct Servers {
    pub(crate) mock: Server,
    pub(crate) floor: Server,
    pub(crate) gateway: Server,
}

pub(crate) fn servers(
    bin: &Path,
    data: &Path,
    mock_args: &[&str],
    keys: &str,
    name: &str,
) -> Result<Servers, String> {
    let mock = Server::start(&bin.join("mock-gemini"), mock_args, &[], Some(0))?;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let floor = Server::start(
        &me,
        &["floor", "--listen", "127.0.0.1:0", "--upstream", &mock.url],
        &[],
        Some(1),
    )?;
    let gateway = gateway(bin, data, &mock.url, keys, name, &[])?;
    Ok(Servers {
        mock,
        floor,
        gateway,
    })
}

pub(crate) async fn rig(bin: PathBuf) -> Result<Rig, String> {
    let data = std::env::temp_dir().join(format!("gemini-pool-bench-{}", std::process::id()));
    std::fs::create_dir_all(&data).map_err(|e| e.to_string())?;
    // Removed with the rig, or at once if starting the servers fails.
    let folder = crate::nginx::Folder(data.clone());
    let Servers {
        mock,
        floor,
        gateway,
    } = servers(
        &bin,
        &data,
        &[
            "--fast",
            "--stream-events",
            "8",
            "--fail-key",
            "bench-fail-key",
        ],
        FOUR_KEYS,
        "main",
    )?;
    let nginx = crate::nginx::start(&data, "nginx", &mock.url, 1);
    {
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "{}", crate::nginx::describe(&nginx));
    }
    Ok(Rig {
        bin,
        data,
        mock,
        floor,
        gateway,
        nginx,
        _folder: folder,
    })
}

fn generate_body(prompt_bytes: usize) -> bytes::Bytes {
    let text = "x".repeat(prompt_bytes);
    bytes::Bytes::from(
        json!({"contents": [{"role": "user", "parts": [{"text": text}]}]}).to_string(),
    )
}

pub(crate) fn chat_body(prompt_bytes: usize, stream: bool) -> bytes::Bytes {
    let text = "x".repeat(prompt_bytes);
    bytes::Bytes::from(
        json!({"model": MODEL, "stream": stream, "messages": [{"role": "user", "content": text}]})
            .to_string(),
    )
}

pub(crate) fn native(base: &str, stream: bool, key: &str, prompt_bytes: usize) -> Call {
    let action = if stream {
        "streamGenerateContent?alt=sse"
    } else {
        "generateContent"
    };
    Call {
        url: format!("{base}/v1beta/models/{MODEL}:{action}"),
        body: generate_body(prompt_bytes),
        headers: vec![
            ("x-goog-api-key", key.to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        expect: if stream { "STOP" } else { "candidates" },
    }
}

pub(crate) fn openai(base: &str, stream: bool, prompt_bytes: usize) -> Call {
    Call {
        url: format!("{base}/v1/chat/completions"),
        body: chat_body(prompt_bytes, stream),
        headers: vec![
            ("authorization", format!("Bearer {CLIENT_KEY}")),
            ("content-type", "application/json".to_owned()),
        ],
        expect: if stream { "[DONE]" } else { "chat.completion" },
    }
}
