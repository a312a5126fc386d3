//! The command line: `gemini-pool` serves; `gemini-pool check-config` checks the configuration;
//! `gemini-pool hash-password` turns a password (read from standard input) into an argon2 hash
//! for `ADMIN_PASSWORD`; `gemini-pool --help` lists the environment variables.

use crate::config::VARIABLES;

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Parse the configuration and report on it.
    CheckConfig,
    /// Hash a password read from standard input.
    HashPassword,
    /// Ask the local gateway whether it is alive (`/healthz`) or ready (`/readyz`).
    Healthcheck {
        /// Ask `/readyz` instead of `/healthz`.
        ready: bool,
    },
    /// Print the help.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments (without the program name).
pub fn parse(args: &[String]) -> Result<Command, String> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => Ok(Command::Serve),
        ["check-config"] => Ok(Command::CheckConfig),
        ["hash-password"] => Ok(Command::HashPassword),
        ["healthcheck"] => Ok(Command::Healthcheck { ready: false }),
        ["healthcheck", "--ready"] => Ok(Command::Healthcheck { ready: true }),
        ["-h" | "--help" | "help"] => Ok(Command::Help),
        ["-V" | "--version"] => Ok(Command::Version),
        other => Err(format!(
            "unknown arguments {other:?}; see gemini-pool --help"
        )),
    }
}

/// The help text, with every environment variable, its default and meaning.
pub fn help() -> String {
    let mut text = format!(
        "gemini-pool {}: one endpoint over a pool of Google Gemini API keys\n\n\
         USAGE:\n  gemini-pool [serve]        run the gateway\n  \
         gemini-pool check-config   check the configuration and exit\n  \
         gemini-pool hash-password  read a password on standard input, print its argon2 hash\n  \
         gemini-pool healthcheck [--ready]  exit 0 when the local gateway is alive (ready)\n  \
         gemini-pool --help | --version\n\n\
         CONFIGURATION (environment, or a .env file in the working directory):\n",
        env!("CARGO_PKG_VERSION")
    );
    for variable in VARIABLES {
        let default = if variable.default.is_empty() {
            "none"
        } else {
            variable.default
        };
        text.push_str(&format!(
            "  {:<23} {} (default: {default})\n",
            variable.name, variable.meaning
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_and_help_lists_every_variable() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(parse(&args(&[])), Ok(Command::Serve));
        assert_eq!(parse(&args(&["check-config"])), Ok(Command::CheckConfig));
        assert_eq!(parse(&args(&["hash-password"])), Ok(Command::HashPassword));
        assert_eq!(parse(&args(&["--help"])), Ok(Command::Help));
        assert_eq!(
            parse(&args(&["healthcheck", "--ready"])),
            Ok(Command::Healthcheck { ready: true })
        );
        assert!(parse(&args(&["--frobnicate"])).is_err());
        let help = help();
        for variable in VARIABLES {
            let line = format!("{} (default: ", variable.meaning);
            assert!(
                help.lines()
                    .any(|l| l.trim_start().starts_with(variable.name) && l.contains(&line)),
                "{}",
                variable.name
            );
        }
    }
}
