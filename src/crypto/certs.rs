//! A small certificate authority for a deployment (`fedmsg-certs`): create
//! a CA, issue Ed25519 (or RSA, for Python fedmsg peers) certificates named
//! `<service>-<host>`, revoke them, and keep a signed CRL current.
//!
//! Everything lives in one directory (normally `ssldir`):
//! `ca.crt`, `ca.key`, `crl.pem`, `<name>.crt` / `<name>.key` per signer,
//! and `ca-index.json`, the CA's memory (next serial, what was issued and
//! revoked) in plain JSON so an operator can read it.

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// Why a certificate operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Generating or signing failed.
    #[error("{0}")]
    Crypto(String),
    /// The directory already has a CA.
    #[error("{0} already holds a CA (ca.crt); refusing to overwrite it")]
    CaExists(PathBuf),
    /// The directory has no CA yet.
    #[error("{0} holds no CA: run `fedmsg-certs init-ca` first")]
    NoCa(PathBuf),
    /// A certificate with this name exists.
    #[error("{0} already exists; revoke it first or choose another name")]
    Exists(PathBuf),
    /// Nothing issued matches.
    #[error("no issued certificate matches {0:?}")]
    Unknown(String),
    /// `ca-index.json` is damaged.
    #[error("{path}: damaged CA index: {why}")]
    Index {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        why: String,
    },
}

fn crypto(e: impl std::fmt::Display) -> CertsError {
    CertsError::Crypto(e.to_string())
}

/// The kind of key to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Ed25519: small and fast; signs the `ed25519` scheme.
    Ed25519,
    /// RSA with this many bits: signs fedmsg's `x509` scheme, for Python peers.
    Rsa(usize),
}

/// One issued certificate, as remembered in `ca-index.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct IssuedEntry {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// Common name (also the file prefix).
    pub common_name: String,
    /// `ed25519` or `rsa`.
    pub key: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// When it was revoked, RFC 3339, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
}

/// The CA's memory.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Index {
    /// The next serial to hand out.
    pub next_serial: u64,
    /// Everything issued, in order.
    pub issued: Vec<IssuedEntry>,
}

/// A CA in a directory.
#[derive(Debug, Clone)]
pub struct Authority {
    dir: PathBuf,
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CertsError> {
    let io = |source| CertsError::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::write(path, text).map_err(io)?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    }
    #[cfg(not(unix))]
    let _ = private;
    Ok(())
}

fn read(path: &Path) -> Result<String, CertsError> {
    std::fs::read_to_string(path).map_err(|source| CertsError::Io {
        path: path.to_owned(),
        source,
    })
}

fn generate(kind: KeyKind) -> Result<KeyPair, CertsError> {
    match kind {
        KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(crypto),
        KeyKind::Rsa(bits) => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, bits).map_err(crypto)?;
            let pem = key
                .to_pkcs8_pem(rsa::pkcs8::LineEnding::LF)
                .map_err(crypto)?;
            KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).map_err(crypto)
        }
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Authority {
    /// The CA in `dir` (which may not exist yet).
    pub fn at(dir: impl Into<PathBuf>) -> Authority {
        Authority { dir: dir.into() }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `ca.crt`.
    pub fn ca_path(&self) -> PathBuf {
        self.path("ca.crt")
    }

    /// `crl.pem`.
    pub fn crl_path(&self) -> PathBuf {
        self.path("crl.pem")
    }

    /// Creates the CA: key, self-signed certificate valid `days`, an empty
    /// CRL and the index.
    pub fn create(&self, common_name: &str, kind: KeyKind, days: i64) -> Result<(), CertsError> {
        if self.ca_path().exists() {
            return Err(CertsError::CaExists(self.dir.clone()));
        }
        std::fs::create_dir_all(&self.dir).map_err(|source| CertsError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let key = generate(kind)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        params.serial_number = Some(SerialNumber::from(1u64));
        let cert = params.self_signed(&key).map_err(crypto)?;
        write(&self.path("ca.key"), &key.serialize_pem(), true)?;
        write(&self.ca_path(), &cert.pem(), false)?;
        self.save_index(&Index {
            next_serial: 2,
            issued: Vec::new(),
        })?;
        self.write_crl(30)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, CertsError> {
        if !self.ca_path().exists() {
            return Err(CertsError::NoCa(self.dir.clone()));
        }
        let key = KeyPair::from_pem(&read(&self.path("ca.key"))?).map_err(crypto)?;
        Issuer::from_ca_cert_pem(&read(&self.ca_path())?, key).map_err(crypto)
    }

    /// The index (`ca-index.json`).
    pub fn index(&self) -> Result<Index, CertsError> {
        let path = self.path("ca-index.json");
        let text = read(&path)?;
        serde_json::from_str(&text).map_err(|e| CertsError::Index {
            path,
            why: e.to_string(),
        })
    }

    fn save_index(&self, index: &Index) -> Result<(), CertsError> {
        let text = serde_json::to_string_pretty(index).map_err(crypto)?;
        write(&self.path("ca-index.json"), &(text + "\n"), false)
    }

    /// Issues a certificate with this common name, valid `days`, writing
    /// `<name>.crt` and `<name>.key`. Returns their paths.
    pub fn issue(
        &self,
        common_name: &str,
        kind: KeyKind,
        days: i64,
    ) -> Result<(PathBuf, PathBuf), CertsError> {
        if common_name.is_empty()
            || common_name.contains(['/', '\\'])
            || common_name.starts_with('.')
        {
            return Err(CertsError::Crypto(format!(
                "{common_name:?} cannot be a certificate name (it becomes a file name)"
            )));
        }
        let issuer = self.issuer()?;
        let crt = self.path(&format!("{common_name}.crt"));
        let key_path = self.path(&format!("{common_name}.key"));
        if crt.exists() {
            return Err(CertsError::Exists(crt));
        }
        let mut index = self.index()?;
        let serial = index.next_serial;
        let key = generate(kind)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(crypto)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &issuer).map_err(crypto)?;
        write(&key_path, &key.serialize_pem(), true)?;
        write(&crt, &cert.pem(), false)?;
        index.next_serial += 1;
        index.issued.push(IssuedEntry {
            serial: format!("{serial:x}"),
            common_name: common_name.to_owned(),
            key: match kind {
                KeyKind::Ed25519 => "ed25519".into(),
                KeyKind::Rsa(_) => "rsa".into(),
            },
            not_after: rfc3339(params.not_after),
            revoked: None,
        });
        self.save_index(&index)?;
        Ok((crt, key_path))
    }

    /// Revokes what matches `name_or_serial` (a common name, or a hex
    /// serial) and re-signs the CRL. Returns the serials revoked.
    pub fn revoke(&self, name_or_serial: &str, crl_days: i64) -> Result<Vec<String>, CertsError> {
        let mut index = self.index()?;
        let now = rfc3339(OffsetDateTime::now_utc());
        let wanted = name_or_serial.trim_start_matches("0x").to_ascii_lowercase();
        let mut revoked = Vec::new();
        for entry in index.issued.iter_mut().filter(|e| e.revoked.is_none()) {
            if entry.common_name == name_or_serial || entry.serial == wanted {
                entry.revoked = Some(now.clone());
                revoked.push(entry.serial.clone());
            }
        }
        if revoked.is_empty() {
            return Err(CertsError::Unknown(name_or_serial.to_owned()));
        }
        // The name is free again for a new certificate.
        for entry in index.issued.iter().filter(|e| revoked.contains(&e.serial)) {
            let _ = std::fs::rename(
                self.path(&format!("{}.crt", entry.common_name)),
                self.path(&format!(
                    "{}.{}.revoked.crt",
                    entry.common_name, entry.serial
                )),
            );
            let _ = std::fs::remove_file(self.path(&format!("{}.key", entry.common_name)));
        }
        self.save_index(&index)?;
        self.write_crl(crl_days)?;
        Ok(revoked)
    }

    /// Signs a fresh CRL listing every revoked serial, valid `days`.
    pub fn write_crl(&self, days: i64) -> Result<(), CertsError> {
        let issuer = self.issuer()?;
        let index = self.index()?;
        let now = OffsetDateTime::now_utc();
        let revoked_certs = index
            .issued
            .iter()
            .filter_map(|entry| {
                let time = entry.revoked.as_ref()?;
                let serial = u64::from_str_radix(&entry.serial, 16).ok()?;
                Some(RevokedCertParams {
                    serial_number: SerialNumber::from(serial),
                    revocation_time: OffsetDateTime::parse(
                        time,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .unwrap_or(now),
                    reason_code: Some(RevocationReason::Unspecified),
                    invalidity_date: None,
                })
            })
            .collect();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(days),
            crl_number: SerialNumber::from(now.unix_timestamp().max(1) as u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&issuer).map_err(crypto)?;
        write(&self.crl_path(), &crl.pem().map_err(crypto)?, false)
    }
}
