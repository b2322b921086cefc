//! The binary: `check`, compile errors with locations, exit codes, signals.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_protoserve"))
}

#[test]
fn check_lists_methods() {
    let out = bin().arg("check").arg(users_dir()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    for m in ["GetUser", "CreateUser", "ListUsers", "BulkCreateUsers"] {
        assert!(text.contains(&format!("/users.UserService/{m}")), "{text}");
    }
    assert!(text.contains("1 service(s), 4 method(s)"), "{text}");
}

#[test]
fn compile_error_is_rendered_with_location_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.proto"),
        "syntax = \"proto3\";\npackage bad;\nmessage M {\n  strin name = 1;\n}\n",
    )
    .unwrap();
    for cmd in ["check", "serve"] {
        let mut c = bin();
        c.arg(cmd).arg(dir.path());
        if cmd == "serve" {
            c.args(["--addr", "127.0.0.1:0"]);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("bad.proto:4:3"), "{cmd}: {err}");
        assert!(err.contains("strin name = 1;"), "{cmd}: source line shown: {err}");
    }
}

#[test]
fn parse_error_has_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.proto"), "syntax = \"proto3\";\nmessage M {\n  string a = ;\n}\n").unwrap();
    let err = protoserve::schema::load(&[dir.path().to_path_buf()]).unwrap_err();
    let text = err.render();
    assert!(text.contains("p.proto:3:"), "{text}");
    assert!(!err.is_io());
}

#[test]
fn editions_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("e.proto"), "// hi\nedition = \"2023\";\npackage e;\n").unwrap();
    let out = bin().arg("check").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("editions not supported yet"), "{err}");
    assert!(err.contains("e.proto:2:1"), "{err}");
}

#[test]
fn usage_and_io_errors_exit_2() {
    let out = bin().args(["check", "/definitely/not/here"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/definitely/not/here"));
    let out = bin().args(["serve", "--max-message-size", "lots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let empty = tempfile::tempdir().unwrap();
    let out = bin().arg("check").arg(empty.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no .proto files"));
}

/// Starts the binary on a free port and returns (child, port) once it listens.
pub fn spawn_server(args: &[&str]) -> (std::process::Child, u16) {
    spawn_server_with(std::path::Path::new(env!("CARGO_BIN_EXE_protoserve")), args)
}

/// Like [`spawn_server`] with a given binary.
pub fn spawn_server_with(bin: &std::path::Path, args: &[&str]) -> (std::process::Child, u16) {
    spawn_server_env(bin, args, &[])
}

/// Like [`spawn_server_with`], with extra environment variables.
pub fn spawn_server_env(bin: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (std::process::Child, u16) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new(bin)
        .arg("serve")
        .args(args)
        .args(["--addr", &format!("127.0.0.1:{port}")])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "server did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, port)
}

#[test]
fn sigterm_exits_zero_and_logs_startup() {
    let (child, _port) = spawn_server(&[users_dir().to_str().unwrap()]);
    let pid = child.id().to_string();
    let st = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("listening on 127.0.0.1:") && log.contains("1 service(s), 4 method(s)"), "{log}");
}

/// Reads a child's stderr on a thread so tests can wait for a line with a bound.
pub struct LogTail {
    rx: std::sync::mpsc::Receiver<String>,
    seen: String,
}

impl LogTail {
    pub fn new(child: &mut std::process::Child) -> LogTail {
        use std::io::BufRead;
        let stderr = child.stderr.take().expect("stderr is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LogTail { rx, seen: String::new() }
    }

    /// The log read so far.
    pub fn seen(&self) -> &str {
        &self.seen
    }

    /// Waits (bounded) until the log so far contains `needle`.
    pub fn wait_for(&mut self, needle: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push_str(&line);
                    self.seen.push('\n');
                }
                Err(_) => panic!("log never showed {needle:?}; log so far:\n{}", self.seen),
            }
        }
    }
}

/// Serves a temp copy of the seed schema with the binary and waits until it listens.
fn serve_seed_copy(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, std::process::Child, LogTail) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&users_dir(), dir.path());
    let mut all = vec![dir.path().to_str().unwrap().to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let (mut child, _port) = spawn_server(&all);
    let mut log = LogTail::new(&mut child);
    log.wait_for("listening on");
    let file = dir.path().join("user_service.proto");
    (dir, file, child, log)
}

#[test]
fn watcher_logs_compile_errors_with_location_and_sighup_reloads() {
    let (_dir, file, mut child, mut log) = serve_seed_copy(&[]);

    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("string user_id = 1;", "string user_id = ;")).unwrap();
    log.wait_for("reload failed");
    log.wait_for("user_service.proto:27:");
    log.wait_for("string user_id = ;");

    std::fs::write(&file, good.replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;")).unwrap();
    log.wait_for("generation 2 live");
    log.wait_for("users.User: +field nick = 6");
    // One generation number per line, in the text; no dangling `generation=N` field
    // after a multi-line error.
    assert!(!log.seen.contains("generation="), "{}", log.seen);
    let live_line = log.seen.lines().find(|l| l.contains("generation 2 live")).unwrap();
    assert_eq!(live_line.matches("generation").count(), 1, "{live_line}");

    // SIGHUP reloads too (here: nothing changed on disk).
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    log.wait_for("SIGHUP: reloading");
    log.wait_for("schema unchanged");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn on_breaking_reject_logs_the_rules_that_blocked_the_reload() {
    let (_dir, file, mut child, mut log) = serve_seed_copy(&["--on-breaking", "reject"]);
    let good = std::fs::read_to_string(&file).unwrap();
    // int32 -> string: old clients would misread every age.
    std::fs::write(&file, good.replace("int32 age = 4;", "string age = 4;")).unwrap();
    log.wait_for("rejected for breaking wire compatibility");
    log.wait_for("FIELD_WIRE_COMPATIBLE_TYPE");
    log.wait_for("user_service.proto:");
    log.wait_for("kill -USR1");
    std::fs::write(&file, good.replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;")).unwrap();
    log.wait_for("generation 2 live");

    // An intentional breaking edit is accepted with SIGUSR1, once.
    std::fs::write(&file, good.replace("int32 age = 4;", "string age = 4;\n  string nick = 6;")).unwrap();
    log.wait_for("still serving generation 2");
    assert!(Command::new("kill").args(["-USR1", &child.id().to_string()]).status().unwrap().success());
    log.wait_for("SIGUSR1: reloading the schema, accepting breaking changes once");
    log.wait_for("generation 3 live: users.User: field age: int32 -> string");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn reading_the_schema_does_not_trigger_reloads() {
    let (_dir, file, mut child, mut log) = serve_seed_copy(&[]);
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, good.replace("int32 age = 4;", "int32 age = 4;\n  string nick = 6;")).unwrap();
    log.wait_for("generation 2 live");
    // The reload read the files; that must not start another reload. SIGTERM after a
    // pause, then count reload lines in the whole log.
    std::thread::sleep(Duration::from_millis(600));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    log.wait_for("draining");
    let _ = child.wait();
    assert_eq!(log.seen.matches("live:").count(), 1, "one edit, one reload:\n{}", log.seen);
    assert!(!log.seen.contains("schema unchanged"), "no reload without an edit:\n{}", log.seen);
}

#[test]
fn compat_command_reports_and_exits_by_verdict() {
    let ex = root().join("docs/examples/compat-renumber");
    let out = bin().arg("compat").arg(ex.join("old")).arg(ex.join("new")).arg("--probe").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("PROTOSERVE_FIELD_MOVED_NUMBER") && text.contains("user_service.proto:34:18"), "{text}");
    assert!(text.contains("old writer email="), "{text}");
    let same = bin().arg("compat").arg(users_dir()).arg(users_dir()).output().unwrap();
    assert_eq!(same.status.code(), Some(0));
    let json = bin().args(["compat", "--format", "json"]).arg(ex.join("old")).arg(ex.join("new")).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON report");
    assert!(v.to_string().contains("PROTOSERVE_FIELD_MOVED_NUMBER"), "{v}");
    let bad = bin().args(["compat", "--rules", "nope", "a", "b"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn addr_accepts_host_names_and_bare_ports() {
    for (form, listens) in [("localhost:{}", "127.0.0.1:"), (":{}", "0.0.0.0:"), ("{}", "127.0.0.1:")] {
        let port = free_port();
        let addr = form.replace("{}", &port.to_string());
        let mut child = bin()
            .arg("serve")
            .arg(users_dir())
            .args(["--no-watch", "--addr", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut log = LogTail::new(&mut child);
        log.wait_for(&format!("listening on {listens}{port}"));
        assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(), "{addr}");
        let _ = child.kill();
        let _ = child.wait();
    }
    let out = bin().args(["serve", "--addr", "localhost"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HOST:PORT") && err.contains("localhost:50051"), "the expected form is named: {err}");
}

/// Runs `protoserve check ARGS` in `dir`; returns (exit code, stdout, stderr).
fn check_in(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = bin().arg("check").args(args).current_dir(dir).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn error_at_end_of_file_has_a_location() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("api")).unwrap();
    std::fs::write(dir.path().join("api/eof.proto"), "syntax = \"proto3\";\nmessage Broken {\n  string x = ").unwrap();
    let (code, _, err) = check_in(dir.path(), &["api"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("api/eof.proto:3:13: error: expected an integer, but reached end of file"), "{err}");
    assert!(err.contains("  string x = "), "source line shown: {err}");
}

#[test]
fn utf8_bom_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bom.proto"), "\u{FEFF}syntax = \"proto3\";\npackage bom;\nservice S { rpc GetM(M) returns (M); }\nmessage M { string id = 1; }\n").unwrap();
    let (code, out, err) = check_in(dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("/bom.S/GetM"), "{out}");
}

/// Text that reads like a schema, broken in every way: fragments that matter to the
/// editions pre-check, the parser and the diagnostics renderer (multi-byte
/// characters, BOMs, comments, unterminated strings, CRLF, tabs), plus raw bytes.
fn random_text(rng: &mut fastrand::Rng) -> Vec<u8> {
    const PIECES: &[&str] = &[
        "\u{FEFF}",
        "\u{FFFD}",
        "\u{FF01}",
        "é",
        "𝄞",
        "//",
        "/*",
        "*/",
        "\n",
        "\r\n",
        "\t",
        " ",
        "edition",
        "=",
        "\"2023\"",
        ";",
        "syntax",
        "\"proto3\"",
        "message",
        "M",
        "{",
        "}",
        "string",
        "x",
        "1",
        "= ",
        "import",
        "\"",
        "\\",
        "package",
        "a.b",
        "enum",
        "rpc",
        "(",
        ")",
        "returns",
        "service",
        "option",
        "[",
        "]",
        "0x",
        "-",
        "reserved",
        "to",
        "max",
        "map<",
        ">",
        ",",
    ];
    let mut out = Vec::new();
    for _ in 0..rng.usize(0..40) {
        if rng.u8(..) < 20 {
            out.push(rng.u8(..));
        } else {
            out.extend_from_slice(PIECES[rng.usize(..PIECES.len())].as_bytes());
        }
    }
    out
}

#[test]
fn random_files_never_panic_the_loader_or_the_renderer() {
    // Bounded and seeded: the same 3000 inputs every run, in about a second.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fuzz.proto");
    let mut rng = fastrand::Rng::with_seed(0x5eed_0011);
    let mut errors = 0;
    for i in 0..3000 {
        let bytes = random_text(&mut rng);
        std::fs::write(&file, &bytes).unwrap();
        let outcome = std::panic::catch_unwind(|| {
            protoserve::schema::load(&[dir.path().to_path_buf()]).map_err(|e| (e.render(), e.is_io()))
        });
        match outcome {
            Ok(Ok(_)) => {}
            Ok(Err((text, is_io))) => {
                errors += 1;
                assert!(!is_io, "a text problem is a schema error (exit 1): {text}");
                assert!(text.contains("fuzz.proto:"), "input #{i} {bytes:?}: every diagnostic is located: {text}");
            }
            Err(_) => panic!("input #{i} panicked: {bytes:?}"),
        }
    }
    assert!(errors > 100, "the corpus exercises the error paths ({errors} errors)");
}

#[test]
fn missing_import_is_a_schema_error_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.proto"), "syntax = \"proto3\";\nimport \"nope/missing.proto\";\n").unwrap();
    let (code, _, err) = check_in(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a.proto:2:1: error: import 'nope/missing.proto' not found"), "{err}");
}

#[test]
fn diagnostics_name_paths_under_their_root_in_one_format() {
    let dir = tempfile::tempdir().unwrap();
    for root in ["one", "two"] {
        std::fs::create_dir(dir.path().join(root)).unwrap();
    }
    std::fs::write(dir.path().join("one/a.proto"), "syntax = \"proto3\";\nmessage A {\n  strin a = 1;\n}\n").unwrap();
    std::fs::write(dir.path().join("two/b.proto"), "syntax = \"proto3\";\nmessage B { string b = 1; }\n").unwrap();
    let (code, _, err) = check_in(dir.path(), &["one", "two"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("one/a.proto:3:3: error:"), "the path as the user can open it: {err}");

    // Many problems: each in the same format, capped with "and N more".
    let garbage: String = (0..60).map(|i| format!("this is line {i} of prose, not protobuf!\n")).collect();
    std::fs::write(dir.path().join("one/a.proto"), garbage).unwrap();
    let (code, _, err) = check_in(dir.path(), &["one"]);
    assert_eq!(code, Some(1));
    let heads: Vec<&str> = err.lines().filter(|l| l.contains("error:")).collect();
    assert_eq!(heads.len(), 10, "{err}");
    assert!(heads.iter().all(|l| l.starts_with("one/a.proto:")), "{err}");
    assert!(err.contains("... and ") && err.contains(" more error(s) not shown"), "{err}");
    assert!(!err.contains("Error:") && !err.contains("protoserve::"), "no stray miette lines: {err}");
    assert!(err.lines().count() < 60, "capped: {err}");
}

#[test]
fn non_proto_inputs_are_refused() {
    let (code, _, err) = check_in(&root(), &["README.md"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("'README.md' is not a .proto file"), "{err}");
    assert!(err.lines().count() <= 2, "one clear line: {err}");
}

#[test]
fn default_root_skips_node_modules_target_and_hidden_folders() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    for d in ["node_modules/protobufjs", "target/debug", ".git", "api"] {
        std::fs::create_dir_all(p.join(d)).unwrap();
    }
    std::fs::write(p.join("node_modules/protobufjs/e.proto"), "edition = \"2023\";\n").unwrap();
    std::fs::write(p.join("target/debug/x.proto"), "not a proto").unwrap();
    std::fs::write(p.join(".git/x.proto"), "not a proto").unwrap();
    std::fs::write(p.join("api/a.proto"), "syntax = \"proto3\";\npackage api;\nmessage A {}\n").unwrap();
    let (code, out, err) = check_in(p, &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("1 file(s)"), "{out}");
}

#[test]
fn exclude_and_import_only_roots() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("vendor/google/longrunning")).unwrap();
    std::fs::create_dir_all(p.join("api")).unwrap();
    std::fs::create_dir_all(p.join("gen")).unwrap();
    std::fs::write(
        p.join("vendor/google/longrunning/operations.proto"),
        "syntax = \"proto3\";\npackage google.longrunning;\nservice Operations { rpc GetOperation(Op) returns (Op); }\nmessage Op { string name = 1; }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("api/things.proto"),
        "syntax = \"proto3\";\npackage api;\nimport \"google/longrunning/operations.proto\";\nservice Things { rpc GetOp(google.longrunning.Op) returns (google.longrunning.Op); }\n",
    )
    .unwrap();
    std::fs::write(p.join("gen/broken.proto"), "this does not compile").unwrap();
    let (code, out, err) = check_in(p, &["--exclude", "vendor", "--exclude", "gen/*.proto", "-I", "vendor"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("/api.Things/GetOp"), "{out}");
    assert!(!out.contains("google.longrunning.Operations"), "an import-only root is not served: {out}");
    assert!(out.starts_with("1 file(s), 1 service(s)"), "{out}");
    // Without -I the import does not resolve; without --exclude gen the broken file is served.
    assert_eq!(check_in(p, &["--exclude", "vendor", "--exclude", "gen/*.proto"]).0, Some(1));
    assert_eq!(check_in(p, &["--exclude", "vendor", "-I", "vendor"]).0, Some(1));
}

#[test]
fn googleapis_common_protos_resolve_built_in() {
    let dir = tempfile::tempdir().unwrap();
    let imports: String =
        protoserve::schema::builtin::FILES.iter().map(|(n, _)| format!("import \"{n}\";\n")).collect();
    std::fs::write(
        dir.path().join("g.proto"),
        format!(
            "syntax = \"proto3\";\npackage g;\n{imports}\
             service G {{\n  rpc GetDay(google.type.Date) returns (google.rpc.Status) {{\n    option (google.api.http) = {{ get: \"/v1/day\" }};\n    option (google.api.method_signature) = \"year\";\n  }}\n}}\n\
             message T {{ string id = 1 [(google.api.field_behavior) = REQUIRED]; google.type.Money price = 2; google.rpc.BadRequest why = 3; }}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = check_in(dir.path(), &[]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("/g.G/GetDay"), "{out}");
    let schema = protoserve::schema::load(&[dir.path().to_path_buf()]).unwrap();
    let http = schema.pool().get_extension_by_name("google.api.http").expect("google.api.http");
    assert_eq!(http.number(), 72295728);
}

#[tokio::test]
async fn reflection_describes_google_rpc_error_details() {
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, server_reflection_client::ServerReflectionClient};
    // The seed schema imports nothing from google.rpc, yet the BadRequest details
    // its validation errors carry must be decodable by reflection clients.
    let srv = TestServer::users().await;
    let mut r = ServerReflectionClient::new(srv.channel().await);
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::FileContainingSymbol("google.rpc.BadRequest".into())),
    };
    let mut s = r.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let resp = s.message().await.unwrap().unwrap().message_response;
    let Some(MessageResponse::FileDescriptorResponse(f)) = resp else { panic!("not found: {resp:?}") };
    let files: Vec<prost_types::FileDescriptorProto> = f
        .file_descriptor_proto
        .iter()
        .map(|b| <prost_types::FileDescriptorProto as prost::Message>::decode(b.as_slice()).unwrap())
        .collect();
    let details = files.iter().find(|f| f.name() == "google/rpc/error_details.proto").expect("error_details.proto");
    let bad = details.message_type.iter().find(|m| m.name() == "BadRequest").unwrap();
    assert_eq!(bad.nested_type[0].name(), "FieldViolation");
    // Not a served file: `check` still counts only the user's files.
    assert_eq!(srv.pool.services().count(), 1);
}

#[test]
fn serve_starts_on_an_empty_directory_and_picks_files_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _port) = spawn_server(&[dir.path().to_str().unwrap()]);
    let mut log = LogTail::new(&mut child);
    log.wait_for("no .proto files under");
    log.wait_for("0 service(s)");
    copy_dir(&users_dir(), dir.path());
    log.wait_for("generation 2 live");
    log.wait_for("+service users.UserService");
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(unix)]
#[test]
fn special_and_huge_files_are_refused_without_reading_them() {
    // A FIFO would block the reader forever, /dev/zero would never end, a huge
    // file would be read whole: each is refused by what it is, in one line, exit 2.
    let fifo = tempfile::tempdir().unwrap();
    assert!(Command::new("mkfifo").arg(fifo.path().join("pipe.proto")).status().unwrap().success());
    let zero = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", zero.path().join("zero.proto")).unwrap();
    let huge = tempfile::tempdir().unwrap();
    let f = std::fs::File::create(huge.path().join("huge.proto")).unwrap();
    f.set_len(protoserve::schema::MAX_FILE_SIZE + 1).unwrap(); // sparse: costs no disk
    for (dir, want) in [
        (&fifo, "pipe.proto' is not a regular file"),
        (&zero, "zero.proto' is not a regular file"),
        (&huge, "huge.proto' is larger than 64 MiB"),
    ] {
        let (code, _, err) = check_in(dir.path(), &[]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_under_a_served_root_does_not_block_reloads() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&users_dir(), dir.path());
    let server = protoserve::Server::builder().schema_dir(dir.path()).build().unwrap();
    let handle = server.reload_handle();
    assert!(Command::new("mkfifo").arg(dir.path().join("pipe.proto")).status().unwrap().success());
    let err = tokio::time::timeout(Duration::from_secs(10), handle.reload())
        .await
        .expect("the reload did not block on the FIFO")
        .unwrap_err();
    assert!(err.to_string().contains("not a regular file"), "{err}");
    std::fs::remove_file(dir.path().join("pipe.proto")).unwrap();
    handle.reload().await.expect("reloads work again");
}

#[cfg(unix)]
#[test]
fn a_file_name_that_is_not_utf8_is_named_as_such() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.proto")), "syntax = \"proto3\";\n").unwrap();
    let (code, _, err) = check_in(dir.path(), &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("the file name is not valid UTF-8") && !err.contains("include path"), "{err}");
}

#[test]
fn an_import_that_leaves_the_roots_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.proto"), "syntax = \"proto3\";\nimport \"../etc/passwd.proto\";\n").unwrap();
    let (code, _, err) = check_in(dir.path(), &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a.proto:2:8: error: invalid import path"), "{err}");
    assert!(!err.contains("group"), "{err}");
}

/// Waits (bounded) for a child to exit and returns its exit code.
fn exit_code_within(mut child: std::process::Child, within: Duration) -> Option<i32> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(within) {
        Ok(status) => status.unwrap().code(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("the process did not exit within {within:?}");
        }
    }
}

#[cfg(unix)]
#[test]
fn sigterm_during_startup_exits_at_once() {
    // Startup work that takes seconds: a --data file of 600,000 records close to
    // its 64 MiB limit (a FIFO used to block startup here; it is refused now).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data.yaml");
    let mut text = String::from("users.User:\n");
    for i in 0..600_000 {
        text.push_str(&format!("  - {{id: u{i}, name: \"User number {i}\", email: u{i}@example.com, age: 30}}\n"));
    }
    std::fs::write(&data, text).unwrap();
    let mut child = bin()
        .arg("serve")
        .arg(users_dir())
        .arg("--data")
        .arg(&data)
        .args(["--addr", "127.0.0.1:0", "--no-watch"])
        .env("RUST_LOG", "protoserve=debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = LogTail::new(&mut child);
    log.wait_for("signals: SIGINT/SIGTERM handled");
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert_eq!(exit_code_within(child, Duration::from_secs(15)), Some(128 + 15), "{}", log.seen);
}

#[cfg(unix)]
#[tokio::test]
async fn a_second_signal_ends_the_drain_and_the_exit_code_says_so() {
    let (mut child, port) = spawn_server(&[users_dir().to_str().unwrap(), "--no-watch"]);
    let mut log = LogTail::new(&mut child);
    log.wait_for("listening on");
    // An RPC that never finishes: a client stream that is never closed.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap().connect().await.unwrap();
    let pool = protoserve::schema::load(&[users_dir()]).unwrap().pool().clone();
    let mut grpc = tonic::client::Grpc::new(channel);
    let input = pool.get_message_by_name("users.CreateUserRequest").unwrap();
    let output = pool.get_message_by_name("users.BulkCreateResponse").unwrap();
    let first = prost_reflect::DynamicMessage::new(input.clone());
    // After the first message the stream stays open; say when it was asked for more.
    let (asked_tx, asked_rx) = tokio::sync::oneshot::channel::<()>();
    let mut asked_tx = Some(asked_tx);
    let rest = futures_util::stream::poll_fn(move |_| {
        if let Some(tx) = asked_tx.take() {
            let _ = tx.send(());
        }
        std::task::Poll::<Option<prost_reflect::DynamicMessage>>::Pending
    });
    let requests = futures_util::StreamExt::chain(tokio_stream::iter(vec![first]), rest);
    grpc.ready().await.unwrap();
    let mut other = grpc.clone();
    let call = tokio::spawn(async move {
        grpc.client_streaming(
            tonic::Request::new(requests),
            "/users.UserService/BulkCreateUsers".parse().unwrap(),
            DynCodec(output),
        )
        .await
    });
    asked_rx.await.unwrap();
    // A later call on the same connection is answered only after the server read
    // the streaming call's headers: from then on that call is in flight there.
    let get = pool.get_message_by_name("users.GetUserRequest").unwrap();
    other.ready().await.unwrap();
    let answered = other
        .unary(
            tonic::Request::new(prost_reflect::DynamicMessage::new(get)),
            "/users.UserService/GetUser".parse().unwrap(),
            DynCodec(pool.get_message_by_name("users.User").unwrap()),
        )
        .await;
    assert_eq!(answered.unwrap_err().code(), tonic::Code::NotFound);
    let pid = child.id().to_string();
    // The first signal drains.
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    log.wait_for("draining in-flight RPCs; send it again to stop at once");
    assert!(!call.is_finished(), "the call is still in flight");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let code = tokio::task::spawn_blocking(move || exit_code_within(child, Duration::from_secs(15))).await.unwrap();
    assert_eq!(code, Some(128 + 15), "a drain cut short is not exit 0");
    call.abort();
}

#[test]
fn debug_logging_writes_one_line_per_rpc() {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_protoserve"));
    let (child, port) = spawn_server_env(bin, &[users_dir().to_str().unwrap()], &[("RUST_LOG", "protoserve=debug")]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let pool = protoserve::schema::load(&[users_dir()]).unwrap().pool().clone();
        let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut c = crate::harness::Client { grpc: tonic::client::Grpc::new(channel), pool };
        let req = c.msg("users.GetUserRequest", serde_json::json!({"user_id": "nobody"}));
        let err = c.unary("/users.UserService/GetUser", req).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::NotFound);
    });
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log
        .lines()
        .find(|l| l.contains("/users.UserService/GetUser") && l.contains("took"))
        .unwrap_or_else(|| panic!("no line for the RPC in:\n{log}"));
    assert!(line.contains("failed") && line.contains("User 'nobody' not found") && line.contains("took"), "{line}");
}
