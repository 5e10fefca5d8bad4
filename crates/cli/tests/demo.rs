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

#[test]
fn demo_reshards_while_events_flow_and_counts_nothing_lost_or_doubled() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardwire"))
        .args([
            "demo",
            "--seconds",
            "11",
            "--shards",
            "2",
            "--max-concurrency",
            "2",
            "--reshard-at",
            "1",
            "--reshard-to",
            "4",
        ])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("resharding: 4 new shards identify beside the 2 running"),
        "{stdout}"
    );
    assert!(stdout.contains("4/4 shards ready"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    let [.., done, reshard] = lines[..] else {
        panic!("{stdout}");
    };
    assert!(done.contains("6 identifies"), "{done}");
    assert!(
        reshard.starts_with("reshard 2 -> 4: switched after ")
            && reshard.ends_with(" 0 lost, 0 doubled"),
        "{reshard}"
    );
}

#[test]
fn demo_reshard_flags_come_together() {
    let output = Command::new(env!("CARGO_BIN_EXE_shardwire"))
        .args(["demo", "--seconds", "1", "--reshard-at", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--reshard-to"));
}
