//! `--data` files that are hostile: deep nesting, alias bombs, devices, FIFOs.
//! Each is refused with a message saying why, and nothing blocks or blows up.

use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::users_dir;

/// Builds a server over the seed schema with `data` as its `--data` file, on a
/// thread, and returns the error. A build that blocks (a FIFO read) fails the
/// test after a bounded wait instead of hanging it.
fn build_error(data: &Path) -> String {
    let (tx, rx) = mpsc::channel();
    let data = data.to_path_buf();
    std::thread::spawn(move || {
        let built = protoserve::Server::builder().schema_dir(users_dir()).data_file(data).build();
        let _ = tx.send(built.err().map(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Some(e)) => e,
        Ok(None) => panic!("the data file was accepted"),
        Err(_) => panic!("building the server did not finish: it blocked on the data file"),
    }
}

#[test]
fn deep_nesting_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yaml");
    // 100k levels took 53 s to be refused by the YAML parser's recursion limit.
    std::fs::write(&path, "users.User: [".to_owned() + &"{a: ".repeat(100_000)).unwrap();
    let err = build_error(&path);
    assert!(err.contains("deep.yaml") && err.contains("nested more than 128 levels deep"), "{err}");
}

#[test]
fn an_alias_bomb_is_refused_before_it_is_expanded() {
    // ~100 KB: one anchor of 5,000 scalars referenced 20,000 times (one level of
    // aliasing: the 100 KB version of this aborted the process).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.yaml");
    let mut text = String::from("x: &x [");
    text.push_str(&vec!["lol"; 5_000].join(","));
    text.push_str("]\nusers.User: [");
    text.push_str(&vec!["*x"; 20_000].join(","));
    text.push_str("]\n");
    std::fs::write(&path, text).unwrap();
    let err = build_error(&path);
    assert!(err.contains("bomb.yaml") && err.contains("aliases expand it past"), "{err}");
}

#[cfg(unix)]
#[test]
fn devices_and_fifos_are_refused_without_reading() {
    let err = build_error(Path::new("/dev/zero"));
    assert!(err.contains("'/dev/zero' is not a regular file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("data.yaml");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let err = build_error(&fifo);
    assert!(err.contains("data.yaml' is not a regular file"), "{err}");
}

#[test]
fn ordinary_data_with_a_few_aliases_still_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.yaml");
    // The second record repeats the first through an alias; neither has an id, so both get one.
    let text = "users.User:\n  - &r {name: Ann, email: a@example.com, age: 30}\n  - *r\n";
    std::fs::write(&path, text).unwrap();
    let built = protoserve::Server::builder().schema_dir(users_dir()).data_file(&path).build();
    assert!(built.is_ok(), "{:?}", built.err().map(|e| e.to_string()));
}

#[test]
fn the_binary_exits_2_on_a_refused_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.json");
    std::fs::write(&path, "[".repeat(1_000_000)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_protoserve"))
        .arg("serve")
        .arg(users_dir())
        .arg("--data")
        .arg(&path)
        .args(["--addr", "127.0.0.1:0", "--no-watch"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("deep.json"), "{err}");
}
