//! Model names: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A valid model name (checked on construction).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ModelName(String);

impl ModelName {
    pub const PATTERN: &'static str = "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$";

    /// # Errors
    /// A message saying what a name may hold.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut chars = s.chars();
        let ok = s.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
            && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if s == "import" {
            Err("\"import\" is reserved (POST /v1/models/import)".into())
        } else if ok {
            Ok(ModelName(s.to_owned()))
        } else {
            Err(
                "must be 1–64 characters: a letter or digit, then letters, digits, '_', '.' or '-'"
                    .into(),
            )
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ModelName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ModelName::parse(&s)
    }
}

impl From<ModelName> for String {
    fn from(n: ModelName) -> String {
        n.0
    }
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::ModelName;

    #[test]
    fn names_follow_the_pattern() {
        for ok in ["a", "Iris-2.v1", "0_x", &"a".repeat(64)] {
            assert!(ModelName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", ".a", "a b", "a/b", "é", "import", &"a".repeat(65)] {
            assert!(ModelName::parse(bad).is_err(), "{bad}");
        }
    }
}
