//! Sign and verify throughput on one core, for each scheme, next to the
//! cost of canonical serialisation alone (the baseline every signature
//! pays). `cargo bench --bench crypto` prints messages per second; under
//! `cargo test` it runs a few iterations only, so it cannot rot.

use fedmsg::crypto::{
    certs::Authority, certs::KeyKind, CrlExpiredPolicy, RoutingPolicy, Signer, Validator,
    ValidatorConfig,
};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::Instant;

fn body() -> Map<String, Value> {
    // A message of about 380 bytes, like the bus benchmarks use.
    let topic: fedmsg::Topic = "org.fedoraproject.prod.bodhi.update.comment"
        .parse()
        .unwrap();
    let msg = json!({"comment": {"text": "Works for me; karma +1 for the update", "karma": 1, "user": "alice"}, "agent": "alice", "update": {"alias": "FEDORA-2026-1a2b3c4d5e", "title": "kernel-6.20.1-300.fc45"}});
    fedmsg::publish::build_message(&topic, msg, 1, "bodhi")
        .body()
        .clone()
}

fn rate(label: &str, count: usize, mut work: impl FnMut(usize)) -> f64 {
    let started = Instant::now();
    for i in 0..count {
        work(i);
    }
    let per_second = count as f64 / started.elapsed().as_secs_f64();
    println!("{label:<48} {per_second:>12.0} msg/s  ({count} messages)");
    per_second
}

fn validator(ca: &Path, crl: Option<&Path>) -> Validator {
    Validator::new(ValidatorConfig {
        ca_cert_location: ca.to_owned(),
        crl_location: crl.map(Path::to_owned),
        crl_expired: CrlExpiredPolicy::Reject,
        routing_policy: RoutingPolicy::default(),
        routing_nitpicky: false,
        backends: vec!["x509".into(), "ed25519".into()],
    })
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = |count: usize| if full { count } else { 20 };
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/test-certs");
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Authority::at(dir.path());
    ca.create("bench CA", KeyKind::Ed25519, 30).expect("CA");
    ca.issue("ed-bench", KeyKind::Ed25519, 30)
        .expect("ed25519 leaf");
    ca.issue("rsa-bench", KeyKind::Rsa(2048), 30)
        .expect("RSA leaf");
    let ours = validator(&ca.ca_path(), Some(&ca.crl_path()));
    let fedmsgs = validator(&fixtures.join("ca.crt"), Some(&fixtures.join("crl.pem")));

    let base = body();
    println!(
        "one core; body of {} bytes",
        fedmsg::canonical::to_canonical(&Value::Object(base.clone())).len()
    );
    let baseline = rate("canonical JSON only (baseline)", n(200_000), |_| {
        std::hint::black_box(fedmsg::crypto::signed_bytes(&base));
    });

    let cases = [
        (
            "ed25519",
            Signer::from_files(
                &dir.path().join("ed-bench.crt"),
                &dir.path().join("ed-bench.key"),
            )
            .expect("signer"),
            &ours,
        ),
        (
            "x509 RSA-2048",
            Signer::from_files(
                &dir.path().join("rsa-bench.crt"),
                &dir.path().join("rsa-bench.key"),
            )
            .expect("signer"),
            &ours,
        ),
        (
            "x509 RSA-1024 (fedmsg's test PKI)",
            Signer::from_files(
                &fixtures.join("shell-app01.phx2.fedoraproject.org.crt"),
                &fixtures.join("shell-app01.phx2.fedoraproject.org.key"),
            )
            .expect("signer"),
            &fedmsgs,
        ),
    ];
    for (name, signer, validator) in cases {
        let count = if name.starts_with("ed25519") {
            n(50_000)
        } else {
            n(5_000)
        };
        let sign_rate = rate(&format!("{name}: sign"), count, |i| {
            let mut body = base.clone();
            body.insert("i".into(), Value::from(i));
            signer.sign(&mut body);
            std::hint::black_box(body);
        });
        let mut signed = base.clone();
        signer.sign(&mut signed);
        assert!(
            validator.validate(&signed).is_valid(),
            "{name}: the benchmark message must be valid"
        );
        let verify_rate = rate(
            &format!("{name}: validate (chain cached, CRL, policy)"),
            n(if name.starts_with("ed25519") {
                50_000
            } else {
                20_000
            }),
            |_| {
                assert!(validator.validate(&signed).is_valid());
            },
        );
        println!(
            "{:<48} sign {:.3} x baseline, validate {:.3} x baseline",
            "",
            sign_rate / baseline,
            verify_rate / baseline
        );
        if name == "ed25519" {
            // A reader's backlog: 64 messages validated together.
            let batch: Vec<fedmsg::Message> = (0..64)
                .map(|i| {
                    let mut body = base.clone();
                    body.insert("i".into(), Value::from(i));
                    signer.sign(&mut body);
                    fedmsg::Message::from_body(body)
                })
                .collect();
            let refs: Vec<&fedmsg::Message> = batch.iter().collect();
            let batches = n(800).max(1);
            let started = Instant::now();
            for _ in 0..batches {
                assert!(validator
                    .validate_messages(&refs)
                    .iter()
                    .all(|v| v.is_valid()));
            }
            let per_second = (batches * refs.len()) as f64 / started.elapsed().as_secs_f64();
            println!(
                "{:<48} {per_second:>12.0} msg/s  ({} messages)",
                "ed25519: validate in batches of 64",
                batches * refs.len()
            );
        }
    }
}
