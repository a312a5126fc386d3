//! Model ids: normalisation of what clients send, and the family that decides thinking and
//! thought-signature behaviour.

use crate::error::TranslateError;

/// Normalises a client's model id: trims it, strips one `models/` and one `google/` prefix
/// (clients copy Gemini resource names and the Vertex spelling), and refuses anything outside
/// `[A-Za-z0-9][A-Za-z0-9._-]{0,127}`, so a model id can never inject a path or a query
/// (`gemini:streamGenerateContent?key=…`, `../files/x`) into the upstream URL.
pub fn normalize_model(raw: &str) -> Result<String, TranslateError> {
    let trimmed = raw.trim();
    let without_models = trimmed.strip_prefix("models/").unwrap_or(trimmed);
    let id = without_models
        .strip_prefix("google/")
        .unwrap_or(without_models);
    let valid = !id.is_empty()
        && id.len() <= 128
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(id.to_owned())
    } else {
        Err(TranslateError::invalid(
            format!(
                "The model `{}` is not a valid model id.",
                raw.chars().take(200).collect::<String>()
            ),
            "model",
        ))
    }
}

/// How a model thinks, which decides the shape of `thinkingConfig`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFamily {
    /// Gemini 3 and later: `thinkingLevel`, strict thought signatures on function calls.
    LevelBased {
        /// Pro models support only LOW and HIGH.
        pro: bool,
    },
    /// Gemini 2.5: `thinkingBudget`.
    BudgetBased(BudgetVariant),
    /// 2.0, Gemma, LearnLM and anything unknown: no thinking configuration at all (sending one
    /// is a 400 upstream).
    NoThinking,
}

/// The 2.5 variants, whose budget ranges differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetVariant {
    /// 2.5 Flash: 0 to 24,576.
    Flash,
    /// 2.5 Flash-Lite: 512 to 24,576, 0 meaning off.
    FlashLite,
    /// 2.5 Pro: 128 to 32,768; cannot be switched off.
    Pro,
}

impl ModelFamily {
    /// The family of a normalised model id (`^gemini-(\d+)(?:\.(\d+))?`).
    pub fn of(model: &str) -> Self {
        let Some(rest) = model.strip_prefix("gemini-") else {
            return Self::NoThinking;
        };
        let version: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let mut numbers = version.split('.').filter_map(|n| n.parse::<u32>().ok());
        let major = numbers.next().unwrap_or(0);
        let minor = numbers.next().unwrap_or(0);
        let pro = model.contains("-pro");
        if major >= 3 {
            Self::LevelBased { pro }
        } else if major == 2 && minor >= 5 {
            Self::BudgetBased(if pro {
                BudgetVariant::Pro
            } else if model.contains("flash-lite") {
                BudgetVariant::FlashLite
            } else {
                BudgetVariant::Flash
            })
        } else {
            Self::NoThinking
        }
    }

    /// Whether function calls in this model's history must carry thought signatures.
    pub fn strict_signatures(self) -> bool {
        matches!(self, Self::LevelBased { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_stripped_and_injection_refused() {
        assert_eq!(
            normalize_model(" models/gemini-2.5-flash ").unwrap(),
            "gemini-2.5-flash"
        );
        assert_eq!(
            normalize_model("google/gemini-3-pro-preview").unwrap(),
            "gemini-3-pro-preview"
        );
        for bad in [
            "",
            "gemini-2.5-flash:streamGenerateContent?key=x",
            "../files/x",
            "models/",
            "-leading-dash",
            "gemini 2.5",
            "gemini/flash",
        ] {
            let error = normalize_model(bad).unwrap_err();
            assert!(
                matches!(&error, TranslateError::InvalidRequest { param: Some(p), .. } if p == "model"),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn families_follow_the_version() {
        use BudgetVariant::*;
        let cases = [
            (
                "gemini-3-pro-preview",
                ModelFamily::LevelBased { pro: true },
            ),
            (
                "gemini-3-flash-preview",
                ModelFamily::LevelBased { pro: false },
            ),
            ("gemini-3.1-flash", ModelFamily::LevelBased { pro: false }),
            ("gemini-2.5-pro", ModelFamily::BudgetBased(Pro)),
            ("gemini-2.5-flash", ModelFamily::BudgetBased(Flash)),
            ("gemini-2.5-flash-lite", ModelFamily::BudgetBased(FlashLite)),
            ("gemini-2.0-flash", ModelFamily::NoThinking),
            ("gemma-3-27b-it", ModelFamily::NoThinking),
            ("gemini-flash-latest", ModelFamily::NoThinking),
        ];
        for (model, family) in cases {
            assert_eq!(ModelFamily::of(model), family, "{model}");
        }
    }
}
