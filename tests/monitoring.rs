//! Monitoring as a Prometheus user runs it: the shipped rules and dashboard, checked by promtool and evaluated by a real Prometheus scraping the service under load.
//!
//! Needs `prometheus` and `promtool` on the PATH (Debian package `prometheus`, installed by
//! scripts/test.sh); skipped without them unless `FRAUDSCORE_REQUIRE_PROMETHEUS` is set.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_fraudscore");

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `name` on the PATH, or None (skip) when missing and not required.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("FRAUDSCORE_REQUIRE_PROMETHEUS").is_some() {
            panic!("`{name}` not found: apt-get install prometheus");
        }
        eprintln!("skipped: `{name}` not found (apt-get install prometheus)");
    }
    found
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Status and body of a GET, whatever the status; status 0 when nothing answers.
fn call(request: ureq::RequestBuilder<ureq::typestate::WithoutBody>) -> (u16, String) {
    let config = request
        .config()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)));
    match config.build().call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

fn get(url: &str) -> (u16, String) {
    call(ureq::get(url))
}

/// An instant query through Prometheus's HTTP API: the result vector, or the error it reported.
fn query(prometheus: &str, expr: &str) -> Result<Vec<Value>, String> {
    let (status, body) =
        call(ureq::get(&format!("http://{prometheus}/api/v1/query")).query("query", expr));
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status} {body}: {e}"))?;
    if v["status"] != "success" {
        return Err(format!("{status}: {}", v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn the_rules_and_the_dashboard_evaluate_on_a_real_prometheus_scraping_the_service() {
    let (Some(prometheus), Some(promtool)) = (tool("prometheus"), tool("promtool")) else {
        return;
    };
    let rules_path = root().join("config/prometheus/fraudscore.rules.yml");
    let check = Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules_path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The service under load: the demo, with 5% malformed input so that the dead-letter alert
    // has something to see.
    let mut demo = Command::new(BIN)
        .current_dir(root())
        .args(["demo", "--customers", "1000", "--duration", "120s"])
        .args(["--bad-ratio", "0.05"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let demo = Killed(demo);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("service metrics at http://").nth(1) {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
        }
    });
    let service = rx
        .recv_timeout(Duration::from_secs(240))
        .expect("the demo did not finish its warm-up");

    let (status, metrics) = get(&format!("http://{service}/metrics"));
    assert_eq!(status, 200, "{metrics}");
    let mut lint = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let lint = lint.wait_with_output().unwrap();
    assert!(
        lint.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&lint.stdout),
        String::from_utf8_lossy(&lint.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: fraudscore\n    static_configs:\n      - targets: [\"{service}\"]\n",
            rules_path.display()
        ),
    )
    .unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    let _prometheus = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={api}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Twenty scrapes under load: enough samples for every rate and for the rules to run.
    let start = Instant::now();
    loop {
        let scrapes = query(&api, "count_over_time(up{job=\"fraudscore\"}[5m])")
            .ok()
            .and_then(|r| r.first()?["value"][1].as_str()?.parse::<f64>().ok());
        if scrapes.is_some_and(|n| n >= 20.0) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "Prometheus did not scrape the service: {scrapes:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        query(&api, "up{job=\"fraudscore\"}").unwrap()[0]["value"][1],
        "1"
    );

    // Every expression of the dashboard returns series; every rule's evaluates.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("config/grafana/fraudscore.json")).unwrap(),
    )
    .unwrap();
    let mut failures = Vec::new();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 7);
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            match query(&api, expr) {
                Ok(series) if series.is_empty() => {
                    failures.push(format!("panel {:?}: no series: {expr}", panel["title"]))
                }
                Ok(_) => {}
                Err(e) => failures.push(format!("panel {:?}: {e}: {expr}", panel["title"])),
            }
        }
    }
    // Every rule as Prometheus loaded it: it ran without an error, and its expression evaluates.
    let (_, body) = get(&format!("http://{api}/api/v1/rules"));
    let loaded: Value = serde_json::from_str(&body).unwrap();
    let mut evaluated = 0;
    for group in loaded["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            evaluated += 1;
            let (name, expr) = (&rule["name"], rule["query"].as_str().unwrap_or_default());
            if rule["health"] != "ok" {
                failures.push(format!(
                    "rule {name} health {}: {}",
                    rule["health"], rule["lastError"]
                ));
            }
            if let Err(e) = query(&api, expr) {
                failures.push(format!("rule {name}: {e}: {expr}"));
            }
        }
    }
    let promtool_count = String::from_utf8_lossy(&check.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .windows(2)
        .find(|w| w[1] == "rules")
        .and_then(|w| w[0].parse::<usize>().ok());
    assert_eq!(Some(evaluated), promtool_count, "{body}");
    for recorded in [
        "fraudscore:transactions:rate1m",
        "fraudscore:dlq_ratio:rate5m",
        "fraudscore:processing_seconds:p99_5m",
        "fraudscore:consumer_lag_messages:sum",
    ] {
        if query(&api, recorded).map_or(true, |s| s.is_empty()) {
            failures.push(format!("recording {recorded}: no series"));
        }
    }
    // 5% dead letters: the alert's condition holds (pending for its 10 minutes).
    let (_, body) = get(&format!("http://{api}/api/v1/alerts"));
    if !body.contains("FraudscoreDeadLetterRateHigh") {
        failures.push(format!(
            "FraudscoreDeadLetterRateHigh not pending at 5% dead letters: {body}"
        ));
    }
    drop(demo);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The alerts fire on the series they are meant for, and not before: promtool's rule unit tests.
#[test]
fn the_alerts_fire_when_they_should() {
    let Some(promtool) = tool("promtool") else {
        return;
    };
    let out = Command::new(promtool)
        .args(["test", "rules"])
        .arg(root().join("config/prometheus/fraudscore.rules.test.yml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
