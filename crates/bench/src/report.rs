//! The results: a Markdown table and JSON, with the machine, the commit and the versions.

use std::process::Command;

use serde_json::{Value, json};

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario id (S1 …).
    pub id: &'static str,
    /// What is measured.
    pub what: String,
    /// The target.
    pub target: String,
    /// Our figure.
    pub ours: String,
    /// The floor's figure, when there is one.
    pub floor: String,
    /// Ours / floor, when meaningful.
    pub ratio: String,
    /// The nginx floor's figure and ours over it, in the rows measured against it (S1, S3, S4).
    pub nginx: Option<Versus>,
    /// Whether the target is met (`None`: not measured or no target).
    pub met: Option<bool>,
}

/// A second floor's figure in a row, and ours over it.
#[derive(Debug, Clone)]
pub struct Versus {
    /// Its figure, or why there is none.
    pub figure: String,
    /// Ours / its.
    pub ratio: String,
}

impl Versus {
    /// `theirs` shown with `show` beside `ours`; "not available" when it was not measured.
    pub fn of(ours: f64, theirs: Option<f64>, show: impl Fn(f64) -> String) -> Option<Self> {
        Some(match theirs {
            Some(theirs) => Self {
                figure: show(theirs),
                ratio: ratio(ours, theirs),
            },
            None => Self {
                figure: "not available".to_owned(),
                ratio: "–".to_owned(),
            },
        })
    }
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Machine, commit and versions.
pub fn environment() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_owned();
    json!({
        "cpu": cpu,
        // Counted from /proc (not the affinity: the rig pins itself to one core).
        "cores": std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.starts_with("processor"))
            .count(),
        "kernel": command_output("uname", &["-r"]),
        "commit": command_output("git", &["rev-parse", "--short", "HEAD"]),
        "rustc": command_output("rustc", &["-V"]),
        "date": command_output("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    })
}

/// The Markdown table; `nginx` says which nginx was the second floor, or why there was none.
pub fn markdown(rows: &[Row], environment: &Value, mode: &str, nginx: &str) -> String {
    let mut text = format!(
        "# gemini-pool benchmark results\n\nMeasured with `cargo run -p bench --release -- {mode}` on {} ({} cores), kernel {}, {}, commit {}, {}.\n\
         All traffic on loopback; the gateway and the floors pinned to one core, load and mock on the other. \
         \"Added\" is the figure through the proxy minus the same request sent straight to the mock. \
         Two floors: the hyper floor (the gateway's own stack doing only the key swap and byte piping) and nginx.\n\n\
         {nginx}\n\n\
         | # | what | target | gemini-pool | hyper floor | × hyper floor | nginx floor | × nginx | met |\n|---|---|---|---|---|---|---|---|---|\n",
        environment["cpu"].as_str().unwrap_or("?"),
        environment["cores"],
        environment["kernel"].as_str().unwrap_or("?"),
        environment["rustc"].as_str().unwrap_or("?"),
        environment["commit"].as_str().unwrap_or("?"),
        environment["date"].as_str().unwrap_or("?"),
    );
    for row in rows {
        let met = match row.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let (nginx, nginx_ratio) = row
            .nginx
            .as_ref()
            .map_or(("–", "–"), |v| (v.figure.as_str(), v.ratio.as_str()));
        text.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {nginx} | {nginx_ratio} | {met} |\n",
            row.id, row.what, row.target, row.ours, row.floor, row.ratio
        ));
    }
    text
}

/// The JSON report; `nginx` as in [`markdown`].
pub fn json_report(rows: &[Row], environment: &Value, nginx: &str, raw: Value) -> Value {
    json!({
        "environment": environment,
        "nginx_floor": nginx,
        "rows": rows.iter().map(|row| json!({
            "id": row.id, "what": row.what, "target": row.target, "ours": row.ours,
            "floor": row.floor, "ratio": row.ratio,
            "nginx": row.nginx.as_ref().map(|v| &v.figure),
            "nginx_ratio": row.nginx.as_ref().map(|v| &v.ratio),
            "met": row.met,
        })).collect::<Vec<_>>(),
        "raw": raw,
    })
}

pub(crate) fn us(value: f64) -> String {
    if value.is_nan() {
        "–".to_owned()
    } else if value >= 1000.0 {
        format!("{:.2} ms", value / 1000.0)
    } else {
        format!("{value:.0} µs")
    }
}

pub(crate) fn ratio(ours: f64, floor: f64) -> String {
    if floor > 0.0 && ours.is_finite() {
        format!("{:.2}×", ours / floor)
    } else {
        "–".to_owned()
    }
}
