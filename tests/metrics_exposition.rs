//! The `/metrics` exposition as Prometheus tooling sees it: every series described and typed
//! (`promtool check metrics` clean when promtool is installed), every series present from the
//! start, every metric the shipped dashboard and alert rules query among them, build and process
//! metrics, and histograms rather than summaries.

mod common;

use std::collections::BTreeSet;

use common::*;

/// Runs a short chat: two phones, a message each way, delivered and acked.
async fn chat(server: &TestServer) {
    let mut alice = server.ready("alice", "phone").await;
    let mut bob = server.ready("bob", "phone").await;
    alice.writer.send_text("m1", "bob", "hello").await.unwrap();
    next_ack(&mut alice.reader).await;
    let delivered = next_deliver(&mut bob.reader).await;
    bob.writer.ack(delivered.seq).await.unwrap();
    bob.writer.send_text("m2", "alice", "hi").await.unwrap();
    next_ack(&mut bob.reader).await;
    let delivered = next_deliver(&mut alice.reader).await;
    alice.writer.ack(delivered.seq).await.unwrap();
}

/// The metric families of an exposition: name → (has HELP, TYPE if any).
fn families(text: &str) -> std::collections::BTreeMap<String, (bool, Option<String>)> {
    let mut families = std::collections::BTreeMap::<String, (bool, Option<String>)>::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name)) => {
                let help: Vec<&str> = words.collect();
                assert!(!help.is_empty(), "empty HELP for {name}");
                families.entry(name.to_owned()).or_default().0 = true;
            }
            (Some("#"), Some("TYPE"), Some(name)) => {
                families.entry(name.to_owned()).or_default().1 = words.next().map(str::to_owned);
            }
            _ => {}
        }
    }
    families
}

/// The family a sample line belongs to (`_bucket`, `_sum` and `_count` of histograms and
/// summaries belong to the base name).
fn family_of<'a>(
    sample: &'a str,
    families: &std::collections::BTreeMap<String, (bool, Option<String>)>,
) -> &'a str {
    let name = sample.split(['{', ' ']).next().unwrap_or(sample);
    if families.contains_key(name) {
        return name;
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.contains_key(base)
        {
            return base;
        }
    }
    name
}

/// Asserts every sample belongs to a family with a HELP and a TYPE line.
fn assert_described(text: &str) {
    let families = families(text);
    let mut undescribed = BTreeSet::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let family = family_of(line, &families);
        match families.get(family) {
            Some((true, Some(_))) => {}
            _ => {
                undescribed.insert(family.to_owned());
            }
        }
    }
    assert!(
        undescribed.is_empty(),
        "series without HELP or TYPE: {undescribed:?}"
    );
}

/// `promtool check metrics` on `text`: None when promtool is not installed, else its output.
fn promtool(text: &str) -> Option<String> {
    use std::io::Write;
    let mut child = match std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => panic!("cannot run promtool: {error}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let mut said = String::from_utf8_lossy(&output.stdout).into_owned();
    said.push_str(&String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() || !said.is_empty(),
        "promtool failed silently"
    );
    Some(said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exposition_after_a_chat_passes_promtool() {
    let server = TestServer::start().await;
    chat(&server).await;
    let text = server.metrics().await;
    assert!(text.contains("tern_messages_in_total"), "{text}");
    assert_described(&text);
    match promtool(&text) {
        Some(said) => assert_eq!(said, "", "promtool check metrics:\n{said}"),
        None => eprintln!("promtool not on PATH: checked HELP and TYPE lines only"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_is_there_from_the_start() {
    // A child process: its recorder has seen nothing but the start.
    let files = ChildFiles::new(&[]);
    let node = files.start();
    let text = http_get(node.admin, "/metrics").await;
    for series in [
        "tern_checkpoint_failures_total 0",
        "tern_checkpoints_total 0",
        "tern_storage_failures_total 0",
        "tern_messages_in_total 0",
        "tern_mailbox_evictions_total 0",
        "tern_session_panics_total 0",
        "tern_journal_failures_total 0",
        "tern_group_fanout_recipients_count 0",
        "tern_ack_latency_seconds_count 0",
        "tern_media_uploads_started_total 0",
        "tern_errors_total{kind=\"rate_limited\"} 0",
        "tern_errors_total{kind=\"storage_failure\"} 0",
        "tern_errors_total{kind=\"flood\"} 0",
        "tern_logins_total{result=\"ok\"} 0",
        "tern_logins_total{result=\"bad_token\"} 0",
        "tern_disconnects_total{reason=\"peer_closed\"} 0",
        "tern_background_task_failures_total{task=\"journal\"} 0",
        "tern_background_task_failures_total{task=\"checkpointer\"} 0",
        "tern_dispatch_rejected_total{service=\"mailbox\",lane=\"write\"} 0",
        "tern_dispatch_job_panics_total{service=\"mailbox\"} 0",
        "tern_media_responses_total{status=\"5xx\"} 0",
        "tern_abuse_refusals_total{limit=\"connections_per_ip\"} 0",
        "tern_abuse_refusals_total{limit=\"group_adds\"} 0",
        "tern_abuse_tracked_keys{limit=\"logins_per_ip\"} 0",
    ] {
        assert!(
            text.lines().any(|line| line == series),
            "missing at start: {series}\n{text}"
        );
    }
    assert_described(&text);
    node.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_and_process_metrics_are_exported() {
    let server = TestServer::start().await;
    let text = server.metrics().await;
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        metric_value(&text, &format!("tern_build_info{{version=\"{version}\"}}")),
        Some(1.0),
        "{text}"
    );
    for name in [
        "process_open_fds",
        "process_max_fds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_start_time_seconds",
    ] {
        let value = metric_value(&text, name).unwrap_or_else(|| panic!("no {name} in {text}"));
        assert!(value > 0.0, "{name} = {value}");
    }
    let cpu = metric_value(&text, "process_cpu_seconds_total").expect("process_cpu_seconds_total");
    assert!(cpu >= 0.0);
    let families = families(&text);
    assert_eq!(
        families
            .get("process_cpu_seconds_total")
            .and_then(|f| f.1.as_deref()),
        Some("counter")
    );
    // Group sizes can be summed across nodes: a histogram, not a summary.
    assert_eq!(
        families
            .get("tern_group_fanout_recipients")
            .and_then(|f| f.1.as_deref()),
        Some("histogram"),
        "{text}"
    );
    server.stop().await;
}

/// Every `tern_*` metric name in `text`, histogram series (`_bucket`, `_sum`, `_count`) named by
/// their family.
fn tern_metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("tern_") {
        // A name starts at a word boundary: `xtern_y` is not a tern metric.
        let preceded = rest[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded {
            let name = &tail[..end];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(name);
            names.insert(family.to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The query expressions of a Grafana dashboard: every `expr` (panel targets) and `query` or
/// `definition` (template variables) string, wherever it sits in the JSON.
fn dashboard_queries(value: &serde_json::Value, queries: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                match field {
                    serde_json::Value::String(text)
                        if matches!(key.as_str(), "expr" | "query" | "definition") =>
                    {
                        queries.push(text.clone());
                    }
                    _ => dashboard_queries(field, queries),
                }
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                dashboard_queries(item, queries);
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_and_alerts_query_is_exported_from_the_start() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docs.join("grafana/tern.json")).expect("tern.json"),
    )
    .expect("tern.json is JSON");
    let mut queries = Vec::new();
    dashboard_queries(&dashboard, &mut queries);
    // The rules file is read as text: its expressions are the `expr:` lines.
    let alerts = std::fs::read_to_string(docs.join("prometheus/alerts.yml")).expect("alerts.yml");
    let alert_queries: Vec<String> = alerts
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("expr:"))
        .map(str::to_owned)
        .collect();
    assert!(
        !queries.is_empty() && !alert_queries.is_empty(),
        "no expressions found"
    );
    let wanted: BTreeSet<(String, &str)> = queries
        .iter()
        .map(|query| (query, "docs/grafana/tern.json"))
        .chain(
            alert_queries
                .iter()
                .map(|query| (query, "docs/prometheus/alerts.yml")),
        )
        .flat_map(|(query, file)| {
            tern_metric_names(query)
                .into_iter()
                .map(move |name| (name, file))
        })
        .collect();
    assert!(
        wanted.iter().any(|(_, file)| file.ends_with("tern.json"))
            && wanted.iter().any(|(_, file)| file.ends_with("alerts.yml")),
        "no tern_ metric found in one of the files: {wanted:?}"
    );

    // A child process: its recorder has seen nothing but the start.
    let files = ChildFiles::new(&[]);
    let node = files.start();
    let text = http_get(node.admin, "/metrics").await;
    node.kill();
    // Families with at least one sample: a HELP or TYPE line alone is not a series.
    let described = families(&text);
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| family_of(line, &described))
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .filter(|(name, _)| !exported.contains(name.as_str()))
        .map(|(name, file)| format!("{name} ({file})"))
        .collect();
    assert!(
        missing.is_empty(),
        "queried but not exported at start: {missing:?}\n{text}"
    );
}
