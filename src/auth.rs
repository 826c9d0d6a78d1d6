//! Bearer-token authentication: which token has which role, and what each role may call.
//! Off when no token is configured. Tokens are compared in constant time and never printed.

use axum::http::Method;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use subtle::ConstantTimeEq;

/// A bearer token. Its `Debug` and `Display` hide the value, so it cannot reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token is one or more printable ASCII characters, no spaces".into());
        }
        Ok(Token(t.to_owned()))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Every call.
    Admin,
    /// Predictions and read-only calls (not `/metrics`).
    Predict,
}

/// What a request is, for the role check: its method and the route it matched.
pub struct Call<'a> {
    pub method: &'a Method,
    pub route: &'a str,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Predict => "predict",
        }
    }

    pub fn allows(self, call: &Call<'_>) -> bool {
        match self {
            Role::Admin => true,
            // Metrics, when they need a token at all, need an admin's.
            Role::Predict => {
                (matches!(*call.method, Method::GET | Method::HEAD) && call.route != "/metrics")
                    || (*call.method == Method::POST
                        && (call.route == "/v1/models/{name}/predict"
                            || crate::api::v2::INFER_ROUTES.contains(&call.route)))
            }
        }
    }
}

/// The configured tokens. Empty: authentication is off.
#[derive(Debug, Default)]
pub struct Tokens {
    tokens: Vec<(Token, Role)>,
}

impl Tokens {
    /// The tokens from the lists and the file.
    ///
    /// # Errors
    /// The file cannot be read, or a line is not `admin TOKEN` / `predict TOKEN`.
    pub fn load(admin: &[Token], predict: &[Token], file: Option<&Path>) -> anyhow::Result<Self> {
        let mut tokens: Vec<(Token, Role)> = admin
            .iter()
            .map(|t| (t.clone(), Role::Admin))
            .chain(predict.iter().map(|t| (t.clone(), Role::Predict)))
            .collect();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read tokens file {}: {e}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if line.is_empty() {
                    continue;
                }
                let parsed = line.split_once(char::is_whitespace).and_then(|(role, t)| {
                    let role = match role {
                        "admin" => Role::Admin,
                        "predict" => Role::Predict,
                        _ => return None,
                    };
                    Token::from_str(t).ok().map(|t| (t, role))
                });
                match parsed {
                    Some(entry) => tokens.push(entry),
                    None => anyhow::bail!(
                        "{}:{}: expected `admin TOKEN` or `predict TOKEN`",
                        path.display(),
                        i + 1
                    ),
                }
            }
        }
        Ok(Tokens { tokens })
    }

    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The role of `presented`, comparing against every token in constant time (no early exit,
    /// so the time taken does not tell which token matched or how much of one did).
    pub fn role(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.tokens {
            let same: bool = token.0.as_bytes().ct_eq(presented.as_bytes()).into();
            if same && found.is_none() {
                found = Some(*role);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Token {
        s.parse().unwrap()
    }

    #[test]
    fn roles_and_rules() {
        let tokens = Tokens::load(&[t("a1"), t("a2")], &[t("p1")], None).unwrap();
        assert_eq!(tokens.role("a2"), Some(Role::Admin));
        assert_eq!(tokens.role("p1"), Some(Role::Predict));
        assert_eq!(tokens.role("p"), None);
        assert_eq!(tokens.role(""), None);
        let post_predict = Call {
            method: &Method::POST,
            route: "/v1/models/{name}/predict",
        };
        let post_train = Call {
            method: &Method::POST,
            route: "/v1/models/{name}/train",
        };
        let get = Call {
            method: &Method::GET,
            route: "/v1/jobs/{id}",
        };
        assert!(Role::Predict.allows(&post_predict) && Role::Predict.allows(&get));
        assert!(!Role::Predict.allows(&post_train));
        assert!(Role::Admin.allows(&post_train));
        assert_eq!(format!("{:?}", t("secret")), "Token(***)");
        assert!("has space".parse::<Token>().is_err());
    }

    #[test]
    fn tokens_file() {
        let dir = std::env::temp_dir().join(format!("mlpd-tokens-{}", std::process::id()));
        std::fs::write(&dir, "# rotation\nadmin new-admin\npredict p # the app\n\n").unwrap();
        let tokens = Tokens::load(&[], &[], Some(&dir)).unwrap();
        assert_eq!(tokens.role("new-admin"), Some(Role::Admin));
        assert_eq!(tokens.role("p"), Some(Role::Predict));
        std::fs::write(&dir, "root x\n").unwrap();
        let err = Tokens::load(&[], &[], Some(&dir)).unwrap_err().to_string();
        assert!(
            err.ends_with(":1: expected `admin TOKEN` or `predict TOKEN`"),
            "{err}"
        );
        std::fs::remove_file(&dir).unwrap();
    }
}
