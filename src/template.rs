//! Templates over a message: the subtitles and links of [`meta`](crate::meta)
//! rules and `fedmsg-tail --format`.
//!
//! A template is text with fields in braces:
//!
//! * `{msg.log}`: the value at a dotted path in the envelope (`topic`,
//!   `username`, `msg.commit.repo`, `msg.builds.0.nvr`). A string is
//!   written as it is, an array as its items joined by `, `, anything else
//!   as compact JSON. A missing path or `null` writes nothing.
//! * `{username|nobody}`: the same, with text to write instead when the
//!   path is missing or `null` (an empty string stays empty).
//! * `{time}` or `{time:%H:%M:%S}`: the envelope's `timestamp` in local
//!   time, as RFC 3339 or in a `strftime` format.
//! * Output templates (`--format`) also have the message's summary:
//!   `{title}`, `{subtitle}`, `{link}`, `{usernames}`, `{packages}`;
//!   `{json}`, the whole envelope as one line of canonical JSON; and, when
//!   signatures are validated, `{verdict}` (`valid` or `invalid: reason`)
//!   and `{signer}` (the certificate's common name).
//! * `{{` and `}}` are literal braces.
//!
//! A fallback cannot contain braces, and a time format cannot contain `|`
//! (what follows it is the fallback). Control characters in values are
//! escaped, so one message stays one line.
//!
//! Templates are checked when they are read, so a typo is an error at
//! start-up, not an empty field at three in the morning.

use crate::canonical;
use crate::crypto::Verdict;
use crate::meta::Summary;
use chrono::format::{Item, StrftimeItems};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// Where a template is used, which decides the names it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A `[[meta]]` rule: envelope fields and `{time}`.
    Rule,
    /// Output (`fedmsg-tail --format`): also the summary and `{json}`.
    Output,
}

/// Why a template was refused; each names the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{` without its `}`.
    #[error("template {0:?}: `{{` without a closing `}}` (write `{{{{` for a literal brace)")]
    Unclosed(String),
    /// A `}` that closes nothing.
    #[error("template {0:?}: `}}` without an opening `{{` (write `}}}}` for a literal brace)")]
    Unopened(String),
    /// `{}`, `{a..b}`, `{.a}` and the like.
    #[error(
        "template {template:?}: {field:?} is not a field name (a dotted path such as msg.log)"
    )]
    BadName {
        /// The template.
        template: String,
        /// What was between the braces.
        field: String,
    },
    /// A summary name where only envelope fields are available.
    #[error("template {template:?}: {{{name}}} is only available in --format templates")]
    OutputOnly {
        /// The template.
        template: String,
        /// The name.
        name: String,
    },
    /// A `:format` after something other than `time`.
    #[error("template {template:?}: only {{time}} takes a format, not {{{name}}}")]
    UnexpectedFormat {
        /// The template.
        template: String,
        /// The name that had one.
        name: String,
    },
    /// A `strftime` format chrono cannot follow.
    #[error("template {template:?}: {format:?} is not a valid time format (strftime, e.g. %Y-%m-%d %H:%M:%S)")]
    BadTimeFormat {
        /// The template.
        template: String,
        /// The format.
        format: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    /// A dotted path into the envelope.
    Field(Vec<String>),
    /// The timestamp, with an optional strftime format.
    Time(Option<String>),
    Title,
    Subtitle,
    Link,
    Usernames,
    Packages,
    Json,
    Verdict,
    Signer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value {
        name: Name,
        fallback: Option<String>,
    },
}

/// What an output template knows about a message besides its envelope.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extras<'a> {
    /// The message's summary, from the `[[meta]]` rules.
    pub summary: Option<&'a Summary>,
    /// The signature verdict, when signatures are validated.
    pub verdict: Option<&'a Verdict>,
}

/// A parsed template; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text` for use in `scope`.
    pub fn parse(text: &str, scope: Scope) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let brace = &rest[at..];
            if let Some(after) = brace.strip_prefix("{{") {
                literal.push('{');
                rest = after;
            } else if let Some(after) = brace.strip_prefix("}}") {
                literal.push('}');
                rest = after;
            } else if brace.starts_with('}') {
                return Err(TemplateError::Unopened(text.to_owned()));
            } else {
                let Some(end) = brace.find('}') else {
                    return Err(TemplateError::Unclosed(text.to_owned()));
                };
                let inside = &brace[1..end];
                if inside.contains('{') {
                    return Err(TemplateError::Unclosed(text.to_owned()));
                }
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(field(text, inside, scope)?);
                rest = &brace[end + 1..];
            }
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template {
            text: text.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True if rendering needs the message's [`Summary`].
    pub fn needs_summary(&self) -> bool {
        self.parts.iter().any(|part| {
            matches!(
                part,
                Part::Value {
                    name: Name::Title
                        | Name::Subtitle
                        | Name::Link
                        | Name::Usernames
                        | Name::Packages,
                    ..
                }
            )
        })
    }

    /// Appends the template filled in from `body` (an envelope) and, for
    /// output templates, the `extras`.
    pub fn render(&self, out: &mut String, body: &Map<String, Value>, extras: Extras<'_>) {
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Value { name, fallback } => {
                    if !write_name(out, name, body, extras) {
                        if let Some(fallback) = fallback {
                            out.push_str(fallback);
                        }
                    }
                }
            }
        }
    }

    /// The template filled in, as a new string.
    pub fn to_string_for(&self, body: &Map<String, Value>, extras: Extras<'_>) -> String {
        let mut out = String::new();
        self.render(&mut out, body, extras);
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Template {
    type Err = TemplateError;

    /// Parses an output template (every name allowed).
    fn from_str(text: &str) -> Result<Template, TemplateError> {
        Template::parse(text, Scope::Output)
    }
}

fn field(template: &str, inside: &str, scope: Scope) -> Result<Part, TemplateError> {
    let (head, fallback) = match inside.split_once('|') {
        Some((head, fallback)) => (head, Some(fallback.to_owned())),
        None => (inside, None),
    };
    let (word, format) = match head.split_once(':') {
        Some((word, format)) => (word.trim(), Some(format.to_owned())),
        None => (head.trim(), None),
    };
    let bad_name = || TemplateError::BadName {
        template: template.to_owned(),
        field: inside.to_owned(),
    };
    let name = match word {
        "time" => Name::Time(format.clone()),
        "title" => Name::Title,
        "subtitle" => Name::Subtitle,
        "link" => Name::Link,
        "usernames" => Name::Usernames,
        "packages" => Name::Packages,
        "json" => Name::Json,
        "verdict" => Name::Verdict,
        "signer" => Name::Signer,
        path => {
            let words: Vec<String> = path.split('.').map(str::to_owned).collect();
            let valid = |w: &String| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '@' | '$'))
            };
            if !words.iter().all(valid) {
                return Err(bad_name());
            }
            Name::Field(words)
        }
    };
    let summary_name = !matches!(name, Name::Field(_) | Name::Time(_));
    if scope == Scope::Rule && summary_name {
        return Err(TemplateError::OutputOnly {
            template: template.to_owned(),
            name: word.to_owned(),
        });
    }
    match (&name, &format) {
        (Name::Time(Some(format)), _) if !time_format_works(format) => {
            return Err(TemplateError::BadTimeFormat {
                template: template.to_owned(),
                format: format.clone(),
            });
        }
        (Name::Time(_), _) | (_, None) => {}
        (_, Some(_)) => {
            return Err(TemplateError::UnexpectedFormat {
                template: template.to_owned(),
                name: word.to_owned(),
            })
        }
    }
    Ok(Part::Value { name, fallback })
}

/// Writes one name; false if there was nothing to write (a missing or
/// `null` field, an empty summary part), so the fallback applies.
fn write_name(
    out: &mut String,
    name: &Name,
    body: &Map<String, Value>,
    extras: Extras<'_>,
) -> bool {
    let summary = extras.summary;
    let text = |out: &mut String, text: &str| {
        out.push_str(text);
        !text.is_empty()
    };
    let list = |out: &mut String, items: &[String]| {
        out.push_str(&items.join(", "));
        !items.is_empty()
    };
    match name {
        Name::Field(path) => match lookup(body, path) {
            None | Some(Value::Null) => false,
            Some(value) => {
                write_value(out, value);
                true
            }
        },
        Name::Time(format) => body
            .get("timestamp")
            .and_then(Value::as_f64)
            .and_then(|t| local_time(t, format.as_deref()))
            .is_some_and(|time| text(out, &time)),
        Name::Title => text(out, summary.map_or("", |s| &s.title)),
        Name::Subtitle => text(out, summary.map_or("", |s| &s.subtitle)),
        Name::Link => text(out, summary.map_or("", |s| &s.link)),
        Name::Usernames => list(out, summary.map_or(&[], |s| &s.usernames)),
        Name::Packages => list(out, summary.map_or(&[], |s| &s.packages)),
        Name::Json => {
            canonical::write_canonical_object_without(out, body, &[]);
            true
        }
        Name::Verdict => match extras.verdict {
            None => false,
            Some(Verdict::Valid { .. }) => text(out, "valid"),
            Some(Verdict::Invalid(reason)) => text(out, &format!("invalid: {reason}")),
        },
        Name::Signer => match extras.verdict {
            Some(Verdict::Valid { signer, .. }) => text(out, signer),
            _ => false,
        },
    }
}

/// The value at `path` (already split on dots) in an envelope; array items
/// are addressed by index.
pub fn lookup<'a, S: AsRef<str>>(body: &'a Map<String, Value>, path: &[S]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(body.get(first.as_ref())?, |current, part| match current {
            Value::Object(map) => map.get(part.as_ref()),
            Value::Array(items) => items.get(part.as_ref().parse::<usize>().ok()?),
            _ => None,
        })
}

/// Writes a value as templates show it: strings as they are, arrays as
/// their items joined by `, `, `null` as nothing, the rest as compact JSON.
/// Control characters in strings are escaped (`\n`, `\t`, `\u001b`), so a
/// message cannot split a line or send escape sequences to a terminal.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => {}
        Value::String(text) => push_printable(out, text),
        Value::Array(items) => {
            let mut first = true;
            for item in items.iter().filter(|item| !item.is_null()) {
                if !first {
                    out.push_str(", ");
                }
                first = false;
                match item {
                    Value::String(text) => push_printable(out, text),
                    other => canonical::write_canonical(out, other),
                }
            }
        }
        other => canonical::write_canonical(out, other),
    }
}

/// True if chrono can both read and write `format` (some items, like
/// `%#z`, are for parsing only and fail when formatting).
fn time_format_works(format: &str) -> bool {
    use std::fmt::Write as _;
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return false;
    }
    let Some(probe) = chrono::DateTime::from_timestamp(1_795_359_931, 0) else {
        return false;
    };
    let mut text = String::new();
    write!(text, "{}", probe.fixed_offset().format(format)).is_ok()
}

fn push_printable(out: &mut String, text: &str) {
    if !text.chars().any(char::is_control) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

fn local_time(timestamp: f64, format: Option<&str>) -> Option<String> {
    use chrono::TimeZone;
    use std::fmt::Write as _;
    if !timestamp.is_finite() {
        return None;
    }
    let seconds = timestamp.floor();
    let nanos = ((timestamp - seconds) * 1e9) as u32;
    let time = chrono::Local
        .timestamp_opt(seconds as i64, nanos.min(999_999_999))
        .single()?;
    match format {
        Some(format) => {
            // Checked when parsed; a failure here still writes nothing.
            let mut text = String::new();
            write!(text, "{}", time.format(format)).ok()?;
            Some(text)
        }
        None => Some(time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)),
    }
}

/// Reads the backslash escapes a shell cannot easily pass: `\n`, `\t`,
/// `\r`, `\e` (escape, for colours) and `\\`. Anything else after a
/// backslash is kept as written.
pub fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('e') => out.push('\u{1b}'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body() -> Map<String, Value> {
        json!({"topic": "org.fedoraproject.prod.git.receive", "username": "alice", "timestamp": 1795359931.25,
               "msg": {"commit": {"repo": "kernel", "branch": "main", "stats": {"files": 3}},
                       "builds": [{"nvr": "kernel-6.1"}, {"nvr": "kernel-6.2"}],
                       "tags": ["a", "b", 3], "none": null, "empty": "",
                       "text": "two\nlines \u{1b}[31mred\t\u{7}"}})
        .as_object()
        .cloned()
        .unwrap()
    }

    fn render(text: &str) -> String {
        Template::parse(text, Scope::Output)
            .unwrap()
            .to_string_for(&body(), Extras::default())
    }

    #[test]
    fn fields_fallbacks_and_braces() {
        assert_eq!(
            render("{username} pushed to {msg.commit.repo} ({msg.commit.branch})"),
            "alice pushed to kernel (main)"
        );
        assert_eq!(render("{msg.builds.1.nvr}"), "kernel-6.2");
        assert_eq!(render("{msg.commit.stats}"), "{\"files\":3}");
        assert_eq!(render("{msg.tags}"), "a, b, 3");
        assert_eq!(render("[{msg.missing}]"), "[]");
        assert_eq!(render("{msg.missing|none}/{msg.none|null}"), "none/null");
        assert_eq!(render("{username|nobody}"), "alice");
        assert_eq!(render("[{msg.empty|fallback}]"), "[]");
        assert_eq!(render("{msg.text}"), "two\\nlines \\u001b[31mred\\t\\u0007");
        assert_eq!(render("{{literal}} {{{username}}}"), "{literal} {alice}");
        assert_eq!(render(""), "");
    }

    #[test]
    fn time_and_json() {
        use chrono::TimeZone;
        let local = chrono::Local
            .timestamp_opt(1795359931, 250_000_000)
            .unwrap();
        assert_eq!(
            render("{time}"),
            local.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
        );
        assert!(render("{time}").contains(".25"));
        assert_eq!(
            render("{time:%Y-%m-%d %H:%M}"),
            local.format("%Y-%m-%d %H:%M").to_string()
        );
        assert!(render("{json}").starts_with("{\"msg\":{\"builds\":"));
        // Without validation the verdict and signer are missing.
        assert_eq!(
            render("{verdict|unchecked} {signer|nobody}"),
            "unchecked nobody"
        );
    }

    #[test]
    fn mistakes_are_refused_with_the_template() {
        let err = |text: &str, scope| Template::parse(text, scope).unwrap_err().to_string();
        assert!(err("{msg.log", Scope::Output).contains("without a closing"));
        assert!(err("a } b", Scope::Output).contains("without an opening"));
        assert!(err("{}", Scope::Output).contains("not a field name"));
        assert!(err("{msg..log}", Scope::Output).contains("\"msg..log\""));
        assert!(err("{a {b}}", Scope::Output).contains("without a closing"));
        assert!(err("{title}", Scope::Rule).contains("only available in --format"));
        assert!(err("{msg.log:%Y}", Scope::Output).contains("only {time} takes a format"));
        assert!(err("{time:%Q}", Scope::Output).contains("not a valid time format"));
        // Parse-only items pass chrono's reader but fail when writing.
        assert!(err("{time:%#z}", Scope::Output).contains("not a valid time format"));
        assert!(Template::parse("{time:%H:%M|never}", Scope::Rule).is_ok());
    }

    #[test]
    fn escapes_for_the_command_line() {
        assert_eq!(unescape(r"a\tb\nc\\d\q\e["), "a\tb\nc\\d\\q\u{1b}[");
        assert_eq!(unescape("end\\"), "end\\");
    }
}
