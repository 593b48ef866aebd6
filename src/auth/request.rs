//! The AUTH argument, `key:secret@group/topic=T&role=pub|sub[&color=C][&offset=new|old][&wait=MS]`,
//! parsed into an [`AuthRequest`]. Pure, so every malformed shape is unit-tested.

use std::fmt;
use std::time::Duration;

use crate::kafka::StartOffset;
use crate::secret::Secret;

/// The longest wait a client may ask of an `MGET` (`wait=` in AUTH, or
/// `MGET ... BLOCK ms`): ten minutes.
pub const MAX_WAIT_MS: u64 = 600_000;

/// A wait in milliseconds as a client writes it: 1 to [`MAX_WAIT_MS`].
pub fn parse_wait_ms(raw: &[u8]) -> Option<Duration> {
    let ms: u64 = std::str::from_utf8(raw).ok()?.parse().ok()?;
    (1..=MAX_WAIT_MS).contains(&ms).then(|| Duration::from_millis(ms))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Pub,
    Sub,
}

impl Role {
    /// The `auth_tb.operation` bit that allows this role.
    pub fn operation_bit(self) -> u8 {
        match self {
            Role::Pub => 2,
            Role::Sub => 1,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Pub => "pub",
            Role::Sub => "sub",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    pub key: String,
    pub secret: Secret,
    pub group: String,
    pub topic: String,
    pub role: Role,
    /// Traffic dye; empty means uncolored.
    pub color: String,
    pub offset: StartOffset,
    /// How long this connection's empty `MGET`s wait (`wait=`); `None`: the
    /// configured `subscriber.wait_timeout_ms`.
    pub wait: Option<Duration>,
}

/// What is wrong with an AUTH string. The text never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthStringError {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("missing '@' between credentials and group")]
    NoAt,
    #[error("missing ':' between key and secret")]
    NoColon,
    #[error("missing '/' between group and parameters")]
    NoSlash,
    #[error("empty {0}")]
    Empty(&'static str),
    #[error("parameter '{0}' has no '=value'")]
    NoValue(String),
    #[error("missing parameter '{0}'")]
    Missing(&'static str),
    #[error("role must be pub or sub, got '{0}'")]
    BadRole(String),
    #[error("offset must be new or old, got '{0}'")]
    BadOffset(String),
    #[error("wait must be milliseconds from 1 to {MAX_WAIT_MS}, got '{0}'")]
    BadWait(String),
    #[error("color may only hold letters, digits, '-', '_' and '.', got '{0}'")]
    BadColor(String),
}

/// Parses an AUTH argument. The last `@` separates the credentials from the
/// rest (so a secret may contain `@` or `:`); the key ends at the first `:`.
pub fn parse_auth_string(s: &str) -> Result<AuthRequest, AuthStringError> {
    let at = s.rfind('@').ok_or(AuthStringError::NoAt)?;
    let (credentials, rest) = (&s[..at], &s[at + 1..]);
    let (key, secret) = credentials.split_once(':').ok_or(AuthStringError::NoColon)?;
    let (group, query) = rest.split_once('/').ok_or(AuthStringError::NoSlash)?;
    for (what, v) in [("key", key), ("secret", secret), ("group", group)] {
        if v.is_empty() {
            return Err(AuthStringError::Empty(what));
        }
    }

    let (mut topic, mut role, mut color, mut offset) = (None, None, String::new(), StartOffset::Latest);
    let mut wait = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| AuthStringError::NoValue(pair.to_owned()))?;
        match name {
            "topic" => topic = Some(value),
            "role" => {
                role = Some(match value {
                    "pub" => Role::Pub,
                    "sub" => Role::Sub,
                    other => return Err(AuthStringError::BadRole(other.to_owned())),
                })
            }
            "color" => {
                let ok = value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if !ok {
                    return Err(AuthStringError::BadColor(value.to_owned()));
                }
                color = value.to_owned();
            }
            "offset" => {
                offset = match value {
                    "new" => StartOffset::Latest,
                    "old" => StartOffset::Earliest,
                    other => return Err(AuthStringError::BadOffset(other.to_owned())),
                }
            }
            "wait" => {
                wait = Some(
                    parse_wait_ms(value.as_bytes())
                        .ok_or_else(|| AuthStringError::BadWait(value.to_owned()))?,
                )
            }
            // Unknown parameters are ignored so newer clients can add some.
            _ => {}
        }
    }
    let topic = topic.ok_or(AuthStringError::Missing("topic"))?;
    if topic.is_empty() {
        return Err(AuthStringError::Empty("topic"));
    }
    Ok(AuthRequest {
        key: key.to_owned(),
        secret: Secret::new(secret),
        group: group.to_owned(),
        topic: topic.to_owned(),
        role: role.ok_or(AuthStringError::Missing("role"))?,
        color,
        offset,
        wait,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_string() {
        let r = parse_auth_string("app_key1:app_secret1@group_name1/topic=test156&role=pub").unwrap();
        assert_eq!(r.key, "app_key1");
        assert_eq!(r.secret.expose(), "app_secret1");
        assert_eq!(r.group, "group_name1");
        assert_eq!(r.topic, "test156");
        assert_eq!(r.role, Role::Pub);
        assert_eq!(r.color, "");
        assert_eq!(r.offset, StartOffset::Latest);
    }

    #[test]
    fn optional_and_unknown_parameters() {
        let r = parse_auth_string("k:s@g/role=sub&topic=t&color=blue-1&offset=old&x=y&").unwrap();
        assert_eq!((r.role, r.topic.as_str(), r.color.as_str()), (Role::Sub, "t", "blue-1"));
        assert_eq!(r.offset, StartOffset::Earliest);
        assert_eq!(r.wait, None);
        let r = parse_auth_string("k:s@g/topic=t&role=sub&wait=30000").unwrap();
        assert_eq!(r.wait, Some(Duration::from_secs(30)));
    }

    #[test]
    fn secret_may_hold_separators() {
        let r = parse_auth_string("k:p@ss:w@rd@g/topic=t&role=pub").unwrap();
        assert_eq!((r.key.as_str(), r.secret.expose(), r.group.as_str()), ("k", "p@ss:w@rd", "g"));
    }

    #[test]
    fn malformed_strings() {
        use AuthStringError::*;
        let cases: &[(&str, AuthStringError)] = &[
            ("", NoAt),
            ("k:s/topic=t&role=pub", NoAt),
            ("ks@g/topic=t&role=pub", NoColon),
            ("k:s@g", NoSlash),
            (":s@g/topic=t&role=pub", Empty("key")),
            ("k:@g/topic=t&role=pub", Empty("secret")),
            ("k:s@/topic=t&role=pub", Empty("group")),
            ("k:s@g/topic=&role=pub", Empty("topic")),
            ("k:s@g/role=pub", Missing("topic")),
            ("k:s@g/topic=t", Missing("role")),
            ("k:s@g/topic=t&role", NoValue("role".into())),
            ("k:s@g/topic=t&role=admin", BadRole("admin".into())),
            ("k:s@g/topic=t&role=sub&offset=mid", BadOffset("mid".into())),
            ("k:s@g/topic=t&role=sub&color=a b", BadColor("a b".into())),
            ("k:s@g/topic=t&role=sub&wait=0", BadWait("0".into())),
            ("k:s@g/topic=t&role=sub&wait=600001", BadWait("600001".into())),
            ("k:s@g/topic=t&role=sub&wait=1s", BadWait("1s".into())),
        ];
        for (input, want) in cases {
            assert_eq!(parse_auth_string(input).as_ref(), Err(want), "{input}");
        }
    }

    #[test]
    fn debug_hides_the_secret() {
        let r = parse_auth_string("k:topsecret@g/topic=t&role=pub").unwrap();
        assert!(!format!("{r:?}").contains("topsecret"));
    }
}
