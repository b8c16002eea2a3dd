//! Canonical JSON against Python's bytes: fedmsg's fixtures, 25 real signed
//! Fedora messages, and thousands of generated documents run through
//! `python3 -c 'json.dumps(...)'`.

use crate::util::{fixtures, Rng};
use fedmsg::canonical::{parse, to_canonical};
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};

fn read(path: &str) -> Vec<u8> {
    std::fs::read(fixtures().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn without_credentials(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove("signature");
        map.remove("certificate");
    }
    value
}

#[test]
fn signed_fixture_canonical_form_is_byte_exact() {
    let message = parse(&read("generated/signed_by_shell-app01.json")).unwrap();
    let canonical = to_canonical(&without_credentials(message.clone()));
    assert_eq!(
        canonical.as_bytes(),
        read("generated/signed_by_shell-app01.canonical.txt")
    );
    // The whole message, credentials included, is what fedmsg puts on the wire.
    assert_eq!(
        to_canonical(&message).as_bytes(),
        read("generated/signed_by_shell-app01.wire-body.txt")
    );
}

#[test]
fn captured_wire_body_round_trips() {
    let body = read("generated/wire-direct-signed.frame1.bin");
    assert_eq!(
        to_canonical(&parse(&body).unwrap()).as_bytes(),
        body.as_slice()
    );
}

/// fedmsg's fix-up of datagrepper messages (spec 5.5).
fn fix_datagrepper(mut value: Value) -> Value {
    if let Value::Object(map) = &mut value {
        map.remove("source_name");
        map.remove("source_version");
        if map
            .get("headers")
            .is_some_and(|h| h.as_object().is_some_and(|o| o.is_empty()) || h.is_null())
        {
            map.remove("headers");
        }
        if let Some(ts) = map.get("timestamp").and_then(Value::as_f64) {
            map.insert("timestamp".into(), Value::from(ts as i64));
        }
    }
    value
}

#[test]
fn real_fedora_messages_canonicalise_to_their_signed_bytes() {
    let page = parse(&read("real-fedora/sample_datanommer_response.json")).unwrap();
    let messages = page["raw_messages"].as_array().unwrap();
    let expected = String::from_utf8(read("real-fedora/canonical_signed_content.jsonl")).unwrap();
    let mut checked = 0;
    for line in expected.lines() {
        let entry: Value = serde_json::from_str(line).unwrap();
        let index = entry["index"].as_u64().unwrap() as usize;
        let ours = to_canonical(&without_credentials(fix_datagrepper(
            messages[index].clone(),
        )));
        assert_eq!(
            ours,
            entry["canonical"].as_str().unwrap(),
            "message {index}"
        );
        checked += 1;
    }
    assert_eq!(checked, 25);
}

#[test]
fn python_relay_spacing_is_undone() {
    let text = String::from_utf8(read("generated/wire-relay-logger.jsonl")).unwrap();
    let mut spaced = 0;
    for line in text.lines() {
        let frames: Vec<String> = serde_json::from_str(line).unwrap();
        spaced += usize::from(frames[1].contains(": "));
        let canonical = to_canonical(&parse(frames[1].as_bytes()).unwrap());
        assert!(
            !canonical.contains(": ") && !canonical.contains(", "),
            "{canonical}"
        );
        assert_eq!(
            to_canonical(&parse(canonical.as_bytes()).unwrap()),
            canonical
        );
    }
    assert!(spaced >= 2, "the fixture has relay-spaced bodies");
}

fn gen_number(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 => [
            "0", "-0", "1.0", "-0.0", "1E5", "1e400", "-1e400", "1.50", "0.1", "5e-324", "1e16",
            "1e15", "1e-5", "0.0001",
        ][rng.below(14) as usize]
            .to_owned(),
        1 => {
            // A big integer.
            let digits: String = (0..1 + rng.below(40))
                .map(|_| char::from(b'0' + rng.below(10) as u8))
                .collect();
            let digits = digits.trim_start_matches('0');
            if digits.is_empty() {
                "7".into()
            } else {
                format!("{}{digits}", if rng.below(2) == 0 { "-" } else { "" })
            }
        }
        2 | 3 => {
            // Any finite double, written shortest or in full.
            let f = f64::from_bits(rng.next());
            if !f.is_finite() {
                return "2.5".into();
            }
            if rng.below(2) == 0 {
                format!("{f:e}")
            } else {
                format!("{f:?}")
            }
        }
        4 => format!(
            "{}.{}e{}{}",
            rng.below(1000),
            rng.below(100000),
            ["", "+", "-"][rng.below(3) as usize],
            rng.below(30)
        ),
        5 => format!("{}", rng.next() as i64),
        _ => format!(
            "{}.{:03}",
            rng.below(100000) as i64 - 50000,
            rng.below(1000)
        ),
    }
}

fn gen_char(rng: &mut Rng) -> String {
    let c = match rng.below(8) {
        0 => char::from_u32(rng.below(0x20) as u32).unwrap(),
        1 => ['"', '\\', '/', '\u{7f}', 'é', '€', '😀', '\u{2028}'][rng.below(8) as usize],
        2 => char::from_u32(0x80 + rng.below(0x780) as u32).unwrap(),
        3 => loop {
            if let Some(c) = char::from_u32(rng.below(0x110000) as u32) {
                break c;
            }
        },
        _ => char::from(b' ' + rng.below(95) as u8),
    };
    // Written raw or as a JSON escape, both must give the same string.
    match c {
        '"' => "\\\"".into(),
        '\\' => "\\\\".into(),
        c if (c as u32) < 0x20 || rng.below(4) == 0 => {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| {
                    if rng.below(2) == 0 {
                        format!("\\u{u:04x}")
                    } else {
                        format!("\\u{u:04X}")
                    }
                })
                .collect()
        }
        c => c.to_string(),
    }
}

fn gen_string(rng: &mut Rng) -> String {
    let body: String = (0..rng.below(12)).map(|_| gen_char(rng)).collect();
    format!("\"{body}\"")
}

fn gen_value(rng: &mut Rng, depth: u32) -> String {
    let ws = |rng: &mut Rng| [" ", "", "\n", "  "][rng.below(4) as usize].to_owned();
    match if depth > 3 {
        rng.below(5)
    } else {
        rng.below(8)
    } {
        0 => ["true", "false", "null"][rng.below(3) as usize].to_owned(),
        1 | 2 => gen_number(rng),
        3 | 4 => gen_string(rng),
        5 => {
            let items: Vec<String> = (0..rng.below(5))
                .map(|_| gen_value(rng, depth + 1))
                .collect();
            format!("[{}]", items.join(&format!(",{}", ws(rng))))
        }
        _ => {
            // Objects, sometimes with duplicate keys (the last one wins).
            let mut items = Vec::new();
            for _ in 0..rng.below(6) {
                let key = if rng.below(6) == 0 {
                    "\"dup\"".to_owned()
                } else {
                    gen_string(rng)
                };
                items.push(format!(
                    "{key}{}:{}{}",
                    ws(rng),
                    ws(rng),
                    gen_value(rng, depth + 1)
                ));
            }
            format!("{{{}}}", items.join(","))
        }
    }
}

#[test]
fn generated_documents_match_python_json_dumps() {
    const COUNT: usize = 5000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let documents: Vec<String> = (0..COUNT).map(|_| gen_value(&mut rng, 0)).collect();
    let script = "import json,sys\nfor line in sys.stdin:\n    doc = json.loads(json.loads(line))\n    print(json.dumps(json.dumps(doc, sort_keys=True, separators=(',', ':'), ensure_ascii=True)))\n";
    let mut python = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 is needed for this test");
    let mut input = String::new();
    for doc in &documents {
        // Each document travels as a JSON string so newlines inside survive.
        input.push_str(&serde_json::to_string(doc).unwrap());
        input.push('\n');
    }
    let mut stdin = python.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let output = python.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "python failed");
    let expected: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(expected.len(), COUNT);
    let mut compared = 0;
    for (doc, python_bytes) in documents.iter().zip(&expected) {
        let ours = parse(doc.as_bytes()).unwrap_or_else(|e| panic!("we refused {doc:?}: {e}"));
        assert_eq!(&to_canonical(&ours), python_bytes, "document {doc:?}");
        compared += 1;
    }
    assert_eq!(compared, COUNT);
}
