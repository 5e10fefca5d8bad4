//! `shardwire demo` runs a cluster against the embedded simulator and ends
//! cleanly after --seconds.

use std::process::Command;

#[test]
fn demo_connects_every_shard_and_ends_cleanly() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardwire"))
        .args([
            "demo",
            "--seconds",
            "3",
            "--shards",
            "2",
            "--max-concurrency",
            "2",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("2/2 shards ready"), "{stdout}");
    let summary = stdout.lines().last().unwrap_or("");
    assert!(
        summary.starts_with("done: ")
            && summary
                .contains("2 identifies, 1 resumes, 2 sessions exported; protocol violations: 0"),
        "{summary}"
    );
}
