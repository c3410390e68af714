//! TLS for the HTTP listener and the RTSPS listener (rustls, with ring as the only
//! crypto provider): loads a PEM certificate chain and private key, hands them to
//! rustls through a resolver whose pair can be swapped while the server runs, and
//! swaps it on SIGHUP or when either file's modification time changes.
//!
//! - **Files** (RFC 7468 PEM): the certificate file holds the server's certificate
//!   first, then any intermediates; the key file holds one private key, PKCS#8
//!   (`BEGIN PRIVATE KEY`), PKCS#1 (`BEGIN RSA PRIVATE KEY`) or SEC1
//!   (`BEGIN EC PRIVATE KEY`). The key must belong to the first certificate.
//! - **Reload**: a new pair is loaded whole and checked (parses, key fits the
//!   certificate) before it replaces the old one; new handshakes use it, connections
//!   already open keep the one they were made with. A pair that does not load is
//!   logged at error level and the old one stays in service.
//! - **Protocols**: TLS 1.3 and 1.2 (RFC 8446, RFC 5246) with rustls's safe defaults;
//!   ALPN (RFC 7301) is set per listener by [`server_config`].
//!
//! Never logs or returns key material: errors about the key file name the file and
//! what is wrong with it, not its contents.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;

/// ALPN protocols of the HTTP listener, most preferred first.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// How often the certificate and key files are checked for changes.
pub const POLL_EVERY: Duration = Duration::from_secs(2);

/// Where the certificate chain and the private key are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Why a certificate/key pair could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read TLS {what} file {}: {source}", path.display())]
    Read {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS certificate file {} is not valid PEM: {detail}", path.display())]
    CertificatePem { path: PathBuf, detail: String },
    #[error("TLS certificate file {} holds no certificate", path.display())]
    NoCertificate { path: PathBuf },
    /// Deliberately without the parser's detail, which may quote the file.
    #[error(
        "TLS key file {} holds no readable private key (PEM PKCS#8, PKCS#1 or SEC1)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "TLS key {} and certificate {} cannot be used together: {reason}",
        key.display(),
        cert.display()
    )]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and checks the pair in `files` (blocking file I/O).
pub fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, TlsError> {
    let cert_pem = read("certificate", &files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::CertificatePem {
            path: files.cert.clone(),
            detail: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: files.cert.clone(),
        });
    }
    let key_pem = read("key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| TlsError::NoKey {
        path: files.key.clone(),
    })?;
    // Parses the key, parses the leaf certificate and compares their public keys.
    let certified =
        CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Unusable {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        })?;
    Ok(Arc::new(certified))
}

/// The pair new handshakes get: read on every ClientHello, replaced on reload.
pub struct CertResolver {
    // A std lock: held only to clone or swap an Arc, never across an await.
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver").finish_non_exhaustive()
    }
}

impl CertResolver {
    pub fn new(pair: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(pair),
        }
    }

    /// The pair in service.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn replace(&self, pair: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = pair;
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A rustls server configuration serving `resolver`'s pair, offering `alpn`.
pub fn server_config(
    resolver: Arc<CertResolver>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The files' modification times, as last seen (`None`: unreadable).
type Stamps = (Option<SystemTime>, Option<SystemTime>);

fn stamps(files: &TlsFiles) -> Stamps {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(&files.cert), mtime(&files.key))
}

/// Keeps [`CertResolver`] up to date with the files.
#[derive(Debug)]
pub struct CertReloader {
    files: TlsFiles,
    resolver: Arc<CertResolver>,
    /// The stamps of the last attempt, successful or not: a broken pair is retried
    /// when a file changes again or on SIGHUP, not on every poll.
    seen: Stamps,
}

impl CertReloader {
    /// Loads the pair in `files`; fails when it does not load (blocking file I/O).
    pub fn new(files: TlsFiles) -> Result<Self, TlsError> {
        let seen = stamps(&files);
        let resolver = Arc::new(CertResolver::new(load(&files)?));
        Ok(Self {
            files,
            resolver,
            seen,
        })
    }

    pub fn resolver(&self) -> Arc<CertResolver> {
        self.resolver.clone()
    }

    /// Loads the pair again and puts it in service if it loads; `why` is logged.
    /// Returns whether the pair was replaced (blocking file I/O).
    pub fn reload(&mut self, why: &str) -> bool {
        self.seen = stamps(&self.files);
        match load(&self.files) {
            Ok(pair) => {
                self.resolver.replace(pair);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    why,
                    "TLS certificate reloaded; new connections use it"
                );
                true
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    why,
                    "TLS certificate reload failed; the previous certificate stays in use"
                );
                false
            }
        }
    }

    /// Reloads if either file's modification time changed since the last attempt.
    pub fn poll(&mut self) -> bool {
        if stamps(&self.files) == self.seen {
            return false;
        }
        self.reload("file changed")
    }

    /// Reloads on SIGHUP and when the files change (checked every [`POLL_EVERY`]),
    /// until the returned task is dropped. SIGHUP is taken over at once (from then on
    /// it no longer ends the process), before the task first runs.
    pub fn watch(self) -> impl std::future::Future<Output = ()> + Send {
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let hangup = match hangup {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGHUP; TLS reload by file change only");
                None
            }
        };
        self.run(hangup)
    }

    async fn run(self, mut hangup: Option<tokio::signal::unix::Signal>) {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reloader = Some(self);
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let signalled = tokio::select! {
                got = hup => got.is_some(),
                _ = tick.tick() => false,
            };
            let Some(mut r) = reloader.take() else { return };
            // File reads stay off the async workers.
            let back = tokio::task::spawn_blocking(move || {
                if signalled {
                    r.reload("SIGHUP");
                } else {
                    r.poll();
                }
                r
            })
            .await;
            match back {
                Ok(r) => reloader = Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload task failed; reload stopped");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A_PEM: &str = include_str!("testdata/a.pem");
    const A_SEC1: &str = include_str!("testdata/a.key");
    const A_PKCS8: &str = include_str!("testdata/a.pk8.key");
    const B_PEM: &str = include_str!("testdata/b.pem");
    const B_KEY: &str = include_str!("testdata/b.key");
    const RSA_PEM: &str = include_str!("testdata/rsa.pem");
    const RSA_PKCS1: &str = include_str!("testdata/rsa.key");

    fn write(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, cert).unwrap();
        std::fs::write(&files.key, key).unwrap();
        files
    }

    /// Moves both files' modification times forward, as a rewrite a while later
    /// would, so the test does not depend on the file system's time resolution.
    fn touch_later(files: &TlsFiles, secs: u64) {
        let t = SystemTime::now() + Duration::from_secs(secs);
        for p in [&files.cert, &files.key] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
    }

    fn leaf(pair: &CertifiedKey) -> Vec<u8> {
        pair.end_entity_cert().unwrap().to_vec()
    }

    fn der_of(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn keys_load_in_all_three_encodings() {
        let dir = tempfile::tempdir().unwrap();
        for (cert, key) in [(A_PEM, A_SEC1), (A_PEM, A_PKCS8), (RSA_PEM, RSA_PKCS1)] {
            let pair = load(&write(dir.path(), cert, key)).unwrap();
            assert_eq!(leaf(&pair), der_of(cert));
        }
    }

    #[test]
    fn a_chain_keeps_its_order() {
        let dir = tempfile::tempdir().unwrap();
        let pair = load(&write(dir.path(), &format!("{A_PEM}{RSA_PEM}"), A_SEC1)).unwrap();
        assert_eq!(pair.cert.len(), 2);
        assert_eq!(leaf(&pair), der_of(A_PEM));
    }

    #[test]
    fn bad_pairs_are_refused_without_quoting_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let err = load(&write(dir.path(), A_PEM, B_KEY)).unwrap_err();
        assert!(matches!(err, TlsError::Unusable { .. }), "{err}");
        let err = load(&write(dir.path(), "", A_SEC1)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(load(&write(dir.path(), garbage, A_SEC1)).is_err());
        let err = load(&write(dir.path(), A_PEM, A_PEM)).unwrap_err();
        assert!(matches!(err, TlsError::NoKey { .. }), "{err}");
        // A truncated key: the message names the file and nothing of its contents.
        let half = &A_PKCS8[..A_PKCS8.len() / 2];
        let err = load(&write(dir.path(), A_PEM, half)).unwrap_err();
        let text = err.to_string();
        let body_line = A_PKCS8.lines().nth(1).unwrap();
        assert!(!text.contains(&body_line[..16]), "{text}");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: dir.path().join("nope.key"),
        };
        assert!(matches!(
            load(&missing).unwrap_err(),
            TlsError::Read {
                what: "certificate",
                ..
            }
        ));
    }

    #[test]
    fn changed_files_are_picked_up_and_broken_ones_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let files = write(dir.path(), A_PEM, A_SEC1);
        let mut reloader = CertReloader::new(files.clone()).unwrap();
        let resolver = reloader.resolver();
        let before = resolver.current();
        assert!(!reloader.poll(), "nothing changed");

        write(dir.path(), B_PEM, B_KEY);
        touch_later(&files, 10);
        assert!(reloader.poll());
        assert_eq!(leaf(&resolver.current()), der_of(B_PEM));
        // A connection made before keeps its own pair.
        assert_eq!(leaf(&before), der_of(A_PEM));
        assert!(!reloader.poll(), "same stamps: not loaded again");

        // Half-written: the new certificate with the old key.
        write(dir.path(), A_PEM, B_KEY);
        touch_later(&files, 20);
        assert!(!reloader.poll());
        assert_eq!(leaf(&resolver.current()), der_of(B_PEM));
        // The key lands: the next change completes the pair.
        write(dir.path(), A_PEM, A_SEC1);
        touch_later(&files, 30);
        assert!(reloader.poll());
        assert_eq!(leaf(&resolver.current()), der_of(A_PEM));

        // Deleted files: the pair in service stays.
        std::fs::remove_file(&files.cert).unwrap();
        assert!(!reloader.poll());
        assert!(!reloader.reload("SIGHUP"));
        assert_eq!(leaf(&resolver.current()), der_of(A_PEM));
    }

    #[test]
    fn configurations_offer_the_given_protocols() {
        let dir = tempfile::tempdir().unwrap();
        let reloader = CertReloader::new(write(dir.path(), A_PEM, A_SEC1)).unwrap();
        let config = server_config(reloader.resolver(), HTTP_ALPN).unwrap();
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(
            server_config(reloader.resolver(), &[])
                .unwrap()
                .alpn_protocols
                .is_empty()
        );
    }
}
