//! The `shardwire sim` command, run as a built binary.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_shardwire");

#[test]
fn bad_arguments_exit_with_2_and_say_why() {
    for (args, needle) in [
        (&["--port", "x"][..], "invalid value 'x'"),
        (&["--port", "70000"][..], "70000"),
        (&["--shards", "0"][..], "0 is not in 1.."),
        (&["--rate=-1"][..], "not a rate of events per second"),
        (&["--bogus", "1"][..], "unexpected argument '--bogus'"),
        (&["--port"][..], "a value is required"),
    ] {
        let output = Command::new(BIN).arg("sim").args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let help = Command::new(BIN).args(["sim", "--help"]).output().unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--max-concurrency"));
}

#[test]
fn it_serves_rest_and_prints_its_urls() {
    let mut child = Command::new(BIN)
        .args([
            "sim",
            "--port",
            "0",
            "--shards",
            "3",
            "--max-concurrency",
            "2",
            "--rate",
            "5",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let api = lines.next().unwrap().unwrap();
    let gateway = lines.next().unwrap().unwrap();
    let api = api
        .strip_prefix("api http://")
        .expect("api line")
        .to_owned();
    assert!(gateway.starts_with("gateway ws://127.0.0.1:"), "{gateway}");
    // A raw HTTP/1.1 request, so this test needs no HTTP client.
    use std::io::{Read, Write};
    let (host, path) = api.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(stream, "GET /{path}/gateway/bot HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bot sim-token\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""shards":3"#), "{response}");
    assert!(response.contains(r#""max_concurrency":2"#), "{response}");
}
