//! A real browser: headless Chromium loads a page, served by this test on its own
//! origin, that calls the binary's users.UserService through
//! `@connectrpc/connect-web`'s gRPC-Web transport and its Connect transport (JSON
//! and binary): CreateUser, GetUser of a missing id, ListUsers streaming. The
//! page's client code is generated at test time by `protoc-gen-es` (through `buf
//! generate`, from the server's own descriptor set) and bundled with esbuild; the
//! server runs with `--cors-origin` set to the page's origin, so CORS is exercised
//! as a browser does it. The page POSTs what it saw as JSON to its own server,
//! which hands it to the test. Chromium and `node_modules` come from
//! `scripts/test.sh`.
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

/// Chromium: `$CHROMIUM`, else Debian's `/usr/bin/chromium`. Missing is a failure
/// with a way out, never a silent pass.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROMIUM") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from("/usr/bin/chromium");
    assert!(
        p.exists(),
        "chromium is missing: run scripts/test.sh (as root it installs Debian's `chromium` package), \
         `apt-get install chromium`, or set CHROMIUM to a Chromium/Chrome binary"
    );
    p
}

fn node_bin(name: &str) -> PathBuf {
    let p = root().join("node_modules/.bin").join(name);
    assert!(p.exists(), "{} is missing: run scripts/test.sh, which runs `npm ci`", p.display());
    p
}

/// Generates the users schema's TypeScript with protoc-gen-es and bundles the
/// page script with esbuild into `dir/page.js`, next to `dir/index.html`.
fn build_page(dir: &Path) {
    let set = dir.join("users.binpb");
    run_ok(Command::new(server_bin()).arg("check").arg(users_dir()).arg("--descriptor-set-out").arg(&set));
    let template = format!(
        "version: v2\nplugins:\n  - local: {}\n    out: gen\n    opt: target=ts\n    include_imports: true\n",
        node_bin("protoc-gen-es").display()
    );
    std::fs::write(dir.join("buf.gen.yaml"), template).unwrap();
    let home = dir.join("home");
    run_ok(
        Command::new(node_bin("buf"))
            .args(["generate", "users.binpb", "--template", "buf.gen.yaml"])
            .current_dir(dir)
            .env("BUF_CACHE_DIR", &home)
            .env("HOME", &home),
    );
    assert!(dir.join("gen/user_service_pb.ts").exists(), "buf generate wrote no gen/user_service_pb.ts");
    let src = root().join("tests/browser");
    std::fs::copy(src.join("page.ts"), dir.join("page.ts")).unwrap();
    std::fs::copy(src.join("index.html"), dir.join("index.html")).unwrap();
    run_ok(
        Command::new(node_bin("esbuild"))
            .args(["page.ts", "--bundle", "--format=iife", "--platform=browser", "--target=es2020"])
            .args(["--outfile=page.js", "--log-level=warning"])
            .current_dir(dir)
            .env("NODE_PATH", root().join("node_modules")),
    );
}

/// The page's server on 127.0.0.1:0 (one thread per connection, HTTP/1.1,
/// `Connection: close`): `GET /` and `/page.js` from `dir`, and `POST /result`,
/// whose body goes to `results`. Stops when dropped.
struct PageServer {
    port: u16,
    results: mpsc::Receiver<String>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PageServer {
    fn start(dir: PathBuf) -> PageServer {
        let (tx, results) = mpsc::channel();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (dir, tx) = (dir.clone(), tx.clone());
                std::thread::spawn(move || serve_page(conn, &dir, &tx));
            }
        });
        PageServer { port, results, stop, thread: Some(thread) }
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_page(mut conn: TcpStream, dir: &Path, results: &mpsc::Sender<String>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match conn.read(&mut buf) {
            Ok(n) if n > 0 && data.len() < 64 * 1024 => data.extend_from_slice(&buf[..n]),
            _ => return,
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or("/"));
    let path = target.split('?').next().unwrap_or("/");
    let (status, kind, body) = match (method, path) {
        ("GET", "/") => {
            ("200 OK", "text/html; charset=utf-8", std::fs::read(dir.join("index.html")).unwrap_or_default())
        }
        ("GET", "/page.js") => ("200 OK", "text/javascript", std::fs::read(dir.join("page.js")).unwrap_or_default()),
        ("POST", "/result") => {
            let len: usize = head
                .lines()
                .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("content-length")))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
            let mut body = data[head_end..].to_vec();
            while body.len() < len {
                match conn.read(&mut buf) {
                    Ok(n) if n > 0 => body.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let _ = results.send(String::from_utf8_lossy(&body[..len]).into_owned());
            ("200 OK", "text/plain", Vec::new())
        }
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(reply.as_bytes()).and_then(|()| conn.write_all(&body));
}

/// The binary serving the seed schema with CORS for `origin`; its log goes to `log`.
fn spawn_server(origin: &str, log: &Path) -> (Child, u16) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(server_bin())
        .arg("serve")
        .arg(users_dir())
        .args(["--cors-origin", origin, "--addr", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "server did not start listening:\n{}", read_lossy(log));
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

fn read_lossy(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

/// Loads `url` in headless Chromium (in a process group of its own) and returns
/// the JSON the page POSTs to /result, waiting at most 120 s; then ends Chromium.
fn run_page(page: &PageServer, url: &str, dir: &Path) -> Value {
    let err = dir.join("chromium.log");
    let mut child = Command::new(chromium())
        .args(["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .args(["--no-first-run", "--no-default-browser-check", "--disable-extensions"])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run chromium: {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    let outcome = loop {
        match page.results.recv_timeout(Duration::from_millis(100)) {
            Ok(text) => break Ok(text),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(e) => break Err(format!("the page server stopped: {e}")),
        }
        if let Some(status) = child.try_wait().unwrap() {
            break Err(format!("chromium exited ({status}) before the page reported"));
        }
        if Instant::now() > deadline {
            break Err("the page reported nothing within 120 s".to_owned());
        }
    };
    stop_group(&mut child);
    let text = outcome.unwrap_or_else(|e| panic!("{e}; chromium's log:\n{}", read_lossy(&err)));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the page posted no JSON ({e}): {text}"))
}

/// Ends a child started with `process_group(0)` and everything in its group:
/// SIGTERM, up to 5 s to exit, then SIGKILL.
fn stop_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let signal = |sig: &str| {
        let _ = Command::new("kill").args([sig, "--", &group]).stderr(Stdio::null()).status();
    };
    if child.try_wait().ok().flatten().is_none() {
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    signal("-KILL");
    let _ = child.wait();
}

/// Loads the page against a fresh server that lets `cors_origin` call it;
/// returns what the page wrote and the server's log.
fn load_page(page: &PageServer, dir: &Path, cors_origin: &str, name: &str) -> (Value, String) {
    let server_log = dir.join(format!("{name}-server.log"));
    let (mut server, port) = spawn_server(cors_origin, &server_log);
    let run_dir = dir.join(name);
    std::fs::create_dir_all(&run_dir).unwrap();
    let url = format!("http://127.0.0.1:{}/?server=http://127.0.0.1:{port}", page.port);
    let result = run_page(page, &url, &run_dir);
    let _ = server.kill();
    let _ = server.wait();
    (result, read_lossy(&server_log))
}

#[test]
fn connect_web_in_headless_chromium_over_grpc_web_and_connect() {
    let chromium = chromium(); // fail early with the install hint
    assert!(chromium.exists(), "{} is missing", chromium.display());
    let dir = tempfile::tempdir().unwrap();
    build_page(dir.path());
    let page = PageServer::start(dir.path().to_path_buf());
    let origin = format!("http://127.0.0.1:{}", page.port);

    let (result, log) = load_page(&page, dir.path(), &origin, "allowed");
    let ctx = format!("page result: {result:#}\nserver log:\n{log}");
    let runs = result.as_array().unwrap_or_else(|| panic!("{ctx}"));
    assert_eq!(runs.len(), 3, "{ctx}");
    let mut ids = Vec::new();
    for (run, transport) in runs.iter().zip(["grpc-web", "connect", "connect-proto"]) {
        assert_eq!(run["transport"], transport, "{ctx}");
        // CreateUser: the stored user, with a generated id and created_at.
        let created = &run["created"];
        let id = created["id"].as_str().unwrap_or_else(|| panic!("{transport}: no created user; {ctx}"));
        assert!(!id.is_empty() && !ids.iter().any(|(i, _)| i == id), "{transport}: id {id:?}; {ctx}");
        assert_eq!(created["name"], format!("Ada {transport}"), "{ctx}");
        assert_eq!(created["email"], format!("ada-{transport}@example.com"), "{ctx}");
        assert_eq!(created["age"], 36, "{ctx}");
        assert_ne!(created["createdAt"], "0", "{ctx}");
        ids.push((id.to_string(), format!("Ada {transport}")));
        // GetUser of a missing id: NOT_FOUND with the server's message, as the browser client sees it.
        let missing = &run["missing"];
        assert_eq!(missing["code"], 5, "{transport}: {ctx}");
        assert_eq!(missing["codeName"], "NotFound", "{transport}: {ctx}");
        assert!(missing["message"].as_str().is_some_and(|m| m.contains("no-such-user")), "{transport}: {ctx}");
        // ListUsers streams every user created so far, in insertion order.
        let listed: Vec<(String, String)> = run["listed"]
            .as_array()
            .unwrap_or_else(|| panic!("{transport}: ListUsers failed; {ctx}"))
            .iter()
            .map(|u| (u["id"].as_str().unwrap_or_default().to_string(), u["name"].as_str().unwrap_or_default().into()))
            .collect();
        assert_eq!(listed, ids, "{transport}: {ctx}");
    }

    // Control: a server that lets another origin call it. The browser's preflight
    // gets no CORS grant, so no call reaches a handler and every one fails in the page.
    let (result, log) = load_page(&page, dir.path(), "https://elsewhere.example", "refused");
    let ctx = format!("page result: {result:#}\nserver log:\n{log}");
    let runs = result.as_array().unwrap_or_else(|| panic!("{ctx}"));
    assert_eq!(runs.len(), 3, "{ctx}");
    for run in runs {
        assert!(run["created"].is_null() && run["listed"].is_null(), "{ctx}");
        for failed in [&run["createError"], &run["missing"], &run["listError"]] {
            // A fetch the browser refuses is UNKNOWN (code 2) in connect-web.
            assert_eq!(failed["code"], 2, "{ctx}");
        }
    }
    assert!(!log.contains("method=/users.UserService/"), "a call reached the server: {ctx}");
}
