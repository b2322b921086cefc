//! Accepts the subset of protoc's command line that prost-build uses
//! (`--include_imports`, `--include_source_info`, `-o FILE`, `-I DIR`, files)
//! and writes the FileDescriptorSet with protox.

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut includes = Vec::new();
    let mut files = Vec::new();
    let mut output = None;
    let mut imports = false;
    let mut source_info = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--include_imports" => imports = true,
            "--include_source_info" => source_info = true,
            "--version" => {
                println!("libprotoc 3.21.12 (protox shim)");
                return ExitCode::SUCCESS;
            }
            "-o" => output = args.next(),
            "-I" => includes.extend(args.next()),
            other => {
                if let Some(v) = other.strip_prefix("--descriptor_set_out=") {
                    output = Some(v.to_owned());
                } else if let Some(v) = other.strip_prefix("--proto_path=") {
                    includes.push(v.to_owned());
                } else if let Some(v) = other.strip_prefix("-I") {
                    includes.push(v.to_owned());
                } else if other.starts_with('-') {
                    // Flags such as --experimental_allow_proto3_optional need no action.
                } else {
                    files.push(other.to_owned());
                }
            }
        }
    }
    if includes.is_empty() {
        includes.push(".".to_owned());
    }
    let result = (|| -> Result<(), String> {
        let mut compiler = protox::Compiler::new(&includes).map_err(|e| e.to_string())?;
        compiler.include_imports(imports);
        compiler.include_source_info(source_info);
        for file in &files {
            compiler.open_file(file).map_err(|e| format!("{e:?}"))?;
        }
        let out = output.ok_or("protoc-shim: -o FILE is required")?;
        std::fs::write(&out, compiler.encode_file_descriptor_set()).map_err(|e| format!("{out}: {e}"))
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
