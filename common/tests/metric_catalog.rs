//! The metric catalogue against the code and against Prometheus' own linter: every metric a
//! `metrics::counter!`/`gauge!`/`histogram!` call in the workspace names is described, and what
//! the recorder renders for all of them passes `promtool check metrics` (Debian's `prometheus`
//! package, which `scripts/setup.sh --tests` installs; SKIPPED without it).

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::metric_catalog::{Kind, METRICS};

fn workspace_root() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..")
}

/// The first string literal after each metrics macro call in `text`.
fn metric_names_in(text: &str, names: &mut BTreeSet<String>) {
    for macro_call in [
        "metrics::counter!(",
        "metrics::gauge!(",
        "metrics::histogram!(",
    ] {
        for (start, _) in text.match_indices(macro_call) {
            let rest = &text[start + macro_call.len()..];
            let Some(open) = rest.find('"') else { continue };
            let rest = &rest[open + 1..];
            let Some(close) = rest.find('"') else {
                continue;
            };
            let name = &rest[..close];
            if name.starts_with("recsys_") {
                names.insert(name.to_owned());
            }
        }
    }
}

fn rust_files(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != "tests" && !name.to_string_lossy().starts_with('.') {
                rust_files(&path, files);
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn every_metric_the_code_exports_is_in_the_catalogue() {
    let mut files = Vec::new();
    rust_files(&workspace_root(), &mut files);
    let mut used = BTreeSet::new();
    for file in &files {
        metric_names_in(&std::fs::read_to_string(file).unwrap(), &mut used);
    }
    assert!(used.len() > 20, "the scan found only {used:?}");
    let described: BTreeSet<String> = METRICS.iter().map(|info| info.name.to_owned()).collect();
    let undescribed: Vec<_> = used.difference(&described).collect();
    assert!(
        undescribed.is_empty(),
        "not in common::metric_catalog: {undescribed:?}"
    );
    let unused: Vec<_> = described
        .difference(&used)
        .filter(|name| *name != "recsys_build_info")
        .collect();
    assert!(
        unused.is_empty(),
        "described but never exported: {unused:?}"
    );
}

#[test]
fn every_described_metric_renders_with_help_and_passes_promtool() {
    let handle = common::telemetry::prometheus_handle();
    for info in METRICS {
        match info.kind {
            Kind::Counter => metrics::counter!(info.name).increment(1),
            Kind::Gauge => metrics::gauge!(info.name).set(1.0),
            Kind::Histogram => metrics::histogram!(info.name).record(0.001),
        }
    }
    let rendered = handle.render();
    for info in METRICS {
        assert!(
            rendered.contains(&format!("# HELP {} ", info.name)),
            "{} has no help text",
            info.name
        );
    }
    assert!(
        rendered.contains("recsys_build_info{version=\""),
        "{rendered}"
    );
    assert!(
        rendered.contains("process_resident_memory_bytes"),
        "{rendered}"
    );

    let Ok(mut promtool) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("SKIPPED: promtool check metrics (no promtool: scripts/setup.sh --tests installs prometheus)");
        return;
    };
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(rendered.as_bytes())
        .unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    assert!(
        checked.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}
