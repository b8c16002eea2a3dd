//! Consumers: code that acts on messages, run by a [`Hub`](crate::hub::Hub).
//!
//! A consumer names the topics it wants as [`TopicPattern`]s and handles
//! one message at a time:
//!
//! ```no_run
//! use fedmsg::consumer::{ConsumeError, Consumer, TopicPattern};
//! use fedmsg::envelope::Message;
//! use fedmsg::hub::HubContext;
//!
//! struct Builds(u64);
//!
//! impl Consumer for Builds {
//!     fn name(&self) -> &str {
//!         "builds"
//!     }
//!     fn topics(&self) -> Vec<TopicPattern> {
//!         vec!["org.fedoraproject.*.buildsys.build.state.change".parse().unwrap()]
//!     }
//!     async fn consume(&mut self, message: &Message, hub: &HubContext) -> Result<(), ConsumeError> {
//!         self.0 += 1;
//!         hub.publish("build.counted", "builds", &serde_json::json!({ "n": self.0 })).await?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! Patterns follow AMQP topic exchanges where they hold a wildcard word:
//! words are separated by dots, `*` stands for exactly one word and `#` for
//! zero or more. A pattern without wildcards is a topic prefix, as fedmsg
//! subscriptions are: `org.fedoraproject.prod.bodhi` matches every Bodhi
//! topic. The empty pattern and `#` match everything.

use crate::envelope::Message;
use crate::hub::HubContext;
use std::fmt;
use std::future::Future;
use std::str::FromStr;

/// What a consumer returns when it could not handle a message: any error.
/// The hub logs it, counts it as `failed` and goes on with the next one.
pub type ConsumeError = Box<dyn std::error::Error + Send + Sync>;

/// Code that acts on messages. Each consumer runs on a task of its own and
/// sees its messages one at a time, in the order they arrived; it may keep
/// state in `self`. Blocking work belongs in `tokio::task::spawn_blocking`.
pub trait Consumer: Send + 'static {
    /// A short name, used in logs and counters.
    fn name(&self) -> &str;

    /// The topics wanted. Asked once, when the hub starts.
    fn topics(&self) -> Vec<TopicPattern>;

    /// Handles one message. An error or a panic is logged and counted, and
    /// the consumer gets the next message.
    fn consume(
        &mut self,
        message: &Message,
        hub: &HubContext,
    ) -> impl Future<Output = Result<(), ConsumeError>> + Send;
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// `*` or `#` inside a word rather than as a whole word.
    #[error("topic pattern {0:?}: `*` and `#` must be whole words (between dots)")]
    Wildcard(String),
    /// An empty word (`a..b`, a leading or trailing dot) in a wildcard pattern.
    #[error("topic pattern {0:?} has an empty word")]
    EmptyWord(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Word {
    Literal(String),
    /// `*`: exactly one word.
    One,
    /// `#`: zero or more words.
    Any,
}

/// A topic pattern: a prefix, or AMQP-style words with `*` and `#`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    text: String,
    /// `None` for a plain prefix.
    words: Option<Vec<Word>>,
}

impl TopicPattern {
    /// The pattern that matches every topic.
    pub fn everything() -> TopicPattern {
        TopicPattern {
            text: String::new(),
            words: None,
        }
    }

    /// True if `topic` matches.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.words {
            None => topic.starts_with(&self.text),
            Some(words) => {
                let topic: Vec<&str> = topic.split('.').collect();
                match_words(words, &topic)
            }
        }
    }

    /// The longest topic prefix every match starts with: what to subscribe
    /// to on the sockets (ZeroMQ filters by prefix only).
    pub fn subscription_prefix(&self) -> String {
        let Some(words) = &self.words else {
            return self.text.clone();
        };
        let mut prefix = String::new();
        for word in words {
            match word {
                Word::Literal(text) => {
                    prefix.push_str(text);
                    prefix.push('.');
                }
                Word::One | Word::Any => return prefix,
            }
        }
        // No wildcard at all cannot happen (that is a plain prefix).
        prefix
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn match_words(pattern: &[Word], topic: &[&str]) -> bool {
    match pattern.split_first() {
        None => topic.is_empty(),
        Some((Word::Any, rest)) => (0..=topic.len()).any(|skip| match_words(rest, &topic[skip..])),
        Some((Word::One, rest)) => !topic.is_empty() && match_words(rest, &topic[1..]),
        Some((Word::Literal(text), rest)) => {
            topic.first().is_some_and(|word| word == text) && match_words(rest, &topic[1..])
        }
    }
}

impl FromStr for TopicPattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<TopicPattern, PatternError> {
        if !text.contains(['*', '#']) {
            return Ok(TopicPattern {
                text: text.to_owned(),
                words: None,
            });
        }
        let mut words = Vec::new();
        for word in text.split('.') {
            words.push(match word {
                "*" => Word::One,
                "#" => Word::Any,
                "" => return Err(PatternError::EmptyWord(text.to_owned())),
                w if w.contains(['*', '#']) => return Err(PatternError::Wildcard(text.to_owned())),
                w => Word::Literal(w.to_owned()),
            });
        }
        Ok(TopicPattern {
            text: text.to_owned(),
            words: Some(words),
        })
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> TopicPattern {
        text.parse().expect(text)
    }

    #[test]
    fn prefixes_match_as_fedmsg_subscriptions_do() {
        let bodhi = p("org.fedoraproject.prod.bodhi");
        assert!(bodhi.matches("org.fedoraproject.prod.bodhi.update.request"));
        assert!(bodhi.matches("org.fedoraproject.prod.bodhi"));
        assert!(!bodhi.matches("org.fedoraproject.stg.bodhi.update"));
        assert!(p("").matches("anything"));
        assert_eq!(bodhi.subscription_prefix(), "org.fedoraproject.prod.bodhi");
    }

    #[test]
    fn star_is_one_word_and_hash_is_any_number() {
        let star = p("org.fedoraproject.*.bodhi.update");
        assert!(star.matches("org.fedoraproject.prod.bodhi.update"));
        assert!(star.matches("org.fedoraproject.stg.bodhi.update"));
        assert!(!star.matches("org.fedoraproject.bodhi.update"));
        assert!(!star.matches("org.fedoraproject.prod.bodhi.update.request"));
        assert!(!star.matches("org.fedoraproject.a.b.bodhi.update"));
        assert_eq!(star.subscription_prefix(), "org.fedoraproject.");

        let hash = p("org.fedoraproject.#.update");
        assert!(hash.matches("org.fedoraproject.update"));
        assert!(hash.matches("org.fedoraproject.prod.bodhi.update"));
        assert!(!hash.matches("org.fedoraproject.prod.bodhi.update.request"));
        let tail = p("org.#");
        assert!(tail.matches("org"));
        assert!(tail.matches("org.a.b.c"));
        assert!(!tail.matches("com.a"));
        assert!(p("#").matches("x.y"));
        assert_eq!(p("#").subscription_prefix(), "");
        assert!(p("*.*").matches("a.b"));
        assert!(!p("*.*").matches("a.b.c"));
        // `#` then `*`: at least one word.
        assert!(p("a.#.*").matches("a.b"));
        assert!(!p("a.#.*").matches("a"));
    }

    #[test]
    fn wildcards_must_be_whole_words() {
        assert_eq!(
            "a.b*".parse::<TopicPattern>(),
            Err(PatternError::Wildcard("a.b*".into()))
        );
        assert_eq!(
            "a..*".parse::<TopicPattern>(),
            Err(PatternError::EmptyWord("a..*".into()))
        );
        assert_eq!(p("a.*.c").to_string(), "a.*.c");
    }
}
