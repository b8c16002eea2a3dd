//! Human summaries of messages (fedmsg's `fedmsg.meta`): a title, a
//! one-line subtitle, a link, and the users and packages a message is
//! about, from rules a deployment writes in TOML.
//!
//! A `[[meta]]` rule names a [`TopicPattern`], matched against the topic
//! without `topic_prefix` and environment (`git.receive` for
//! `org.fedoraproject.prod.git.receive`), and gives [templates](crate::template)
//! for the title, subtitle and link, and dotted paths for the usernames and
//! packages:
//!
//! ```toml
//! [[meta]]
//! topic = "git.receive"
//! title = "git push"
//! subtitle = "{msg.commit.username} pushed to {msg.commit.repo} ({msg.commit.branch})"
//! link = "https://src.example.org/{msg.commit.repo}/c/{msg.commit.rev}"
//! usernames = ["msg.commit.username"]
//! packages = ["msg.commit.repo", "msg.builds.*.package"]
//! ```
//!
//! The first rule that matches is used. Rules from later configuration
//! layers come first, so a deployment's rules are tried before the built-in
//! ones for `logger` and `announce` (in the embedded defaults), which
//! summarise as fedmsg's `LoggerProcessor` and `AnnounceProcessor` do. A
//! message no rule matches has its topic as title and nothing else, as
//! fedmsg's catch-all processor gives.

use crate::config::Config;
use crate::consumer::TopicPattern;
use crate::envelope::Message;
use crate::template::{Extras, Scope, Template};
use crate::topic::strip_prefix_and_env;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashSet;

/// One `[[meta]]` rule as written in TOML.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    /// The topic pattern, without prefix and environment.
    pub topic: String,
    /// Title template; by default the topic without prefix and environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Subtitle template: one line of English.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subtitle: Option<String>,
    /// Link template: a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Dotted paths whose values are the users a message involves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usernames: Vec<String>,
    /// Dotted paths whose values are the packages a message is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

/// Why a rule was refused: which field, its value, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} = {value:?}: {reason}")]
pub struct RuleError {
    /// The field (`topic`, `subtitle`, `usernames[1]`...).
    pub field: String,
    /// Its value.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A checked rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pattern: TopicPattern,
    title: Option<Template>,
    subtitle: Option<Template>,
    link: Option<Template>,
    usernames: Vec<Vec<String>>,
    packages: Vec<Vec<String>>,
}

impl Rule {
    /// Checks a rule: its pattern, its templates and its paths.
    pub fn from_raw(raw: &RawRule) -> Result<Rule, RuleError> {
        let refuse = |field: &str, value: &str, reason: String| RuleError {
            field: field.to_owned(),
            value: value.to_owned(),
            reason,
        };
        let pattern = raw
            .topic
            .parse::<TopicPattern>()
            .map_err(|e| refuse("topic", &raw.topic, e.to_string()))?;
        let template = |field: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    Template::parse(text, Scope::Rule)
                        .map_err(|e| refuse(field, text, e.to_string()))
                })
                .transpose()
        };
        let paths = |field: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, path)| {
                    let words: Vec<String> = path.split('.').map(str::to_owned).collect();
                    if words.iter().any(String::is_empty) {
                        return Err(refuse(
                            &format!("{field}[{i}]"),
                            path,
                            "not a dotted path (such as msg.owner or msg.builds.*.package)".into(),
                        ));
                    }
                    Ok(words)
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Rule {
            pattern,
            title: template("title", &raw.title)?,
            subtitle: template("subtitle", &raw.subtitle)?,
            link: template("link", &raw.link)?,
            usernames: paths("usernames", &raw.usernames)?,
            packages: paths("packages", &raw.packages)?,
        })
    }

    /// The topic pattern, as written.
    pub fn pattern(&self) -> &TopicPattern {
        &self.pattern
    }
}

/// A message's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// By default the topic without prefix and environment, e.g.
    /// `logger.log` (under another prefix, without its first three words,
    /// as fedmsg has it).
    pub title: String,
    /// One line of English, possibly empty.
    pub subtitle: String,
    /// A URL, possibly empty.
    pub link: String,
    /// The users the message involves, each once, in the order found.
    pub usernames: Vec<String>,
    /// The packages the message is about, each once, in the order found.
    pub packages: Vec<String>,
}

impl Summary {
    /// fedmsg's `msg2repr`: `"{title} -- {subtitle} {link}"`.
    pub fn terse(&self) -> String {
        format!("{} -- {} {}", self.title, self.subtitle, self.link)
    }

    /// fedmsg-tail's `--users` and `--packages`: true if the message
    /// involves one of `users` (when given) and one of `packages` (when given).
    pub fn involves(&self, users: &[String], packages: &[String]) -> bool {
        let any = |wanted: &[String], found: &[String]| {
            wanted.is_empty() || found.iter().any(|f| wanted.contains(f))
        };
        any(users, &self.usernames) && any(packages, &self.packages)
    }
}

/// The rules of a configuration, ready to summarise messages.
#[derive(Debug, Clone)]
pub struct Rules {
    rules: Vec<Rule>,
    topic_prefix: String,
}

impl Rules {
    /// The configuration's rules: the deployment's first, then the built-in ones.
    pub fn from_config(config: &Config) -> Rules {
        Rules::new(config.meta.clone(), &config.topic_prefix)
    }

    /// These rules, in order, for topics under `topic_prefix`.
    pub fn new(rules: Vec<Rule>, topic_prefix: &str) -> Rules {
        Rules {
            rules,
            topic_prefix: topic_prefix.to_owned(),
        }
    }

    /// The first rule for `message`, if any matches.
    pub fn rule_for(&self, message: &Message) -> Option<&Rule> {
        let short = self.short_topic(message);
        self.rules.iter().find(|rule| rule.pattern.matches(short))
    }

    /// Summarises `message` with the first rule that matches it.
    pub fn summarise(&self, message: &Message) -> Summary {
        let short = self.short_topic(message);
        let title = if short.len() < message_topic(message).len() {
            short.to_owned()
        } else {
            // Another prefix: fedmsg's default title, the topic without
            // its first three words.
            match short.splitn(4, '.').nth(3) {
                Some(rest) => rest.to_owned(),
                None => short.to_owned(),
            }
        };
        let Some(rule) = self.rule_for(message) else {
            return Summary {
                title,
                ..Summary::default()
            };
        };
        let body = message.body();
        let fill = |template: &Option<Template>| {
            template
                .as_ref()
                .map(|t| t.to_string_for(body, Extras::default()))
                .unwrap_or_default()
        };
        Summary {
            // A title template that comes out empty keeps the default.
            title: match rule
                .title
                .as_ref()
                .map(|t| t.to_string_for(body, Extras::default()))
            {
                Some(rendered) if !rendered.is_empty() => rendered,
                _ => title,
            },
            subtitle: fill(&rule.subtitle),
            link: fill(&rule.link),
            usernames: collect(body, &rule.usernames),
            packages: collect(body, &rule.packages),
        }
    }

    /// The topic without prefix and environment (the whole topic if it has
    /// another prefix).
    fn short_topic<'a>(&self, message: &'a Message) -> &'a str {
        strip_prefix_and_env(message_topic(message), &self.topic_prefix)
    }
}

/// The envelope's topic, or the frame's if the envelope has none.
fn message_topic(message: &Message) -> &str {
    message
        .body()
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or(message.topic())
}

/// The strings at `paths` in `body`, each once; `*` is every item of an
/// array or value of an object, and an array contributes its items.
fn collect(body: &Map<String, Value>, paths: &[Vec<String>]) -> Vec<String> {
    struct Found {
        list: Vec<String>,
        seen: HashSet<String>,
    }
    fn walk(value: &Value, path: &[String], found: &mut Found) {
        match path.split_first() {
            None => match value {
                Value::Array(items) => items.iter().for_each(|item| walk(item, &[], found)),
                Value::String(text) => push(found, text.clone()),
                Value::Number(n) => push(found, n.to_string()),
                _ => {}
            },
            Some((word, rest)) => match value {
                Value::Array(items) if word == "*" => {
                    items.iter().for_each(|item| walk(item, rest, found))
                }
                Value::Object(map) if word == "*" => {
                    map.values().for_each(|item| walk(item, rest, found))
                }
                Value::Object(map) => {
                    if let Some(item) = map.get(word) {
                        walk(item, rest, found)
                    }
                }
                Value::Array(items) => {
                    if let Some(item) = word.parse::<usize>().ok().and_then(|i| items.get(i)) {
                        walk(item, rest, found)
                    }
                }
                _ => {}
            },
        }
    }
    fn push(found: &mut Found, text: String) {
        if !text.is_empty() && found.seen.insert(text.clone()) {
            found.list.push(text);
        }
    }
    let mut found = Found {
        list: Vec::new(),
        seen: HashSet::new(),
    };
    for path in paths {
        match path.split_first() {
            Some((word, rest)) if word == "*" => {
                body.values().for_each(|item| walk(item, rest, &mut found))
            }
            Some((word, rest)) => {
                if let Some(item) = body.get(word) {
                    walk(item, rest, &mut found)
                }
            }
            None => {}
        }
    }
    found.list
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(body: Value) -> Message {
        Message::from_body(body.as_object().cloned().unwrap())
    }

    fn builtin() -> Rules {
        Rules::from_config(&Config::builtin().unwrap())
    }

    #[test]
    fn builtin_rules_summarise_as_fedmsg_does() {
        let rules = builtin();
        let terse = |body: Value| rules.summarise(&message(body)).terse();
        assert_eq!(
            terse(
                json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "Hello world"}, "username": "root"})
            ),
            "logger.log -- Hello world (root) "
        );
        assert_eq!(
            terse(json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {"log": "Hello"}})),
            "logger.log -- Hello (none) "
        );
        assert_eq!(
            terse(
                json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {"a": 1}, "username": "root"})
            ),
            "logger.log -- <custom JSON message> (root) "
        );
        assert_eq!(
            terse(
                json!({"topic": "org.fedoraproject.dev.logger.repo.update", "msg": {"log": "pushed"}, "username": "root"})
            ),
            "logger.repo.update -- pushed (root) "
        );
        assert_eq!(
            terse(
                json!({"topic": "org.fedoraproject.prod.announce.announcement", "msg": {"message": "Outage", "link": "https://x"}})
            ),
            "announce.announcement -- Outage https://x"
        );
        assert_eq!(
            terse(
                json!({"topic": "org.fedoraproject.dev.git.repo.update", "msg": {"a": 1}, "username": "root"})
            ),
            "git.repo.update --  "
        );
        assert_eq!(
            terse(
                json!({"topic": "com.example.dev.logger.log", "msg": {"log": "x"}, "username": "root"})
            ),
            "logger.log --  "
        );
        let users = |body: Value| rules.summarise(&message(body)).usernames;
        assert_eq!(
            users(
                json!({"topic": "org.fedoraproject.dev.logger.log", "msg": {}, "username": "root"})
            ),
            ["root"]
        );
        assert!(users(
            json!({"topic": "org.fedoraproject.dev.git.x", "msg": {}, "username": "root"})
        )
        .is_empty());
    }

    #[test]
    fn a_rule_fills_every_part_and_collects_paths() {
        let raw = RawRule {
            topic: "bodhi.update.*".into(),
            title: Some("update {msg.update.alias}".into()),
            subtitle: Some("{msg.agent} submitted {msg.update.title}".into()),
            link: Some("https://bodhi.example.org/updates/{msg.update.alias}".into()),
            usernames: vec!["msg.agent".into(), "msg.update.user.name".into()],
            packages: vec!["msg.update.builds.*.package".into(), "msg.extra".into()],
        };
        let rules = Rules::new(vec![Rule::from_raw(&raw).unwrap()], "org.fedoraproject");
        let m = message(
            json!({"topic": "org.fedoraproject.prod.bodhi.update.request",
            "msg": {"agent": "bob", "update": {"alias": "FEDORA-1", "title": "kernel-6.1",
                    "user": {"name": "bob"},
                    "builds": [{"package": "kernel"}, {"package": "kernel-tools"}, {"package": "kernel"}]},
                    "extra": ["glibc", 7]}}),
        );
        let summary = rules.summarise(&m);
        assert_eq!(summary.title, "update FEDORA-1");
        assert_eq!(summary.subtitle, "bob submitted kernel-6.1");
        assert_eq!(summary.link, "https://bodhi.example.org/updates/FEDORA-1");
        assert_eq!(summary.usernames, ["bob"]);
        assert_eq!(summary.packages, ["kernel", "kernel-tools", "glibc", "7"]);
        assert!(summary.involves(&["alice".into(), "bob".into()], &[]));
        assert!(!summary.involves(&["alice".into()], &[]));
        assert!(summary.involves(&["bob".into()], &["glibc".into()]));
        assert!(!summary.involves(&["bob".into()], &["rpm".into()]));
        // A title template that comes out empty keeps the default title.
        let aliased = RawRule {
            topic: "bodhi".into(),
            title: Some("{msg.alias}".into()),
            ..RawRule::default()
        };
        let aliased = Rules::new(vec![Rule::from_raw(&aliased).unwrap()], "org.fedoraproject");
        let untitled =
            message(json!({"topic": "org.fedoraproject.prod.bodhi.update.comment", "msg": {}}));
        assert_eq!(aliased.summarise(&untitled).title, "bodhi.update.comment");
        // The pattern is matched against the topic without prefix and env.
        let other =
            message(json!({"topic": "org.fedoraproject.prod.bodhi.update.request.x", "msg": {}}));
        assert!(rules.rule_for(&other).is_none());
    }

    #[test]
    fn bad_rules_name_the_field() {
        let refused = |raw: RawRule| Rule::from_raw(&raw).unwrap_err();
        let e = refused(RawRule {
            topic: "a.b*".into(),
            ..RawRule::default()
        });
        assert_eq!(e.field, "topic");
        let e = refused(RawRule {
            topic: "a".into(),
            subtitle: Some("{msg.x".into()),
            ..RawRule::default()
        });
        assert_eq!((e.field.as_str(), e.value.as_str()), ("subtitle", "{msg.x"));
        let e = refused(RawRule {
            topic: "a".into(),
            packages: vec!["msg.a".into(), "msg..b".into()],
            ..RawRule::default()
        });
        assert_eq!(e.field, "packages[1]");
    }
}
