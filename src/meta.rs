//! Human summaries of messages (fedmsg's `fedmsg.meta`): a title, a
//! one-line subtitle and a link, with built-in rules for the `logger` and
//! `announce` messages the command-line tools send.

use crate::envelope::Message;
use crate::topic::strip_prefix_and_env;
use serde_json::Value;

/// A message's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The topic without prefix and environment, e.g. `logger.log`.
    pub title: String,
    /// One line of English, possibly empty.
    pub subtitle: String,
    /// A URL, possibly empty.
    pub link: String,
}

impl Summary {
    /// fedmsg's `msg2repr`: `"{title} -- {subtitle} {link}"`.
    pub fn terse(&self) -> String {
        format!("{} -- {} {}", self.title, self.subtitle, self.link)
    }
}

/// Summarises `message` with the built-in rules.
pub fn summarise(message: &Message, topic_prefix: &str) -> Summary {
    let topic = message
        .body()
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or(message.topic());
    let title = strip_prefix_and_env(topic, topic_prefix).to_owned();
    let msg = message.msg();
    let username = message.username().unwrap_or("");
    let (subtitle, link) = match title.split('.').next() {
        Some("logger") => match msg.get("log") {
            Some(Value::String(log)) => (format!("{log} ({username})"), String::new()),
            Some(other) => (
                format!("{} ({username})", crate::canonical::to_canonical(other)),
                String::new(),
            ),
            None => (
                format!("{username} sent a structured message"),
                String::new(),
            ),
        },
        Some("announce") => (
            msg.get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            msg.get("link")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        ),
        _ => (String::new(), String::new()),
    };
    Summary {
        title,
        subtitle,
        link,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(body: Value) -> Message {
        Message::from_body(body.as_object().cloned().unwrap())
    }

    #[test]
    fn logger_and_unknown_messages_match_fedmsg() {
        let m = message(
            json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "Hello world"}, "username": "root"}),
        );
        assert_eq!(
            summarise(&m, "org.fedoraproject").terse(),
            "logger.log -- Hello world (root) "
        );
        let m = message(json!({"topic": "org.fedoraproject.dev.git.repo.update", "msg": {"a": 1}}));
        assert_eq!(
            summarise(&m, "org.fedoraproject").terse(),
            "git.repo.update --  "
        );
    }

    #[test]
    fn announce_has_a_link() {
        let m = message(
            json!({"topic": "org.fedoraproject.prod.announce.announcement", "msg": {"message": "Outage", "link": "https://x"}}),
        );
        assert_eq!(
            summarise(&m, "org.fedoraproject").terse(),
            "announce.announcement -- Outage https://x"
        );
    }
}
