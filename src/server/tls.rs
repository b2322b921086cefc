//! TLS for the server: a rustls configuration (the ring provider, ALPN `h2` and
//! `http/1.1`, optional client-certificate verification for mutual TLS) loaded
//! from PEM files and kept current. When a file changes the configuration is
//! rebuilt and swapped in for new handshakes; connections already open keep the
//! one they started with. At startup a file that does not load is an error
//! naming it; after startup a bad edit is logged and the last good
//! configuration stays.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::watch;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};

use crate::Error;

/// How long file events settle before a reload (an editor, or a cert manager
/// writing the key and the chain one after the other).
const SETTLE: Duration = Duration::from_millis(200);

/// Certificate files above this size are refused (a PEM chain is a few KiB).
const MAX_PEM: u64 = 1024 * 1024;

/// The PEM files TLS is served from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (leaf first).
    pub cert: PathBuf,
    /// The server's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates that client certificates must chain to. When set,
    /// clients must present a valid certificate (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// How certificate reloads went since startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsReloads {
    /// Configurations loaded after startup and now in use (the last one serves).
    pub loaded: u64,
    /// Reloads that failed (the previous configuration stayed).
    pub failed: u64,
    /// Why the last failed reload failed.
    pub last_error: Option<String>,
}

/// The live TLS configuration, and the watcher that keeps it current.
pub(crate) struct TlsConfig {
    /// Swapped by the watcher; each handshake loads the current one.
    current: Arc<ArcSwap<ServerConfig>>,
    reloads: watch::Receiver<TlsReloads>,
    /// Stops watching when dropped (with the listener).
    _watcher: Option<Debouncer>,
}

type Debouncer = notify_debouncer_full::Debouncer<notify::RecommendedWatcher, notify_debouncer_full::RecommendedCache>;

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").field("reloads", &*self.reloads.borrow()).finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads the files (an error names the file at fault) and watches them.
    pub(crate) fn load(files: TlsFiles) -> Result<Self, Error> {
        let (config, contents) = build(&files)?;
        let current = Arc::new(ArcSwap::from_pointee(config));
        let (tx, reloads) = watch::channel(TlsReloads::default());
        let watcher = match watch_files(files, contents, current.clone(), tx) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the TLS files; certificate changes need a restart");
                None
            }
        };
        Ok(TlsConfig { current, reloads, _watcher: watcher })
    }

    /// The configuration new handshakes use.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reload outcomes, for tests and monitoring.
    pub(crate) fn reloads(&self) -> watch::Receiver<TlsReloads> {
        self.reloads.clone()
    }
}

/// The files' bytes as last loaded: a reload happens only when they differ.
type Contents = Vec<Vec<u8>>;

fn watch_files(
    files: TlsFiles,
    mut contents: Contents,
    current: Arc<ArcSwap<ServerConfig>>,
    tx: watch::Sender<TlsReloads>,
) -> Result<Debouncer, notify::Error> {
    let paths: Vec<PathBuf> =
        [Some(&files.cert), Some(&files.key), files.client_ca.as_ref()].into_iter().flatten().cloned().collect();
    let mut debouncer = new_debouncer(SETTLE, None, move |res: DebounceEventResult| {
        if res.is_err() {
            return;
        }
        // Any event in the files' directories: compare the bytes, so unrelated
        // files, touches and symlink swaps (Kubernetes secrets) all do the right thing.
        match read_all(&files) {
            Ok(now) if now == contents => {}
            Ok(now) => match build_from(&files, &now) {
                Ok(config) => {
                    current.store(Arc::new(config));
                    contents = now;
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                    tx.send_modify(|r| r.loaded += 1);
                }
                Err(e) => fail(&tx, &e),
            },
            Err(e) => fail(&tx, &e),
        }
    })?;
    let mut dirs: Vec<&Path> =
        paths.iter().map(|p| p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))).collect();
    dirs.sort();
    dirs.dedup();
    for dir in dirs {
        debouncer.watch(dir, RecursiveMode::NonRecursive)?;
    }
    Ok(debouncer)
}

fn fail(tx: &watch::Sender<TlsReloads>, e: &Error) {
    tracing::warn!(error = %e, "TLS reload failed; keeping the previous certificate");
    tx.send_modify(|r| {
        r.failed += 1;
        r.last_error = Some(e.to_string());
    });
}

fn build(files: &TlsFiles) -> Result<(ServerConfig, Contents), Error> {
    let contents = read_all(files)?;
    let config = build_from(files, &contents)?;
    Ok((config, contents))
}

fn read_all(files: &TlsFiles) -> Result<Contents, Error> {
    let mut out = vec![read(&files.cert, "certificate")?, read(&files.key, "private key")?];
    if let Some(ca) = &files.client_ca {
        out.push(read(ca, "client CA")?);
    }
    Ok(out)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    let context = || format!("TLS {what} file {}", path.display());
    let meta = std::fs::metadata(path).map_err(|e| Error::io(context(), e))?;
    if meta.len() > MAX_PEM {
        return Err(Error::io(
            context(),
            invalid(format!("{} bytes is too large for PEM (limit {MAX_PEM})", meta.len())),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(context(), e))
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// Builds the rustls configuration from the files' bytes (`contents` in the
/// order of [`read_all`]).
fn build_from(files: &TlsFiles, contents: &Contents) -> Result<ServerConfig, Error> {
    let bad = |path: &Path, what: &str, message: String| {
        Error::io(format!("TLS {what} file {}", path.display()), invalid(message))
    };
    let certs = certificates(&contents[0]).map_err(|m| bad(&files.cert, "certificate", m))?;
    let key = PrivateKeyDer::from_pem_slice(&contents[1]).map_err(|e| {
        bad(
            &files.key,
            "private key",
            match e {
                pem::Error::NoItemsFound => {
                    "no private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY) in it".to_owned()
                }
                other => format!("not a PEM private key: {other}"),
            },
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::internal(format!("TLS setup: {e}")))?;
    let builder = match (&files.client_ca, contents.get(2)) {
        (Some(ca), Some(bytes)) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates(bytes).map_err(|m| bad(ca, "client CA", m))? {
                roots.add(cert).map_err(|e| bad(ca, "client CA", format!("not a usable CA certificate: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| bad(ca, "client CA", format!("cannot verify clients with it: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        bad(&files.key, "private key", format!("does not fit the certificate in {}: {e}", files.cert.display()))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Every certificate in a PEM file (at least one).
fn certificates(bytes: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (BEGIN CERTIFICATE) in it".to_owned());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles { cert: dir.join("cert.pem"), key: dir.join("key.pem"), client_ca: Some(dir.join("ca.pem")) }
    }

    /// Random and mangled PEM never panics: every outcome is an error naming a file.
    #[test]
    fn garbage_pem_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = files(dir.path());
        let mut rng = fastrand::Rng::with_seed(7);
        let header = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        for i in 0..300 {
            let mut junk: Vec<u8> = (0..rng.usize(0..400)).map(|_| rng.u8(..)).collect();
            if i % 3 == 0 {
                let mut with_header = header.clone();
                let alphabet = b"ABCDEFGHabcdefgh0123456789+/=\n-";
                with_header.extend(junk.iter().map(|b| alphabet[usize::from(*b) % alphabet.len()]));
                junk = with_header;
            }
            std::fs::write(&f.cert, &junk).unwrap();
            std::fs::write(&f.key, &junk).unwrap();
            std::fs::write(dir.path().join("ca.pem"), &junk).unwrap();
            let e = build(&f).expect_err("garbage is not a certificate");
            let shown = e.to_string();
            assert!(shown.contains("cert.pem") || shown.contains("key.pem"), "{shown}");
        }
    }

    #[test]
    fn a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = build(&files(dir.path())).unwrap_err().to_string();
        assert!(e.contains("TLS certificate file") && e.contains("cert.pem"), "{e}");
    }
}
