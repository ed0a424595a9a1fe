//! The generic Python gRPC client (grpcio + reflection, no generated code) used by the
//! control-plane tests: readiness (installs the packages from PyPI if missing) and one run
//! of `reflect_client.py` against a server.

use std::process::Command;

const CHECK: &str = "import grpc, grpc_reflection, google.protobuf";

/// True when python3 can import grpcio, grpcio-reflection and protobuf (after trying pip).
pub fn python_ready() -> bool {
    let ok = |args: &[&str]| {
        Command::new("python3")
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if ok(&["-c", CHECK]) {
        return true;
    }
    let install = [
        "-m",
        "pip",
        "install",
        "--quiet",
        "grpcio",
        "grpcio-reflection",
        "protobuf",
    ];
    if !ok(&install) {
        // PEP 668 environments refuse a plain install; try the user site.
        let mut user: Vec<&str> = install.to_vec();
        user.extend(["--user", "--break-system-packages"]);
        ok(&user);
    }
    ok(&["-c", CHECK])
}

/// Runs the reflection client against `addr` with `token`; asserts it succeeded and found
/// the three services by reflection, and returns its JSON report.
pub async fn reflect_client(addr: String, token: &'static str) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/grpc_support/reflect_client.py"
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, &addr, token])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let services: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for s in ["dbmazz.v1.Health", "dbmazz.v1.Status", "dbmazz.v1.Control"] {
        assert!(services.contains(&s), "{s} not in {services:?}");
    }
    v
}
