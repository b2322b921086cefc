//! Reload benchmark (not a test): how long a schema edit takes to go live, for the
//! seed schema and for a large generated one, and whether RPCs fail meanwhile.
//!
//! `cargo run --release --example reload_bench` prints:
//! - `reload()` latency (compile + check + build + swap, no debounce), median and p90;
//! - save → new generation serving through the file watcher (includes the 100 ms debounce);
//! - GetUser throughput with and without a reload every 20 ms, and failed RPCs.
//!
//! Everything runs on 127.0.0.1 in one process.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prost::Message as _;
use prost_reflect::{DynamicMessage, MessageDescriptor};
use protoserve::{ReloadHandle, Server};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir()?;
    let seed = dir.path().join("users");
    std::fs::create_dir_all(&seed)?;
    std::fs::copy(root.join("schemas/users/user_service.proto"), seed.join("user_service.proto"))?;
    let big = dir.path().join("big");
    let messages = generate_large_schema(&big, 200, 10)?;

    println!("reload benchmark ({} cores)", std::thread::available_parallelism()?.get());
    let seed_file = seed.join("user_service.proto");
    bench_schema("seed schemas/users", &seed, &seed_file, 30).await?;
    bench_schema(&format!("large (200 files, {messages} messages)"), &big, &big.join("f0.proto"), 10).await?;
    bench_load_while_reloading(&seed, &seed_file).await?;
    Ok(())
}

/// Writes `files` files of `per_file` messages (5 fields each) and one service per file.
fn generate_large_schema(dir: &Path, files: usize, per_file: usize) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    for f in 0..files {
        let mut s = format!("syntax = \"proto3\";\npackage big.p{f};\n");
        if f > 0 {
            s.push_str(&format!("import \"f{}.proto\";\n", f - 1));
        }
        for m in 0..per_file {
            s.push_str(&format!(
                "message M{m} {{ string id = 1; int64 n = 2; repeated string tags = 3; bool on = 4; double x = 5; }}\n"
            ));
        }
        s.push_str(&format!("service S{f} {{ rpc GetM0(M1) returns (M0); rpc ListM0s(M1) returns (stream M0); }}\n"));
        std::fs::write(dir.join(format!("f{f}.proto")), s)?;
    }
    Ok(files * per_file)
}

fn toggle(file: &Path, i: usize) -> std::io::Result<()> {
    let text = std::fs::read_to_string(file)?;
    let base = text.split("\n// bench-edit").next().unwrap_or(&text).to_owned();
    std::fs::write(file, format!("{base}\n// bench-edit\nmessage BenchEdit{i} {{ string v = 1; }}\n"))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

async fn bench_schema(name: &str, dir: &Path, file: &Path, rounds: usize) -> Result<(), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let server = Server::builder().schema_dir(dir).watch(true).build()?;
    let cold = started.elapsed();
    let handle = server.reload_handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));

    // reload() directly: compile + diff + build + swap.
    let (mut total, mut compile, mut swap) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        toggle(file, i)?;
        let t = Instant::now();
        let r = handle.reload().await?;
        total.push(t.elapsed());
        compile.push(r.compile);
        swap.push(r.swap);
        // Let the watcher's own reload of this edit pass before the next round.
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Through the watcher: save -> generation live.
    let mut e2e = Vec::new();
    for i in 0..rounds.min(10) {
        let next = handle.generation() + 1;
        toggle(file, 1000 + i)?;
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), handle.wait_for_generation(next)).await?;
        e2e.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    println!("\n{name}: startup build {cold:.1?}");
    println!(
        "  reload() total   p50 {:>9.2?}  p90 {:>9.2?}   (compile p50 {:.2?}, build+swap p50 {:.2?})",
        percentile(&mut total, 0.5),
        percentile(&mut total, 0.9),
        percentile(&mut compile, 0.5),
        percentile(&mut swap, 0.5)
    );
    println!(
        "  save -> serving  p50 {:>9.2?}  p90 {:>9.2?}   (file watcher, includes the {:?} debounce)",
        percentile(&mut e2e, 0.5),
        percentile(&mut e2e, 0.9),
        protoserve::reload::DEBOUNCE
    );
    let _ = tx.send(());
    task.await?;
    Ok(())
}

async fn bench_load_while_reloading(dir: &Path, file: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let data = dir.parent().unwrap().join("seed.yaml");
    std::fs::write(&data, "users.User:\n  - {id: bench-user, name: Bench, email: bench@example.com, age: 30}\n")?;
    let server = Server::builder().schema_dir(dir).data_file(&data).build()?;
    let handle = server.reload_handle();
    let pool = handle.snapshot().schema().pool().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(listener, async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let req_desc = pool.get_message_by_name("users.GetUserRequest").unwrap();
    let user_desc = pool.get_message_by_name("users.User").unwrap();
    let mut req = DynamicMessage::new(req_desc);
    req.set_field_by_name("user_id", prost_reflect::Value::String("bench-user".into()));

    println!("\nGetUser while reloading (in-process client, 32 concurrent callers, 3 s each):");
    for reloading in [false, true] {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let mut callers = Vec::new();
        for _ in 0..32 {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            let (req, user_desc, stop, ok, failed) =
                (req.clone(), user_desc.clone(), stop.clone(), ok.clone(), failed.clone());
            callers.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = grpc.ready().await;
                    let path = "/users.UserService/GetUser".parse().unwrap();
                    match grpc.unary(tonic::Request::new(req.clone()), path, DynCodec(user_desc.clone())).await {
                        Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }));
        }
        let reloads = Arc::new(AtomicU64::new(0));
        let reloader = reloading.then(|| {
            let (handle, stop, reloads, file) = (handle.clone(), stop.clone(), reloads.clone(), file.to_owned());
            tokio::spawn(async move { reload_loop(handle, stop, reloads, &file).await })
        });
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.store(true, Ordering::Relaxed);
        for c in callers {
            c.await?;
        }
        if let Some(r) = reloader {
            r.await?;
        }
        println!(
            "  {:<22} {:>8.0} req/s   failed {}   reloads {}",
            if reloading { "reload every 20 ms" } else { "no reloads" },
            ok.load(Ordering::Relaxed) as f64 / 3.0,
            failed.load(Ordering::Relaxed),
            reloads.load(Ordering::Relaxed)
        );
    }
    let _ = tx.send(());
    task.await?;
    Ok(())
}

async fn reload_loop(handle: ReloadHandle, stop: Arc<AtomicBool>, reloads: Arc<AtomicU64>, file: &Path) {
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        if toggle(file, i).is_ok() && handle.reload().await.is_ok() {
            reloads.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone)]
struct DynCodec(MessageDescriptor);
struct Enc;
struct Dec(MessageDescriptor);

impl Codec for DynCodec {
    type Encode = DynamicMessage;
    type Decode = DynamicMessage;
    type Encoder = Enc;
    type Decoder = Dec;
    fn encoder(&mut self) -> Enc {
        Enc
    }
    fn decoder(&mut self) -> Dec {
        Dec(self.0.clone())
    }
}

impl Encoder for Enc {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn encode(&mut self, item: DynamicMessage, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        item.encode(dst).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Decoder for Dec {
    type Item = DynamicMessage;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<DynamicMessage>, tonic::Status> {
        DynamicMessage::decode(self.0.clone(), src).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}
