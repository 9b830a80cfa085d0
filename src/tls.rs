//! TLS: the certificate and key (loaded from PEM files, or a self-signed development
//! certificate generated into `certs/`), and the rustls configurations of the HTTP/3
//! and TCP listeners. One crypto provider only, ring: with two enabled,
//! `ServerConfig::builder()` cannot choose and panics.
//!
//! Both listeners present the certificate through one [`CertificateResolver`], which
//! [`watch_files`] swaps when the files change (an ACME renewal): new handshakes get the
//! new certificate, connections already open keep theirs and are never dropped.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file held no certificate or no private key.
    #[error("{path}: no {what} found in PEM")]
    Missing {
        /// The file.
        path: PathBuf,
        /// Certificate or key.
        what: &'static str,
    },
    /// The development certificate could not be generated.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// A PEM file could not be read as PEM.
    #[error("{path}: {error}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: rustls::pki_types::pem::Error,
    },
    /// The certificate is not an X.509 certificate.
    #[error("{path}: not an X.509 certificate: {reason}")]
    Certificate {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
}

/// A certificate chain and its key.
#[derive(Debug)]
pub struct TlsMaterial {
    /// The chain, leaf first.
    pub certs: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
    /// base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
    /// Where the certificate came from.
    pub cert_path: PathBuf,
    /// Where its key came from.
    pub key_path: PathBuf,
    /// SHA-256 of both files' bytes as they were read: a watcher compares the files
    /// with this to see a renewal.
    pub files_sha256: [u8; 32],
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        Self {
            certs: self.certs.clone(),
            key: self.key.clone_key(),
            spki_sha256: self.spki_sha256.clone(),
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            files_sha256: self.files_sha256,
        }
    }
}

const CERT_FILE: &str = "cert.pem";
const KEY_FILE: &str = "key.pem";

/// Loads `cert` and `key` when both are given; otherwise uses (creating it on first
/// use) a self-signed certificate for localhost, 127.0.0.1 and ::1 in `dir`.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    dir: &Path,
) -> Result<TlsMaterial, TlsError> {
    let (cert_path, key_path) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_owned(), k.to_owned()),
        _ => {
            let (c, k) = (dir.join(CERT_FILE), dir.join(KEY_FILE));
            if !c.exists() || !k.exists() {
                generate(dir, &c, &k)?;
            }
            (c, k)
        }
    };
    load(&cert_path, &key_path)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

fn generate(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // Only the server's user may list where its key is.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
        // A directory that was there already keeps its mode otherwise.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    write_new(cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    write_new(
        key_path,
        certified.key_pair.serialize_pem().as_bytes(),
        0o600,
    )?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok(())
}

/// Writes `bytes` to a new file at `path` with `mode`, replacing whatever was there
/// without following it: a symlink planted at the path is removed, not written
/// through, and the file never exists with wider permissions than `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(io(path)(error));
        }
        _ => {}
    }
    // O_CREAT | O_EXCL: fails on anything at the path, a symlink included.
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes).map_err(io(path))
}

/// A warning for a private key file others may read, if it is one.
fn key_exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!(
            "private key {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        )
    })
}

fn load(cert_path: &Path, key_path: &Path) -> Result<TlsMaterial, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(io(cert_path))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(pem(cert_path))?;
    let leaf = certs.first().ok_or_else(|| TlsError::Missing {
        path: cert_path.to_owned(),
        what: "certificate",
    })?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(leaf).map_err(|e| TlsError::Certificate {
            path: cert_path.to_owned(),
            reason: e.to_string(),
        })?;
    // RFC 5280 4.1.2.7, whole (tag and length included): what Chromium hashes.
    let spki = parsed.tbs_certificate.subject_pki.raw;
    let spki_sha256 = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(spki));
    if let Some(warning) = key_exposure(key_path) {
        tracing::warn!("{warning}");
    }
    let key_pem = std::fs::read(key_path).map_err(io(key_path))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|error| match error {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Missing {
            path: key_path.to_owned(),
            what: "private key",
        },
        error => TlsError::Pem {
            path: key_path.to_owned(),
            error,
        },
    })?;
    Ok(TlsMaterial {
        certs,
        key,
        spki_sha256,
        cert_path: cert_path.to_owned(),
        key_path: key_path.to_owned(),
        files_sha256: files_sha256(&cert_pem, &key_pem),
    })
}

fn files_sha256(cert_pem: &[u8], key_pem: &[u8]) -> [u8; 32] {
    let mut digest = Sha256::new();
    digest.update(cert_pem);
    digest.update(key_pem);
    digest.finalize().into()
}

/// What the certificate's and key's files hold now, as [`TlsMaterial::files_sha256`];
/// `None` while one cannot be read.
fn read_files_sha256(cert_path: &Path, key_path: &Path) -> Option<[u8; 32]> {
    let cert_pem = std::fs::read(cert_path).ok()?;
    let key_pem = std::fs::read(key_path).ok()?;
    Some(files_sha256(&cert_pem, &key_pem))
}

fn pem(path: &Path) -> impl FnOnce(rustls::pki_types::pem::Error) -> TlsError + '_ {
    move |error| TlsError::Pem {
        path: path.to_owned(),
        error,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificate both listeners present, replaced in place when its files change.
#[derive(Debug)]
pub struct CertificateResolver {
    current: RwLock<(Arc<rustls::sign::CertifiedKey>, String)>,
}

fn certified_key(material: &TlsMaterial) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let key = provider()
        .key_provider
        .load_private_key(material.key.clone_key())?;
    let certified = rustls::sign::CertifiedKey::new(material.certs.clone(), key);
    // A renewal caught half-written (the new certificate, the old key) is refused here
    // rather than served to every new client.
    certified.keys_match()?;
    Ok(Arc::new(certified))
}

impl CertificateResolver {
    /// Presents `material`.
    pub fn new(material: &TlsMaterial) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            current: RwLock::new((certified_key(material)?, material.spki_sha256.clone())),
        }))
    }

    /// Presents `material` from the next handshake on.
    pub fn replace(&self, material: &TlsMaterial) -> Result<(), TlsError> {
        let key = certified_key(material)?;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) =
            (key, material.spki_sha256.clone());
        Ok(())
    }

    /// The SPKI SHA-256 (base64) of the certificate presented now.
    pub fn spki_sha256(&self) -> String {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .1
            .clone()
    }
}

impl rustls::server::ResolvesServerCert for CertificateResolver {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0
                .clone(),
        )
    }
}

/// Watches `material`'s files every `period` and presents them through `resolver` when
/// their bytes change (and when `nudge` fires: SIGHUP). A file that does not load (half
/// written, a key that does not match) is logged and the certificate in use stays; it
/// is tried again at the next change. Compared with the bytes `material` was loaded
/// from, so a renewal made while the server was starting is seen too. Runs until the
/// resolver's last user is gone.
pub async fn watch_files(
    resolver: std::sync::Weak<CertificateResolver>,
    material: TlsMaterial,
    period: Duration,
    nudge: Arc<tokio::sync::Notify>,
) {
    let (cert, key) = (material.cert_path, material.key_path);
    let mut seen = Some(material.files_sha256);
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = nudge.notified() => seen = None,
        }
        let Some(resolver) = resolver.upgrade() else {
            return;
        };
        let now = read_files_sha256(&cert, &key);
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        match load(&cert, &key).and_then(|m| resolver.replace(&m).map(|()| m)) {
            Ok(loaded) => tracing::info!(
                cert = %cert.display(),
                spki_sha256 = %loaded.spki_sha256,
                "certificate reloaded: new connections get it"
            ),
            Err(error) => {
                tracing::warn!(%error, "certificate not reloaded: the one in use stays");
            }
        }
    }
}

/// The rustls server configuration for `alpn` protocols; TLS 1.3 only when `quic`.
pub fn server_config(
    material: &TlsMaterial,
    alpn: &[&[u8]],
    quic: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    server_config_with(CertificateResolver::new(material)?, alpn, quic)
}

/// The same, presenting whatever `resolver` presents at each handshake.
pub fn server_config_with(
    resolver: Arc<CertificateResolver>,
    alpn: &[&[u8]],
    quic: bool,
) -> Result<rustls::ServerConfig, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = if quic {
        &[&rustls::version::TLS13]
    } else {
        rustls::DEFAULT_VERSIONS
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    if quic {
        // 0-RTT would let a request replay; playlists and media are idempotent GETs, but
        // QUIC needs max_early_data_size 0 or u32::MAX, and 0 keeps it simple.
        config.max_early_data_size = 0;
    }
    Ok(config)
}

/// A rustls client configuration that trusts exactly `material`'s certificate (tests,
/// the benchmark client).
pub fn client_config_trusting(
    material: &TlsMaterial,
    alpn: &[&[u8]],
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in &material.certs {
        roots.add(cert.clone())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A rustls client configuration that trusts the certificates in the PEM file `ca`
/// (a self-signed server certificate is its own CA).
pub fn client_config_from_pem(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let text = std::fs::read(ca).map_err(io(ca))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&text) {
        roots.add(cert.map_err(self::pem(ca))?)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Missing {
            path: ca.to_owned(),
            what: "certificate",
        });
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads_and_its_spki_hash_matches_the_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let material = load_or_generate(None, None, dir.path()).expect("generates");
        assert!(dir.path().join(CERT_FILE).exists());
        let certified_again = load_or_generate(None, None, dir.path()).expect("reloads");
        assert_eq!(
            material.spki_sha256, certified_again.spki_sha256,
            "reused, not regenerated"
        );
        // The SPKI found by walking the certificate is the key pair's own.
        let key_pem = std::fs::read_to_string(dir.path().join(KEY_FILE)).expect("key");
        let key_pair = rcgen::KeyPair::from_pem(&key_pem).expect("key parses");
        let expected = base64::engine::general_purpose::STANDARD
            .encode(Sha256::digest(key_pair.public_key_der()));
        assert_eq!(material.spki_sha256, expected);
        server_config(&material, &[b"h3"], true).expect("QUIC config");
        server_config(&material, &[b"h2", b"http/1.1"], false).expect("TCP config");
    }

    #[test]
    fn missing_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = load_or_generate(
            Some(&dir.path().join("nope.pem")),
            Some(&dir.path().join("k.pem")),
            dir.path(),
        )
        .expect_err("missing");
        assert!(err.to_string().contains("nope.pem"), "{err}");
    }

    /// Issue 11.12: the generated key was written with the umask's mode (0644) and
    /// through any symlink at its path.
    #[test]
    fn the_generated_key_is_private_and_no_symlink_is_followed() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).expect("dir");
        // Someone plants a link where the key will go, to a file they want written.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").expect("victim");
        std::os::unix::fs::symlink(&victim, certs.join(KEY_FILE)).expect("symlink");
        load_or_generate(None, None, &certs).expect("generates");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "untouched"
        );
        let key = certs.join(KEY_FILE);
        assert!(
            !key.symlink_metadata()
                .expect("key")
                .file_type()
                .is_symlink()
        );
        let mode = key.metadata().expect("key").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "key mode {mode:o}");
        assert_eq!(key_exposure(&key), None);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(key_exposure(&key).expect("a warning").contains("chmod 600"));
    }
}
