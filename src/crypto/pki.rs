//! Certificates, the CA and its CRL: parsing, path validation and caching.
//!
//! Path validation follows what fedmsg gets from OpenSSL with one directly
//! trusted CA: the leaf's issuer is the CA's subject and the CA's key
//! verifies the leaf's signature; leaf and CA are within their validity
//! periods; if a CRL is configured, it is issued and signed by the CA, is
//! current (`thisUpdate` ≤ now < `nextUpdate`) and does not list the leaf's
//! serial. Signature algorithms: RSA PKCS#1 v1.5 with SHA-1/224/256/384/512
//! (any key size: fedmsg's PKIs use RSA-1024) and Ed25519.
//!
//! Parsed leaves are cached by the SHA-256 of their DER, with the result of
//! their chain check against the current CA, so per message only the time
//! window, the revocation list and the message signature are checked.

use super::Reason;
use rsa::pkcs1v15::{Signature as RsaSignature, VerifyingKey as RsaVerifyingKey};
use rsa::pkcs8::DecodePublicKey;
use rsa::signature::Verifier as _;
use rsa::RsaPublicKey;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use x509_parser::prelude::*;

const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_ED25519: &str = "1.3.101.112";

/// A public key a certificate carries.
#[derive(Clone)]
pub enum PublicKey {
    /// RSA (fedmsg's `x509` scheme): the key, and its PKCS#1 DER for the
    /// fast verifier.
    Rsa(RsaPublicKey, Vec<u8>),
    /// Ed25519.
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Rsa(..) => f.write_str("PublicKey::Rsa"),
            PublicKey::Ed25519(_) => f.write_str("PublicKey::Ed25519"),
        }
    }
}

impl PublicKey {
    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, String> {
        match spki.algorithm.algorithm.to_id_string().as_str() {
            OID_RSA => RsaPublicKey::from_public_key_der(spki.raw)
                .map(|key| PublicKey::Rsa(key, spki.subject_public_key.data.to_vec()))
                .map_err(|e| format!("bad RSA key: {e}")),
            OID_ED25519 => {
                let bytes: [u8; 32] = spki
                    .subject_public_key
                    .data
                    .as_ref()
                    .try_into()
                    .map_err(|_| "bad Ed25519 key length".to_owned())?;
                ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                    .map(PublicKey::Ed25519)
                    .map_err(|e| format!("bad Ed25519 key: {e}"))
            }
            other => Err(format!("unsupported key algorithm {other}")),
        }
    }

    /// Verifies an X.509 signature (`algorithm` OID) over `data`.
    fn verify_x509(&self, algorithm: &str, data: &[u8], signature: &[u8]) -> Result<(), String> {
        let bad = |e: rsa::signature::Error| e.to_string();
        match (self, algorithm) {
            (PublicKey::Rsa(key, _), "1.2.840.113549.1.1.5") => {
                rsa_verify::<sha1::Sha1>(key, data, signature).map_err(bad)
            }
            (PublicKey::Rsa(key, _), "1.2.840.113549.1.1.14") => {
                rsa_verify::<sha2::Sha224>(key, data, signature).map_err(bad)
            }
            (PublicKey::Rsa(key, _), "1.2.840.113549.1.1.11") => {
                rsa_verify::<sha2::Sha256>(key, data, signature).map_err(bad)
            }
            (PublicKey::Rsa(key, _), "1.2.840.113549.1.1.12") => {
                rsa_verify::<sha2::Sha384>(key, data, signature).map_err(bad)
            }
            (PublicKey::Rsa(key, _), "1.2.840.113549.1.1.13") => {
                rsa_verify::<sha2::Sha512>(key, data, signature).map_err(bad)
            }
            (PublicKey::Ed25519(key), OID_ED25519) => {
                let signature =
                    ed25519_dalek::Signature::from_slice(signature).map_err(|e| e.to_string())?;
                key.verify_strict(data, &signature)
                    .map_err(|e| e.to_string())
            }
            (_, other) => Err(format!("unsupported signature algorithm {other}")),
        }
    }
}

fn rsa_verify<D>(
    key: &RsaPublicKey,
    data: &[u8],
    signature: &[u8],
) -> Result<(), rsa::signature::Error>
where
    D: Digest + rsa::pkcs8::AssociatedOid,
{
    let signature = RsaSignature::try_from(signature)?;
    RsaVerifyingKey::<D>::new(key.clone()).verify(data, &signature)
}

/// Extracts the DER of the first PEM block labelled `label` (text before it,
/// such as OpenSSL's dump in fedmsg's `.crt` files, is skipped).
pub fn pem_block(text: &[u8], label: &str) -> Option<Vec<u8>> {
    // A PEM block is ASCII; junk bytes around it are tolerated.
    let text = String::from_utf8_lossy(text);
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let body: String = text[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

/// The canonical PEM of a certificate (what fedmsg puts, base64-encoded
/// again, in a message's `certificate`): 64-column base64 of the DER.
pub fn certificate_pem(der: &[u8]) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in encoded.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

/// What a leaf certificate contributes to validation, parsed once.
#[derive(Debug)]
pub struct Leaf {
    /// The subject's first common name: the signer's identity.
    pub common_name: String,
    /// The key that signs messages.
    pub key: PublicKey,
    not_before: i64,
    not_after: i64,
    serial: Vec<u8>,
    issuer: Vec<u8>,
    tbs: Vec<u8>,
    signature_algorithm: String,
    signature: Vec<u8>,
    /// The CA generation this leaf's signature was checked against, and the result.
    chain: Mutex<Option<(u64, bool)>>,
}

impl Leaf {
    /// Parses a certificate from DER.
    pub fn from_der(der: &[u8]) -> Result<Leaf, String> {
        let (_, cert) =
            X509Certificate::from_der(der).map_err(|e| format!("not an X.509 certificate: {e}"))?;
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned)
            .unwrap_or_default();
        let key = PublicKey::from_spki(cert.public_key())?;
        check_outer_algorithm(der, cert.tbs_certificate.as_ref())?;
        Ok(Leaf {
            common_name,
            key,
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            serial: trim_serial(cert.raw_serial()),
            issuer: cert.issuer().as_raw().to_vec(),
            tbs: cert.tbs_certificate.as_ref().to_vec(),
            signature_algorithm: cert.signature_algorithm.algorithm.to_id_string(),
            signature: cert.signature_value.data.to_vec(),
            chain: Mutex::new(None),
        })
    }
}

/// RFC 5280 requires the certificate's outer `signatureAlgorithm` to equal
/// the signed one inside the TBS. The outer copy is not covered by the
/// signature, and `x509-parser` is lenient about it, so it is compared byte
/// for byte here; otherwise a damaged certificate field would still pass.
fn check_outer_algorithm(der: &[u8], tbs: &[u8]) -> Result<(), String> {
    let start = (tbs.as_ptr() as usize)
        .checked_sub(der.as_ptr() as usize)
        .ok_or("TBS outside the certificate")?;
    let after = der
        .get(start + tbs.len()..)
        .ok_or("truncated certificate")?;
    let length = tlv_length(after).ok_or("malformed signature algorithm")?;
    let outer = &after[..length];
    if tbs.windows(outer.len()).any(|window| window == outer) {
        Ok(())
    } else {
        Err("the signature algorithm differs from the signed one".into())
    }
}

/// The total length of the DER TLV at the start of `bytes`.
fn tlv_length(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.get(1)?;
    let (header, length) = if first < 0x80 {
        (2, first as usize)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 {
            return None;
        }
        let length = bytes
            .get(2..2 + count)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (2 + count, length)
    };
    let total = header.checked_add(length)?;
    (total <= bytes.len()).then_some(total)
}

fn trim_serial(raw: &[u8]) -> Vec<u8> {
    let start = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw[start..].to_vec()
}

/// The trusted CA and its CRL, as last loaded.
struct Authority {
    subject: Vec<u8>,
    key: PublicKey,
    not_before: i64,
    not_after: i64,
    crl: Option<Crl>,
}

struct Crl {
    this_update: i64,
    next_update: Option<i64>,
    revoked: HashSet<Vec<u8>>,
    /// Whether the CA issued and signed it; a CRL that fails this makes
    /// every check fail with [`Reason::CrlInvalid`].
    trusted: Result<(), String>,
}

/// What to do when the CRL is past its `nextUpdate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlExpiredPolicy {
    /// Treat every message as invalid, as fedmsg does (the default).
    Reject,
    /// Keep using the stale CRL, loudly.
    Accept,
}

/// Identifies a file's content cheaply: modification time and length.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()))
}

struct Loaded {
    authority: Result<Authority, String>,
    stamps: (Stamp, Stamp),
    checked: Instant,
    generation: u64,
    warned_crl_expired: bool,
}

/// Counters of the trust store, for logs and metrics.
#[derive(Debug, Default)]
pub struct TrustStats {
    /// Times the CA/CRL were (re)loaded.
    pub reloads: AtomicU64,
    /// Reloads that failed (file missing, unreadable or malformed).
    pub load_failures: AtomicU64,
    /// Reloads that found the CRL past its `nextUpdate`.
    pub crl_expired: AtomicU64,
}

/// The CA and CRL files, reloaded when they change on disk (checked at most
/// once a second), plus the cache of parsed leaves.
pub struct TrustStore {
    ca_path: PathBuf,
    crl_path: Option<PathBuf>,
    crl_policy: CrlExpiredPolicy,
    state: Mutex<Loaded>,
    reload_check: Duration,
    leaves: Mutex<HashMap<[u8; 32], Arc<Leaf>>>,
    /// The leaf for a message's `certificate` field exactly as written, so a
    /// known signer costs one map lookup instead of two base64 decodes and
    /// a digest.
    fields: Mutex<HashMap<String, Arc<Leaf>>>,
    /// Live counters.
    pub stats: TrustStats,
}

/// How often the CA/CRL files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Most distinct certificates kept parsed (a deployment has tens to hundreds).
const LEAF_CACHE: usize = 4096;

impl std::fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustStore")
            .field("ca", &self.ca_path)
            .field("crl", &self.crl_path)
            .finish()
    }
}

impl TrustStore {
    /// A store for these files; they are read now and whenever they change.
    pub fn new(
        ca_path: PathBuf,
        crl_path: Option<PathBuf>,
        crl_policy: CrlExpiredPolicy,
    ) -> TrustStore {
        let store = TrustStore {
            ca_path,
            crl_path,
            crl_policy,
            state: Mutex::new(Loaded {
                authority: Err("not loaded".into()),
                stamps: (None, None),
                checked: Instant::now(),
                generation: 0,
                warned_crl_expired: false,
            }),
            reload_check: RELOAD_CHECK,
            leaves: Mutex::new(HashMap::new()),
            fields: Mutex::new(HashMap::new()),
            stats: TrustStats::default(),
        };
        if let Ok(mut state) = store.state.lock() {
            store.reload(&mut state);
        }
        store
    }

    /// Whether the CA (and CRL) loaded; the error says why not.
    pub fn status(&self) -> Result<(), String> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| "trust store lock poisoned".to_owned())?;
        self.refresh(&mut state);
        state.authority.as_ref().map(|_| ()).map_err(Clone::clone)
    }

    fn reload(&self, state: &mut Loaded) {
        state.stamps = (
            stamp(&self.ca_path),
            self.crl_path.as_deref().and_then(stamp),
        );
        state.checked = Instant::now();
        state.generation += 1;
        state.warned_crl_expired = false;
        self.stats.reloads.fetch_add(1, Ordering::Relaxed);
        state.authority = load_authority(&self.ca_path, self.crl_path.as_deref());
        match &state.authority {
            Ok(authority) => {
                tracing::info!(ca = %self.ca_path.display(), crl = ?self.crl_path, revoked = authority.crl.as_ref().map(|c| c.revoked.len()), "loaded CA and CRL");
            }
            Err(error) => {
                self.stats.load_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(ca = %self.ca_path.display(), crl = ?self.crl_path, %error, "cannot load CA/CRL: every signed message is invalid until this is fixed");
            }
        }
    }

    /// Changes how often the files are checked for changes (default 1 s).
    pub fn set_reload_check(&mut self, every: Duration) {
        self.reload_check = every;
    }

    fn refresh(&self, state: &mut Loaded) {
        if state.checked.elapsed() < self.reload_check {
            return;
        }
        state.checked = Instant::now();
        let now = (
            stamp(&self.ca_path),
            self.crl_path.as_deref().and_then(stamp),
        );
        if now != state.stamps || state.authority.is_err() {
            self.reload(state);
        }
    }

    /// The leaf named by a message's `certificate` field (base64 of PEM).
    pub fn leaf_for_field(&self, field: &str) -> Result<Arc<Leaf>, Reason> {
        if let Some(leaf) = self
            .fields
            .lock()
            .ok()
            .and_then(|cache| cache.get(field).cloned())
        {
            return Ok(leaf);
        }
        let pem = super::lenient_base64(field).ok_or(Reason::MalformedBase64("certificate"))?;
        let der = pem_block(&pem, "CERTIFICATE")
            .ok_or_else(|| Reason::MalformedCertificate("no PEM certificate".into()))?;
        let leaf = self.leaf(&der)?;
        if let Ok(mut cache) = self.fields.lock() {
            if cache.len() >= LEAF_CACHE {
                cache.clear();
            }
            cache.insert(field.to_owned(), leaf.clone());
        }
        Ok(leaf)
    }

    /// The parsed leaf for these DER bytes (cached).
    pub fn leaf(&self, der: &[u8]) -> Result<Arc<Leaf>, Reason> {
        let digest: [u8; 32] = Sha256::digest(der).into();
        if let Some(leaf) = self
            .leaves
            .lock()
            .ok()
            .and_then(|cache| cache.get(&digest).cloned())
        {
            return Ok(leaf);
        }
        let leaf = Arc::new(Leaf::from_der(der).map_err(Reason::MalformedCertificate)?);
        if let Ok(mut cache) = self.leaves.lock() {
            if cache.len() >= LEAF_CACHE {
                cache.clear();
            }
            cache.insert(digest, leaf.clone());
        }
        Ok(leaf)
    }

    /// Checks `leaf`'s path to the CA as of `at` (seconds since the epoch).
    pub fn check(&self, leaf: &Leaf, at: i64) -> Result<(), Reason> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Reason::CaUnavailable("trust store lock poisoned".into()))?;
        self.refresh(&mut state);
        let Loaded {
            authority,
            generation,
            warned_crl_expired,
            ..
        } = &mut *state;
        let generation = *generation;
        let authority = authority
            .as_ref()
            .map_err(|e| Reason::CaUnavailable(e.clone()))?;
        // The signature of the leaf by the CA, once per CA generation.
        let chained = {
            let mut memo = leaf
                .chain
                .lock()
                .map_err(|_| Reason::CaUnavailable("lock poisoned".into()))?;
            match *memo {
                Some((g, ok)) if g == generation => ok,
                _ => {
                    let ok = leaf.issuer == authority.subject
                        && authority
                            .key
                            .verify_x509(&leaf.signature_algorithm, &leaf.tbs, &leaf.signature)
                            .is_ok();
                    *memo = Some((generation, ok));
                    ok
                }
            }
        };
        if !chained {
            return Err(Reason::NotSignedByCa);
        }
        if at < authority.not_before {
            return Err(Reason::CaNotYetValid);
        }
        if at > authority.not_after {
            return Err(Reason::CaExpired);
        }
        if at < leaf.not_before {
            return Err(Reason::CertificateNotYetValid);
        }
        if at > leaf.not_after {
            return Err(Reason::CertificateExpired);
        }
        if let Some(crl) = &authority.crl {
            let expired = crl.next_update.is_some_and(|next| at >= next) || at < crl.this_update;
            if expired {
                if !*warned_crl_expired {
                    *warned_crl_expired = true;
                    self.stats.crl_expired.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(crl = ?self.crl_path, policy = ?self.crl_policy, "the CRL is not current (past nextUpdate or before thisUpdate); replace it");
                }
                if self.crl_policy == CrlExpiredPolicy::Reject {
                    return Err(Reason::CrlExpired);
                }
            }
            if let Err(why) = &crl.trusted {
                return Err(Reason::CrlInvalid(why.clone()));
            }
            if crl.revoked.contains(&leaf.serial) {
                return Err(Reason::Revoked);
            }
        }
        Ok(())
    }
}

fn load_authority(ca_path: &Path, crl_path: Option<&Path>) -> Result<Authority, String> {
    let ca_text =
        std::fs::read(ca_path).map_err(|e| format!("cannot read CA {}: {e}", ca_path.display()))?;
    let ca_der = pem_block(&ca_text, "CERTIFICATE")
        .ok_or_else(|| format!("no PEM certificate in {}", ca_path.display()))?;
    let (_, ca) = X509Certificate::from_der(&ca_der)
        .map_err(|e| format!("bad CA certificate {}: {e}", ca_path.display()))?;
    let key = PublicKey::from_spki(ca.public_key())
        .map_err(|e| format!("CA {}: {e}", ca_path.display()))?;
    let crl = match crl_path {
        None => None,
        Some(path) => {
            let text = std::fs::read(path)
                .map_err(|e| format!("cannot read CRL {}: {e}", path.display()))?;
            let der = pem_block(&text, "X509 CRL")
                .ok_or_else(|| format!("no PEM CRL in {}", path.display()))?;
            let (_, crl) = CertificateRevocationList::from_der(&der)
                .map_err(|e| format!("bad CRL {}: {e}", path.display()))?;
            let trusted = if crl.issuer().as_raw() != ca.subject().as_raw() {
                Err(format!("CRL {} is not issued by the CA", path.display()))
            } else {
                key.verify_x509(
                    &crl.signature_algorithm.algorithm.to_id_string(),
                    crl.tbs_cert_list.as_ref(),
                    &crl.signature_value.data,
                )
                .map_err(|e| format!("CRL {} is not signed by the CA: {e}", path.display()))
            };
            if let Err(error) = &trusted {
                tracing::error!(%error, "untrusted CRL: every signed message is invalid until it is replaced");
            }
            Some(Crl {
                trusted,
                this_update: crl.last_update().timestamp(),
                next_update: crl.next_update().map(|t| t.timestamp()),
                revoked: crl
                    .iter_revoked_certificates()
                    .map(|r| trim_serial(r.raw_serial()))
                    .collect(),
            })
        }
    };
    Ok(Authority {
        subject: ca.subject().as_raw().to_vec(),
        key,
        not_before: ca.validity().not_before.timestamp(),
        not_after: ca.validity().not_after.timestamp(),
        crl,
    })
}
