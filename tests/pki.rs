//! Our own PKI: fedmsg-certs, the Ed25519 scheme, revocation, reloads, an
//! expired CRL, and Python fedmsg's reaction to Ed25519 messages.

use crate::util::{bin, free_port, python_venv, Bus, Proc, WAIT};
use fedmsg::crypto::{
    CrlExpiredPolicy, Reason, RoutingPolicy, Scheme, Signer, Validator, ValidatorConfig, Verdict,
};
use serde_json::{json, Map, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn certs(dir: &Path, args: &[&str]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let mut command = std::process::Command::new(bin("fedmsg-certs"));
    crate::util::isolate(&mut command, dir);
    let out = command.arg("--dir").arg(dir).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "fedmsg-certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn settings(dir: &Path) -> ValidatorConfig {
    ValidatorConfig {
        ca_cert_location: dir.join("ca.crt"),
        crl_location: Some(dir.join("crl.pem")),
        crl_expired: CrlExpiredPolicy::Reject,
        routing_policy: RoutingPolicy::default(),
        routing_nitpicky: false,
        backends: vec!["x509".into(), "ed25519".into()],
    }
}

fn signed(signer: &Signer, topic: &str) -> Map<String, Value> {
    let topic: fedmsg::Topic = topic.parse().unwrap();
    let mut body = fedmsg::publish::build_message(&topic, json!({"n": 1, "u": "ü"}), 1, "me")
        .body()
        .clone();
    signer.sign(&mut body);
    body
}

fn signer(dir: &Path, name: &str) -> Signer {
    Signer::from_files(
        &dir.join(format!("{name}.crt")),
        &dir.join(format!("{name}.key")),
    )
    .unwrap()
}

#[test]
fn ed25519_and_rsa_certificates_from_fedmsg_certs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certs(dir, &["init-ca"]);
    let out = certs(dir, &["issue", "bodhi", "app01.example.org"]);
    assert!(
        out.contains("\"bodhi.app01\" = \"bodhi-app01.example.org\""),
        "{out}"
    );
    certs(
        dir,
        &[
            "issue",
            "shell",
            "app02.example.org",
            "--key",
            "rsa",
            "--rsa-bits",
            "2048",
        ],
    );
    let validator = Validator::new(settings(dir)).reload_check(Duration::ZERO);

    let ed = signer(dir, "bodhi-app01.example.org");
    assert_eq!(ed.scheme(), Scheme::Ed25519);
    let mut body = signed(&ed, "org.fedoraproject.prod.bodhi.update");
    assert_eq!(body["crypto"], "ed25519");
    assert_eq!(
        validator.validate(&body),
        Verdict::Valid {
            signer: "bodhi-app01.example.org".into(),
            scheme: Scheme::Ed25519
        }
    );
    let rsa = signer(dir, "shell-app02.example.org");
    assert_eq!(
        validator.validate(&signed(&rsa, "org.fedoraproject.prod.logger.log")),
        Verdict::Valid {
            signer: "shell-app02.example.org".into(),
            scheme: Scheme::X509
        }
    );

    // Tampered, expired, out of policy, scheme not allowed, wrong key type.
    body.insert("msg".into(), json!({"n": 2}));
    assert_eq!(
        validator.validate(&body),
        Verdict::Invalid(Reason::BadSignature)
    );
    let body = signed(&ed, "org.fedoraproject.prod.bodhi.update");
    let next_year = chrono::Utc::now().timestamp() + 400 * 86400;
    assert_eq!(
        validator.validate_at(&body, next_year),
        Verdict::Invalid(Reason::CertificateExpired)
    );
    let policy = RoutingPolicy::new(
        [(
            "org.fedoraproject.*.bodhi.#".to_owned(),
            vec!["someone-else".to_owned()],
        )]
        .into(),
    );
    let strict = Validator::new(ValidatorConfig {
        routing_policy: policy,
        ..settings(dir)
    });
    assert_eq!(strict.validate(&body).to_string(), "invalid: bodhi-app01.example.org not allowed to publish org.fedoraproject.prod.bodhi.update");
    let x509_only = Validator::new(ValidatorConfig {
        backends: vec!["x509".into()],
        ..settings(dir)
    });
    assert_eq!(
        x509_only.validate(&body),
        Verdict::Invalid(Reason::SchemeNotAllowed("ed25519".into()))
    );
    let mut wrong = body.clone();
    wrong.insert("crypto".into(), json!("x509"));
    assert!(
        !validator.validate(&wrong).is_valid(),
        "crypto says x509 but the key is Ed25519"
    );

    // Another CA does not vouch for these certificates.
    let other = tempfile::tempdir().unwrap();
    certs(other.path(), &["init-ca"]);
    let foreign = Validator::new(settings(other.path()));
    assert_eq!(
        foreign.validate(&body),
        Verdict::Invalid(Reason::NotSignedByCa)
    );

    // Revocation is picked up by the running validator once the CRL changes.
    let out = certs(dir, &["revoke", "bodhi-app01.example.org"]);
    assert!(
        out.contains("revoked bodhi-app01.example.org (serial 2)"),
        "{out}"
    );
    assert_eq!(validator.validate(&body), Verdict::Invalid(Reason::Revoked));
    assert!(validator
        .validate(&signed(&rsa, "org.fedoraproject.prod.logger.log"))
        .is_valid());
    let list = certs(dir, &["list"]);
    assert!(
        list.contains("bodhi-app01.example.org (revoked")
            && list.contains("shell-app02.example.org (valid until"),
        "{list}"
    );
}

#[test]
fn expired_crl_follows_the_policy_and_is_reported_once_per_reload() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certs(dir, &["init-ca"]);
    certs(dir, &["issue", "svc", "host1"]);
    let body = signed(&signer(dir, "svc-host1"), "org.x.prod.svc.t");
    let strict = Validator::new(settings(dir));
    let lenient = Validator::new(ValidatorConfig {
        crl_expired: CrlExpiredPolicy::Accept,
        ..settings(dir)
    });
    // As of a time past the CRL's nextUpdate (30 days), well inside the
    // certificate's year.
    let later = chrono::Utc::now().timestamp() + 60 * 86400;
    for _ in 0..100 {
        assert_eq!(
            strict.validate_at(&body, later),
            Verdict::Invalid(Reason::CrlExpired)
        );
        assert!(lenient.validate_at(&body, later).is_valid());
    }
    let expired = |v: &Validator| {
        v.store()
            .stats
            .crl_expired
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!(expired(&strict), 1, "reported once, not per message");
    assert_eq!(expired(&lenient), 1);
}

#[test]
fn a_missing_ca_is_reported_then_picked_up_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let validator = Validator::new(settings(dir)).reload_check(Duration::ZERO);
    assert!(validator.store().status().unwrap_err().contains("ca.crt"));
    certs(dir, &["init-ca"]);
    certs(dir, &["issue", "svc", "host1"]);
    let body = signed(&signer(dir, "svc-host1"), "org.x.prod.svc.t");
    assert!(
        validator.validate(&body).is_valid(),
        "{}",
        validator.validate(&body)
    );
}

#[test]
fn python_fedmsg_rejects_our_ed25519_messages_cleanly() {
    let Some(venv) = python_venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    certs(
        &pki.clone(),
        &["init-ca", "--key", "rsa", "--rsa-bits", "2048"],
    );
    certs(&pki, &["issue", "ed", "host"]);
    certs(
        &pki,
        &["issue", "rsa", "host", "--key", "rsa", "--rsa-bits", "2048"],
    );
    let ed_port = free_port();
    let rsa_port = free_port();
    let bus = Bus::new(
        &format!("sign_messages = true\nssldir = \"{}\"", pki.display()),
        &format!("\"ed.host\" = \"tcp://127.0.0.1:{ed_port}\"\n\"rsa.host\" = \"tcp://127.0.0.1:{rsa_port}\"\n[certnames]\n\"ed.host\" = \"ed-host\"\n\"rsa.host\" = \"rsa-host\""),
    );
    let py = bus.dir.path().join("fedmsg.d");
    std::fs::create_dir_all(&py).unwrap();
    std::fs::write(
        py.join("test.py"),
        format!(
            "config = dict(topic_prefix='org.fedoraproject', environment='dev', endpoints={{'ed.host': ['tcp://127.0.0.1:{ed_port}'], 'rsa.host': ['tcp://127.0.0.1:{rsa_port}']}}, validate_signatures=True, ca_cert_location='{ca}', crl_location='{crl}')\n",
            ca = pki.join("ca.crt").display(),
            crl = pki.join("crl.pem").display()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(venv.join("bin/fedmsg-tail"));
    crate::util::isolate(&mut command, bus.dir.path());
    command.env("PYTHONUNBUFFERED", "1");
    let mut python_tail = Proc::spawn(command);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut ed_config = fedmsg::Loader::isolated()
        .file(Some(bus.config.clone()))
        .load()
        .unwrap();
    ed_config.crypto_backend = "ed25519".into();
    let rsa_config = fedmsg::Loader::isolated()
        .file(Some(bus.config.clone()))
        .load()
        .unwrap();
    let ed = runtime
        .block_on(fedmsg::Publisher::bind(&ed_config, "ed.host"))
        .unwrap();
    let rsa = runtime
        .block_on(fedmsg::Publisher::bind(&rsa_config, "rsa.host"))
        .unwrap();
    // Alternate: every ed25519 message must be refused, the x509 ones shown,
    // and the Python reader must survive the former.
    let deadline = Instant::now() + WAIT;
    let mut shown = Vec::new();
    while shown.len() < 3 {
        runtime
            .block_on(ed.publish("t", "ed", &json!({"from": "ed25519"})))
            .unwrap();
        runtime
            .block_on(rsa.publish("t", "rsa", &json!({"from": "x509"})))
            .unwrap();
        while let Some(line) = python_tail.stdout_line(Duration::from_millis(100)) {
            if line.contains("'from'") {
                shown.push(line);
            }
        }
        assert!(
            Instant::now() < deadline,
            "Python tail showed {shown:?}; stderr: {}",
            python_tail.stderr_text()
        );
    }
    assert!(
        shown.iter().all(|l| l.contains("'from': 'x509'")),
        "{shown:?}"
    );
    let stderr = python_tail.stderr_text();
    assert!(
        stderr.contains("invalid message"),
        "Python said nothing about ed25519: {stderr}"
    );
    assert!(!stderr.contains("Traceback"), "{stderr}");
    assert!(
        python_tail.child.try_wait().unwrap().is_none(),
        "the Python tail died"
    );
}

#[test]
fn batch_validation_finds_the_one_bad_message() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certs(dir, &["init-ca"]);
    certs(dir, &["issue", "svc", "host1"]);
    certs(dir, &["issue", "rsa", "host1", "--key", "rsa"]);
    let ed = signer(dir, "svc-host1");
    let rsa = signer(dir, "rsa-host1");
    let validator = Validator::new(settings(dir));
    let mut messages = Vec::new();
    for i in 0..40 {
        let mut body = signed(
            if i % 10 == 3 { &rsa } else { &ed },
            &format!("org.x.prod.svc.t{i}"),
        );
        if i == 17 {
            body.insert("msg".into(), json!("tampered"));
        }
        messages.push(fedmsg::Message::from_body(body));
    }
    let refs: Vec<&fedmsg::Message> = messages.iter().collect();
    let verdicts = validator.validate_messages(&refs);
    for (i, verdict) in verdicts.iter().enumerate() {
        if i == 17 {
            assert_eq!(verdict, &Verdict::Invalid(Reason::BadSignature));
        } else {
            assert!(verdict.is_valid(), "{i}: {verdict}");
            assert_eq!(
                *verdict
                    == Verdict::Valid {
                        signer: "rsa-host1".into(),
                        scheme: Scheme::X509
                    },
                i % 10 == 3
            );
        }
    }
    // The same verdicts one by one.
    for (message, verdict) in messages.iter().zip(&verdicts) {
        assert_eq!(&validator.validate_message(message), verdict);
    }
}

#[test]
fn ed25519_swapped_certificate_and_damaged_fields_are_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    certs(dir, &["init-ca"]);
    certs(dir, &["issue", "a", "host"]);
    certs(dir, &["issue", "b", "host"]);
    let validator = Validator::new(settings(dir));
    let body = signed(&signer(dir, "a-host"), "org.x.prod.a.t");
    let other = signed(&signer(dir, "b-host"), "org.x.prod.a.t");
    let mut swapped = body.clone();
    swapped.insert("certificate".into(), other["certificate"].clone());
    assert_eq!(
        validator.validate(&swapped),
        Verdict::Invalid(Reason::BadSignature)
    );
    // Every prefix and every single-character change of the two fields.
    for field in ["signature", "certificate"] {
        let original = body[field].as_str().unwrap().to_owned();
        // (Cutting only the trailing newline changes nothing, as in Python.)
        for cut in (0..original.trim_end().len()).step_by(7) {
            let mut damaged = body.clone();
            damaged.insert(field.into(), json!(original[..cut]));
            assert!(
                !validator.validate(&damaged).is_valid(),
                "{field} cut at {cut}"
            );
        }
        for (i, _) in original.char_indices().step_by(5) {
            let mut chars: Vec<char> = original.chars().collect();
            if chars[i] == '\n' {
                continue;
            }
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let mut damaged = body.clone();
            damaged.insert(field.into(), json!(chars.into_iter().collect::<String>()));
            assert!(
                !validator.validate(&damaged).is_valid(),
                "{field} changed at {i}"
            );
        }
    }
    assert!(validator.validate(&body).is_valid());
}
