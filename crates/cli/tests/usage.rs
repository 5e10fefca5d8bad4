//! The command line by clap's conventions: suggestions for mistyped
//! subcommands and flags, and one style of help in every subcommand.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_shardwire");
const SUBCOMMANDS: [&str; 5] = ["tail", "demo", "sim", "node", "reshard"];

fn shardwire(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("DISCORD_TOKEN")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn usage_error(args: &[&str]) -> String {
    let output = shardwire(args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(output.stdout.is_empty(), "{args:?}");
    stderr
}

#[test]
fn a_mistyped_subcommand_or_flag_gets_a_suggestion() {
    for (args, tip) in [
        (&["tial"][..], "a similar subcommand exists: 'tail'"),
        (&["nod"][..], "a similar subcommand exists: 'node'"),
        (
            &["tail", "--tokn", "t"][..],
            "a similar argument exists: '--token'",
        ),
        (
            &["tail", "--token", "t", "--shard-id", "1"][..],
            "a similar argument exists: '--shard-ids'",
        ),
        (
            &["sim", "--max-concurency", "2"][..],
            "a similar argument exists: '--max-concurrency'",
        ),
        (
            &["tail", "--token", "t", "--compression", "zstd"][..],
            "a similar value exists: 'zstd-stream'",
        ),
    ] {
        let stderr = usage_error(args);
        assert!(stderr.contains(tip), "{args:?}: {stderr}");
    }
}

#[test]
fn node_checks_compression_and_intents_as_tail_does() {
    let node = ["node", "--nats", "nats://127.0.0.1:9", "--capacity", "4"];
    for (extra, reason) in [
        (
            &["--token", "t", "--compression", "bogus"][..],
            "[possible values: zlib-stream, zstd-stream, none]",
        ),
        (
            &["--token", "t", "--intents", "GUILD_MESAGES"][..],
            "did you mean GUILD_MESSAGES?",
        ),
        (&["--token", "t", "--api-base", "localhost"][..], "http://"),
        (&["--token", "t", "--shards", "0"][..], "at least 1 shard"),
        // Settings the cluster cannot run with, refused before NATS (here
        // nothing listens) is tried.
        (
            &["--token", "t", "--identify-window-ms", "1"][..],
            "set it to 100 ms or more",
        ),
        (
            &["--token", "t", "--lease-ttl", "1"][..],
            "set it to 2 s or more",
        ),
        (
            &["--token", "t", "--lease-ttl", "60"][..],
            "set it to 150 s or more",
        ),
        (
            &["--token", "t", "--lease-ttl", "5", "--dedup-window", "39"][..],
            "set it to 40 s or more",
        ),
        (
            &[][..],
            "no token: pass --token <TOKEN> or set DISCORD_TOKEN",
        ),
    ] {
        let args = [&node[..], extra].concat();
        let stderr = usage_error(&args);
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

/// `--nats` takes several servers, repeated or separated by commas, and
/// tries each (here nothing listens: exit 1), naming them without their
/// credentials; `--replicas` is 1 to 5.
#[test]
fn node_takes_several_nats_servers_and_a_replica_count() {
    for count in ["0", "6"] {
        let stderr = usage_error(&[
            "node",
            "--nats",
            "nats://127.0.0.1:9",
            "--capacity",
            "1",
            "--token",
            "t",
            "--replicas",
            count,
        ]);
        assert!(stderr.contains("--replicas"), "{count}: {stderr}");
    }
    let output = shardwire(&[
        "node",
        "--nats",
        "nats://bot:s3cret@127.0.0.1:9,nats://127.0.0.1:10",
        "--nats",
        "nats://127.0.0.1:11",
        "--capacity",
        "4",
        "--token",
        "t",
        "--replicas",
        "3",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "cannot connect to NATS at nats://<redacted>@127.0.0.1:9,nats://127.0.0.1:10,nats://127.0.0.1:11"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
}

/// The value names, each for one kind of value, whatever the flag.
const VALUE_NAMES: [&str; 16] = [
    "COMMAND", "TOKEN", "URL", "KIND", "INTENTS", "N", "IDS", "TYPES", "SECS", "MS", "PORT",
    "RATE", "NAME", "PREFIX", "FILE", "ADDR",
];

/// Every option's value name is one of [`VALUE_NAMES`], and each help line
/// is one sentence that starts with a capital and ends without a period,
/// in `shardwire --help` and in each subcommand's short help.
#[test]
fn every_help_has_one_style() {
    let mut helps = vec![vec!["--help"]];
    helps.extend(SUBCOMMANDS.map(|command| vec![command, "-h"]));
    for args in helps {
        let output = shardwire(&args);
        assert!(output.status.success(), "{args:?}");
        let help = String::from_utf8(output.stdout).unwrap();
        for line in help.lines() {
            assert!(!line.trim_end().ends_with('.'), "{args:?}: {line}");
            assert!(!line.contains(". "), "{args:?}: one sentence: {line}");
            for name in line.split('<').skip(1) {
                let name = name.split('>').next().unwrap();
                assert!(VALUE_NAMES.contains(&name), "{args:?}: <{name}> in {line}");
            }
            // A help sentence starts with a capital letter.
            if let Some((_, sentence)) = line.trim_start().split_once("  ") {
                let first = sentence.trim_start().chars().next().unwrap();
                assert!(first.is_uppercase(), "{args:?}: {line}");
            }
        }
    }
    let tail = shardwire(&["tail", "-h"]);
    // Help wraps to the terminal (or 100 columns): compare words.
    let tail = String::from_utf8_lossy(&tail.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        tail.contains("[possible values: zlib-stream, zstd-stream, none]"),
        "{tail}"
    );
}
