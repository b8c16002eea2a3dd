//! Python-compatible JSON: parsing with Python's semantics and re-emitting
//! exactly the bytes CPython writes.
//!
//! fedmsg puts `json.dumps(obj, sort_keys=True, separators=(',', ':'),
//! ensure_ascii=True)` on the wire and signs those very bytes, so a verifier
//! must reproduce them from a parsed body. This module is that round trip:
//!
//! * [`parse`] reads a body with Python's rules: `NaN`, `Infinity` and
//!   `-Infinity` are accepted, integers keep arbitrary precision and the
//!   int-versus-float distinction of the input (`1.0` stays a float), and
//!   duplicate keys keep the last value.
//! * [`to_canonical`] / [`write_canonical`] write the canonical form: keys
//!   sorted by code point, no whitespace, every non-ASCII character escaped as
//!   lowercase `\uXXXX` (surrogate pairs above the BMP), floats in Python's
//!   `repr` form (`1e-07`, `1e+16`, `1.0`), integers exactly as parsed.
//! * [`write_serialize`] writes the same canonical form straight from any
//!   `Serialize` value, without building a `serde_json::Value` (the
//!   publisher's hot path).
//! * [`to_pretty`] is Python's `json.dumps(obj, indent=2)` (display only),
//!   optionally coloured for a terminal.
//!
//! Values are [`serde_json::Value`] built with the `arbitrary_precision`
//! feature, so a number keeps its source text and nothing is lost in parsing.
//! Known limit: a string holding a lone UTF-16 surrogate (legal in Python,
//! impossible in a Rust `String`) is rejected by [`parse`].

use serde_json::{Map, Number, Value};
use std::fmt::Write as _;

mod serializer;

pub use serializer::{write_serialize, Unsupported};

/// Why a body is not JSON as Python would read it.
#[derive(Debug, thiserror::Error)]
#[error("invalid JSON: {0}")]
pub struct ParseError(String);

/// Parses JSON text with Python's `json.loads` semantics.
///
/// The fast path is `serde_json`; only input it rejects is re-read by a
/// small parser that also accepts `NaN`, `Infinity` and `-Infinity`.
pub fn parse(bytes: &[u8]) -> Result<Value, ParseError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(value) => Ok(value),
        Err(first) => {
            // Only bother with the slow parser when a non-standard constant
            // could be the reason for the failure.
            let has_constant = bytes.windows(3).any(|w| w == b"NaN" || w == b"Inf");
            if has_constant {
                if let Ok(value) = Lenient::new(bytes).parse_document() {
                    return Ok(value);
                }
            }
            Err(ParseError(first.to_string()))
        }
    }
}

/// Returns the canonical (signed, wire) form of `value`.
pub fn to_canonical(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(&mut out, value);
    out
}

/// Appends the canonical form of `value` to `out`.
pub fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => write_object(out, map),
    }
}

fn write_object(out: &mut String, map: &Map<String, Value>) {
    write_canonical_object_without(out, map, &[]);
}

/// Appends the canonical form of `map` leaving out the keys in `skip`
/// (the signed form of an envelope skips `signature` and `certificate`).
pub fn write_canonical_object_without(out: &mut String, map: &Map<String, Value>, skip: &[&str]) {
    out.push('{');
    // `Map` is a BTreeMap ordered by UTF-8 bytes, which is code-point order:
    // the same order Python's `sort_keys` gives for well-formed strings.
    let mut first = true;
    for (key, value) in map.iter() {
        if skip.contains(&key.as_str()) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_string(out, key);
        out.push(':');
        write_canonical(out, value);
    }
    out.push('}');
}

/// Writes a JSON string literal with Python's `ensure_ascii` escaping.
pub fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut index = 0;
    while index < bytes.len() {
        // Eight bytes at a time while none needs escaping.
        while let Some(chunk) = bytes.get(index..index + 8) {
            let word = u64::from_le_bytes([
                chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7],
            ]);
            if needs_escape(word) {
                break;
            }
            index += 8;
        }
        let Some(&byte) = bytes.get(index) else {
            break;
        };
        // Printable ASCII other than the quote and the backslash is copied
        // as a run.
        if (0x20..=0x7e).contains(&byte) && byte != b'"' && byte != b'\\' {
            index += 1;
            continue;
        }
        out.push_str(&s[start..index]);
        if byte < 0x80 {
            match byte {
                b'"' => out.push_str("\\\""),
                b'\\' => out.push_str("\\\\"),
                b'\n' => out.push_str("\\n"),
                b'\r' => out.push_str("\\r"),
                b'\t' => out.push_str("\\t"),
                0x08 => out.push_str("\\b"),
                0x0c => out.push_str("\\f"),
                other => push_unit(out, u16::from(other)),
            }
            index += 1;
        } else if let Some(ch) = s[index..].chars().next() {
            // `index` is on a character boundary: only whole characters
            // are stepped over.
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                push_unit(out, *unit);
            }
            index += ch.len_utf8();
        } else {
            break;
        }
        start = index;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// `\\uXXXX` with lowercase hex, as Python writes it.
/// Appends an integer's decimal digits.
pub(crate) fn push_integer(out: &mut String, negative: bool, magnitude: u64) {
    if negative {
        out.push('-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = magnitude;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for digit in &digits[at..] {
        out.push(char::from(*digit));
    }
}

/// Whether any of the eight bytes in `word` is a control character, the
/// quote, the backslash, DEL or non-ASCII (the classic "has zero byte" test,
/// applied to each condition).
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = has_zero(word ^ (ONES * u64::from(b'"')));
    let backslash = has_zero(word ^ (ONES * u64::from(b'\\')));
    let del = has_zero(word ^ (ONES * 0x7f));
    (below_space | quote | backslash | del | (word & HIGHS)) != 0
}

fn push_unit(out: &mut String, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push_str("\\u");
    for shift in [12, 8, 4, 0] {
        out.push(char::from(HEX[usize::from((unit >> shift) & 0xf)]));
    }
}

/// Writes a number with Python's rules: integers verbatim (arbitrary size),
/// floats in `repr` form.
fn write_number(out: &mut String, n: &Number) {
    let text = n.as_str();
    if is_integer_literal(text) {
        // JSON forbids leading zeros, so the only non-canonical integer
        // spelling is negative zero, which Python reads as int 0.
        if text == "-0" {
            out.push('0');
        } else {
            out.push_str(text);
        }
        return;
    }
    let value: f64 = match text {
        "NaN" => f64::NAN,
        _ => text.parse().unwrap_or(f64::NAN),
    };
    write_float(out, value);
}

fn is_integer_literal(text: &str) -> bool {
    !text.is_empty() && !text.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) && text != "NaN"
}

/// Formats an `f64` exactly as Python's `float.__repr__` (and therefore
/// `json.dumps`) does.
pub fn python_float_repr(value: f64) -> String {
    let mut out = String::with_capacity(24);
    write_float(&mut out, value);
    out
}

fn write_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
        return;
    }
    if value.is_infinite() {
        out.push_str(if value > 0.0 { "Infinity" } else { "-Infinity" });
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits, like Python's
    // repr; only the layout differs.
    let sci = format!("{:e}", value);
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if negative {
        out.push('-');
    }
    // Python: decpt = exponent + 1; scientific if decpt <= -4 or decpt > 16.
    let decpt = exponent + 1;
    if decpt <= -4 || decpt > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(
            out,
            "e{}{:02}",
            if exponent < 0 { '-' } else { '+' },
            exponent.unsigned_abs()
        );
    } else if decpt <= 0 {
        out.push_str("0.");
        for _ in 0..(-decpt) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let decpt = decpt as usize;
        if digits.len() <= decpt {
            out.push_str(&digits);
            for _ in digits.len()..decpt {
                out.push('0');
            }
            out.push_str(".0");
        } else {
            out.push_str(&digits[..decpt]);
            out.push('.');
            out.push_str(&digits[decpt..]);
        }
    }
}

/// Colours used by [`to_pretty`] when output goes to a terminal; the same
/// ANSI sequences as fedmsg's pygments `TerminalFormatter`.
#[derive(Debug, Clone, Copy)]
pub struct Palette {
    /// Strings and keys.
    pub string: &'static str,
    /// Numbers.
    pub number: &'static str,
    /// `true`, `false`, `null`.
    pub keyword: &'static str,
    /// Reset after each token.
    pub reset: &'static str,
}

impl Palette {
    /// fedmsg's `--really-pretty` colours.
    pub const TERMINAL: Palette = Palette {
        string: "\x1b[33m",
        number: "\x1b[34m",
        keyword: "\x1b[34m",
        reset: "\x1b[39;49;00m",
    };
}

/// Python's `json.dumps(value, indent=2)`: two-space indent, `", "`-free
/// separators (`","` at line ends, `": "` after keys), ASCII-only escapes.
/// With a palette, tokens are wrapped in ANSI colours.
pub fn to_pretty(value: &Value, palette: Option<&Palette>) -> String {
    let mut out = String::with_capacity(512);
    write_pretty(&mut out, value, 0, palette);
    out
}

fn coloured(
    out: &mut String,
    colour: Option<&'static str>,
    reset: &str,
    token: impl FnOnce(&mut String),
) {
    if let Some(colour) = colour {
        out.push_str(colour);
        token(out);
        out.push_str(reset);
    } else {
        token(out);
    }
}

fn write_pretty(out: &mut String, value: &Value, depth: usize, palette: Option<&Palette>) {
    let reset = palette.map(|p| p.reset).unwrap_or("");
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                write_pretty(out, item, depth + 1, palette);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(map) if !map.is_empty() => {
            out.push('{');
            for (index, (key, item)) in map.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                newline(out, depth + 1);
                coloured(out, palette.map(|p| p.string), reset, |o| {
                    write_string(o, key)
                });
                out.push_str(": ");
                write_pretty(out, item, depth + 1, palette);
            }
            newline(out, depth);
            out.push('}');
        }
        Value::String(s) => coloured(out, palette.map(|p| p.string), reset, |o| {
            write_string(o, s)
        }),
        Value::Number(_) => coloured(out, palette.map(|p| p.number), reset, |o| {
            write_canonical(o, value)
        }),
        Value::Bool(_) | Value::Null => coloured(out, palette.map(|p| p.keyword), reset, |o| {
            write_canonical(o, value)
        }),
        // Empty containers print as `[]` / `{}` on one line, as Python does.
        _ => write_canonical(out, value),
    }
}

fn newline(out: &mut String, depth: usize) {
    out.push('\n');
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Builds a number value from a float, keeping Python's view of it
/// (`NaN` and the infinities included).
pub fn float_value(value: f64) -> Value {
    match Number::from_f64(value) {
        Some(n) => Value::Number(n),
        None if value.is_nan() => Value::Number(nan_number()),
        None => {
            let text = if value > 0.0 { "1e999" } else { "-1e999" };
            Value::Number(text.parse().unwrap_or_else(|_| nan_number()))
        }
    }
}

/// A NaN that survives the round trip. `serde_json` has no public way to
/// hold one, so the `arbitrary_precision` text "NaN" is stored directly; a
/// unit test below guards this against a change in `serde_json`.
fn nan_number() -> Number {
    Number::from_string_unchecked("NaN".to_owned())
}

/// A minimal recursive-descent parser for the inputs `serde_json` refuses:
/// it accepts Python's `NaN`, `Infinity` and `-Infinity` constants.
struct Lenient<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 128;

impl<'a> Lenient<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Lenient {
            bytes,
            pos: 0,
            depth: 0,
        }
    }

    fn parse_document(&mut self) -> Result<Value, ()> {
        let value = self.value()?;
        self.skip_ws();
        if self.pos == self.bytes.len() {
            Ok(value)
        } else {
            Err(())
        }
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, literal: &[u8]) -> bool {
        if self.bytes[self.pos..].starts_with(literal) {
            self.pos += literal.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self) -> Result<Value, ()> {
        self.skip_ws();
        match self.bytes.get(self.pos).copied() {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string_token().map(Value::String),
            Some(b't') if self.eat(b"true") => Ok(Value::Bool(true)),
            Some(b'f') if self.eat(b"false") => Ok(Value::Bool(false)),
            Some(b'n') if self.eat(b"null") => Ok(Value::Null),
            Some(b'N') if self.eat(b"NaN") => Ok(Value::Number(nan_number())),
            Some(b'I') if self.eat(b"Infinity") => Ok(float_value(f64::INFINITY)),
            Some(b'-') if self.eat(b"-Infinity") => Ok(float_value(f64::NEG_INFINITY)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(()),
        }
    }

    fn number(&mut self) -> Result<Value, ()> {
        let start = self.pos;
        while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.bytes[start..self.pos]).map_err(|_| ())?;
        text.parse::<Number>().map(Value::Number).map_err(|_| ())
    }

    fn string_token(&mut self) -> Result<String, ()> {
        // Delegate escapes and validation to serde_json on the exact token.
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.bytes.get(self.pos) {
                None => return Err(()),
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(_) => self.pos += 1,
            }
        }
        serde_json::from_slice(self.bytes.get(start..self.pos).ok_or(())?).map_err(|_| ())
    }

    fn enter(&mut self) -> Result<(), ()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(())
        } else {
            Ok(())
        }
    }

    fn array(&mut self) -> Result<Value, ()> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.skip_ws();
        if self.eat(b"]") {
            self.depth -= 1;
            return Ok(Value::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"]") {
                break;
            }
            return Err(());
        }
        self.depth -= 1;
        Ok(Value::Array(items))
    }

    fn object(&mut self) -> Result<Value, ()> {
        self.enter()?;
        self.pos += 1;
        let mut map = Map::new();
        self.skip_ws();
        if self.eat(b"}") {
            self.depth -= 1;
            return Ok(Value::Object(map));
        }
        loop {
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b'"') {
                return Err(());
            }
            let key = self.string_token()?;
            self.skip_ws();
            if !self.eat(b":") {
                return Err(());
            }
            let value = self.value()?;
            map.insert(key, value);
            self.skip_ws();
            if self.eat(b",") {
                continue;
            }
            if self.eat(b"}") {
                break;
            }
            return Err(());
        }
        self.depth -= 1;
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(text: &str) -> String {
        to_canonical(&parse(text.as_bytes()).expect("valid test JSON"))
    }

    /// Python's `ensure_ascii` escaping, one character at a time.
    fn escaped_slowly(s: &str) -> String {
        let mut out = String::from("\"");
        for ch in s.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                ' '..='~' => out.push(ch),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in ch.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn strings_escape_every_special_character_at_every_offset() {
        let specials = [
            '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', 'é', '€', '😀', ' ', '~',
        ];
        for special in specials {
            for at in 0..20 {
                let mut text = "a".repeat(at);
                text.push(special);
                text.push_str(&"b".repeat(19 - at));
                let mut out = String::new();
                write_string(&mut out, &text);
                assert_eq!(out, escaped_slowly(&text), "{text:?}");
            }
        }
    }

    /// `write_serialize` must write what `to_value` then `write_canonical`
    /// writes.
    fn same_as_through_value<T: serde::Serialize>(value: &T) {
        let expected = to_canonical(&serde_json::to_value(value).unwrap());
        let mut out = String::from("prefix");
        write_serialize(&mut out, value).unwrap();
        assert_eq!(&out["prefix".len()..], expected);
    }

    #[test]
    fn serializing_directly_equals_going_through_a_value() {
        use std::collections::{BTreeMap, HashMap};
        #[derive(serde::Serialize)]
        enum Kind {
            Unit,
            Newtype(u8),
            Tuple(i32, String),
            Struct { zebra: bool, apple: Option<f64> },
        }
        #[derive(serde::Serialize)]
        struct Inner {
            z: Vec<Kind>,
            a: (char, f32, f64),
            m: BTreeMap<i64, &'static str>,
        }
        #[derive(serde::Serialize)]
        struct Outer {
            zulu: Inner,
            #[serde(skip_serializing_if = "Option::is_none")]
            missing: Option<u8>,
            alpha: HashMap<String, u128>,
            mid: Vec<u8>,
            #[serde(flatten)]
            extra: BTreeMap<String, i128>,
            unit: (),
        }
        let outer = Outer {
            zulu: Inner {
                z: vec![
                    Kind::Unit,
                    Kind::Newtype(7),
                    Kind::Tuple(-3, "é\"\\".into()),
                    Kind::Struct {
                        zebra: false,
                        apple: Some(1e16),
                    },
                    Kind::Struct {
                        zebra: true,
                        apple: None,
                    },
                ],
                a: ('😀', 0.1, f64::NAN),
                m: [(-5, "x"), (10, "y"), (2, "z")].into_iter().collect(),
            },
            missing: None,
            alpha: (0..50u128)
                .map(|n| (format!("k{n}€"), n * u128::from(u64::MAX)))
                .collect(),
            mid: vec![0, 255],
            extra: [("aa".to_owned(), i128::MIN), ("zz".to_owned(), -0)]
                .into_iter()
                .collect(),
            unit: (),
        };
        same_as_through_value(&outer);
        for text in [
            r#"{"b":[1,2.5,"é",{"y":1e-7,"x":-0.0}],"a":null,"big":123456789012345678901234567890}"#,
            r#"[{}, [], "", 0, 0.0, -0, 1E400, 5e-324, true]"#,
            r#"{"ß":1,"a":2,"Z":3,"😀":4,"\u0000":5}"#,
        ] {
            same_as_through_value(&parse(text.as_bytes()).unwrap());
        }
        // Keys given twice (a flattened map repeating a field): the last
        // one stays, as in a `Value` map.
        #[derive(serde::Serialize)]
        struct Twice {
            b: u8,
            #[serde(flatten)]
            more: BTreeMap<&'static str, u8>,
        }
        same_as_through_value(&Twice {
            b: 1,
            more: [("b", 2), ("a", 3)].into_iter().collect(),
        });
    }

    #[test]
    fn keys_to_value_handles_differently_are_refused_and_leave_nothing() {
        let map: std::collections::BTreeMap<bool, u8> = [(true, 1)].into_iter().collect();
        let mut out = String::from("kept");
        assert!(write_serialize(&mut out, &vec![map]).is_err());
        assert_eq!(out, "kept");
    }

    #[test]
    fn floats_follow_python_repr() {
        let cases = [
            (1.0, "1.0"),
            (1.5e-7, "1.5e-07"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (5e-324, "5e-324"),
            (-0.0, "-0.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1504643044.0, "1504643044.0"),
            (1504642719.23539, "1504642719.23539"),
            (0.1, "0.1"),
            (f64::MAX, "1.7976931348623157e+308"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "repr of {value:e}");
        }
    }

    #[test]
    fn numbers_keep_python_types() {
        assert_eq!(
            canon("[1.0, 1E5, -0, 1.50, 1e400, -1e400, 12345678901234567890123]"),
            "[1.0,100000.0,0,1.5,Infinity,-Infinity,12345678901234567890123]"
        );
    }

    #[test]
    fn python_constants_round_trip() {
        assert_eq!(
            canon("{\"a\": NaN, \"b\": Infinity, \"c\": [-Infinity]}"),
            "{\"a\":NaN,\"b\":Infinity,\"c\":[-Infinity]}"
        );
    }

    #[test]
    fn strings_escape_like_ensure_ascii() {
        assert_eq!(
            canon(r#""caf\u00e9 😀 \u007f \u0001 \/ \"q\" \\ \b\f\n\r\t""#),
            r#""caf\u00e9 \ud83d\ude00 \u007f \u0001 / \"q\" \\ \b\f\n\r\t""#
        );
    }

    #[test]
    fn keys_sorted_and_duplicates_last_wins() {
        assert_eq!(
            canon(r#"{"b": 1, "a": {"z": 1, "é": 2, "Z": 3}, "b": 2}"#),
            r#"{"a":{"Z":3,"z":1,"\u00e9":2},"b":2}"#
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            "",
            "{",
            "NaN NaN",
            "[1,]",
            "{\"a\" NaN}",
            "Infinit",
            "\"\\ud800\"",
        ] {
            assert!(parse(bad.as_bytes()).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn pretty_matches_python_indent_2() {
        let value =
            parse(br#"{"i": 1, "msg": {"log": "Hello"}, "e": [], "l": [1, true]}"#).unwrap();
        assert_eq!(to_pretty(&value, None),
            "{\n  \"e\": [],\n  \"i\": 1,\n  \"l\": [\n    1,\n    true\n  ],\n  \"msg\": {\n    \"log\": \"Hello\"\n  }\n}");
        let coloured = to_pretty(&value, Some(&Palette::TERMINAL));
        assert!(coloured.contains("\x1b[33m\"log\"\x1b[39;49;00m"));
    }
}
