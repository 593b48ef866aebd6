//! A password, an app secret, or a URL that may hold one. Its `Debug` and
//! `Display` redact, so no `{:?}` of a settings struct, a grant or an AUTH
//! request can put it in a log line; the only way to the text is
//! [`Secret::expose`], which names every place that needs it.

use std::fmt;

use serde::Deserialize;

#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The text itself: for the comparison, the login or the connection
    /// that needs it, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(text: &str) -> Secret {
        Secret::new(text)
    }
}

impl From<String> for Secret {
    fn from(text: String) -> Secret {
        Secret(text)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown_but_on_request() {
        #[derive(Debug, Deserialize)]
        struct Holder {
            password: Secret,
        }
        let h: Holder = toml::from_str("password = \"hunter2\"").unwrap();
        assert_eq!(format!("{h:?}"), "Holder { password: <redacted> }");
        assert_eq!(format!("{} {:?}", h.password, h.password), "<redacted> <redacted>");
        assert_eq!(h.password.expose(), "hunter2");
        assert_eq!(Secret::from("a"), Secret::new(String::from("a")));
    }
}
