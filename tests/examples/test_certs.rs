//! Writes throwaway TLS certificates for tests into a directory, made with rcgen (no key
//! is ever committed):
//!
//! ```text
//! cargo run --release -p distgat-tests --example test_certs -- DIR
//! ```
//!
//! `DIR/node-ca.pem` (a new CA), `DIR/node-cert.pem` and `DIR/node-key.pem` (a certificate
//! it signed for 127.0.0.1 and localhost, usable by servers and as a client certificate),
//! and the same three `other-*` files of a second, unrelated CA. DIR is created if
//! missing; existing files of those names are overwritten. python/tests/check_client_tls.py
//! runs it. Prints the paths written, one a line.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        eprintln!("usage: test_certs DIR");
        return ExitCode::from(2);
    };
    let dir = PathBuf::from(dir);
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        ["node", "other"]
            .into_iter()
            .map(|name| distgat_tests::certs::pki(&dir, name))
            .collect::<std::io::Result<Vec<_>>>()
    });
    match written {
        Ok(pkis) => {
            for pki in pkis {
                for path in [pki.ca, pki.cert, pki.key] {
                    println!("{}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("test_certs: {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
