//! `recsys publish-items` checks every line before it sends any: a file with bad lines is
//! refused whole, each bad line named, and nothing reaches the broker (none runs here).

mod support;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

#[test]
fn bad_lines_are_named_and_nothing_is_sent() {
    let recsys = Path::new(env!("CARGO_BIN_EXE_recsys"));
    let data_dir = tempfile::tempdir().unwrap();
    let mut child = support::recsys(recsys, data_dir.path())
        // No broker listens here: a refusal that tried to send would fail differently.
        .env("RECSYS__EVENTS__URL", "kafka://127.0.0.1:9")
        .arg("publish-items")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(
            b"{\"item_id\": \"sku-1\", \"title\": \"Mug\"}\n{\"item_id\": \"\"}\nnot json\n{\"item_id\": \"sku-2\", \"colour\": \"red\"}\n",
        )
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("3 of 4 items are invalid, none sent"),
        "{stderr}"
    );
    assert!(stderr.contains("line 2: item_id is empty"), "{stderr}");
    assert!(stderr.contains("line 3: "), "{stderr}");
    assert!(
        stderr.contains("line 4: ") && stderr.contains("colour"),
        "{stderr}"
    );
    assert!(!stderr.contains("line 1:"), "{stderr}");
}
