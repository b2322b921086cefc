//! Command-line arguments, parsed once into a validated [`Config`]; clap types stay
//! in this module.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory as _, Parser, Subcommand};

/// What to do, with every argument resolved to a real type.
#[derive(Debug, Clone)]
pub struct Config {
    /// The subcommand.
    pub command: Command,
}

/// The subcommands.
// Built once at startup: the size of the serve variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Command {
    /// Serve the schema.
    Serve(ServeConfig),
    /// Compile and list what would be served.
    Check(CheckConfig),
    /// Compare two schemas for wire compatibility.
    Compat(crate::compat_cmd::Options),
}

/// `protoserve serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Schema roots (include paths whose `.proto` files are all served).
    pub roots: Vec<PathBuf>,
    /// Import-only roots (`-I`).
    pub imports: Vec<PathBuf>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Listen address.
    pub addr: SocketAddr,
    /// Records to pre-load into the resource store.
    pub data: Option<PathBuf>,
    /// Stub directories (`--stubs`).
    pub stubs: Vec<PathBuf>,
    /// Max message size, both directions, in bytes.
    pub max_message_size: usize,
    /// Watch the roots and hot-reload on changes.
    pub watch: bool,
    /// What a reload does with a schema that breaks wire compatibility.
    pub on_breaking: crate::OnBreaking,
    /// Which encoding compresses responses for clients that accept it.
    pub compression: crate::Compression,
    /// Most request bytes one client-streaming store call may buffer.
    pub max_call_buffer: usize,
    /// Per-connection timeouts.
    pub conn_limits: crate::ConnLimits,
    /// Serve TLS from these PEM files (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls: Option<crate::TlsFiles>,
    /// Bearer tokens accepted (`--auth-token`); auth is on when this or
    /// `auth_tokens_file` is set.
    pub auth_tokens: Vec<String>,
    /// A file of bearer tokens, one per line, re-read when it changes.
    pub auth_tokens_file: Option<PathBuf>,
    /// Health and reflection need a token too.
    pub auth_all: bool,
    /// Only methods matching these patterns need a token (all when empty).
    pub auth_scope: Vec<String>,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// Where to serve Prometheus metrics (`/metrics`); off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// Field names of JSON responses (Connect, HTTP/JSON).
    pub json_names: crate::JsonNames,
    /// Origins allowed by CORS (`*`: any); empty: no CORS.
    pub cors_origins: Vec<String>,
    /// Export a span per RPC to this OTLP/gRPC collector (`--otlp-endpoint`).
    pub otlp_endpoint: Option<String>,
    /// Where to serve the admin API (HTTP/JSON); off when `None`.
    pub admin_addr: Option<SocketAddr>,
    /// Calls the admin API's request journal keeps (0: none).
    pub journal_size: usize,
}

/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `protoserve check`.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Schema roots.
    pub roots: Vec<PathBuf>,
    /// Import-only roots (`-I`).
    pub imports: Vec<PathBuf>,
    /// `--exclude` globs.
    pub exclude: Vec<String>,
    /// Stub directories (`--stubs`), checked against the schema.
    pub stubs: Vec<PathBuf>,
    /// Where to write the compiled schema (imports included) as a FileDescriptorSet.
    pub descriptor_set_out: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(name = "protoserve", version, about = "Serve a directory of .proto files as a gRPC server, no code needed")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once at startup.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Cmd {
    /// Compile the .proto files under DIRs and serve all their services.
    Serve(ServeArgs),
    /// Compile the .proto files under DIRs and print the methods that would be served.
    Check(CheckArgs),
    /// Report edits between OLD and NEW that make old clients misread data
    /// (buf's WIRE rules and more). Exit 0: compatible, 1: breaking, 2: errors.
    Compat(CompatArgs),
}

#[derive(Debug, Args)]
struct CompatArgs {
    /// The old schema (or, with --against, the new one): a directory of protos,
    /// a .proto file, or a .binpb/.pb FileDescriptorSet.
    #[arg(value_name = "OLD")]
    first: PathBuf,
    /// The new schema, in any of the same forms (not with --against).
    #[arg(value_name = "NEW")]
    second: Option<PathBuf>,
    /// Compare NEW (the only positional argument) against REF: a path as above,
    /// a git reference of the repository around NEW (main, HEAD~1, a tag,
    /// origin/main), or buf's `.git#branch=main,subdir=proto`. Read without
    /// checking anything out.
    #[arg(long, value_name = "REF", required_unless_present = "second", conflicts_with = "second")]
    against: Option<String>,
    /// Rule set: `wire` (buf's WIRE rules + ours) or `wire-json` (adds buf's
    /// WIRE_JSON rules). Default: what the configuration says, else `wire`.
    #[arg(long, value_name = "RULES", value_parser = clap::value_parser!(crate::compat::RuleSet))]
    rules: Option<crate::compat::RuleSet>,
    /// A buf.yaml (its `breaking` section) or protoserve.yaml (its `compat`
    /// section). Default: the nearest ones next to or above NEW.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format: `text` (compiler-like), `json` (stable, for CI),
    /// `github-actions` (workflow annotations) or `sarif` (SARIF 2.1.0).
    #[arg(long, default_value = "text", value_name = "FORMAT", value_parser = clap::value_parser!(crate::compat::Format))]
    format: crate::compat::Format,
    /// For each field-level finding, encode a sample with one schema and decode it
    /// with the other, and show what the reader sees.
    #[arg(long)]
    probe: bool,
}

/// Which files are read: shared by `serve` and `check`.
#[derive(Debug, Args)]
struct SchemaArgs {
    /// Schema directories or .proto files; every .proto under a directory is served
    /// and each directory is an include root. Default: the current directory.
    /// node_modules, target and hidden folders are not walked into.
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Import-only root: resolves imports, its files are not served (repeatable).
    #[arg(short = 'I', long = "import-path", value_name = "DIR")]
    imports: Vec<PathBuf>,
    /// Skip paths under the roots matching GLOB (relative path or file/folder name;
    /// repeatable), e.g. --exclude vendor --exclude 'gen/**/*.proto'.
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Stub directory or file (YAML/JSON; repeatable): answers for any method,
    /// checked against the schema and reloaded with it (see docs/stubs.md).
    #[arg(long, value_name = "DIR")]
    stubs: Vec<PathBuf>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[command(flatten)]
    schema: SchemaArgs,
    /// Address to listen on: HOST:PORT (`127.0.0.1:50051`, `localhost:50051`,
    /// `[::1]:50051`), `:PORT` for every interface, or a bare PORT on loopback.
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT", value_parser = parse_addr)]
    addr: SocketAddr,
    /// YAML or JSON file of records to pre-load: message full name -> list of records
    /// in the proto3 JSON mapping.
    #[arg(long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// Largest message accepted or sent, e.g. 10MiB, 512KiB, 4194304.
    #[arg(long, default_value = "10MiB", value_name = "SIZE", value_parser = parse_size)]
    max_message_size: usize,
    /// Do not watch the schema directories (SIGHUP still reloads).
    #[arg(long)]
    no_watch: bool,
    /// On reload, a schema with breaking wire changes: `warn` (log, go live) or
    /// `reject` (log, keep serving the old schema).
    #[arg(long, value_enum, default_value_t = BreakingArg::Warn, value_name = "POLICY")]
    on_breaking: BreakingArg,
    /// Response compression for clients that list it in grpc-accept-encoding:
    /// gzip, deflate, zstd or none. Compressed requests (gzip, deflate, zstd)
    /// are always accepted.
    #[arg(long, value_enum, default_value_t = CompressionArg::Gzip, value_name = "ENCODING")]
    compression: CompressionArg,
    /// Most request bytes one client-streaming call answered by the store
    /// (BulkCreate) may buffer before it stores all or nothing.
    #[arg(long, default_value = "64MiB", value_name = "SIZE", value_parser = parse_size)]
    max_call_buffer: usize,
    /// A connection must send its first request within this time (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
    handshake_timeout: std::time::Duration,
    /// A connection with no request in flight for this long is closed (e.g. 5m).
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    idle_timeout: std::time::Duration,
    /// HTTP/2 keepalive PING interval to find dead peers (e.g. 60s); 0, the
    /// default, sends no pings.
    #[arg(long, default_value = "0", value_name = "DURATION", value_parser = parse_duration)]
    keepalive_interval: std::time::Duration,
    /// A connection whose client takes no response data for this long while
    /// some waits for it is closed, ending its calls (e.g. 5m); 0 turns it off.
    #[arg(long, default_value = "5m", value_name = "DURATION", value_parser = parse_duration)]
    stall_timeout: std::time::Duration,
    /// Serve TLS with this PEM certificate chain (leaf first; needs --tls-key).
    /// Reloaded when the file changes; open connections keep going.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by a CA in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// Most concurrent RPCs (HTTP/2 streams) per connection [default: 200].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_concurrent_streams: Option<u32>,
    /// Require `authorization: Bearer TOKEN` on every call (repeatable); other
    /// calls answer UNAUTHENTICATED.
    #[arg(long, value_name = "TOKEN")]
    auth_token: Vec<String>,
    /// A file of accepted tokens, one per line (`#` comments), re-read when it changes.
    #[arg(long, value_name = "FILE")]
    auth_tokens: Option<PathBuf>,
    /// With auth on, health, reflection and unknown methods need a token too,
    /// whatever --auth-scope says (open by default).
    #[arg(long)]
    auth_all: bool,
    /// With auth on, only methods matching PATTERN need a token (repeatable): a
    /// service (`users.UserService`, `admin.*`) or `Service/Method` glob (`*/Delete*`).
    #[arg(long, value_name = "PATTERN")]
    auth_scope: Vec<String>,
    /// Log lines as `text` or `json` (one object per line). One line per RPC at
    /// info (target protoserve::rpc); RUST_LOG filters.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    log_format: LogFormat,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (off by default).
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_addr)]
    metrics_addr: Option<SocketAddr>,
    /// Serve the stub admin API (HTTP/JSON: runtime stubs, request journal,
    /// verify; described at /openapi.json) on HOST:PORT. Off by default; PORT
    /// or :PORT alone listen on loopback.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_admin_addr)]
    admin_addr: Option<SocketAddr>,
    /// Calls the admin API's request journal keeps, oldest dropped first
    /// (0: no journal).
    #[arg(long, value_name = "N", default_value_t = crate::journal::DEFAULT_CAPACITY)]
    journal_size: usize,
    /// A YAML file of serve flags by long name (`max-message-size: 4MiB`,
    /// `auth-token: [a, b]`, `no-watch: true`, `dirs: [protos]`); flags given on
    /// the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Field names in JSON responses (Connect, HTTP/JSON): camel (lowerCamelCase
    /// json_name, the proto3 JSON default) or proto (as declared).
    #[arg(long, value_enum, default_value_t = JsonNamesArg::Camel, value_name = "NAMES")]
    json_names: JsonNamesArg,
    /// Allow browser pages from this origin (e.g. https://app.example.com, or *
    /// for any) to call the server: CORS preflights answered, gRPC/Connect
    /// response headers exposed. Repeatable.
    #[arg(long = "cors-origin", value_name = "ORIGIN", value_parser = crate::protocol::parse_origin)]
    cors_origin: Vec<String>,
    /// Export a span per RPC with OpenTelemetry to this OTLP/gRPC collector
    /// (http://HOST:PORT, e.g. http://127.0.0.1:4317), continuing an incoming
    /// W3C `traceparent`. OTEL_BSP_* and OTEL_SERVICE_NAME apply. Off by default.
    #[arg(long, value_name = "URL", value_parser = crate::otlp::parse_endpoint)]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum JsonNamesArg {
    Camel,
    Proto,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum CompressionArg {
    Gzip,
    Deflate,
    Zstd,
    None,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BreakingArg {
    Warn,
    Reject,
}

#[derive(Debug, Args)]
struct CheckArgs {
    #[command(flatten)]
    schema: SchemaArgs,
    /// Also write the compiled schema, imports included, as a binary
    /// FileDescriptorSet (usable as `protoc --descriptor_set_in`).
    #[arg(long, value_name = "FILE")]
    descriptor_set_out: Option<PathBuf>,
}

fn roots(dirs: Vec<PathBuf>) -> Vec<PathBuf> {
    if dirs.is_empty() { vec![PathBuf::from(".")] } else { dirs }
}

impl Config {
    /// Parses the process arguments; exits with clap's message and code 2 on usage errors.
    pub fn from_args() -> Config {
        match Self::try_parse_from(std::env::args_os()) {
            Ok(c) => c,
            Err(e) => e.exit(),
        }
    }

    /// Parses the given arguments (the first is the program name).
    pub fn try_parse_from<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let args = with_config_file(args)
            .map_err(|msg| Cli::command().error(clap::error::ErrorKind::InvalidValue, format!("--config: {msg}")))?;
        Cli::try_parse_from(args).map(Self::from_cli)
    }

    fn from_cli(cli: Cli) -> Config {
        let command = match cli.command {
            Cmd::Serve(a) => Command::Serve(ServeConfig {
                roots: roots(a.schema.dirs),
                imports: a.schema.imports,
                exclude: a.schema.exclude,
                addr: a.addr,
                data: a.data,
                stubs: a.schema.stubs,
                max_message_size: a.max_message_size,
                watch: !a.no_watch,
                on_breaking: match a.on_breaking {
                    BreakingArg::Warn => crate::OnBreaking::Warn,
                    BreakingArg::Reject => crate::OnBreaking::Reject,
                },
                compression: match a.compression {
                    CompressionArg::Gzip => crate::Compression::Gzip,
                    CompressionArg::Deflate => crate::Compression::Deflate,
                    CompressionArg::Zstd => crate::Compression::Zstd,
                    CompressionArg::None => crate::Compression::None,
                },
                max_call_buffer: a.max_call_buffer,
                tls: a.tls_cert.zip(a.tls_key).map(|(cert, key)| crate::TlsFiles {
                    cert,
                    key,
                    client_ca: a.tls_client_ca,
                }),
                conn_limits: crate::ConnLimits {
                    handshake_timeout: a.handshake_timeout,
                    idle_timeout: a.idle_timeout,
                    keepalive_interval: Some(a.keepalive_interval).filter(|d| !d.is_zero()),
                    stall_timeout: Some(a.stall_timeout).filter(|d| !d.is_zero()),
                    max_concurrent_streams: a.max_concurrent_streams,
                },
                auth_tokens: a.auth_token,
                auth_tokens_file: a.auth_tokens,
                auth_all: a.auth_all,
                auth_scope: a.auth_scope,
                log_format: a.log_format,
                metrics_addr: a.metrics_addr,
                admin_addr: a.admin_addr,
                journal_size: a.journal_size,
                json_names: match a.json_names {
                    JsonNamesArg::Camel => crate::JsonNames::Camel,
                    JsonNamesArg::Proto => crate::JsonNames::Proto,
                },
                cors_origins: a.cors_origin,
                otlp_endpoint: a.otlp_endpoint,
            }),
            Cmd::Check(a) => Command::Check(CheckConfig {
                roots: roots(a.schema.dirs),
                imports: a.schema.imports,
                exclude: a.schema.exclude,
                stubs: a.schema.stubs,
                descriptor_set_out: a.descriptor_set_out,
            }),
            Cmd::Compat(a) => {
                let (against, new) = match (a.against, a.second) {
                    (_, Some(new)) => (crate::compat_cmd::Against::Path(a.first), new),
                    (Some(r), None) => (crate::compat_cmd::Against::Ref(r), a.first),
                    // clap requires one of the two.
                    (None, None) => (crate::compat_cmd::Against::Path(a.first.clone()), a.first),
                };
                Command::Compat(crate::compat_cmd::Options {
                    new,
                    against,
                    rules: a.rules,
                    config: a.config,
                    format: a.format,
                    probe: a.probe,
                })
            }
        };
        Config { command }
    }
}

/// The most a `--config` file may hold.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

/// `serve --config FILE`: the file's settings become arguments, except those
/// the command line gives itself (it wins). Other commands pass through.
fn with_config_file(args: Vec<std::ffi::OsString>) -> Result<Vec<std::ffi::OsString>, String> {
    use clap::parser::ValueSource;
    if args.get(1).is_none_or(|a| a != "serve") {
        return Ok(args);
    }
    let mut file = None;
    let mut it = args.iter().skip(2);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        } else if a == "--config" {
            file = it.next().map(PathBuf::from);
            break;
        } else if let Some(v) = a.strip_prefix("--config=") {
            file = Some(PathBuf::from(v));
            break;
        }
    }
    let Some(file) = file else { return Ok(args) };
    // Let clap report command-line mistakes itself, with its own message.
    let Ok(matches) = Cli::command().try_get_matches_from(&args) else { return Ok(args) };
    let Some(given) = matches.subcommand_matches("serve") else { return Ok(args) };
    let text = read_config(&file)?;
    let extra = config_args(&text, |id| given.value_source(id) == Some(ValueSource::CommandLine))
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let (flags, dirs): (Vec<_>, Vec<_>) = extra.into_iter().partition(|a| a.starts_with("--"));
    let mut out: Vec<std::ffi::OsString> = args[..2].to_vec();
    out.extend(flags.into_iter().map(Into::into));
    out.extend(args[2..].iter().cloned());
    if !dirs.is_empty() {
        if !args[2..].iter().any(|a| a == "--") {
            out.push("--".into());
        }
        out.extend(dirs.into_iter().map(Into::into));
    }
    Ok(out)
}

fn read_config(file: &std::path::Path) -> Result<String, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(file).map_err(|e| format!("cannot read '{}': {e}", file.display()))?;
    let mut text = String::new();
    f.take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read '{}': {e}", file.display()))?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(format!("'{}' is larger than {MAX_CONFIG_FILE} bytes", file.display()));
    }
    Ok(text)
}

/// Turns a YAML mapping of `serve` long flag names to values into arguments
/// (`--name=value`, repeated for lists; `--name` for a `true` switch; `dirs`
/// entries as bare values), skipping the arguments `on_command_line` names.
fn config_args(text: &str, on_command_line: impl Fn(&str) -> bool) -> Result<Vec<String>, String> {
    use yaml_serde::Value;
    let doc: Value = yaml_serde::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let map = match doc {
        Value::Null => return Ok(Vec::new()),
        Value::Mapping(m) => m,
        _ => return Err("expected a mapping of flag names to values, e.g. `max-message-size: 4MiB`".into()),
    };
    let cmd = Cli::command();
    let serve = cmd.find_subcommand("serve").ok_or("no serve command")?;
    let known = || {
        let mut names: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
        names.retain(|n| !matches!(*n, "help" | "config"));
        names.push("dirs");
        names.join(", ")
    };
    let mut out = Vec::new();
    for (key, value) in map {
        let Value::String(key) = key else {
            return Err(format!(
                "keys are flag names; found {}",
                scalar_text(&key).unwrap_or_else(|| "a non-string key".into())
            ));
        };
        let arg = serve
            .get_arguments()
            .find(|a| if key == "dirs" { a.is_positional() } else { a.get_long() == Some(key.as_str()) })
            .filter(|_| !matches!(key.as_str(), "help" | "config"));
        let Some(arg) = arg else {
            return Err(format!("unknown key '{key}' (known: {})", known()));
        };
        if on_command_line(arg.get_id().as_str()) || value.is_null() {
            continue;
        }
        let items = match value {
            Value::Sequence(items) => {
                if !matches!(arg.get_action(), clap::ArgAction::Append) {
                    return Err(format!("'{key}' takes one value, not a list"));
                }
                items
            }
            one => vec![one],
        };
        for item in items {
            if !arg.get_action().takes_values() {
                match item {
                    Value::Bool(true) => out.push(format!("--{key}")),
                    Value::Bool(false) => {}
                    _ => return Err(format!("'{key}' is a switch: write `{key}: true` or `{key}: false`")),
                }
                continue;
            }
            let Some(v) = scalar_text(&item) else {
                return Err(format!("'{key}': expected a string, number or boolean"));
            };
            if arg.is_positional() {
                // A directory starting with '-' must not read as a flag.
                out.push(if v.starts_with('-') { format!("./{v}") } else { v });
            } else {
                out.push(format!("--{key}={v}"));
            }
        }
    }
    Ok(out)
}

fn scalar_text(v: &yaml_serde::Value) -> Option<String> {
    use yaml_serde::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses a listen address: `HOST:PORT` with an IP or a host name (`localhost:50051`,
/// resolved now; IPv4 preferred when a name has both), `[IPv6]:PORT`, `:PORT` (every
/// IPv4 interface, as Go servers read it) or a bare `PORT` (loopback).
/// The admin API's address: like [`parse_addr`], but `:PORT` is loopback too
/// (the admin API edits what the server answers: never open by accident).
pub(crate) fn parse_admin_addr(s: &str) -> Result<SocketAddr, String> {
    match s.trim().strip_prefix(':') {
        Some(port) if !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => parse_addr(port),
        _ => parse_addr(s),
    }
}

pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    use std::net::{Ipv4Addr, ToSocketAddrs};
    let s = s.trim();
    let expected = "expected HOST:PORT, e.g. 127.0.0.1:50051, localhost:50051, [::1]:50051, :50051 (every interface) or 50051 (loopback)";
    let port = |p: &str| p.parse::<u16>().map_err(|_| format!("'{s}': '{p}' is not a port number; {expected}"));
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if s.chars().all(|c| c.is_ascii_digit()) && !s.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port(s)?)));
    }
    let Some((host, p)) = s.rsplit_once(':') else { return Err(format!("'{s}' has no port; {expected}")) };
    let p = port(p)?;
    if host.is_empty() {
        return Ok(SocketAddr::from((Ipv4Addr::UNSPECIFIED, p)));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!("'{s}': write an IPv6 address in brackets, e.g. [::1]:{p}"));
    }
    let resolved: Vec<SocketAddr> = (host, p)
        .to_socket_addrs()
        .map_err(|e| format!("'{s}': cannot resolve host '{host}': {e}; {expected}"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| resolved.first())
        .copied()
        .ok_or_else(|| format!("'{s}': host '{host}' has no address; {expected}"))
}

pub use crate::units::{parse_duration, parse_size};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "-1s", "1x", "1.5s", "99999999999999999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 * 1024 * 1024));
        assert_eq!(parse_size("512kib"), Ok(512 * 1024));
        assert_eq!(parse_size("4194304"), Ok(4194304));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("0").is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:5").unwrap().to_string(), "127.0.0.1:5");
        assert_eq!(parse_addr(":50051").unwrap().to_string(), "0.0.0.0:50051");
        assert_eq!(parse_addr("50051").unwrap().to_string(), "127.0.0.1:50051");
        assert_eq!(parse_addr("[::1]:7").unwrap().to_string(), "[::1]:7");
        assert!(parse_addr("localhost:50051").unwrap().ip().is_loopback());
        for bad in ["", "localhost", "x:y", ":99999", "::1:5"] {
            let e = parse_addr(bad).unwrap_err();
            assert!(e.contains("HOST:PORT") || e.contains("brackets"), "{bad}: {e}");
        }
    }

    #[test]
    fn compat_takes_old_new_or_new_against_ref() {
        use crate::compat_cmd::Against;
        let c = Config::try_parse_from(["protoserve", "compat", "a", "b"]).unwrap();
        let Command::Compat(o) = c.command else { panic!("expected compat") };
        assert_eq!((o.against, o.new, o.rules), (Against::Path("a".into()), PathBuf::from("b"), None));
        let c =
            Config::try_parse_from(["protoserve", "compat", "b", "--against", "origin/main", "--rules", "wire-json"])
                .unwrap();
        let Command::Compat(o) = c.command else { panic!("expected compat") };
        assert_eq!(o.against, Against::Ref("origin/main".into()));
        assert_eq!((o.new, o.rules), (PathBuf::from("b"), Some(crate::compat::RuleSet::WireJson)));
        for bad in
            [&["compat", "a"][..], &["compat", "a", "b", "--against", "main"], &["compat", "a", "--format", "xml"]]
        {
            let args = std::iter::once("protoserve").chain(bad.iter().copied());
            assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
        }
    }

    fn serve_with_config(yaml: &str, args: &[&str]) -> Result<ServeConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("protoserve.yaml");
        std::fs::write(&file, yaml).unwrap();
        let mut all = vec!["protoserve", "serve", "--config", file.to_str().unwrap()];
        all.extend_from_slice(args);
        match Config::try_parse_from(all).map_err(|e| e.to_string())?.command {
            Command::Serve(s) => Ok(s),
            _ => Err("not serve".into()),
        }
    }

    #[test]
    fn config_file_values_and_command_line_precedence() {
        let yaml = "addr: 127.0.0.1:7000\nmax-message-size: 1MiB\nno-watch: true\nauth-token: [a, b]\n\
                    exclude: vendor\ndirs: [protos, -odd]\nmax-concurrent-streams: 50\nauth-all: false\n\
                    keepalive-interval: 60s\nlog-format: json\nmetrics-addr: 127.0.0.1:9090\n";
        let s = serve_with_config(yaml, &[]).unwrap();
        assert_eq!(s.addr.to_string(), "127.0.0.1:7000");
        assert_eq!((s.max_message_size, s.watch, s.auth_all), (1024 * 1024, false, false));
        assert_eq!((s.auth_tokens, s.exclude), (vec!["a".to_owned(), "b".to_owned()], vec!["vendor".to_owned()]));
        assert_eq!(s.roots, vec![PathBuf::from("protos"), PathBuf::from("./-odd")]);
        assert_eq!(s.conn_limits.max_concurrent_streams, Some(50));
        assert_eq!(s.conn_limits.keepalive_interval, Some(std::time::Duration::from_secs(60)));
        assert_eq!((s.log_format, s.metrics_addr.map(|a| a.port())), (LogFormat::Json, Some(9090)));
        assert_eq!((s.admin_addr, s.journal_size), (None, crate::journal::DEFAULT_CAPACITY));
        let s = serve_with_config("admin-addr: ':7100'\njournal-size: 5\n", &[]).unwrap();
        assert_eq!((s.admin_addr, s.journal_size), (Some("127.0.0.1:7100".parse().unwrap()), 5));
        let s = serve_with_config("admin-addr: 7100\n", &["--admin-addr", "0.0.0.0:7101"]).unwrap();
        assert_eq!(s.admin_addr, Some("0.0.0.0:7101".parse().unwrap()));
        assert!(serve_with_config("journal-size: many\n", &[]).is_err());
        // The command line wins, for single and repeatable flags and for DIRs.
        let s = serve_with_config(yaml, &["--addr", "127.0.0.1:7001", "--auth-token", "c", "here"]).unwrap();
        assert_eq!((s.addr.to_string(), s.auth_tokens), ("127.0.0.1:7001".to_owned(), vec!["c".to_owned()]));
        assert_eq!((s.roots, s.max_message_size), (vec![PathBuf::from("here")], 1024 * 1024));
        // An empty file changes nothing.
        assert_eq!(serve_with_config("", &[]).unwrap().addr.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn config_file_mistakes_are_named() {
        for (yaml, needle) in [
            ("max-mesage-size: 1MiB", "unknown key 'max-mesage-size'"),
            ("config: other.yaml", "unknown key 'config'"),
            ("help: true", "unknown key 'help'"),
            ("addr: [a, b]", "'addr' takes one value"),
            ("no-watch: yes please", "'no-watch' is a switch"),
            ("exclude: {a: b}", "'exclude': expected a string"),
            ("- a\n- b", "expected a mapping"),
            ("max-message-size: lots", "lots"),
            ("a: [", "not valid YAML"),
            ("1: x", "keys are flag names"),
        ] {
            let e = serve_with_config(yaml, &[]).unwrap_err();
            assert!(e.contains(needle), "{yaml:?}: {e}");
        }
        let e = Config::try_parse_from(["protoserve", "serve", "--config", "/nonexistent.yaml"]).unwrap_err();
        assert!(e.to_string().contains("cannot read '/nonexistent.yaml'"), "{e}");
    }

    #[test]
    fn random_config_files_never_panic() {
        let mut rng = fastrand::Rng::with_seed(11);
        let pieces = [
            "addr",
            "auth-token",
            "no-watch",
            "dirs",
            ":",
            " ",
            "\n",
            "- ",
            "[",
            "]",
            "{",
            "}",
            "&a",
            "*a",
            "'",
            "\"",
            "1",
            "true",
            "~",
            "#",
        ];
        for _ in 0..400 {
            let text: String = (0..rng.usize(0..30)).map(|_| pieces[rng.usize(..pieces.len())]).collect();
            let _ = config_args(&text, |_| false);
            let bytes: Vec<u8> = (0..rng.usize(0..40)).map(|_| rng.u8(..)).collect();
            let _ = config_args(&String::from_utf8_lossy(&bytes), |_| false);
        }
    }

    #[test]
    fn serve_defaults() {
        let c = Config::try_parse_from(["protoserve", "serve", "schemas/users"]).unwrap();
        let Command::Serve(s) = c.command else { panic!("expected serve") };
        assert_eq!(s.addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.max_message_size, 10 * 1024 * 1024);
        assert_eq!(s.roots, vec![PathBuf::from("schemas/users")]);
        assert_eq!(s.tls, None);
    }

    #[test]
    fn tls_flags_go_together() {
        let c = Config::try_parse_from(["protoserve", "serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        let Command::Serve(s) = c.command else { panic!("expected serve") };
        let want = crate::TlsFiles { cert: "c.pem".into(), key: "k.pem".into(), client_ca: None };
        assert_eq!(s.tls, Some(want));
        let c = Config::try_parse_from([
            "protoserve",
            "serve",
            "--tls-cert=c.pem",
            "--tls-key=k.pem",
            "--tls-client-ca=ca.pem",
        ])
        .unwrap();
        let Command::Serve(s) = c.command else { panic!("expected serve") };
        assert_eq!(s.tls.and_then(|t| t.client_ca), Some(PathBuf::from("ca.pem")));
        for bad in [
            &["--tls-cert", "c.pem"][..],
            &["--tls-key", "k.pem"],
            &["--tls-client-ca", "ca.pem"],
            &["--tls-client-ca", "ca.pem", "--tls-key", "k.pem"],
        ] {
            let args = ["protoserve", "serve"].iter().chain(bad);
            assert!(Config::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}
