//! TLS certificate and API keys. Production supplies both in `config.toml`; otherwise tallyd
//! creates development ones in `<data_dir>/dev/` on first start (and reuses them after), which the
//! `tally` CLI finds by itself. Development credentials are only served on loopback.

use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tally_protocol::message::Role;

use crate::config::Config;

/// Folder under the data dir that holds development credentials.
pub const DEV_DIR: &str = "dev";
/// Development certificate (PEM), relative to [`DEV_DIR`].
pub const DEV_CERT_FILE: &str = "cert.pem";
/// Development private key (PEM), relative to [`DEV_DIR`].
pub const DEV_KEY_FILE: &str = "key.pem";
/// Development API keys in clear (TOML: admin, client, monitor), relative to [`DEV_DIR`].
pub const DEV_API_KEYS_FILE: &str = "api-keys.toml";

/// Why credentials could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read or written.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file has unusable content.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// The development API keys, in clear.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct DevApiKeys {
    /// Admin role.
    pub admin: String,
    /// Client role.
    pub client: String,
    /// Monitor role.
    pub monitor: String,
}

/// Everything the server needs to authenticate itself and its clients.
pub struct Credentials {
    /// Certificate chain to present.
    pub cert_chain: Vec<CertificateDer<'static>>,
    /// Its private key.
    pub key: PrivateKeyDer<'static>,
    /// The certificate PEM (what clients trust for a development certificate).
    pub cert_pem: String,
    /// Whether the certificate is a development one.
    pub has_dev_certificate: bool,
    /// Development keys in clear, when no keys are configured.
    pub dev_api_keys: Option<DevApiKeys>,
    /// SHA-256 of every accepted key and its role.
    pub keys: ApiKeys,
}

/// Accepted API keys by hash.
#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Vec<([u8; 32], Role)>);

impl ApiKeys {
    /// The role of `key`, if it is accepted. Every configured hash is compared in full, in
    /// constant time, whatever matches: how long a refusal takes says nothing about the keys.
    pub fn role_of(&self, key: &str) -> Option<Role> {
        let digest = sha256(key);
        let mut found = None;
        for (accepted, role) in &self.0 {
            if constant_time_eq(accepted, &digest) {
                found = Some(*role);
            }
        }
        found
    }

    fn accept(&mut self, digest: [u8; 32], role: Role) {
        self.0.retain(|(accepted, _)| *accepted != digest);
        self.0.push((digest, role));
    }
}

/// Whether two digests are equal, looking at every byte whatever the answer.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// SHA-256 of an API key. Keys are long random strings, so a plain hash is enough.
pub fn sha256(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Credentials {
    /// Whether any development credential is in use.
    pub fn is_development(&self) -> bool {
        self.has_dev_certificate || self.dev_api_keys.is_some()
    }

    /// Loads configured credentials, creating development ones under `data_dir` where none are
    /// configured.
    pub fn prepare(config: &Config) -> Result<Credentials, CredentialsError> {
        let dev_dir = config.storage.data_dir.join(DEV_DIR);
        let (cert_path, key_path, has_dev_certificate) = match &config.server.tls {
            Some(files) => (files.cert.clone(), files.key.clone(), false),
            None => {
                let (cert, key) = (dev_dir.join(DEV_CERT_FILE), dev_dir.join(DEV_KEY_FILE));
                if !cert.exists() || !key.exists() {
                    create_dev_certificate(&dev_dir, &cert, &key)?;
                }
                (cert, key, true)
            }
        };
        let cert_pem = read(&cert_path)?;
        let cert_chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&cert_path, format!("not a PEM certificate chain: {e}")))?;
        if cert_chain.is_empty() {
            return Err(invalid(&cert_path, "holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(read(&key_path)?.as_bytes())
            .map_err(|e| invalid(&key_path, format!("not a PEM private key: {e}")))?;

        let mut keys = ApiKeys::default();
        let dev_api_keys = if config.auth.keys.is_empty() {
            let dev = dev_api_keys(&dev_dir)?;
            keys.accept(sha256(&dev.admin), Role::Admin);
            keys.accept(sha256(&dev.client), Role::Client);
            keys.accept(sha256(&dev.monitor), Role::Monitor);
            Some(dev)
        } else {
            for entry in &config.auth.keys {
                keys.accept(entry.sha256, entry.role);
            }
            None
        };
        Ok(Credentials {
            cert_chain,
            key,
            cert_pem,
            has_dev_certificate,
            dev_api_keys,
            keys,
        })
    }
}

fn create_dev_certificate(dev_dir: &Path, cert: &Path, key: &Path) -> Result<(), CredentialsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated =
        rcgen::generate_simple_self_signed(names).map_err(|e| invalid(cert, e.to_string()))?;
    write_private(dev_dir, key, &generated.signing_key.serialize_pem())?;
    write_private(dev_dir, cert, &generated.cert.pem())?;
    tracing::warn!(path = %cert.display(), "created a development TLS certificate (loopback only)");
    Ok(())
}

fn dev_api_keys(dev_dir: &Path) -> Result<DevApiKeys, CredentialsError> {
    let path = dev_dir.join(DEV_API_KEYS_FILE);
    if !path.exists() {
        let text = format!(
            "# Development API keys created by tallyd (loopback only). The `tally` CLI reads this file.\n\
             admin = \"{}\"\nclient = \"{}\"\nmonitor = \"{}\"\n",
            random_key("admin")?,
            random_key("client")?,
            random_key("monitor")?
        );
        write_private(dev_dir, &path, &text)?;
        tracing::warn!(path = %path.display(), "created development API keys (loopback only)");
    }
    toml::from_str(&read(&path)?).map_err(|e| invalid(&path, e.to_string()))
}

fn random_key(role: &str) -> Result<String, CredentialsError> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes).map_err(|e| CredentialsError::Invalid {
        path: PathBuf::from("(random source)"),
        reason: e.to_string(),
    })?;
    // `ck_` because Commet's SDKs refuse keys without it; keys made before are still read.
    Ok(format!("ck_tally_{role}_{}", hex::encode(bytes)))
}

fn write_private(dir: &Path, path: &Path, text: &str) -> Result<(), CredentialsError> {
    std::fs::create_dir_all(dir).map_err(|source| CredentialsError::Io {
        action: "creating",
        path: dir.into(),
        source,
    })?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let io = |source| CredentialsError::Io {
        action: "writing",
        path: path.into(),
        source,
    };
    let mut file = options.open(path).map_err(io)?;
    std::io::Write::write_all(&mut file, text.as_bytes()).map_err(io)
}

fn read(path: &Path) -> Result<String, CredentialsError> {
    std::fs::read_to_string(path).map_err(|source| CredentialsError::Io {
        action: "reading",
        path: path.into(),
        source,
    })
}

fn invalid(path: &Path, reason: String) -> CredentialsError {
    CredentialsError::Invalid {
        path: path.into(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_recognised_by_their_hash_and_nothing_else() {
        let mut keys = ApiKeys::default();
        keys.accept(sha256("admin-key"), Role::Admin);
        keys.accept(sha256("client-key"), Role::Client);
        assert_eq!(keys.role_of("admin-key"), Some(Role::Admin));
        assert_eq!(keys.role_of("client-key"), Some(Role::Client));
        assert_eq!(keys.role_of("client-kez"), None);
        assert_eq!(keys.role_of(""), None);
        // A key configured twice keeps its last role, once.
        keys.accept(sha256("client-key"), Role::Monitor);
        assert_eq!(keys.role_of("client-key"), Some(Role::Monitor));
        assert_eq!(keys.0.len(), 2);
    }

    #[test]
    fn digests_differing_in_any_byte_are_unequal() {
        let a = sha256("k");
        for i in 0..32 {
            let mut b = a;
            b[i] ^= 0x80;
            assert!(!constant_time_eq(&a, &b), "byte {i}");
        }
        assert!(constant_time_eq(&a, &a));
    }
}
