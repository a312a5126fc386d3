//! The second floor: nginx as a plain reverse proxy in front of the same mock (`proxy_pass` with
//! keep-alive connections upstream, no buffering, the key set as the hyper floor sets it), one
//! process pinned to the gateway's core. Its config, pid file, error log and temporary folders
//! live in a folder of the run's data; nothing of the system's nginx is read or touched. When
//! there is no nginx (`./scripts/nginx-floor.sh` installs it), the rig runs without it and says
//! why.

use std::path::{Path, PathBuf};

use crate::procs::{Server, free_port};

/// The path nginx answers 200 on once it is ready.
const READY: &str = "/bench-nginx-ready";

/// A running nginx floor. Dropping it kills the process (a single one: no master, no workers),
/// then removes its folder (fields are dropped in their order).
pub(crate) struct Nginx {
    server: Server,
    _folder: Folder,
    /// `nginx/1.22.1`.
    version: String,
}

/// A folder removed with everything in it when dropped.
pub(crate) struct Folder(pub(crate) PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Nginx {
    /// Its base URL.
    pub(crate) fn url(&self) -> &str {
        &self.server.url
    }

    /// The process, for its CPU time and memory.
    pub(crate) fn server(&self) -> &Server {
        &self.server
    }
}

/// One line for the output and the results: which nginx, or why there is none.
pub(crate) fn describe(nginx: &Result<Nginx, String>) -> String {
    match nginx {
        Ok(nginx) => format!(
            "nginx floor: {} (one process pinned to the gateway's core, keep-alive upstream, proxy_buffering off)",
            nginx.version
        ),
        Err(why) => format!("nginx floor: not available ({why})"),
    }
}

/// Starts nginx in front of `upstream` (`http://127.0.0.1:port`) on `core`, with its files in
/// `data/name`.
pub(crate) fn start(data: &Path, name: &str, upstream: &str, core: usize) -> Result<Nginx, String> {
    let program = binary().ok_or(
        "no nginx on PATH nor in /usr/sbin: run ./scripts/nginx-floor.sh (as root) to install it",
    )?;
    let built = output(&program, "-V");
    let version = built
        .lines()
        .next()
        .and_then(|line| line.strip_prefix("nginx version: "))
        .unwrap_or("nginx")
        .to_owned();
    let dir = data.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let folder = Folder(dir.clone());
    let port = free_port()?;
    let upstream = upstream.trim_start_matches("http://").trim_end_matches('/');
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(&dir, port, upstream, &built))
        .map_err(|e| format!("{}: {e}", conf.display()))?;
    let args = [
        "-p".to_owned(),
        dir.display().to_string(),
        // The error log from the first moment, before the config names it.
        "-e".to_owned(),
        dir.join("error.log").display().to_string(),
        "-c".to_owned(),
        conf.display().to_string(),
    ];
    match Server::start_ready(&program, &args, &[], Some(core), port, READY) {
        Ok(server) => Ok(Nginx {
            server,
            _folder: folder,
            version,
        }),
        Err(error) => {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            Err(format!(
                "{error}: {}",
                log.lines().last().unwrap_or("nothing in its error log")
            ))
        }
    }
}

/// The config: one process in the foreground, every file in `dir`, listening on loopback `port`
/// and passing everything to `upstream` (`host:port`) over kept-alive HTTP/1.1 connections.
/// `built` is `nginx -V`'s output: temporary folders are set only for the modules built in.
fn config(dir: &Path, port: u16, upstream: &str, built: &str) -> String {
    let dir = dir.display();
    let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .iter()
        .filter(|module| !built.contains(&format!("--without-http_{module}_module")))
        .map(|module| format!("    {module}_temp_path {dir}/{module}_temp;\n"))
        .collect();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temp_paths}    keepalive_requests 1000000;
    upstream mock {{
        server {upstream};
        keepalive 256;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location = {READY} {{
            return 200;
        }}
        location / {{
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header x-goog-api-key floor-key;
            proxy_buffering off;
        }}
    }}
}}
"#
    )
}

/// The nginx binary: on PATH, or where Debian puts it (`/usr/sbin` is not on every user's PATH).
fn binary() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
        .map(|dir| dir.join("nginx"))
        .find(|candidate| candidate.is_file())
}

/// What `program arg` writes (nginx writes `-v` and `-V` to stderr).
fn output(program: &Path, arg: &str) -> String {
    std::process::Command::new(program)
        .arg(arg)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_keeps_every_file_in_its_folder_and_the_upstream_alive() {
        let conf = config(
            Path::new("/tmp/x"),
            4321,
            "127.0.0.1:1234",
            "configure arguments: --without-http_uwsgi_module",
        );
        for line in [
            "master_process off;",
            "worker_processes 1;",
            "pid /tmp/x/nginx.pid;",
            "error_log /tmp/x/error.log warn;",
            "access_log off;",
            "proxy_temp_path /tmp/x/proxy_temp;",
            "server 127.0.0.1:1234;",
            "keepalive 256;",
            "listen 127.0.0.1:4321;",
            "proxy_http_version 1.1;",
            "proxy_set_header Connection \"\";",
            "proxy_set_header x-goog-api-key floor-key;",
            "proxy_buffering off;",
        ] {
            assert!(conf.contains(line), "{line} missing from\n{conf}");
        }
        assert!(!conf.contains("uwsgi_temp_path"));
        assert!(conf.contains("scgi_temp_path /tmp/x/scgi_temp;"));
    }
}
