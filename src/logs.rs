//! Log output of `serve`: lines are formatted on the thread that logs them and
//! appended to a bounded buffer ([`LogSink`]) that a writer thread takes and
//! writes to stderr in batches (one `write(2)` per batch, not per line), in
//! order. A full buffer drops the line and counts it rather than blocking an
//! RPC; the count is reported when the [`LogGuard`] flushes at exit.
//!
//! The writer thread sleeps briefly between batches, so a busy server's lines
//! cost their senders no wake-up either.
//!
//! The per-RPC line (target `protoserve::rpc`, [`RpcLine`]) is written straight
//! to the sink in tracing-subscriber's text or JSON layout, without its generic
//! field machinery; timestamps come from [`FastTime`] (RFC 3339, microseconds,
//! UTC, the date part computed once per second and thread).

use std::cell::Cell;
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;

use crate::LogFormat;

/// Target of the one-line-per-RPC event.
pub const RPC_TARGET: &str = "protoserve::rpc";

/// Bytes waiting for the writer thread before new lines are dropped.
const CAPACITY: usize = 4 << 20;

/// How long the exit flush waits for the writer thread.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The writer thread's pause after a batch before it takes the next one (or
/// waits when there is none): lines show up at most this late.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Lines not yet taken by the writer thread, and its progress.
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    /// The writer thread waits for lines: the next line must wake it.
    idle: bool,
    /// Batches taken by the writer thread so far.
    taken: u64,
    /// Batches written and flushed so far.
    written: u64,
}

#[derive(Debug, Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Lines arrived for an idle writer thread.
    wake: Condvar,
    /// A batch was written.
    written: Condvar,
    dropped: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Nothing panics under this lock; a poisoned one is still consistent.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where formatted lines go: a buffer that a writer thread takes in batches (a
/// [`MakeWriter`]). Appending a line costs a lock and a copy, and a wake-up
/// only when the writer thread was idle.
#[derive(Debug, Clone)]
pub struct LogSink(Arc<Shared>);

impl LogSink {
    /// Starts the writer thread, writing to `out`.
    pub fn spawn<W: io::Write + Send + 'static>(out: W) -> io::Result<LogSink> {
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        std::thread::Builder::new().name("log-writer".into()).spawn(move || write_lines(&theirs, out))?;
        Ok(LogSink(shared))
    }

    /// Lines dropped so far because the writer thread was behind.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Waits (bounded) until every line appended so far is written and flushed.
    pub fn flush(&self) {
        let mut p = self.0.lock();
        let target = p.taken + u64::from(!p.buf.is_empty());
        let deadline = std::time::Instant::now() + FLUSH_TIMEOUT;
        while p.written < target {
            let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) else { return };
            p = match self.0.written.wait_timeout(p, left) {
                Ok((p, _)) => p,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Appends one complete line (or drops and counts it when the buffer is full).
    fn push(&self, line: &[u8]) {
        let mut p = self.0.lock();
        if p.buf.len() + line.len() > CAPACITY {
            drop(p);
            self.0.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.buf.extend_from_slice(line);
        let wake = std::mem::take(&mut p.idle);
        drop(p);
        if wake {
            self.0.wake.notify_one();
        }
    }
}

/// The writer thread: takes what is buffered, writes and flushes it (one
/// `write(2)` per batch of up to 64 KiB), pauses ([`BATCH_PAUSE`]), and waits
/// only when nothing came meanwhile (while it pauses, senders wake no one).
fn write_lines<W: io::Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let mut p = shared.lock();
        while p.buf.is_empty() {
            p.idle = true;
            p = shared.wake.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        std::mem::swap(&mut p.buf, &mut batch);
        p.taken += 1;
        drop(p);
        let _ = out.write_all(&batch);
        let _ = out.flush();
        batch.clear();
        shared.lock().written += 1;
        shared.written.notify_all();
        std::thread::sleep(BATCH_PAUSE);
    }
}

/// One event's writer: the fmt layer writes each formatted line with one `write_all`.
#[derive(Debug)]
pub struct SinkWriter<'a>(&'a LogSink);

impl io::Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !buf.is_empty() {
            self.0.push(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> SinkWriter<'a> {
        SinkWriter(self)
    }
}

static SINK: OnceLock<LogSink> = OnceLock::new();

/// Flushes the log lines written so far (no-op without [`init_serve`]); call
/// before writing to stderr directly or exiting the process.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.flush();
    }
}

/// Flushes the lines at drop (the end of `main`), and says how many were dropped.
#[derive(Debug)]
pub struct LogGuard(());

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(sink) = SINK.get() {
            sink.flush();
            let dropped = sink.dropped();
            if dropped > 0 {
                eprintln!("protoserve: {dropped} log line(s) dropped: stderr could not keep up");
            }
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` (default `info`) filters; for
/// `serve` (`Some(format)`) lines go through the writer thread in `format`,
/// otherwise straight to stderr as text. Returns the guard to hold until exit.
pub fn init(serve: Option<LogFormat>) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_timer(FastTime);
    let Some(format) = serve else {
        logs.with_writer(std::io::stderr).with_ansi(ansi).init();
        return LogGuard(());
    };
    let sink = match LogSink::spawn(std::io::stderr()) {
        Ok(sink) => SINK.get_or_init(|| sink).clone(),
        Err(e) => {
            eprintln!("protoserve: cannot start the log writer thread ({e}); logging synchronously");
            logs.with_writer(std::io::stderr).with_ansi(ansi).init();
            return LogGuard(());
        }
    };
    // Colours are tracing-subscriber's business: RPC lines then go through it.
    if format == LogFormat::Json || !ansi {
        let _ = RPC_LINES.set((sink.clone(), format));
    }
    match format {
        LogFormat::Json => logs.json().with_writer(sink).init(),
        LogFormat::Text => logs.with_writer(sink).with_ansi(ansi).init(),
    }
    LogGuard(())
}

// ------------------------------------------------------------------ timestamps

/// RFC 3339 UTC timestamps with microseconds (`2026-12-01T11:33:08.484050Z`,
/// the layout of tracing-subscriber's default), the date and time of day
/// computed once per second per thread.
#[derive(Debug, Clone, Copy, Default)]
pub struct FastTime;

thread_local! {
    /// The last second formatted: (seconds since the epoch, `YYYY-MM-DDTHH:MM:SS`).
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

impl FormatTime for FastTime {
    fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|_| fmt::Error)?;
        let mut buf = [0u8; 27];
        format_timestamp(now.as_secs(), now.subsec_micros(), &mut buf);
        w.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// `t` as RFC 3339 UTC with microseconds (the request journal's times).
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let mut buf = [0u8; 27];
    format_timestamp(d.as_secs(), d.subsec_micros(), &mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

/// `YYYY-MM-DDTHH:MM:SS.uuuuuuZ` into `buf` (years past 9999 wrap: not in our lifetime).
fn format_timestamp(secs: u64, micros: u32, buf: &mut [u8; 27]) {
    let (cached, mut prefix) = SECOND.get();
    if cached != secs {
        prefix = date_time(secs);
        SECOND.set((secs, prefix));
    }
    buf[..19].copy_from_slice(&prefix);
    buf[19] = b'.';
    digits(&mut buf[20..26], u64::from(micros));
    buf[26] = b'Z';
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix time.
fn date_time(secs: u64) -> [u8; 19] {
    let (y, m, d) = civil(secs / 86_400);
    let t = secs % 86_400;
    let mut out = *b"0000-00-00T00:00:00";
    digits(&mut out[0..4], y);
    digits(&mut out[5..7], m);
    digits(&mut out[8..10], d);
    digits(&mut out[11..13], t / 3600);
    digits(&mut out[14..16], t / 60 % 60);
    digits(&mut out[17..19], t % 60);
    out
}

/// Year, month, day of a day count since 1970-01-01 (proleptic Gregorian),
/// counted in 400-year eras that start on March 1st so that leap days come last.
fn civil(days: u64) -> (u64, u64, u64) {
    // 1970-01-01 is day 719_468 after 0000-03-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097; // day of era, 0..=146_096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // month from March: 0..=11
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// `n` as zero-padded decimal filling `out` (high digits cut).
fn digits(out: &mut [u8], mut n: u64) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

// ----------------------------------------------------------------- the RPC line

/// How `serve` writes the per-RPC line directly (set by [`init`]): to its sink,
/// as text or JSON. Unset (library use, tests, a terminal with colours): the
/// line is a plain `tracing` event.
static RPC_LINES: OnceLock<(LogSink, LogFormat)> = OnceLock::new();

thread_local! {
    /// Where this thread formats its RPC lines (reused: no allocation per line).
    static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

/// One finished RPC, as the `protoserve::rpc` line reports it.
#[derive(Debug, Clone, Copy)]
pub struct RpcLine<'a> {
    /// Full method path (`/pkg.Service/Method`).
    pub method: &'a str,
    /// The gRPC status code.
    pub code: tonic::Code,
    /// From the call's start to its last reply, failure or cancellation.
    pub micros: u64,
    /// The client's address, when known.
    pub peer: Option<SocketAddr>,
    /// Request message bytes.
    pub request_bytes: u64,
    /// Response message bytes.
    pub response_bytes: u64,
    /// Schema generation that served it.
    pub generation: u64,
}

impl RpcLine<'_> {
    /// Logs the line: written straight to the sink in the layout
    /// tracing-subscriber would give it (text or JSON) when `serve` set one up
    /// and no span is entered, else emitted as an `info` event (target
    /// `protoserve::rpc`). Either way `RUST_LOG` decides whether it appears.
    pub fn log(&self) {
        if !tracing::enabled!(target: RPC_TARGET, tracing::Level::INFO) {
            return;
        }
        if let Some((sink, format)) = RPC_LINES.get()
            && tracing::Span::current().is_none()
        {
            let write = |line: &mut Vec<u8>| {
                line.clear();
                match format {
                    LogFormat::Text => self.text(line),
                    LogFormat::Json => self.json(line),
                }
                sink.push(line);
            };
            LINE.with(|cell| match cell.try_borrow_mut() {
                Ok(mut line) => write(&mut line),
                Err(_) => write(&mut Vec::new()),
            });
            return;
        }
        tracing::info!(
            target: "protoserve::rpc",
            method = %self.method,
            code = ?self.code,
            duration_ms = self.micros as f64 / 1000.0,
            peer = self.peer.map(tracing::field::display),
            request_bytes = self.request_bytes,
            response_bytes = self.response_bytes,
            generation = self.generation,
            "rpc"
        );
    }

    /// `TIMESTAMP  INFO protoserve::rpc: rpc method=... code=Ok duration_ms=0.1 peer=... ...`
    fn text(&self, out: &mut Vec<u8>) {
        timestamp(out);
        out.extend_from_slice(b"  INFO protoserve::rpc: rpc method=");
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(b" code=");
        out.extend_from_slice(code_name(self.code).as_bytes());
        out.extend_from_slice(b" duration_ms=");
        millis(out, self.micros);
        if let Some(peer) = self.peer {
            out.extend_from_slice(b" peer=");
            addr(out, peer);
        }
        out.extend_from_slice(b" request_bytes=");
        out.extend_from_slice(itoa::Buffer::new().format(self.request_bytes).as_bytes());
        out.extend_from_slice(b" response_bytes=");
        out.extend_from_slice(itoa::Buffer::new().format(self.response_bytes).as_bytes());
        out.extend_from_slice(b" generation=");
        out.extend_from_slice(itoa::Buffer::new().format(self.generation).as_bytes());
        out.push(b'\n');
    }

    /// `{"timestamp":...,"level":"INFO","fields":{"message":"rpc",...},"target":"protoserve::rpc"}`
    fn json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"rpc\",\"method\":");
        json_str(out, self.method);
        out.extend_from_slice(b",\"code\":\"");
        out.extend_from_slice(code_name(self.code).as_bytes());
        out.extend_from_slice(b"\",\"duration_ms\":");
        millis(out, self.micros);
        if let Some(peer) = self.peer {
            out.extend_from_slice(b",\"peer\":\"");
            addr(out, peer);
            out.push(b'"');
        }
        out.extend_from_slice(b",\"request_bytes\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.request_bytes).as_bytes());
        out.extend_from_slice(b",\"response_bytes\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.response_bytes).as_bytes());
        out.extend_from_slice(b",\"generation\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.generation).as_bytes());
        out.extend_from_slice(b"},\"target\":\"protoserve::rpc\"}\n");
    }
}

/// The current time as [`FastTime`] writes it.
fn timestamp(out: &mut Vec<u8>) {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(now) => {
            let mut buf = [0u8; 27];
            format_timestamp(now.as_secs(), now.subsec_micros(), &mut buf);
            out.extend_from_slice(&buf);
        }
        Err(_) => out.extend_from_slice(b"<unknown time>"),
    }
}

/// A code's name as its `Debug` prints it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// Microseconds as milliseconds, the way `{:?}` prints `micros as f64 / 1000.0`
/// (below 10^15 µs, 31 years, doubles are dense enough that the shortest
/// decimal that round-trips is the exact one with at most three decimals).
fn millis(out: &mut Vec<u8>, micros: u64) {
    if micros >= 1_000_000_000_000_000 {
        let _ = write!(out, "{:?}", micros as f64 / 1000.0);
        return;
    }
    out.extend_from_slice(itoa::Buffer::new().format(micros / 1000).as_bytes());
    let mut frac = [b'.', b'0', b'0', b'0'];
    digits(&mut frac[1..], micros % 1000);
    let mut len = 4;
    while len > 2 && frac[len - 1] == b'0' {
        len -= 1;
    }
    out.extend_from_slice(&frac[..len]);
}

thread_local! {
    /// The last IPv4 peer this thread formatted (a connection's RPCs share it).
    static LAST_PEER: Cell<Option<(std::net::SocketAddrV4, [u8; 21], usize)>> = const { Cell::new(None) };
}

/// An address as its `Display` prints it (IPv4 without `core::fmt`, and the
/// last one per thread remembered).
fn addr(out: &mut Vec<u8>, addr: SocketAddr) {
    let SocketAddr::V4(v4) = addr else {
        let _ = write!(out, "{addr}");
        return;
    };
    if let Some((last, text, len)) = LAST_PEER.get()
        && last == v4
    {
        out.extend_from_slice(&text[..len]);
        return;
    }
    let start = out.len();
    let [a, b, c, d] = v4.ip().octets();
    for (i, octet) in [a, b, c, d].into_iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        out.extend_from_slice(itoa::Buffer::new().format(octet).as_bytes());
    }
    out.push(b':');
    out.extend_from_slice(itoa::Buffer::new().format(v4.port()).as_bytes());
    let mut text = [0u8; 21];
    let len = out.len() - start;
    if len <= text.len() {
        text[..len].copy_from_slice(&out[start..]);
        LAST_PEER.set(Some((v4, text, len)));
    }
}

/// A JSON string literal (escaping what JSON strings cannot hold as is).
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let plain = |b: &u8| *b >= 0x20 && *b != b'"' && *b != b'\\';
    // Method names and addresses need no escapes: one scan, one copy.
    if s.as_bytes().iter().all(plain) {
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(esc);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days before `year`'s January 1st since 1970, counted year by year.
    fn days_before(year: u64) -> u64 {
        (1970..year).map(|y| if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 { 366 } else { 365 }).sum()
    }

    #[test]
    fn timestamps_match_known_dates() {
        for (secs, want) in [
            (0, "1970-01-01T00:00:00"),
            (951_782_400, "2000-02-29T00:00:00"),
            (1_709_251_199, "2024-02-29T23:59:59"),
            (4_102_444_799, "2099-12-31T23:59:59"),
            (1_796_118_788, "2026-12-01T09:53:08"),
        ] {
            assert_eq!(std::str::from_utf8(&date_time(secs)).unwrap(), want);
        }
        let mut buf = [0u8; 27];
        format_timestamp(0, 7, &mut buf);
        assert_eq!(std::str::from_utf8(&buf).unwrap(), "1970-01-01T00:00:00.000007Z");
    }

    #[test]
    fn civil_dates_agree_with_counting_days() {
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2000 {
            let days = rng.u64(0..200_000);
            let (y, m, d) = civil(days);
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let month_len = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            assert!((1..=12).contains(&m) && d >= 1 && d <= month_len[m as usize - 1], "{days}: {y}-{m}-{d}");
            let before: u64 = month_len[..m as usize - 1].iter().sum();
            assert_eq!(days_before(y) + before + d - 1, days, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn millis_print_as_the_f64_debug_does() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut values = vec![0, 1, 59, 1000, 6041, 10_500, 123_456_789, 999_999_999_999_999, 1_000_000_000_000_000];
        values.extend((0..5000).map(|_| rng.u64(0..10_000_000_000)));
        values.extend((0..1000).map(|_| rng.u64(..)));
        values.extend((0..1000).map(|_| rng.u64(990_000_000_000_000..1_000_000_000_000_000)));
        for micros in values {
            let mut out = Vec::new();
            millis(&mut out, micros);
            assert_eq!(String::from_utf8(out).unwrap(), format!("{:?}", micros as f64 / 1000.0), "{micros}");
        }
    }

    #[test]
    fn addresses_and_codes_print_as_display_and_debug_do() {
        let mut rng = fastrand::Rng::with_seed(5);
        for _ in 0..2000 {
            let a: SocketAddr = if rng.bool() {
                (std::net::Ipv4Addr::from(rng.u32(..)), rng.u16(..)).into()
            } else {
                (std::net::Ipv6Addr::from(rng.u128(..)), rng.u16(..)).into()
            };
            // Twice: the second one from the per-thread memory.
            for _ in 0..2 {
                let mut out = b"peer=".to_vec();
                addr(&mut out, a);
                assert_eq!(String::from_utf8(out).unwrap(), format!("peer={a}"));
            }
        }
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(code_name(code), format!("{code:?}"));
        }
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut inputs = vec!["plain".to_owned(), "q\"b\\s\n\t\r\u{1}\u{8}\u{c}é€".to_owned()];
        inputs.extend((0..500).map(|_| (0..rng.usize(0..20)).map(|_| rng.char('\0'..'\u{2000}')).collect()));
        for s in inputs {
            let mut out = Vec::new();
            json_str(&mut out, &s);
            let out = String::from_utf8(out).unwrap();
            assert_eq!(serde_json::from_str::<String>(&out).unwrap(), s, "{out}");
        }
    }

    #[test]
    fn rpc_lines_are_valid_json_and_text() {
        let line = RpcLine {
            method: "/users.UserService/GetUser",
            code: tonic::Code::NotFound,
            micros: 6041,
            peer: Some("127.0.0.1:42790".parse().unwrap()),
            request_bytes: 8,
            response_bytes: 0,
            generation: 1,
        };
        let mut out = Vec::new();
        line.json(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], "protoserve::rpc");
        assert_eq!(v["level"], "INFO");
        assert_eq!(
            v["fields"],
            serde_json::json!({"message": "rpc", "method": "/users.UserService/GetUser", "code": "NotFound",
                "duration_ms": 6.041, "peer": "127.0.0.1:42790", "request_bytes": 8, "response_bytes": 0,
                "generation": 1})
        );
        assert!(v["timestamp"].as_str().is_some_and(|t| t.len() == 27 && t.ends_with('Z')), "{v}");
        let mut out = Vec::new();
        line.text(&mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(
                "Z  INFO protoserve::rpc: rpc method=/users.UserService/GetUser code=NotFound duration_ms=6.041 \
                 peer=127.0.0.1:42790 request_bytes=8 response_bytes=0 generation=1\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn sink_writes_lines_in_order_and_flushes() {
        #[derive(Clone, Default)]
        struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Shared {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let out = Shared::default();
        let sink = LogSink::spawn(out.clone()).unwrap();
        let mut want = String::new();
        for i in 0..1000 {
            let line = format!("line {i}\n");
            let mut w = sink.make_writer();
            w.write_all(line.as_bytes()).unwrap();
            want.push_str(&line);
        }
        sink.flush();
        let got = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        // Lines are dropped only when the buffer is full (4 MiB > 9 KB here).
        assert_eq!((got, sink.dropped()), (want, 0));
    }

    #[test]
    fn a_full_buffer_drops_whole_lines_and_counts_them() {
        /// Holds its first write until told to go on.
        struct Gate(std::sync::mpsc::Receiver<()>, Arc<std::sync::Mutex<Vec<u8>>>);
        impl io::Write for Gate {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                let _ = self.0.recv();
                self.1.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (go, wait) = std::sync::mpsc::channel();
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = LogSink::spawn(Gate(wait, out.clone())).unwrap();
        let line = [b"x".repeat(1023), b"\n".to_vec()].concat();
        // The writer blocks on its first batch (at most CAPACITY bytes); the
        // buffer then fills up behind it.
        let total = 2 * CAPACITY / line.len() + 100;
        for _ in 0..total {
            sink.make_writer().write_all(&line).unwrap();
        }
        assert!(sink.dropped() > 0, "nothing dropped");
        drop(go);
        sink.flush();
        let out = out.lock().unwrap();
        assert_eq!(out.len() % line.len(), 0, "a partial line was written");
        assert!(out.chunks(line.len()).all(|l| l == line.as_slice()));
        assert_eq!(out.len() / line.len() + sink.dropped() as usize, total);
    }
}
