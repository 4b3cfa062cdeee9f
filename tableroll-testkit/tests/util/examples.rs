//! The test servers cargo built for these tests (the `[[bin]]` targets of this package, from the
//! library's examples): their paths, known at compile time.

use std::path::Path;

/// The binary of test server `name` (an example of the library: `peer`, `std_http`, `axum`,
/// `hyper`, `tonic`, `actix`, `unix_socket`, `connection_handover`), which cargo builds before it
/// runs these tests.
pub fn binary(name: &str) -> &'static Path {
    let path = match name {
        "peer" => env!("CARGO_BIN_EXE_peer"),
        "std_http" => env!("CARGO_BIN_EXE_std_http"),
        "axum" => env!("CARGO_BIN_EXE_axum"),
        "hyper" => env!("CARGO_BIN_EXE_hyper"),
        "tonic" => env!("CARGO_BIN_EXE_tonic"),
        "actix" => env!("CARGO_BIN_EXE_actix"),
        "unix_socket" => env!("CARGO_BIN_EXE_unix_socket"),
        "connection_handover" => env!("CARGO_BIN_EXE_connection_handover"),
        _ => panic!("{name:?} is not a test server of this package"),
    };
    Path::new(path)
}
