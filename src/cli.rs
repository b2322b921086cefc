//! Command-line arguments, parsed once into a validated [`Config`]; clap types stay
//! in this module.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// What to do, with every argument resolved to a real type.
#[derive(Debug, Clone)]
pub struct Config {
    /// The subcommand.
    pub command: Command,
}

/// The subcommands.
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
    /// Listen address.
    pub addr: SocketAddr,
    /// Records to pre-load into the resource store.
    pub data: Option<PathBuf>,
    /// Max message size, both directions, in bytes.
    pub max_message_size: usize,
    /// Watch the roots and hot-reload on changes.
    pub watch: bool,
    /// What a reload does with a schema that breaks wire compatibility.
    pub on_breaking: crate::OnBreaking,
}

/// `protoserve check`.
#[derive(Debug, Clone)]
pub struct CheckConfig {
    /// Schema roots.
    pub roots: Vec<PathBuf>,
    /// Where to write the compiled schema (imports included) as a FileDescriptorSet.
    pub descriptor_set_out: Option<PathBuf>,
}

#[derive(Debug, Parser)]
#[command(name = "protoserve", version, about = "Serve a directory of .proto files as a gRPC server, no code needed")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

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

#[derive(Debug, Args)]
struct ServeArgs {
    /// Schema directories (each is also an include root). Default: the current directory.
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
    /// Address to listen on (loopback unless asked).
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
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
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BreakingArg {
    Warn,
    Reject,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// Schema directories. Default: the current directory.
    #[arg(value_name = "DIR")]
    dirs: Vec<PathBuf>,
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
        Self::from_cli(Cli::parse())
    }

    /// Parses the given arguments (the first is the program name).
    pub fn try_parse_from<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args).map(Self::from_cli)
    }

    fn from_cli(cli: Cli) -> Config {
        let command = match cli.command {
            Cmd::Serve(a) => Command::Serve(ServeConfig {
                roots: roots(a.dirs),
                addr: a.addr,
                data: a.data,
                max_message_size: a.max_message_size,
                watch: !a.no_watch,
                on_breaking: match a.on_breaking {
                    BreakingArg::Warn => crate::OnBreaking::Warn,
                    BreakingArg::Reject => crate::OnBreaking::Reject,
                },
            }),
            Cmd::Check(a) => {
                Command::Check(CheckConfig { roots: roots(a.dirs), descriptor_set_out: a.descriptor_set_out })
            }
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

/// Parses a byte size: a number with an optional unit (B, KB, KiB, MB, MiB, GB, GiB).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: usize = num.parse().map_err(|_| format!("'{s}' is not a size (e.g. 10MiB, 4194304)"))?;
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        other => {
            return Err(format!("unknown size unit '{other}' (use B, KiB, MiB, GiB, KB, MB, GB)"));
        }
    };
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))?;
    if bytes == 0 {
        return Err("size must be greater than zero".into());
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn serve_defaults() {
        let c = Config::try_parse_from(["protoserve", "serve", "schemas/users"]).unwrap();
        let Command::Serve(s) = c.command else { panic!("expected serve") };
        assert_eq!(s.addr.to_string(), "127.0.0.1:50051");
        assert_eq!(s.max_message_size, 10 * 1024 * 1024);
        assert_eq!(s.roots, vec![PathBuf::from("schemas/users")]);
    }
}
