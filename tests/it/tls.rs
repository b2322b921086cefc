//! TLS and mutual TLS: certificates made with rcgen, served by `TlsListener`
//! (in process) and by the binary's `--tls-*` flags; clients in Rust (tonic,
//! raw rustls), Python grpcio and grpcurl. Certificate reload on file change
//! without dropping open connections; startup errors naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use prost_reflect::DynamicMessage;
use protoserve::{Call, Server, TlsFiles, TlsListener};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use crate::harness::*;

/// A CA and what it signed, as PEM files in a temporary directory.
pub(crate) struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    pub(crate) fn new(name: &str) -> Pki {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, issuer: Issuer::new(params, key) }
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Signs a certificate for `sans`; writes `<name>.pem` and `<name>.key`.
    pub(crate) fn issue(&self, name: &str, sans: &[&str]) -> rcgen::Certificate {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
        cert
    }

    pub(crate) fn server_files(&self, client_ca: Option<PathBuf>) -> TlsFiles {
        TlsFiles { cert: self.path("server.pem"), key: self.path("server.key"), client_ca }
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }
}

pub(crate) const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

fn note(pool: &prost_reflect::DescriptorPool, text: &str) -> DynamicMessage {
    DynamicMessage::deserialize(pool.get_message_by_name("kinds.Note").unwrap(), json!({"text": text})).unwrap()
}

/// A server on TLS: `Say` answers how many client certificates it saw;
/// `Repeat` sends one reply per tick.
struct TlsServer {
    addr: std::net::SocketAddr,
    pool: prost_reflect::DescriptorPool,
    reloads: tokio::sync::watch::Receiver<protoserve::TlsReloads>,
    ticks: mpsc::UnboundedSender<()>,
    _stop: oneshot::Sender<()>,
}

async fn start(files: TlsFiles) -> TlsServer {
    let (ticks, rx) = mpsc::unbounded_channel::<()>();
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let server = Server::builder()
        .schema_dir(kinds_dir())
        .unary("kinds.Echo/Say", |call: Call<DynamicMessage>| async move {
            let mut out = call.reply();
            let certs = call.peer.certificates().len();
            out.set_field_by_name("text", prost_reflect::Value::String(format!("client certificates: {certs}")));
            Ok(out)
        })
        .server_streaming("kinds.Echo/Repeat", move |call: Call<DynamicMessage>| {
            let rx = rx.clone();
            async move {
                let rx = rx.lock().await.take().expect("one Repeat call per test");
                let reply = call.reply();
                let s = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(move |()| Ok(reply.clone()));
                let s: protoserve::ReplyStream = Box::pin(s);
                Ok(s)
            }
        })
        .build()
        .unwrap();
    let pool = server.snapshot().schema().pool().clone();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let tls = TlsListener::new(tcp, files).expect("valid TLS files");
    let reloads = tls.reloads();
    let (stop, rx) = oneshot::channel();
    tokio::spawn(server.serve(tls, async {
        let _ = rx.await;
    }));
    TlsServer { addr, pool, reloads, ticks, _stop: stop }
}

use futures_util::StreamExt as _;

async fn channel(addr: std::net::SocketAddr, tls: ClientTlsConfig) -> Result<tonic::transport::Channel, String> {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls.domain_name("localhost"))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

fn client(srv: &TlsServer, ch: tonic::transport::Channel) -> Client {
    Client { grpc: tonic::client::Grpc::new(ch), pool: srv.pool.clone() }
}

/// The certificate a fresh TLS handshake is answered with, and the ALPN chosen.
async fn presented(addr: std::net::SocketAddr, ca_pem: &str) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("handshake");
    let session = tls.get_ref().1;
    (session.peer_certificates().unwrap()[0].to_vec(), session.alpn_protocol().map(<[u8]>::to_vec))
}

use rustls::pki_types::pem::PemObject as _;

#[tokio::test]
async fn tls_serves_grpc_over_alpn_h2_and_reloads_certificates_without_dropping_connections() {
    let pki = Pki::new("test CA");
    let first = pki.issue("server", SERVER_NAMES);
    let mut srv = start(pki.server_files(None)).await;

    let (cert, alpn) = presented(srv.addr, &pki.ca_pem()).await;
    assert_eq!(cert, first.der().to_vec());
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));

    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pki.ca_pem()));
    let mut c = client(&srv, channel(srv.addr, tls).await.unwrap());
    let got = c.unary("/kinds.Echo/Say", note(&srv.pool, "x")).await.unwrap();
    assert_eq!(get_str(&got, "text"), "client certificates: 0");
    // A stream opened before the reload.
    let mut stream = c.server_stream_open("/kinds.Echo/Repeat", note(&srv.pool, "x")).await.unwrap();
    srv.ticks.send(()).unwrap();
    assert!(stream.message().await.unwrap().is_some());

    // New certificate and key on disk: new handshakes get it.
    let second = pki.issue("server", SERVER_NAMES);
    tokio::time::timeout(Duration::from_secs(20), srv.reloads.wait_for(|r| r.loaded >= 1))
        .await
        .expect("the certificate change was picked up")
        .unwrap();
    let (cert, _) = presented(srv.addr, &pki.ca_pem()).await;
    assert_eq!(cert, second.der().to_vec());
    // The open connection and its stream keep going.
    srv.ticks.send(()).unwrap();
    assert!(stream.message().await.unwrap().is_some());
    let got = c.unary("/kinds.Echo/Say", note(&srv.pool, "y")).await.unwrap();
    assert_eq!(get_str(&got, "text"), "client certificates: 0");

    // A broken edit is refused and the last good certificate stays.
    let failed = srv.reloads.borrow().failed;
    std::fs::write(pki.path("server.pem"), "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    tokio::time::timeout(Duration::from_secs(20), srv.reloads.wait_for(|r| r.failed > failed))
        .await
        .expect("the broken certificate was noticed")
        .unwrap();
    let last_error = srv.reloads.borrow().last_error.clone().unwrap();
    assert!(last_error.contains("TLS certificate file") && last_error.contains("server.pem"), "{last_error}");
    let (cert, _) = presented(srv.addr, &pki.ca_pem()).await;
    assert_eq!(cert, second.der().to_vec());
}

#[tokio::test]
async fn mutual_tls_requires_a_client_certificate_signed_by_the_client_ca() {
    let pki = Pki::new("test CA");
    pki.issue("server", SERVER_NAMES);
    pki.issue("client", &["client.test"]);
    let stranger = Pki::new("another CA");
    stranger.issue("client", &["client.test"]);
    let srv = start(pki.server_files(Some(pki.path("ca.pem")))).await;
    let ca = Certificate::from_pem(pki.ca_pem());

    let identity = |p: &Pki| {
        Identity::from_pem(std::fs::read(p.path("client.pem")).unwrap(), std::fs::read(p.path("client.key")).unwrap())
    };
    // With a certificate from the client CA: served, and the handler sees it.
    let tls = ClientTlsConfig::new().ca_certificate(ca.clone()).identity(identity(&pki));
    let mut c = client(&srv, channel(srv.addr, tls).await.unwrap());
    let got = c.unary("/kinds.Echo/Say", note(&srv.pool, "x")).await.unwrap();
    assert_eq!(get_str(&got, "text"), "client certificates: 1");

    // Without one, or with one from another CA: refused.
    for tls in [
        ClientTlsConfig::new().ca_certificate(ca.clone()),
        ClientTlsConfig::new().ca_certificate(ca.clone()).identity(identity(&stranger)),
    ] {
        let refused = match channel(srv.addr, tls).await {
            Err(_) => true,
            Ok(ch) => client(&srv, ch).unary("/kinds.Echo/Say", note(&srv.pool, "x")).await.is_err(),
        };
        assert!(refused, "a client without a valid certificate was served");
    }
}

#[tokio::test]
async fn bad_or_mismatched_tls_files_are_errors_naming_the_file() {
    let pki = Pki::new("test CA");
    pki.issue("server", SERVER_NAMES);
    pki.issue("other", SERVER_NAMES);
    let tcp = || std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = |t: std::net::TcpListener| {
        t.set_nonblocking(true).unwrap();
        tokio::net::TcpListener::from_std(t).unwrap()
    };
    let err = |files: TlsFiles| TlsListener::new(listen(tcp()), files).unwrap_err().to_string();

    // The key of another certificate.
    let e = err(TlsFiles { cert: pki.path("server.pem"), key: pki.path("other.key"), client_ca: None });
    assert!(e.contains("other.key") && e.contains("server.pem"), "{e}");
    // A key where the certificate should be, and the reverse.
    let e = err(TlsFiles { cert: pki.path("server.key"), key: pki.path("server.key"), client_ca: None });
    assert!(e.contains("TLS certificate file") && e.contains("server.key") && e.contains("no certificate"), "{e}");
    let e = err(TlsFiles { cert: pki.path("server.pem"), key: pki.path("server.pem"), client_ca: None });
    assert!(e.contains("TLS private key file") && e.contains("no private key"), "{e}");
    // A missing client CA file.
    let e = err(pki.server_files(Some(pki.path("missing-ca.pem"))));
    assert!(e.contains("TLS client CA file") && e.contains("missing-ca.pem"), "{e}");

    // The binary: exit code 2 and the file named on stderr.
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .arg("serve")
        .arg(kinds_dir())
        .args(["--addr", "127.0.0.1:0", "--tls-key"])
        .arg(pki.path("other.key"))
        .arg("--tls-cert")
        .arg(pki.path("server.pem"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other.key"), "{stderr}");
    // --tls-key alone is a usage error.
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .arg("serve")
        .arg(kinds_dir())
        .arg("--tls-key")
        .arg(pki.path("server.key"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert"));
}

fn tls_args(pki: &Pki, client_ca: bool) -> Vec<String> {
    let mut args = vec![
        kinds_dir().display().to_string(),
        "--tls-cert".into(),
        pki.path("server.pem").display().to_string(),
        "--tls-key".into(),
        pki.path("server.key").display().to_string(),
    ];
    if client_ca {
        args.extend(["--tls-client-ca".into(), pki.path("ca.pem").display().to_string()]);
    }
    args
}

fn python_tls(pki: &Pki, port: u16, identity: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new(venv_bin("python"));
    cmd.arg(root().join("tests/interop/tls_client.py")).arg(format!("127.0.0.1:{port}")).arg(pki.path("ca.pem"));
    if let Some(dir) = identity {
        cmd.arg(dir.join("client.pem")).arg(dir.join("client.key"));
    }
    cmd.output().unwrap()
}

#[test]
fn python_grpcio_and_grpcurl_connect_over_tls_and_mutual_tls() {
    let pki = Pki::new("test CA");
    pki.issue("server", SERVER_NAMES);
    pki.issue("client", &["client.test"]);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_protoserve"));
    let grpcurl = venv_bin("grpcurl");

    // TLS: grpcio with the CA, grpcurl -cacert (reflection and a call).
    let args = tls_args(&pki, false);
    let (mut child, port) = crate::cli::spawn_server_with(&bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let out = python_tls(&pki, port, None);
    let addr = format!("127.0.0.1:{port}");
    let ca = pki.path("ca.pem").display().to_string();
    let list = Command::new(&grpcurl).args(["-cacert", &ca, "-servername", "localhost", &addr, "list"]).output();
    let say = Command::new(&grpcurl)
        .args(["-cacert", &ca, "-servername", "localhost", "-d", r#"{"text":"x"}"#, &addr, "kinds.Echo/Say"])
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("tls: SERVING"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = list.unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("kinds.Echo"), "{list:?}");
    // Say has no handler in the binary: the resource store does not serve it, so UNIMPLEMENTED
    // arrives over TLS as a proper gRPC status.
    let say = say.unwrap();
    assert!(String::from_utf8_lossy(&say.stderr).contains("Unimplemented"), "{say:?}");

    // Mutual TLS: grpcio without a client certificate is refused, with one served;
    // grpcurl with -cert/-key is served.
    let args = tls_args(&pki, true);
    let (mut child, port) = crate::cli::spawn_server_with(&bin, &args.iter().map(String::as_str).collect::<Vec<_>>());
    let without = python_tls(&pki, port, None);
    let with = python_tls(&pki, port, Some(pki.dir.path()));
    let addr = format!("127.0.0.1:{port}");
    let (cert, key) = (pki.path("client.pem").display().to_string(), pki.path("client.key").display().to_string());
    let list = run_ok(Command::new(&grpcurl).args([
        "-cacert",
        &ca,
        "-cert",
        &cert,
        "-key",
        &key,
        "-servername",
        "localhost",
        &addr,
        "list",
    ]));
    let refused = Command::new(&grpcurl).args(["-cacert", &ca, "-servername", "localhost", &addr, "list"]).output();
    let _ = child.kill();
    let _ = child.wait();
    let stdout = String::from_utf8_lossy(&without.stdout);
    assert!(
        without.status.success() && stdout.contains("tls: refused UNAVAILABLE"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&without.stderr)
    );
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success() && stdout.contains("tls: SERVING"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&with.stderr)
    );
    assert!(list.contains("kinds.Echo"), "{list}");
    assert!(!refused.unwrap().status.success(), "grpcurl without a client certificate was served");
}
