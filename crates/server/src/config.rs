//! The gateway's configuration, read once at start from the environment and a `.env` file.
//!
//! Every variable, its default and its meaning are in one table, [`VARIABLES`]: `--help` prints
//! it, parsing takes its defaults from it, and tests check `.env.example` and both READMEs
//! against it (`gemini-pool --help` shows it as text).
//!
//! Parsing takes a lookup function instead of reading the process environment, so tests build a
//! `Config` from a map. Every error names the variable and never echoes a secret.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use store::NewUpstreamKey;
use url::Url;

/// One configuration variable, as `--help`, `.env.example` and the parser know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variable {
    /// The environment variable's name.
    pub name: &'static str,
    /// The value used when the variable is unset or empty, as `.env.example` writes it; empty
    /// for none.
    pub default: &'static str,
    /// What it sets, in one line.
    pub meaning: &'static str,
}

// One constant per variable, so that the parser names a variable the compiler checks instead of
// a string; `VARIABLES` lists them all.
const LISTEN_ADDR: Variable = Variable {
    name: "LISTEN_ADDR",
    default: "0.0.0.0:8080",
    meaning: "where the gateway listens",
};
const DATABASE_URL: Variable = Variable {
    name: "DATABASE_URL",
    default: "sqlite://data/gemini-pool.db?mode=rwc",
    meaning: "SQLite file (created with its folder), or postgres://… for several instances sharing one state",
};
const GEMINI_API_KEYS: Variable = Variable {
    name: "GEMINI_API_KEYS",
    default: "",
    meaning: "upstream keys, KEY or KEY@PROJECT, separated by commas, pipes, spaces or newlines",
};
const GEMINI_BASE_URL: Variable = Variable {
    name: "GEMINI_BASE_URL",
    default: "https://generativelanguage.googleapis.com",
    meaning: "upstream origin",
};
const CLIENT_API_KEYS: Variable = Variable {
    name: "CLIENT_API_KEYS",
    default: "",
    meaning: "client keys accepted at start (more are created in the dashboard)",
};
const ADMIN_USERNAME: Variable = Variable {
    name: "ADMIN_USERNAME",
    default: "admin",
    meaning: "dashboard login name",
};
const ADMIN_PASSWORD: Variable = Variable {
    name: "ADMIN_PASSWORD",
    default: "",
    meaning: "dashboard password, or its argon2 hash (gemini-pool hash-password); generated and printed once when unset",
};
const JWT_SECRET: Variable = Variable {
    name: "JWT_SECRET",
    default: "",
    meaning: "HMAC secret for admin sessions, at least 32 bytes; generated and kept in the database when unset",
};
const DEFAULT_RPM_LIMIT: Variable = Variable {
    name: "DEFAULT_RPM_LIMIT",
    default: "10",
    meaning: "requests per minute per project and model",
};
const DEFAULT_RPD_LIMIT: Variable = Variable {
    name: "DEFAULT_RPD_LIMIT",
    default: "250",
    meaning: "requests per Pacific day per project and model",
};
const MAX_RETRIES: Variable = Variable {
    name: "MAX_RETRIES",
    default: "3",
    meaning: "other keys tried for one request before giving up",
};
const UPSTREAM_TIMEOUT_SECS: Variable = Variable {
    name: "UPSTREAM_TIMEOUT_SECS",
    default: "300",
    meaning: "limit on a whole non-streaming upstream call; a stream's idle limit",
};
const OUTBOUND_PROXY: Variable = Variable {
    name: "OUTBOUND_PROXY",
    default: "",
    meaning: "http://, https:// or socks5:// proxy for upstream traffic",
};
const UPSTREAM_H2C: Variable = Variable {
    name: "UPSTREAM_H2C",
    default: "false",
    meaning: "true to speak HTTP/2 without TLS to an http:// GEMINI_BASE_URL (a local stand-in or sidecar); https negotiates HTTP/2 either way",
};
const CLIENT_HEADER_TIMEOUT_SECS: Variable = Variable {
    name: "CLIENT_HEADER_TIMEOUT_SECS",
    default: "30",
    meaning: "seconds a client connection has to send its first bytes from opening, and a whole request head from those or from its previous response (also the keep-alive idle limit)",
};
const CLIENT_IDLE_TIMEOUT_SECS: Variable = Variable {
    name: "CLIENT_IDLE_TIMEOUT_SECS",
    default: "330",
    meaning: "a client connection with no byte moving either way for this many seconds is closed (never less than UPSTREAM_TIMEOUT_SECS + 30)",
};
const MAX_CONNECTIONS: Variable = Variable {
    name: "MAX_CONNECTIONS",
    default: "10000",
    meaning: "client connections served at once; more are answered 503 (lowered to what the open-file limit allows)",
};
const SHUTDOWN_GRACE_SECS: Variable = Variable {
    name: "SHUTDOWN_GRACE_SECS",
    default: "30",
    meaning: "on SIGTERM, seconds in-flight requests get to finish; streams still open then end with an error event",
};
const METRICS_TOKEN: Variable = Variable {
    name: "METRICS_TOKEN",
    default: "",
    meaning: "when set, /metrics needs 'Authorization: Bearer <token>' and names projects; unset, /metrics is public without project names",
};
const RUST_LOG: Variable = Variable {
    name: "RUST_LOG",
    default: "info",
    meaning: "log filter",
};
const LOG_FORMAT: Variable = Variable {
    name: "LOG_FORMAT",
    default: "text",
    meaning: "text, or json for JSON lines",
};

/// Every variable the configuration reads, in the order `--help` and `.env.example` list them.
pub const VARIABLES: &[Variable] = &[
    LISTEN_ADDR,
    DATABASE_URL,
    GEMINI_API_KEYS,
    GEMINI_BASE_URL,
    CLIENT_API_KEYS,
    ADMIN_USERNAME,
    ADMIN_PASSWORD,
    JWT_SECRET,
    DEFAULT_RPM_LIMIT,
    DEFAULT_RPD_LIMIT,
    MAX_RETRIES,
    UPSTREAM_TIMEOUT_SECS,
    OUTBOUND_PROXY,
    UPSTREAM_H2C,
    CLIENT_HEADER_TIMEOUT_SECS,
    CLIENT_IDLE_TIMEOUT_SECS,
    MAX_CONNECTIONS,
    SHUTDOWN_GRACE_SECS,
    METRICS_TOKEN,
    RUST_LOG,
    LOG_FORMAT,
];

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The parsed configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `LISTEN_ADDR`.
    pub listen_addr: SocketAddr,
    /// `DATABASE_URL`.
    pub database_url: String,
    /// `GEMINI_API_KEYS`, duplicates collapsed.
    pub upstream_keys: Vec<NewUpstreamKey>,
    /// `GEMINI_BASE_URL`, without a trailing slash.
    pub upstream_base_url: Url,
    /// `CLIENT_API_KEYS`, duplicates collapsed.
    pub client_keys: Vec<SecretString>,
    /// `ADMIN_USERNAME`.
    pub admin_username: String,
    /// `ADMIN_PASSWORD`.
    pub admin_password: Option<SecretString>,
    /// `JWT_SECRET`.
    pub jwt_secret: Option<SecretString>,
    /// `DEFAULT_RPM_LIMIT`.
    pub default_rpm_limit: u32,
    /// `DEFAULT_RPD_LIMIT`.
    pub default_rpd_limit: u32,
    /// `MAX_RETRIES`.
    pub max_retries: u32,
    /// `UPSTREAM_TIMEOUT_SECS`.
    pub upstream_timeout: Duration,
    /// `OUTBOUND_PROXY`.
    pub outbound_proxy: Option<Url>,
    /// HTTP/2 by prior knowledge to the upstream (h2c on an http:// base URL).
    pub upstream_h2c: bool,
    /// `CLIENT_HEADER_TIMEOUT_SECS`.
    pub client_header_timeout: Duration,
    /// `CLIENT_IDLE_TIMEOUT_SECS` (at least the upstream timeout plus 30 s).
    pub client_idle_timeout: Duration,
    /// `MAX_CONNECTIONS`.
    pub max_connections: u32,
    /// `SHUTDOWN_GRACE_SECS`.
    pub shutdown_grace: Duration,
    /// `METRICS_TOKEN`.
    pub metrics_token: Option<SecretString>,
    /// `RUST_LOG`.
    pub log_filter: String,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
}

/// A configuration error: which variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub variable: &'static str,
    /// What is wrong, without the secret itself.
    pub problem: String,
}

fn error(variable: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        problem: problem.into(),
    }
}

impl Config {
    /// Parses the configuration from `lookup` (the environment, then `.env`, in `main`).
    /// Empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        // The value set, or else the table's default; `None` when both are empty.
        let value = |variable: &Variable| {
            lookup(variable.name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .or_else(|| (!variable.default.is_empty()).then(|| variable.default.to_owned()))
        };
        let number = |variable: &Variable, minimum: u32| {
            parse_number(variable.name, value(variable).unwrap_or_default(), minimum)
        };
        let seconds = |variable: &Variable, minimum: u32| -> Result<Duration, ConfigError> {
            Ok(Duration::from_secs(u64::from(number(variable, minimum)?)))
        };

        let listen_addr = value(&LISTEN_ADDR)
            .unwrap_or_default()
            .parse()
            .map_err(|_| {
                error(
                    LISTEN_ADDR.name,
                    format!("expected an address such as {}", LISTEN_ADDR.default),
                )
            })?;

        let database_url = value(&DATABASE_URL).unwrap_or_default();
        if store::Backend::of_url(&database_url).is_none() {
            return Err(error(
                DATABASE_URL.name,
                "expected a sqlite:// or postgres:// URL",
            ));
        }

        let upstream_base_url = parse_url(
            GEMINI_BASE_URL.name,
            &value(&GEMINI_BASE_URL).unwrap_or_default(),
            &["http", "https"],
        )?;
        let outbound_proxy = value(&OUTBOUND_PROXY)
            .map(|proxy| {
                parse_url(
                    OUTBOUND_PROXY.name,
                    &proxy,
                    &["http", "https", "socks5", "socks5h"],
                )
            })
            .transpose()?;

        let jwt_secret = value(&JWT_SECRET).map(SecretString::from);
        if let Some(secret) = &jwt_secret
            && secret.expose_secret().len() < 32
        {
            return Err(error(
                JWT_SECRET.name,
                "must be at least 32 bytes long (try: openssl rand -hex 32)",
            ));
        }

        let upstream_h2c = match value(&UPSTREAM_H2C)
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            Some("false" | "0" | "no") => false,
            Some("true" | "1" | "yes") => true,
            _ => return Err(error(UPSTREAM_H2C.name, "expected true or false")),
        };

        let log_format = match value(&LOG_FORMAT).as_deref() {
            Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            _ => return Err(error(LOG_FORMAT.name, "expected text or json")),
        };

        let upstream_timeout = seconds(&UPSTREAM_TIMEOUT_SECS, 1)?;
        // A native stream may stay silent while a model thinks, up to the upstream timeout:
        // the idle limit must not cut it first.
        let client_idle_timeout =
            seconds(&CLIENT_IDLE_TIMEOUT_SECS, 1)?.max(upstream_timeout + Duration::from_secs(30));
        let metrics_token = value(&METRICS_TOKEN).map(SecretString::from);
        if let Some(token) = &metrics_token
            && token.expose_secret().len() < 16
        {
            return Err(error(
                METRICS_TOKEN.name,
                "must be at least 16 characters long",
            ));
        }

        Ok(Self {
            listen_addr,
            database_url,
            upstream_keys: parse_upstream_keys(&value(&GEMINI_API_KEYS).unwrap_or_default())?,
            upstream_base_url,
            client_keys: parse_client_keys(&value(&CLIENT_API_KEYS).unwrap_or_default())?,
            admin_username: value(&ADMIN_USERNAME).unwrap_or_default(),
            admin_password: value(&ADMIN_PASSWORD).map(SecretString::from),
            jwt_secret,
            default_rpm_limit: number(&DEFAULT_RPM_LIMIT, 1)?,
            default_rpd_limit: number(&DEFAULT_RPD_LIMIT, 1)?,
            max_retries: number(&MAX_RETRIES, 0)?,
            upstream_timeout,
            outbound_proxy,
            upstream_h2c,
            client_header_timeout: seconds(&CLIENT_HEADER_TIMEOUT_SECS, 1)?,
            client_idle_timeout,
            max_connections: number(&MAX_CONNECTIONS, 1)?,
            shutdown_grace: seconds(&SHUTDOWN_GRACE_SECS, 0)?,
            metrics_token,
            log_filter: value(&RUST_LOG).unwrap_or_default(),
            log_format,
        })
    }
}

impl Config {
    /// A summary for `gemini-pool check-config`: no secret, only counts and addresses.
    pub fn summary(&self) -> String {
        let projects: HashSet<&str> = self
            .upstream_keys
            .iter()
            .filter_map(|k| k.project.as_deref())
            .collect();
        let proxy = self.outbound_proxy.as_ref().map_or_else(
            || "none".to_owned(),
            |url| {
                format!(
                    "{}://{}:{}",
                    url.scheme(),
                    url.host_str().unwrap_or(""),
                    url.port_or_known_default().unwrap_or(0)
                )
            },
        );
        format!(
            "configuration is valid\n  listen:           {}\n  database:         {}\n  upstream:         {}{}\n  upstream keys:    {} ({} named projects)\n  client keys:      {}\n  admin user:       {} (password {})\n  limits:           {} per minute, {} per day, per project and model\n  retries:          {}\n  upstream timeout: {} s\n  proxy:            {}\n  connections:      at most {}, {} s for a request head, closed after {} s idle\n  metrics:          {}\n  log:              {} ({:?})",
            self.listen_addr,
            redacted_url(&self.database_url),
            redacted_url(self.upstream_base_url.as_str()),
            if self.upstream_h2c {
                " (HTTP/2 by prior knowledge)"
            } else {
                ""
            },
            self.upstream_keys.len(),
            projects.len(),
            self.client_keys.len(),
            self.admin_username,
            if self.admin_password.is_some() {
                "set"
            } else {
                "generated at first start"
            },
            self.default_rpm_limit,
            self.default_rpd_limit,
            self.max_retries,
            self.upstream_timeout.as_secs(),
            proxy,
            self.max_connections,
            self.client_header_timeout.as_secs(),
            self.client_idle_timeout.as_secs(),
            if self.metrics_token.is_some() {
                "behind METRICS_TOKEN"
            } else {
                "public, without project names"
            },
            self.log_filter,
            self.log_format,
        )
    }
}

/// A URL as `check-config` may print it: the password of its user part and the values of
/// credential-like query parameters replaced by `***`. Text that is not a URL is shown as
/// `(unreadable)`, since it might hold a secret.
pub fn redacted_url(text: &str) -> String {
    let Ok(mut url) = Url::parse(text) else {
        return "(unreadable)".to_owned();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    let secret_names = [
        "key",
        "password",
        "pass",
        "token",
        "secret",
        "access_token",
        "sslpassword",
    ];
    if url.query().is_some() {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(name, value)| {
                let hidden = secret_names
                    .iter()
                    .any(|secret| name.to_ascii_lowercase().contains(secret));
                let value = if hidden {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

fn parse_number(variable: &'static str, value: String, minimum: u32) -> Result<u32, ConfigError> {
    match value.parse::<u32>() {
        Ok(number) if number >= minimum => Ok(number),
        _ => Err(error(
            variable,
            format!("expected a whole number of at least {minimum}, got {value:?}"),
        )),
    }
}

fn parse_url(variable: &'static str, value: &str, schemes: &[&str]) -> Result<Url, ConfigError> {
    let url = Url::parse(value).map_err(|_| error(variable, "not a valid URL"))?;
    if !schemes.contains(&url.scheme()) || url.host_str().is_none() {
        return Err(error(
            variable,
            format!("expected a {} URL", schemes.join(" or ")),
        ));
    }
    Ok(url)
}

/// Splits a list on commas, pipes and any white space (including newlines).
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c == '|' || c.is_whitespace())
        .filter(|entry| !entry.is_empty())
}

/// Characters of Google API keys (`AIza` + 35 of `[A-Za-z0-9_-]`); other formats of the same
/// alphabet are accepted, so stand-ins and future key formats work.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// Project names: Google Cloud project ids and any operator label of the same alphabet.
pub fn is_valid_project(project: &str) -> bool {
    !project.is_empty()
        && project.len() <= 128
        && project
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// Parses a list of upstream keys (`KEY` or `KEY@PROJECT`), as `GEMINI_API_KEYS` takes it.
pub fn parse_upstream_keys(value: &str) -> Result<Vec<NewUpstreamKey>, ConfigError> {
    let mut keys: Vec<NewUpstreamKey> = Vec::new();
    for (index, entry) in split_list(value).enumerate() {
        let position = index + 1;
        let (key, project) = match entry.split_once('@') {
            Some((key, project)) => (key, Some(project)),
            None => (entry, None),
        };
        if key.is_empty() || key.len() > 256 || !key.chars().all(is_key_char) {
            return Err(error(
                "GEMINI_API_KEYS",
                format!("entry {position} is not an API key (letters, digits, '-' and '_' only)"),
            ));
        }
        if let Some(project) = project
            && !is_valid_project(project)
        {
            return Err(error(
                "GEMINI_API_KEYS",
                format!(
                    "entry {position} has an invalid project name (letters, digits, '.', '-', '_')"
                ),
            ));
        }
        match keys.iter().find(|known| known.key.expose_secret() == key) {
            Some(known) if known.project.as_deref() == project => {}
            Some(_) => {
                return Err(error(
                    "GEMINI_API_KEYS",
                    format!("entry {position} repeats a key with a different project"),
                ));
            }
            None => keys.push(NewUpstreamKey {
                key: SecretString::from(key),
                project: project.map(str::to_owned),
            }),
        }
    }
    Ok(keys)
}

fn parse_client_keys(value: &str) -> Result<Vec<SecretString>, ConfigError> {
    let mut seen = HashSet::new();
    let mut keys = Vec::new();
    for (index, entry) in split_list(value).enumerate() {
        if entry.len() < 8 || !entry.chars().all(|c| c.is_ascii_graphic()) {
            return Err(error(
                "CLIENT_API_KEYS",
                format!(
                    "entry {} must be at least 8 printable characters without spaces",
                    index + 1
                ),
            ));
        }
        if seen.insert(entry) {
            keys.push(SecretString::from(entry));
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_lookup(|name| map.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_design_table() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.database_url, "sqlite://data/gemini-pool.db?mode=rwc");
        assert_eq!(
            config.upstream_base_url.as_str(),
            "https://generativelanguage.googleapis.com/"
        );
        assert!(config.upstream_keys.is_empty() && config.client_keys.is_empty());
        assert_eq!(config.admin_username, "admin");
        assert_eq!(
            (config.default_rpm_limit, config.default_rpd_limit),
            (10, 250)
        );
        assert_eq!(config.max_retries, 3);
        assert_eq!(config.upstream_timeout, Duration::from_secs(300));
        assert_eq!(config.log_filter, "info");
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(config.outbound_proxy.is_none() && config.jwt_secret.is_none());
        assert!(!config.upstream_h2c);
    }

    #[test]
    fn upstream_keys_split_on_every_separator_and_collapse_duplicates() {
        let config = parse(&[(
            "GEMINI_API_KEYS",
            "AIzaA1,AIzaB2@proj-1 | AIzaC3\nAIzaA1\tAIzaD4@proj-1,,AIzaB2@proj-1",
        )])
        .unwrap();
        let keys: Vec<(&str, Option<&str>)> = config
            .upstream_keys
            .iter()
            .map(|k| (k.key.expose_secret(), k.project.as_deref()))
            .collect();
        assert_eq!(
            keys,
            vec![
                ("AIzaA1", None),
                ("AIzaB2", Some("proj-1")),
                ("AIzaC3", None),
                ("AIzaD4", Some("proj-1")),
            ]
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_hide_secrets() {
        let cases: [(&str, &str, &str); 13] = [
            (
                "LISTEN_ADDR",
                "localhost",
                "LISTEN_ADDR: expected an address",
            ),
            (
                "DATABASE_URL",
                "mysql://x",
                "DATABASE_URL: expected a sqlite:// or postgres:// URL",
            ),
            (
                "GEMINI_BASE_URL",
                "ftp://x",
                "GEMINI_BASE_URL: expected a http or https URL",
            ),
            (
                "GEMINI_API_KEYS",
                "good,bad/secret",
                "GEMINI_API_KEYS: entry 2 is not an API key",
            ),
            (
                "GEMINI_API_KEYS",
                "k@bad!project",
                "GEMINI_API_KEYS: entry 1 has an invalid project",
            ),
            (
                "GEMINI_API_KEYS",
                "k@p1,k@p2",
                "GEMINI_API_KEYS: entry 2 repeats a key",
            ),
            (
                "CLIENT_API_KEYS",
                "short",
                "CLIENT_API_KEYS: entry 1 must be at least 8",
            ),
            (
                "JWT_SECRET",
                "too-short-secret",
                "JWT_SECRET: must be at least 32 bytes",
            ),
            (
                "DEFAULT_RPM_LIMIT",
                "0",
                "DEFAULT_RPM_LIMIT: expected a whole number of at least 1",
            ),
            ("MAX_RETRIES", "-1", "MAX_RETRIES: expected a whole number"),
            (
                "OUTBOUND_PROXY",
                "ftp://proxy:1",
                "OUTBOUND_PROXY: expected a http or https or socks5",
            ),
            ("LOG_FORMAT", "xml", "LOG_FORMAT: expected text or json"),
            (
                "UPSTREAM_H2C",
                "maybe",
                "UPSTREAM_H2C: expected true or false",
            ),
        ];
        for (variable, value, expected) in cases {
            let message = parse(&[(variable, value)]).unwrap_err().to_string();
            assert!(
                message.starts_with(expected),
                "{variable}={value}: {message}"
            );
            if variable.contains("KEYS") || variable == "JWT_SECRET" {
                assert!(!message.contains("secret"), "{message}");
            }
        }
    }

    #[test]
    fn env_example_lists_exactly_the_variables_the_config_reads() {
        let example = include_str!("../../../.env.example");
        let mut listed: Vec<&str> = example
            .lines()
            .map(|line| line.trim_start_matches('#').trim())
            .filter_map(|line| line.split_once('=').map(|(name, _)| name))
            .filter(|name| {
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .collect();
        listed.sort_unstable();
        listed.dedup();
        let mut expected: Vec<&str> = VARIABLES.iter().map(|variable| variable.name).collect();
        expected.sort_unstable();
        assert_eq!(listed, expected);
        // The example parses into a valid configuration, and its defaults are the real ones.
        let values: HashMap<String, String> = example
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Config::from_lookup(|name| values.get(name).cloned()).unwrap();
        for variable in VARIABLES {
            if let Some(value) = values.get(variable.name).filter(|v| !v.is_empty()) {
                assert_eq!(value, variable.default, "{}", variable.name);
            }
        }
    }

    #[test]
    fn optional_values_parse() {
        let config = parse(&[
            ("LISTEN_ADDR", "127.0.0.1:0"),
            ("OUTBOUND_PROXY", "socks5://127.0.0.1:1080"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("CLIENT_API_KEYS", "client-key-1 client-key-1,client-key-2"),
            ("UPSTREAM_TIMEOUT_SECS", "5"),
            ("LOG_FORMAT", "json"),
            ("ADMIN_PASSWORD", "   "),
            ("UPSTREAM_H2C", "TRUE"),
        ])
        .unwrap();
        assert!(config.upstream_h2c);
        assert_eq!(config.listen_addr.port(), 0);
        assert_eq!(config.client_keys.len(), 2);
        assert_eq!(config.upstream_timeout, Duration::from_secs(5));
        assert!(config.admin_password.is_none(), "blank counts as unset");
        assert_eq!(config.log_format, LogFormat::Json);
    }
}
