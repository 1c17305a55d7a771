//! `recsys serve` stops on SIGTERM the way an orchestrator expects: it stops accepting, answers
//! the requests already in flight, writes the event archive, and exits with status 0.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

fn wait_for_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within {within:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One response: the head up to the blank line, then `content-length` bytes of body.
fn read_response(stream: &mut TcpStream) -> String {
    let mut bytes = Vec::new();
    let mut byte = [0u8; 1];
    while !bytes.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).unwrap();
    let length: usize = head
        .lines()
        .find_map(|line| {
            line.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|value| value.trim().parse().unwrap())
        })
        .expect("a content-length header");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    head + &String::from_utf8(body).unwrap()
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_answers_the_requests_in_flight_and_exits_zero() {
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    support::tiny_deployment(data_dir.path(), recsys);
    let (mut child, address) = support::serve(recsys, data_dir.path(), |_| {});

    let body = br#"{"item_seq_raw": [["i1", "i2", "i3"]]}"#;
    let request = |connection: &str| {
        format!(
            "POST /recs/retrieve?count=3 HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n",
            body.len()
        )
    };
    // A client that keeps its connection open and idle: it must not hold up the exit.
    let mut idle = TcpStream::connect(address).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..3 {
        idle.write_all(request("keep-alive").as_bytes()).unwrap();
        idle.write_all(body).unwrap();
        assert!(read_response(&mut idle).starts_with("HTTP/1.1 200"));
    }

    // Events accepted before the signal: the archive is written at shutdown (its interval is
    // a minute), so finding them there shows the drain.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let events = format!(
        "{{\"event_id\": \"e1\", \"user_id\": \"u1\", \"item_id\": \"i1\", \"event_type\": \"click\", \"event_time_ms\": {now_ms}}}\n\
         {{\"event_id\": \"e2\", \"user_id\": \"u1\", \"item_id\": \"i2\", \"event_type\": \"click\", \"event_time_ms\": {}}}\n",
        now_ms + 1
    );
    idle.write_all(
        format!(
            "POST /events HTTP/1.1\r\nhost: {address}\r\ncontent-type: application/x-ndjson\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n{events}",
            events.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let accepted = read_response(&mut idle);
    assert!(accepted.contains("\"accepted\":2"), "{accepted}");

    // One request in flight when the signal comes: headers and half the body sent.
    let mut in_flight = TcpStream::connect(address).unwrap();
    in_flight
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    in_flight.write_all(request("close").as_bytes()).unwrap();
    let (first_half, second_half) = body.split_at(body.len() / 2);
    in_flight.write_all(first_half).unwrap();
    std::thread::sleep(Duration::from_millis(300));

    terminate(&child);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the server exited with a request still in flight"
    );
    in_flight.write_all(second_half).unwrap();
    let mut response = String::new();
    in_flight.read_to_string(&mut response).unwrap();
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the request in flight got {response:?}"
    );
    assert!(response.contains("\"item_id\""), "{response}");

    let status = wait_for_exit(&mut child, Duration::from_secs(20));
    assert!(
        status.success(),
        "SIGTERM must end serve with status 0: {status}"
    );
    // New connections are refused once it is gone.
    assert!(TcpStream::connect(address).is_err());
    let archived = archive::EventArchive::new(data_dir.path().join("archive"), "test")
        .read(None, None)
        .unwrap();
    let ids: Vec<&str> = archived
        .iter()
        .map(|event| event.event_id.as_str())
        .collect();
    assert_eq!(
        ids,
        ["e1", "e2"],
        "the accepted events are archived at shutdown"
    );
}
