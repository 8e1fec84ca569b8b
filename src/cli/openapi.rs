//! `drover openapi`: prints the OpenAPI 3.1 document of the HTTP API (the
//! one `GET /openapi.json` serves) to stdout, or writes it to `--output`.
//! It is built from the code alone: no configuration, database or server.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

#[derive(Args, Debug)]
pub struct OpenapiArgs {
    /// Write the document to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: &OpenapiArgs) -> ExitCode {
    let document = crate::http::openapi::document_bytes();
    let written = match &args.output {
        Some(path) => {
            std::fs::write(path, &document).map_err(|e| format!("cannot write {}: {e}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&document)
                .and_then(|()| stdout.write_all(b"\n"))
                .map_err(|e| format!("cannot write to standard output: {e}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("drover: {message}");
            ExitCode::FAILURE
        }
    }
}
