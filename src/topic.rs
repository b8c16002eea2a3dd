//! Topics: the first frame of every message, `<prefix>.<env>.<modname>.<topic>`.

use std::fmt;
use std::str::FromStr;

/// Why a topic is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopicError {
    /// The topic is empty.
    #[error("empty topic")]
    Empty,
    /// The topic contains a NUL byte, which ZeroMQ subscribers cannot match reliably.
    #[error("topic {0:?} contains a NUL byte")]
    Nul(String),
}

/// A full topic as it appears in frame 0 and in the envelope's `topic`,
/// for example `org.fedoraproject.prod.bodhi.update.comment`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

impl Topic {
    /// Builds a full topic exactly as fedmsg does (`fedmsg/core.py`):
    /// `modname + "." + topic`, prefixed with `<topic_prefix>.<environment>.`
    /// unless that string already starts with `topic_prefix`. An empty
    /// `topic` becomes `unspecified`.
    pub fn build(topic_prefix: &str, environment: &str, modname: &str, topic: &str) -> Topic {
        let topic = if topic.is_empty() {
            "unspecified"
        } else {
            topic
        };
        // One allocation: this runs for every message published.
        // Whether `modname.topic` already starts with the prefix.
        let qualified = match topic_prefix.strip_prefix(modname) {
            Some(rest) => {
                rest.is_empty() || rest.strip_prefix('.').is_some_and(|r| topic.starts_with(r))
            }
            None => modname.starts_with(topic_prefix),
        };
        let mut out = String::with_capacity(
            topic_prefix.len() + environment.len() + modname.len() + topic.len() + 3,
        );
        if !(qualified) {
            out.push_str(topic_prefix);
            out.push('.');
            out.push_str(environment);
            out.push('.');
        }
        out.push_str(modname);
        out.push('.');
        out.push_str(topic);
        Topic(out)
    }

    /// The topic text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The topic as bytes, for frame 0 and prefix matching.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// The part after `<topic_prefix>.<environment>.` (fedmsg's "title"),
    /// or the whole topic when it does not carry that prefix.
    pub fn short<'a>(&'a self, topic_prefix: &str) -> &'a str {
        strip_prefix_and_env(&self.0, topic_prefix)
    }
}

/// Strips `<prefix>.<one env token>.` from a topic string.
pub(crate) fn strip_prefix_and_env<'a>(topic: &'a str, topic_prefix: &str) -> &'a str {
    topic
        .strip_prefix(topic_prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.split_once('.'))
        .map(|(_env, rest)| rest)
        .unwrap_or(topic)
}

impl FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(TopicError::Empty);
        }
        if s.contains('\0') {
            return Err(TopicError::Nul(s.to_owned()));
        }
        Ok(Topic(s.to_owned()))
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_matches_the_plain_formula() {
        let parts = ["", "a", "a.b", "a.b.c", "ab", "b", ".", "a."];
        for prefix in parts {
            for modname in parts {
                for topic in parts {
                    let topic_or = if topic.is_empty() {
                        "unspecified"
                    } else {
                        topic
                    };
                    let joined = format!("{modname}.{topic_or}");
                    let expected = if joined.starts_with(prefix) {
                        joined
                    } else {
                        format!("{prefix}.env.{joined}")
                    };
                    let built = Topic::build(prefix, "env", modname, topic);
                    assert_eq!(built.as_str(), expected, "{prefix:?} {modname:?} {topic:?}");
                }
            }
        }
    }

    #[test]
    fn builds_like_fedmsg() {
        let t = Topic::build("org.fedoraproject", "dev", "logger", "log");
        assert_eq!(t.as_str(), "org.fedoraproject.dev.logger.log");
        // An empty topic is "unspecified".
        let t = Topic::build("org.fedoraproject", "prod", "bodhi", "");
        assert_eq!(t.as_str(), "org.fedoraproject.prod.bodhi.unspecified");
        // A fully qualified *topic* is still prefixed: modname comes first.
        let t = Topic::build("org.fedoraproject", "dev", "x", "org.fedoraproject.dev.y");
        assert_eq!(
            t.as_str(),
            "org.fedoraproject.dev.x.org.fedoraproject.dev.y"
        );
        // Only a modname that starts with the prefix avoids it (a literal string test).
        let t = Topic::build(
            "org.fedoraproject",
            "dev",
            "org.fedoraproject.stg.bodhi",
            "update",
        );
        assert_eq!(t.as_str(), "org.fedoraproject.stg.bodhi.update");
        let t = Topic::build("org.fedoraproject", "dev", "org.fedoraprojectX", "a");
        assert_eq!(t.as_str(), "org.fedoraprojectX.a");
    }

    #[test]
    fn short_form_strips_prefix_and_environment() {
        let t: Topic = "org.fedoraproject.dev.logger.log".parse().unwrap();
        assert_eq!(t.short("org.fedoraproject"), "logger.log");
        assert_eq!(t.short("com.example"), "org.fedoraproject.dev.logger.log");
    }

    #[test]
    fn rejects_empty_and_nul() {
        assert_eq!("".parse::<Topic>(), Err(TopicError::Empty));
        assert!("a\0b".parse::<Topic>().is_err());
    }
}
