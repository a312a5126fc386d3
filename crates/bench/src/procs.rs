//! Child processes of the rig: started (pinned to a core when `taskset` exists), their address
//! read from their "listening on" line, their CPU time and memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running server.
pub struct Server {
    child: Child,
    /// Its base URL.
    pub url: String,
}

impl Server {
    /// Starts `program` with `args` and `env`, on `core` if given.
    pub fn start(
        program: &Path,
        args: &[&str],
        env: &[(&str, String)],
        core: Option<usize>,
    ) -> Result<Self, String> {
        let mut command = on_core(program, core);
        command
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent && let Some(at) = line.find("listening on http://") {
                    let _ = sender.send(line[at + "listening on ".len()..].trim().to_owned());
                    sent = true;
                }
            }
        });
        match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => Ok(Self { child, url }),
            Err(_) => {
                let _ = child.kill();
                Err(format!("{} did not start", program.display()))
            }
        }
    }

    /// Starts a server that does not print its address: on a free port given by `args_for`,
    /// ready when `health` answers 200 (within 120 s).
    pub fn start_on_free_port(
        program: &Path,
        args_for: impl Fn(u16) -> Vec<String>,
        env: &[(&str, String)],
        core: Option<usize>,
        health: &str,
    ) -> Result<Self, String> {
        let port = free_port()?;
        Self::start_ready(program, &args_for(port), env, core, port, health)
    }

    /// Starts a server that listens on `port` (told by `args` or a config file it reads), ready
    /// when `health` answers 200 (within 120 s).
    pub fn start_ready(
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
        core: Option<usize>,
        port: u16,
        health: &str,
    ) -> Result<Self, String> {
        let mut child = on_core(program, core)
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while std::time::Instant::now() < deadline {
            if answers_ok(port, health) {
                return Ok(Self {
                    child,
                    url: format!("http://127.0.0.1:{port}"),
                });
            }
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!("{} did not become ready", program.display()))
    }

    /// Asks it to stop (SIGTERM) and waits up to `within` for it to exit; killed after that.
    pub fn stop(mut self, within: Duration) -> Result<(), String> {
        let asked = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .is_ok_and(|status| status.success());
        let deadline = std::time::Instant::now() + within;
        while asked && std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("process {} did not stop when asked", self.pid()))
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// User and system CPU time so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }

    /// Resident memory now and at its peak, in KiB.
    pub fn memory_kib(&self) -> (u64, u64) {
        memory_kib(self.pid())
    }

    /// Starts the process's peak (VmHWM) over from its resident memory now, so that the next
    /// reading of the peak is of what follows (Linux's `clear_refs` 5). False where the kernel
    /// refused (not the process's owner).
    pub fn reset_peak(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }
}

/// A loopback port free at the moment of asking.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| e.to_string())
}

/// Resident memory of a process now and at its peak, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command running `program`, pinned to `core` when one is given and `taskset` exists.
fn on_core(program: &Path, core: Option<usize>) -> Command {
    match core.filter(|_| has_taskset()) {
        Some(core) => {
            let mut command = Command::new("taskset");
            command.arg("-c").arg(core.to_string()).arg(program);
            command
        }
        None => Command::new(program),
    }
}

fn has_taskset() -> bool {
    Command::new("taskset")
        .arg("-V")
        .output()
        .is_ok_and(|out| out.status.success())
}

/// CPU time of a process: the sum over its threads of `/proc/<pid>/task/<tid>/schedstat`
/// (nanoseconds, so that a few hundred requests can be measured); `/proc/<pid>/stat` (ticks of
/// 10 ms) where that cannot be read. A thread that ended takes its time with it, so the rig only
/// compares readings of processes whose threads live as long as they do (tokio's workers).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return cpu_ticks(pid);
    };
    let mut nanos = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            return cpu_ticks(pid);
        };
        nanos += stat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Duration::from_nanos(nanos)
}

/// CPU time (user + system) of a process, from `/proc/<pid>/stat` (clock ticks of 10 ms).
fn cpu_ticks(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Pins this process to `core` (the load generator's side).
pub fn pin_self(core: usize) {
    if has_taskset() {
        let _ = Command::new("taskset")
            .args(["-cp", &core.to_string(), &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status();
    }
}

/// Whether `GET path` on the local `port` answers 200.
fn answers_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}
