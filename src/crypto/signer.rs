//! Signing: a key and its certificate from `ssldir`, chosen by fedmsg's
//! `certnames` rules, and the per-scheme signature primitives.

use super::pki::{certificate_pem, pem_block, Leaf, PublicKey};
use super::{signed_bytes, wrapped_base64, Reason, Scheme};
use crate::config::Config;
use rsa::pkcs1v15::SigningKey as RsaSigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer as _};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// Why a signer could not be set up. Raised at start-up, never at publish.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// `certnames` has no entry for this publisher.
    #[error("sign_messages is on but [certnames] has no entry for `{key}`; add `\"{key}\" = \"<file prefix in ssldir>\"`")]
    NoCertname {
        /// The certnames key looked up.
        key: String,
    },
    /// A key or certificate file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The private key is not a PKCS#8 / PKCS#1 RSA key or a PKCS#8 Ed25519 key.
    #[error("{path}: not a usable private key (expected an RSA or Ed25519 key in PEM): {why}")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// What the parsers said.
        why: String,
    },
    /// The certificate cannot be parsed.
    #[error("{path}: not a usable certificate: {why}")]
    BadCertificate {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// Key and certificate do not belong together.
    #[error("{key} does not match the public key of {certificate}")]
    Mismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        certificate: PathBuf,
    },
}

enum Key {
    Rsa(RsaSigningKey<sha1::Sha1>),
    Ed25519(ed25519_dalek::SigningKey),
}

/// Signs envelopes with one key and certificate. Cheap to share by `Arc`.
pub struct Signer {
    key: Key,
    certificate: String,
    common_name: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme())
            .field("common_name", &self.common_name)
            .finish()
    }
}

/// fedmsg's rule for the `certnames` key of a publisher: `<cert_prefix>.<host>`
/// when `cert_prefix` is set (the logger's `shell`), `shell.<host>` for an
/// active publisher named `relay_inbound`, else the publisher name.
pub fn certname_for(config: &Config, publisher_name: &str) -> String {
    let host = crate::publish::short_hostname();
    match &config.cert_prefix {
        Some(prefix) => format!("{prefix}.{host}"),
        None if publisher_name == "relay_inbound" => format!("shell.{host}"),
        None => publisher_name.to_owned(),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, SignerError> {
    std::fs::read(path).map_err(|source| SignerError::Read {
        path: path.to_owned(),
        source,
    })
}

impl Signer {
    /// The signer for `certnames[certname_key]` in `ssldir`.
    pub fn from_config(config: &Config, certname_key: &str) -> Result<Signer, SignerError> {
        let prefix = config
            .certnames
            .get(certname_key)
            .ok_or_else(|| SignerError::NoCertname {
                key: certname_key.to_owned(),
            })?;
        Signer::from_files(
            &config.ssldir.join(format!("{prefix}.crt")),
            &config.ssldir.join(format!("{prefix}.key")),
        )
    }

    /// A signer from a certificate and its private key (PEM files). The
    /// scheme follows the key: RSA signs `x509`, Ed25519 signs `ed25519`.
    pub fn from_files(certificate: &Path, key: &Path) -> Result<Signer, SignerError> {
        let cert_text = read(certificate)?;
        let der =
            pem_block(&cert_text, "CERTIFICATE").ok_or_else(|| SignerError::BadCertificate {
                path: certificate.to_owned(),
                why: "no PEM certificate block".into(),
            })?;
        let leaf = Leaf::from_der(&der).map_err(|why| SignerError::BadCertificate {
            path: certificate.to_owned(),
            why,
        })?;
        let key_text = String::from_utf8(read(key)?).map_err(|_| SignerError::BadKey {
            path: key.to_owned(),
            why: "not text".into(),
        })?;
        let parsed = match rsa::RsaPrivateKey::from_pkcs8_pem(&key_text) {
            Ok(rsa_key) => Key::Rsa(RsaSigningKey::new(rsa_key)),
            Err(rsa_error) => {
                match <rsa::RsaPrivateKey as rsa::pkcs1::DecodeRsaPrivateKey>::from_pkcs1_pem(
                    &key_text,
                ) {
                    Ok(rsa_key) => Key::Rsa(RsaSigningKey::new(rsa_key)),
                    Err(_) => match ed25519_dalek::SigningKey::from_pkcs8_pem(&key_text) {
                        Ok(ed_key) => Key::Ed25519(ed_key),
                        Err(ed_error) => {
                            return Err(SignerError::BadKey {
                                path: key.to_owned(),
                                why: format!("RSA: {rsa_error}; Ed25519: {ed_error}"),
                            })
                        }
                    },
                }
            }
        };
        let matches = match (&parsed, &leaf.key) {
            (Key::Rsa(k), PublicKey::Rsa(p, _)) => rsa::RsaPublicKey::from(k.as_ref()) == *p,
            (Key::Ed25519(k), PublicKey::Ed25519(p)) => k.verifying_key() == *p,
            _ => false,
        };
        if !matches {
            return Err(SignerError::Mismatch {
                key: key.to_owned(),
                certificate: certificate.to_owned(),
            });
        }
        Ok(Signer {
            key: parsed,
            certificate: wrapped_base64(certificate_pem(&der).as_bytes()),
            common_name: leaf.common_name,
        })
    }

    /// The scheme this signer produces.
    pub fn scheme(&self) -> Scheme {
        match self.key {
            Key::Rsa(_) => Scheme::X509,
            Key::Ed25519(_) => Scheme::Ed25519,
        }
    }

    /// The certificate's common name.
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// Signs `body` in place, as fedmsg does: sets `crypto`, then signs the
    /// canonical JSON of every field but `signature` and `certificate`, then
    /// adds both.
    pub fn sign(&self, body: &mut Map<String, Value>) {
        body.insert("crypto".into(), Value::String(self.scheme().name().into()));
        let data = signed_bytes(body);
        let signature = match &self.key {
            Key::Rsa(key) => key.sign(data.as_bytes()).to_vec(),
            Key::Ed25519(key) => ed25519_dalek::Signer::sign(key, data.as_bytes())
                .to_bytes()
                .to_vec(),
        };
        body.insert(
            "signature".into(),
            Value::String(wrapped_base64(&signature)),
        );
        body.insert(
            "certificate".into(),
            Value::String(self.certificate.clone()),
        );
    }
}

/// Verifies a message signature with the certificate's key.
pub(crate) fn verify(
    scheme: Scheme,
    key: &PublicKey,
    data: &[u8],
    signature: &[u8],
) -> Result<(), Reason> {
    match (scheme, key) {
        (Scheme::X509, PublicKey::Rsa(_, pkcs1)) => {
            // ring's verifier is several times faster than the rsa crate's
            // and still accepts fedmsg's RSA-1024 / SHA-1.
            let key = ring::signature::UnparsedPublicKey::new(
                &ring::signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
                pkcs1,
            );
            key.verify(data, signature)
                .map_err(|_| Reason::BadSignature)
        }
        (Scheme::Ed25519, PublicKey::Ed25519(key)) => {
            let signature = ed25519_dalek::Signature::from_slice(signature)
                .map_err(|_| Reason::BadSignature)?;
            key.verify_strict(data, &signature)
                .map_err(|_| Reason::BadSignature)
        }
        (scheme, _) => Err(Reason::WrongKeyType(scheme.name())),
    }
}
