//! Signatures: fedmsg's validation matrix, its byte-exact signature, the 25
//! real Fedora messages, and random garbage in every field.

use crate::util::{fixtures, Rng};
use fedmsg::crypto::{
    CrlExpiredPolicy, Reason, RoutingPolicy, Scheme, Signer, Validator, ValidatorConfig, Verdict,
};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn certs(name: &str) -> PathBuf {
    fixtures().join("test-certs").join(name)
}

fn message(path: &str) -> Map<String, Value> {
    let text = std::fs::read(fixtures().join(path)).unwrap();
    match fedmsg::canonical::parse(&text).unwrap() {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn settings() -> ValidatorConfig {
    ValidatorConfig {
        ca_cert_location: certs("ca.crt"),
        crl_location: Some(certs("crl.pem")),
        crl_expired: CrlExpiredPolicy::Reject,
        routing_policy: RoutingPolicy::default(),
        routing_nitpicky: false,
        backends: vec!["x509".into()],
    }
}

/// Applies one row's `config_overrides` (paths relative to the fixtures).
fn with_overrides(
    mut settings: ValidatorConfig,
    overrides: &Map<String, Value>,
) -> ValidatorConfig {
    for (key, value) in overrides {
        let path = |v: &Value| fixtures().join(v.as_str().unwrap());
        match key.as_str() {
            "ca_cert_location" => settings.ca_cert_location = path(value),
            "crl_location" => settings.crl_location = (!value.is_null()).then(|| path(value)),
            "routing_policy" => {
                let table: BTreeMap<String, Vec<String>> =
                    serde_json::from_value(value.clone()).unwrap();
                settings.routing_policy = RoutingPolicy::new(table);
            }
            "routing_nitpicky" => settings.routing_nitpicky = value.as_bool().unwrap(),
            "crypto_validate_backends" => {
                settings.backends = serde_json::from_value(value.clone()).unwrap()
            }
            other => panic!("unhandled override {other}"),
        }
    }
    settings
}

#[test]
fn every_row_of_fedmsgs_validation_matrix() {
    let rows: Vec<Value> = serde_json::from_slice(
        &std::fs::read(fixtures().join("generated/validation_matrix.json")).unwrap(),
    )
    .unwrap();
    let expected_reasons = [
        None,
        None,
        Some("not_signed_by_ca"),
        Some("not_signed_by_ca"),
        Some("crl_expired"),
        None,
        Some("not_allowed"),
        Some("not_in_policy"),
        None,
        Some("scheme_not_allowed"),
        Some("revoked"),
        None,
        Some("ca_expired"),
        Some("bad_signature"),
        Some("bad_signature"),
        None,
        Some("unsigned"),
    ];
    assert_eq!(rows.len(), expected_reasons.len());
    for (row, expected_reason) in rows.iter().zip(expected_reasons) {
        let name = row["message"].as_str().unwrap();
        let mut body = if name.starts_with("generated/") {
            message(name)
        } else {
            // The unsigned base message.
            let mut body = message("generated/signed_by_shell-app01.json");
            for field in ["signature", "certificate", "crypto"] {
                body.remove(field);
            }
            body
        };
        let validator = Validator::new(with_overrides(
            settings(),
            row["config_overrides"].as_object().unwrap(),
        ));
        let verdict = validator.validate(&body);
        let expected = row["expected_valid"].as_bool().unwrap();
        assert_eq!(
            verdict.is_valid(),
            expected,
            "{name} {}: {verdict}",
            row["config_overrides"]
        );
        match (&verdict, expected_reason) {
            (Verdict::Valid { signer, scheme }, None) => {
                assert_eq!(*scheme, Scheme::X509);
                assert!(
                    signer.starts_with("shell-app01") || signer.starts_with("dummy-revoked"),
                    "{signer}"
                );
            }
            (Verdict::Invalid(reason), Some(label)) => {
                assert_eq!(reason.label(), label, "{name}: {reason}")
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
        // Validation never changes the message.
        body.remove("nothing");
    }
}

#[test]
fn our_x509_signature_is_byte_identical_to_fedmsgs() {
    let extracts: Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("test-data-extracts.json")).unwrap())
            .unwrap();
    let case = &extracts["signing_relay_test"];
    let signer = Signer::from_files(
        &certs("shell-packages01.phx2.fedoraproject.org.crt"),
        &certs("shell-packages01.phx2.fedoraproject.org.key"),
    )
    .unwrap();
    assert_eq!(signer.scheme(), Scheme::X509);
    assert_eq!(
        signer.common_name(),
        "shell-packages01.phx2.fedoraproject.org"
    );
    let mut body: Map<String, Value> =
        serde_json::from_value(case["input_envelope"]["body"].clone()).unwrap();
    signer.sign(&mut body);
    let expected = &case["expected_body_passed_to_hub_send_message"];
    assert_eq!(body["signature"], expected["signature"]);
    assert_eq!(body["certificate"], expected["certificate"]);
    assert_eq!(
        fedmsg::crypto::signed_bytes(&body),
        case["canonical_signed_bytes"].as_str().unwrap()
    );
    let validator = Validator::new(settings());
    assert!(validator.validate(&body).is_valid());
}

fn at(date: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(date)
        .unwrap()
        .timestamp()
}

#[test]
fn real_fedora_messages_valid_then_expired() {
    let page = fedmsg::canonical::parse(
        &std::fs::read(fixtures().join("real-fedora/sample_datanommer_response.json")).unwrap(),
    )
    .unwrap();
    let expected: Vec<Value> =
        std::fs::read_to_string(fixtures().join("real-fedora/canonical_signed_content.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let validator = Validator::new(ValidatorConfig {
        ca_cert_location: certs("fedora_ca.crt"),
        crl_location: None,
        ..settings()
    });
    let messages = page["raw_messages"].as_array().unwrap();
    assert_eq!(messages.len(), 25);
    for (index, raw) in messages.iter().enumerate() {
        let mut body = raw.as_object().unwrap().clone();
        fedmsg::crypto::fix_datagrepper(&mut body);
        let entry = expected.iter().find(|e| e["index"] == index).unwrap();
        assert_eq!(
            fedmsg::crypto::signed_bytes(&body),
            entry["canonical"].as_str().unwrap(),
            "message {index}"
        );
        match validator.validate_at(&body, at("2023-06-01T00:00:00Z")) {
            Verdict::Valid { signer, .. } => {
                assert_eq!(signer, entry["signer_cn"].as_str().unwrap())
            }
            other => panic!("message {index} in 2023: {other}"),
        }
        assert_eq!(
            validator.validate(&body),
            Verdict::Invalid(Reason::CertificateExpired),
            "message {index} today"
        );
    }
}

#[test]
fn x509_sign_and_validate_round_trip_with_policy() {
    let signer = Signer::from_files(
        &certs("shell-app01.phx2.fedoraproject.org.crt"),
        &certs("shell-app01.phx2.fedoraproject.org.key"),
    )
    .unwrap();
    let topic: fedmsg::Topic = "org.fedoraproject.prod.bodhi.update".parse().unwrap();
    let mut body =
        fedmsg::publish::build_message(&topic, serde_json::json!({"n": 1.5, "u": "é"}), 7, "me")
            .body()
            .clone();
    signer.sign(&mut body);
    let mut policy = BTreeMap::new();
    policy.insert(
        "org.fedoraproject.*.bodhi.#".to_owned(),
        vec!["shell-app01.phx2.fedoraproject.org".to_owned()],
    );
    let validator = Validator::new(ValidatorConfig {
        routing_policy: RoutingPolicy::new(policy.clone()),
        routing_nitpicky: true,
        ..settings()
    });
    assert!(validator.validate(&body).is_valid());
    policy.insert(
        "org.fedoraproject.prod.bodhi.update".to_owned(),
        vec!["someone".to_owned()],
    );
    let strict = Validator::new(ValidatorConfig {
        routing_policy: RoutingPolicy::new(policy),
        routing_nitpicky: true,
        ..settings()
    });
    assert_eq!(
        strict.validate(&body).to_string(),
        "invalid: shell-app01.phx2.fedoraproject.org not allowed to publish org.fedoraproject.prod.bodhi.update"
    );
}

#[test]
fn mismatched_key_and_missing_files_fail_at_start() {
    let error = Signer::from_files(
        &certs("shell-app01.phx2.fedoraproject.org.crt"),
        &certs("shell-app02.phx2.fedoraproject.org.key"),
    )
    .unwrap_err();
    assert!(error.to_string().contains("does not match"), "{error}");
    let error = Signer::from_files(&certs("nope.crt"), &certs("nope.key")).unwrap_err();
    assert!(error.to_string().contains("nope.crt"), "{error}");
}

#[test]
fn random_garbage_in_crypto_fields_gives_invalid_never_a_panic() {
    let base = message("generated/signed_by_shell-app01.json");
    let validator = Validator::new(settings());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let fields = ["signature", "certificate", "crypto", "topic", "msg"];
    for round in 0..3000 {
        let mut body = base.clone();
        let field = fields[(rng.next() % fields.len() as u64) as usize];
        let original = body
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let value = match rng.next() % 6 {
            0 => Value::Null,
            1 => Value::from(rng.next() as i64),
            2 => {
                // Flip a character of the original.
                let mut bytes = original.clone().into_bytes();
                if !bytes.is_empty() {
                    let i = (rng.next() as usize) % bytes.len();
                    bytes[i] = b"A/+=\n!~0"[(rng.next() % 8) as usize];
                }
                Value::String(String::from_utf8_lossy(&bytes).into_owned())
            }
            3 => {
                // Truncate it.
                let cut = (rng.next() as usize) % (original.len() + 1);
                Value::String(original.chars().take(cut).collect())
            }
            4 => Value::String(
                (0..(rng.next() % 200))
                    .map(|_| char::from_u32((rng.next() % 0x250) as u32).unwrap_or('x'))
                    .collect(),
            ),
            _ => {
                // base64 of random bytes, or of a PEM wrapper around random bytes.
                let junk: Vec<u8> = (0..(rng.next() % 300)).map(|_| rng.next() as u8).collect();
                let inner = if rng.next() % 2 == 0 {
                    junk
                } else {
                    format!(
                        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                        fedmsg::crypto::wrapped_base64(&junk)
                    )
                    .into_bytes()
                };
                Value::String(fedmsg::crypto::wrapped_base64(&inner))
            }
        };
        let changed = body.get(field) != Some(&value);
        body.insert(field.to_owned(), value);
        let verdict = validator.validate(&body);
        // Any change to signed content must invalidate the message.
        if changed && (field == "topic" || field == "msg") {
            assert!(
                !verdict.is_valid(),
                "round {round}: changed {field} still valid"
            );
        }
        assert!(!verdict.to_string().is_empty());
    }
}

fn verify(args: &[&str], stdin: &[u8]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(crate::util::bin("fedmsg-verify"));
    crate::util::isolate(&mut command, dir.path());
    command
        .current_dir(fixtures())
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn fedmsg_verify_audits_the_real_fedora_archive() {
    let page = "real-fedora/sample_datanommer_response.json";
    let (code, stdout, stderr) = verify(
        &[
            "--ca",
            "test-certs/fedora_ca.crt",
            "--no-crl",
            "--at",
            "2023-06-01",
            page,
        ],
        b"",
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(": valid (x509 signed by "))
            .count(),
        25,
        "{stdout}"
    );
    assert!(stderr.contains("25 valid, 0 invalid"));
    let (code, stdout, _) = verify(&["--ca", "test-certs/fedora_ca.crt", "--no-crl", page], b"");
    assert_eq!(code, Some(1));
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.ends_with(": invalid: expired certificate"))
            .count(),
        25,
        "{stdout}"
    );
}

#[test]
fn fedmsg_verify_reads_json_lines_and_names_each_reason() {
    let mut lines = String::new();
    for name in [
        "signed_by_shell-app01",
        "tampered_body",
        "swapped_certificate",
        "signed_by_dummy-revoked",
        "unwrapped_base64",
    ] {
        let text =
            std::fs::read_to_string(fixtures().join(format!("generated/{name}.json"))).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap();
        lines.push_str(&value.to_string());
        lines.push('\n');
    }
    let (code, stdout, stderr) = verify(
        &["--ca", "test-certs/ca.crt", "--crl", "test-certs/crl.pem"],
        lines.as_bytes(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    let verdicts: Vec<&str> = stdout
        .lines()
        .map(|l| l.split_once("greet: ").map(|(_, v)| v).unwrap_or(l))
        .collect();
    assert_eq!(
        verdicts,
        [
            "valid (x509 signed by shell-app01.phx2.fedoraproject.org)",
            "invalid: bad signature",
            "invalid: bad signature",
            "invalid: revoked certificate",
            "valid (x509 signed by shell-app01.phx2.fedoraproject.org)",
        ]
    );
    let (code, _, stderr) = verify(&["--ca", "test-certs/ca.crt"], b"{\"a\": 1}\n{broken\n");
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("stdin") && stderr.contains("line 2"),
        "{stderr}"
    );
    let (code, _, stderr) = verify(&["--ca", "test-certs/nope.crt"], b"");
    assert_eq!(code, Some(2));
    assert!(stderr.contains("nope.crt"), "{stderr}");
}

#[test]
fn random_bytes_as_frames_and_bodies_never_panic() {
    let validator = Validator::new(settings());
    let valid = std::fs::read(fixtures().join("generated/wire-direct-signed.frame1.bin")).unwrap();
    let topic = std::fs::read(fixtures().join("generated/wire-direct-signed.frame0.bin")).unwrap();
    let mut rng = Rng(0xfeed_beef_cafe_f00d);
    let mut decoded = 0;
    for _ in 0..20_000 {
        // Start from a real signed body and damage it at random.
        let mut body = valid.clone();
        for _ in 0..(1 + rng.next() % 4) {
            let i = (rng.next() as usize) % body.len();
            match rng.next() % 3 {
                0 => body[i] = rng.next() as u8,
                1 => {
                    body.truncate(i);
                }
                _ => body.insert(i, b"\"{}[],:\\0e-9"[(rng.next() % 12) as usize]),
            }
            if body.is_empty() {
                break;
            }
        }
        let frames = [bytes::Bytes::from(topic.clone()), bytes::Bytes::from(body)];
        if let Ok(message) = fedmsg::Message::decode(&frames, 1 << 20) {
            decoded += 1;
            let _ = validator.validate_message(&message).to_string();
        }
    }
    assert!(decoded > 0, "some damaged bodies are still JSON objects");
}
