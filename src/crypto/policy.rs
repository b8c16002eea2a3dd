//! The routing policy: which certificate common names may publish which
//! topics. Keys are exact topics, as in fedmsg, or AMQP-style patterns where
//! `*` matches one dot-separated word and `#` matches zero or more words.

use super::Reason;
use std::collections::BTreeMap;

/// Topic (or pattern) → allowed signers.
#[derive(Debug, Clone, Default)]
pub struct RoutingPolicy {
    exact: BTreeMap<String, Vec<String>>,
    patterns: Vec<(Vec<String>, Vec<String>)>,
}

impl RoutingPolicy {
    /// Builds the policy from the `routing_policy` table.
    pub fn new(table: BTreeMap<String, Vec<String>>) -> RoutingPolicy {
        let mut policy = RoutingPolicy::default();
        for (key, signers) in table {
            if key.split('.').any(|w| w == "*" || w == "#") {
                policy
                    .patterns
                    .push((key.split('.').map(str::to_owned).collect(), signers));
            } else {
                policy.exact.insert(key, signers);
            }
        }
        policy
    }

    /// The signers allowed on `topic`: the exact entry if there is one, else
    /// the union of every matching pattern's; `None` if nothing matches.
    pub fn allowed(&self, topic: &str) -> Option<Vec<&str>> {
        if let Some(signers) = self.exact.get(topic) {
            return Some(signers.iter().map(String::as_str).collect());
        }
        let words: Vec<&str> = topic.split('.').collect();
        let mut found: Option<Vec<&str>> = None;
        for (pattern, signers) in &self.patterns {
            if matches(pattern, &words) {
                found
                    .get_or_insert_with(Vec::new)
                    .extend(signers.iter().map(String::as_str));
            }
        }
        found
    }

    /// fedmsg's `validate_policy`: a listed topic needs a listed signer; an
    /// unlisted topic passes unless `nitpicky`.
    pub fn check(&self, topic: &str, signer: &str, nitpicky: bool) -> Result<(), Reason> {
        match self.allowed(topic) {
            Some(signers) if signers.contains(&signer) => Ok(()),
            Some(_) => Err(Reason::NotAllowed {
                topic: topic.to_owned(),
                signer: signer.to_owned(),
            }),
            None if nitpicky => Err(Reason::NotInPolicy(topic.to_owned())),
            None => Ok(()),
        }
    }
}

fn matches(pattern: &[String], words: &[&str]) -> bool {
    match pattern.split_first() {
        None => words.is_empty(),
        Some((first, rest)) if first == "#" => {
            (0..=words.len()).any(|skip| matches(rest, &words[skip..]))
        }
        Some((first, rest)) => match words.split_first() {
            Some((word, more)) if first == "*" || first == word => matches(rest, more),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[(&str, &[&str])]) -> RoutingPolicy {
        RoutingPolicy::new(
            entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
                .collect(),
        )
    }

    #[test]
    fn exact_topics_as_fedmsg() {
        let p = policy(&[("a.b.c", &["alice"])]);
        assert!(p.check("a.b.c", "alice", true).is_ok());
        assert_eq!(
            p.check("a.b.c", "bob", false).unwrap_err().label(),
            "not_allowed"
        );
        assert!(p.check("a.b.d", "bob", false).is_ok());
        assert_eq!(
            p.check("a.b.d", "bob", true).unwrap_err().label(),
            "not_in_policy"
        );
    }

    #[test]
    fn star_and_hash_patterns() {
        let p = policy(&[
            ("org.*.prod.bodhi.#", &["bodhi"]),
            ("org.x.#", &["x"]),
            ("org.x.dev.exact", &["only"]),
        ]);
        assert_eq!(
            p.allowed("org.fp.prod.bodhi.update.comment"),
            Some(vec!["bodhi"])
        );
        assert_eq!(
            p.allowed("org.fp.prod.bodhi"),
            Some(vec!["bodhi"]),
            "# matches zero words"
        );
        assert_eq!(
            p.allowed("org.a.b.prod.bodhi"),
            None,
            "* is exactly one word"
        );
        assert_eq!(p.allowed("org.x.prod.bodhi.y"), Some(vec!["bodhi", "x"]));
        assert_eq!(
            p.allowed("org.x.dev.exact"),
            Some(vec!["only"]),
            "an exact entry wins"
        );
    }
}
