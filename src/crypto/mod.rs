//! Signing and validating messages, behind one seam for two schemes:
//!
//! * `x509`, fedmsg's: RSA PKCS#1 v1.5 with SHA-1 over the canonical JSON of
//!   every field but `signature` and `certificate`; both fields are base64
//!   wrapped at 76 characters with a trailing newline, the certificate being
//!   the base64 of its PEM. Byte-identical to Python fedmsg.
//! * `ed25519`, ours: the same canonical bytes signed with Ed25519; the
//!   certificate is an X.509 certificate carrying the Ed25519 key, issued by
//!   the same kind of CA.
//!
//! A [`Validator`] checks the certificate's path to the CA (and CRL, see
//! [`pki`]), the signature, then the signer's common name against the
//! routing policy, and returns a [`Verdict`] with a [`Reason`]. Malformed
//! fields of any kind give an invalid verdict, never a panic.

pub mod certs;
pub mod pki;
pub mod policy;
mod signer;

pub use pki::{CrlExpiredPolicy, TrustStore};
pub use policy::RoutingPolicy;
pub use signer::{certname_for, Signer, SignerError};

use crate::canonical;
use crate::config::Config;
use base64::Engine;
use serde_json::{Map, Value};
use std::fmt;
use std::path::PathBuf;

/// The two signing schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// fedmsg's RSA / SHA-1.
    X509,
    /// Ed25519.
    Ed25519,
}

impl Scheme {
    /// The value of the envelope's `crypto` field.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::X509 => "x509",
            Scheme::Ed25519 => "ed25519",
        }
    }
}

/// Why a message is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// No `signature` (or no `certificate`).
    Unsigned,
    /// `crypto` names a scheme we do not know (`gpg` among others).
    UnknownScheme(String),
    /// The scheme is not in `crypto_validate_backends`.
    SchemeNotAllowed(String),
    /// A field is not a string or not base64.
    MalformedBase64(&'static str),
    /// The certificate cannot be parsed.
    MalformedCertificate(String),
    /// The certificate's key does not fit the scheme.
    WrongKeyType(&'static str),
    /// The CA (or CRL) could not be loaded.
    CaUnavailable(String),
    /// The certificate was not issued by the configured CA.
    NotSignedByCa,
    /// The leaf is past its `notAfter`.
    CertificateExpired,
    /// The leaf is before its `notBefore`.
    CertificateNotYetValid,
    /// The CA is past its `notAfter`.
    CaExpired,
    /// The CA is before its `notBefore`.
    CaNotYetValid,
    /// The CRL is past its `nextUpdate`.
    CrlExpired,
    /// The CRL is not issued or not signed by the CA.
    CrlInvalid(String),
    /// The CRL lists the certificate.
    Revoked,
    /// The signature does not match the body.
    BadSignature,
    /// The routing policy does not allow this signer on this topic.
    NotAllowed {
        /// The message's topic.
        topic: String,
        /// The signer's common name.
        signer: String,
    },
    /// `routing_nitpicky` and the topic is missing from the policy.
    NotInPolicy(String),
    /// Frame 0 and the envelope's `topic` differ (the signature only
    /// covers the envelope, so the frame could lie).
    TopicMismatch {
        /// The topic of frame 0.
        frame: String,
        /// The envelope's `topic`.
        envelope: String,
    },
}

impl Reason {
    /// A short stable label for counters and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::Unsigned => "unsigned",
            Reason::UnknownScheme(_) => "unknown_scheme",
            Reason::SchemeNotAllowed(_) => "scheme_not_allowed",
            Reason::MalformedBase64(_) => "malformed_base64",
            Reason::MalformedCertificate(_) => "malformed_certificate",
            Reason::WrongKeyType(_) => "wrong_key_type",
            Reason::CaUnavailable(_) => "ca_unavailable",
            Reason::NotSignedByCa => "not_signed_by_ca",
            Reason::CertificateExpired => "certificate_expired",
            Reason::CertificateNotYetValid => "certificate_not_yet_valid",
            Reason::CaExpired => "ca_expired",
            Reason::CaNotYetValid => "ca_not_yet_valid",
            Reason::CrlExpired => "crl_expired",
            Reason::CrlInvalid(_) => "crl_invalid",
            Reason::Revoked => "revoked",
            Reason::BadSignature => "bad_signature",
            Reason::NotAllowed { .. } => "not_allowed",
            Reason::NotInPolicy(_) => "not_in_policy",
            Reason::TopicMismatch { .. } => "topic_mismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Unsigned => f.write_str("unsigned message"),
            Reason::UnknownScheme(s) => write!(f, "unknown crypto scheme {s:?}"),
            Reason::SchemeNotAllowed(s) => {
                write!(f, "crypto scheme {s:?} not in crypto_validate_backends")
            }
            Reason::MalformedBase64(field) => write!(f, "malformed base64 in {field}"),
            Reason::MalformedCertificate(why) => write!(f, "malformed certificate: {why}"),
            Reason::WrongKeyType(scheme) => {
                write!(f, "certificate key does not fit the {scheme} scheme")
            }
            Reason::CaUnavailable(why) => write!(f, "CA unavailable: {why}"),
            Reason::NotSignedByCa => f.write_str("certificate not issued by the CA"),
            Reason::CertificateExpired => f.write_str("expired certificate"),
            Reason::CertificateNotYetValid => f.write_str("certificate not yet valid"),
            Reason::CaExpired => f.write_str("expired CA certificate"),
            Reason::CaNotYetValid => f.write_str("CA certificate not yet valid"),
            Reason::CrlExpired => f.write_str("CRL expired (past nextUpdate)"),
            Reason::CrlInvalid(why) => write!(f, "untrusted CRL: {why}"),
            Reason::Revoked => f.write_str("revoked certificate"),
            Reason::BadSignature => f.write_str("bad signature"),
            Reason::NotAllowed { topic, signer } => {
                write!(f, "{signer} not allowed to publish {topic}")
            }
            Reason::NotInPolicy(topic) => {
                write!(f, "topic {topic} not in routing_policy (routing_nitpicky)")
            }
            Reason::TopicMismatch { frame, envelope } => {
                write!(
                    f,
                    "frame topic {frame} differs from envelope topic {envelope}"
                )
            }
        }
    }
}

/// The outcome of validating one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Signed by a certificate the CA vouches for, allowed by the policy.
    Valid {
        /// The signer's common name.
        signer: String,
        /// The scheme used.
        scheme: Scheme,
    },
    /// Not valid, and why.
    Invalid(Reason),
}

impl Verdict {
    /// True for [`Verdict::Valid`].
    pub fn is_valid(&self) -> bool {
        matches!(self, Verdict::Valid { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Valid { signer, scheme } => {
                write!(f, "valid ({} signed by {signer})", scheme.name())
            }
            Verdict::Invalid(reason) => write!(f, "invalid: {reason}"),
        }
    }
}

/// Decodes base64 as Python's `b64decode` does by default: characters
/// outside the alphabet (newlines among them) are ignored.
pub fn lenient_base64(text: &str) -> Option<Vec<u8>> {
    let filtered: String = text
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
        .collect();
    let trimmed = filtered.trim_end_matches('=');
    // Python accepts any padding that completes the last quantum.
    let mut padded = trimmed.to_owned();
    while padded.len() % 4 != 0 {
        padded.push('=');
    }
    if trimmed.len() % 4 == 1 {
        return None;
    }
    base64::engine::general_purpose::STANDARD
        .decode(padded)
        .ok()
}

/// base64 wrapped at 76 characters with a trailing newline (fedmsg's format).
pub fn wrapped_base64(bytes: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(encoded.len() + encoded.len() / 76 + 2);
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// The body without `signature` and `certificate` (fedmsg's `strip_credentials`).
pub fn strip_credentials(body: &Map<String, Value>) -> Map<String, Value> {
    let mut body = body.clone();
    body.remove("signature");
    body.remove("certificate");
    body
}

/// The exact bytes a signature covers: the canonical JSON of the body
/// without `signature` and `certificate`.
pub fn signed_bytes(body: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(512);
    canonical::write_canonical_object_without(&mut out, body, &["signature", "certificate"]);
    out
}

/// Undoes what datanommer/datagrepper add to archived messages, as fedmsg's
/// `fix_datagrepper_message` does: `source_name`, `source_version`, an
/// empty `headers`, and a float `timestamp`.
pub fn fix_datagrepper(body: &mut Map<String, Value>) {
    if body.contains_key("source_name") && body.contains_key("source_version") {
        body.remove("source_name");
        body.remove("source_version");
        let empty_headers = match body.get("headers") {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Null) => true,
            _ => false,
        };
        if empty_headers {
            body.remove("headers");
        }
        if let Some(ts) = body.get("timestamp").and_then(Value::as_f64) {
            body.insert("timestamp".into(), Value::from(ts as i64));
        }
    }
}

/// Validation settings, from the configuration.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// The CA certificate file.
    pub ca_cert_location: PathBuf,
    /// The CRL file, if any.
    pub crl_location: Option<PathBuf>,
    /// What to do with a CRL past `nextUpdate`.
    pub crl_expired: CrlExpiredPolicy,
    /// Who may publish what.
    pub routing_policy: RoutingPolicy,
    /// Refuse topics missing from the policy.
    pub routing_nitpicky: bool,
    /// Schemes accepted.
    pub backends: Vec<String>,
}

impl ValidatorConfig {
    /// Takes fedmsg's keys from `config`.
    pub fn from_config(config: &Config) -> ValidatorConfig {
        ValidatorConfig {
            ca_cert_location: PathBuf::from(&config.ca_cert_location),
            crl_location: config.crl_location.as_ref().map(PathBuf::from),
            crl_expired: config.crl_expired,
            routing_policy: RoutingPolicy::new(config.routing_policy.clone()),
            routing_nitpicky: config.routing_nitpicky,
            backends: config.crypto_validate_backends.clone(),
        }
    }
}

/// Validates messages against a CA, a CRL and a routing policy.
#[derive(Debug)]
pub struct Validator {
    settings: ValidatorConfig,
    store: TrustStore,
}

impl Validator {
    /// Loads the CA and CRL. A file that cannot be read is not an error
    /// here: every message is then invalid with a reason, loudly logged, and
    /// the files are re-read once they change.
    pub fn new(settings: ValidatorConfig) -> Validator {
        let store = TrustStore::new(
            settings.ca_cert_location.clone(),
            settings.crl_location.clone(),
            settings.crl_expired,
        );
        Validator { settings, store }
    }

    /// Checks the CA and CRL files for changes this often (default 1 s).
    pub fn reload_check(mut self, every: std::time::Duration) -> Validator {
        self.store.set_reload_check(every);
        self
    }

    /// The trust store (for its status and counters).
    pub fn store(&self) -> &TrustStore {
        &self.store
    }

    /// Validates a received message: its frame topic must match the
    /// envelope's, then the envelope is validated now.
    pub fn validate_message(&self, message: &crate::envelope::Message) -> Verdict {
        self.validate_messages(&[message])
            .pop()
            .unwrap_or(Verdict::Invalid(Reason::Unsigned))
    }

    /// Validates `body` now.
    pub fn validate(&self, body: &Map<String, Value>) -> Verdict {
        self.validate_at(body, chrono::Utc::now().timestamp())
    }

    /// Validates `body` as of `at` (seconds since the epoch).
    pub fn validate_at(&self, body: &Map<String, Value>, at: i64) -> Verdict {
        match self.check(body, at) {
            Ok((signer, scheme)) => Verdict::Valid { signer, scheme },
            Err(reason) => Verdict::Invalid(reason),
        }
    }

    fn check(&self, body: &Map<String, Value>, at: i64) -> Result<(String, Scheme), Reason> {
        let pending = self.prepare(body, at)?;
        signer::verify(
            pending.scheme,
            &pending.leaf.key,
            pending.data.as_bytes(),
            &pending.signature,
        )?;
        self.authorise(body, &pending)
    }

    /// Everything but the signature check: scheme, fields, certificate path.
    fn prepare(&self, body: &Map<String, Value>, at: i64) -> Result<Pending, Reason> {
        let scheme = match body.get("crypto") {
            Some(Value::String(s)) if s == "x509" => Scheme::X509,
            Some(Value::String(s)) if s == "ed25519" => Scheme::Ed25519,
            Some(Value::String(s)) => return Err(Reason::UnknownScheme(s.clone())),
            Some(other) => return Err(Reason::UnknownScheme(other.to_string())),
            // fedmsg <= 0.7.2 compatibility: a certificate means x509.
            None if body.contains_key("certificate") => Scheme::X509,
            None if body.contains_key("signature") => {
                return Err(Reason::UnknownScheme("gpg".into()))
            }
            None => return Err(Reason::Unsigned),
        };
        if !self.settings.backends.iter().any(|b| b == scheme.name()) {
            return Err(Reason::SchemeNotAllowed(scheme.name().into()));
        }
        let text = |name: &'static str| -> Result<&str, Reason> {
            match body.get(name) {
                None => Err(Reason::Unsigned),
                Some(Value::String(text)) => Ok(text),
                Some(_) => Err(Reason::MalformedBase64(name)),
            }
        };
        let signature =
            lenient_base64(text("signature")?).ok_or(Reason::MalformedBase64("signature"))?;
        let leaf = self.store.leaf_for_field(text("certificate")?)?;
        self.store.check(&leaf, at)?;
        Ok(Pending {
            scheme,
            leaf,
            data: signed_bytes(body),
            signature,
        })
    }

    /// The routing policy, once the signature is known to be good.
    fn authorise(
        &self,
        body: &Map<String, Value>,
        pending: &Pending,
    ) -> Result<(String, Scheme), Reason> {
        let topic = body
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default();
        self.settings.routing_policy.check(
            topic,
            &pending.leaf.common_name,
            self.settings.routing_nitpicky,
        )?;
        Ok((pending.leaf.common_name.clone(), pending.scheme))
    }

    /// Validates several received messages at once (a reader's backlog):
    /// Ed25519 signatures are checked in one batch, which is about twice as
    /// fast per message; if the batch fails, each is checked alone so the
    /// bad ones are named. Verdicts are in the order of `messages`.
    pub fn validate_messages(&self, messages: &[&crate::envelope::Message]) -> Vec<Verdict> {
        let at = chrono::Utc::now().timestamp();
        let mut verdicts: Vec<Option<Verdict>> = vec![None; messages.len()];
        let mut pending: Vec<(usize, Pending)> = Vec::new();
        for (index, message) in messages.iter().enumerate() {
            let envelope = message
                .body()
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if envelope != message.topic() {
                verdicts[index] = Some(Verdict::Invalid(Reason::TopicMismatch {
                    frame: message.topic().to_owned(),
                    envelope: envelope.to_owned(),
                }));
                continue;
            }
            match self.prepare(message.body(), at) {
                Ok(p) => pending.push((index, p)),
                Err(reason) => verdicts[index] = Some(Verdict::Invalid(reason)),
            }
        }
        let batch: Vec<&(usize, Pending)> = pending
            .iter()
            .filter(|(_, p)| p.scheme == Scheme::Ed25519)
            .collect();
        let batch_ok = batch.len() > 1 && {
            let keys: Option<Vec<ed25519_dalek::VerifyingKey>> = batch
                .iter()
                .map(|(_, p)| match &p.leaf.key {
                    pki::PublicKey::Ed25519(key) => Some(*key),
                    _ => None,
                })
                .collect();
            let signatures: Option<Vec<ed25519_dalek::Signature>> = batch
                .iter()
                .map(|(_, p)| ed25519_dalek::Signature::from_slice(&p.signature).ok())
                .collect();
            match (keys, signatures) {
                (Some(keys), Some(signatures)) => {
                    let data: Vec<&[u8]> = batch.iter().map(|(_, p)| p.data.as_bytes()).collect();
                    ed25519_dalek::verify_batch(&data, &signatures, &keys).is_ok()
                }
                _ => false,
            }
        };
        for (index, p) in &pending {
            let checked = if batch_ok && p.scheme == Scheme::Ed25519 {
                Ok(())
            } else {
                signer::verify(p.scheme, &p.leaf.key, p.data.as_bytes(), &p.signature)
            };
            verdicts[*index] = Some(
                match checked.and_then(|()| self.authorise(messages[*index].body(), p)) {
                    Ok((signer, scheme)) => Verdict::Valid { signer, scheme },
                    Err(reason) => Verdict::Invalid(reason),
                },
            );
        }
        verdicts
            .into_iter()
            .map(|v| v.unwrap_or(Verdict::Invalid(Reason::Unsigned)))
            .collect()
    }
}

/// A message whose certificate checked out, waiting for its signature check.
struct Pending {
    scheme: Scheme,
    leaf: std::sync::Arc<pki::Leaf>,
    data: String,
    signature: Vec<u8>,
}
