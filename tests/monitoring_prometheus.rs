//! The monitoring files checked by the real tools: the alert rules
//! (deploy/prometheus) with `promtool check rules` and `promtool test rules`
//! and against docs/OPERATIONS.md; then a real Prometheus, in the gateway's
//! network namespace with those rules loaded, scrapes a running gateway
//! while a node's namespace sends it packets XDP drops, and answers the query
//! for XDP drops by reason; every query of the Grafana dashboard
//! (deploy/grafana) runs against it, and every metric the files name is one
//! the gateway serves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use gateway_tests::container::output;
use gateway_tests::lab::{Lab, GATEWAY_LAN_IP, HTTP_PORT};
use gateway_tests::netns::{repo_root, wait_for, ChildGuard, Netns};
use gateway_tests::packets;
use gateway_tests::wg::WG_PORT;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

const RULES: &str = "deploy/prometheus/dstack-gateway.rules.yml";
const RULE_TESTS: &str = "deploy/prometheus/dstack-gateway.rules.test.yml";
const DASHBOARD: &str = "deploy/grafana/dstack-gateway.json";
/// Prometheus listens here inside the gateway's namespace only.
const PROMETHEUS_PORT: u16 = 9090;

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_root().join(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn has(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// `alert name -> (expr, for)` of a rules document.
fn alerts(doc: &Value) -> BTreeMap<String, (String, String)> {
    let mut out = BTreeMap::new();
    for group in doc["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert rules only").to_string();
            let expr = rule["expr"].as_str().expect("expr").split_whitespace().collect::<Vec<_>>().join(" ");
            let for_ = rule["for"].as_str().unwrap_or("").to_string();
            assert!(out.insert(name.clone(), (expr, for_)).is_none(), "{name} twice");
        }
    }
    out
}

#[test]
fn the_rules_pass_promtool_and_match_the_operations_doc() {
    if !has("promtool") {
        return gateway_tests::skip::skip("promtool is not installed (run .ci/setup)");
    }
    let mut check = Command::new("promtool");
    check.current_dir(repo_root()).args(["check", "rules", RULES]);
    let out = output(check, Duration::from_secs(60)).unwrap();
    assert!(out.success && out.stdout.contains("SUCCESS: 9 rules found"), "{}{}", out.stdout, out.stderr);
    // The alerts fire on the series that should fire them, and only then.
    let mut test = Command::new("promtool");
    test.current_dir(repo_root()).args(["test", "rules", RULE_TESTS]);
    let out = output(test, Duration::from_secs(60)).unwrap();
    assert!(out.success && out.stdout.contains("SUCCESS"), "{}{}", out.stdout, out.stderr);

    // docs/OPERATIONS.md shows the same alerts (without annotations).
    let doc = read("docs/OPERATIONS.md");
    let block = doc
        .split("```yaml\n")
        .map(|b| b.split("```").next().unwrap())
        .find(|b| b.contains("name: dstack-gateway"))
        .expect("the alerts block in OPERATIONS.md");
    let documented = alerts(&serde_yaml::from_str(block).expect("the doc's block is YAML"));
    let file = alerts(&serde_yaml::from_str(&read(RULES)).unwrap());
    assert_eq!(documented, file, "docs/OPERATIONS.md and {RULES} disagree");
    assert!(doc.contains(RULES) && doc.contains(DASHBOARD), "OPERATIONS names both files");
}

/// GET `path` from Prometheus inside `ns` (HTTP/1.0: no chunked bodies).
fn prometheus_get(ns: &Netns, path: &str) -> anyhow::Result<serde_json::Value> {
    let path = path.to_string();
    ns.within(move || {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", PROMETHEUS_PORT))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\n\r\n")?;
        let mut text = String::new();
        s.read_to_string(&mut text)?;
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        Ok(serde_json::from_str(body)?)
    })
}

/// `/api/v1/query?query=...`, the result vector; an error for a bad query.
fn query(ns: &Netns, promql: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let encoded: String = promql
        .bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect();
    let v = prometheus_get(ns, &format!("/api/v1/query?query={encoded}"))?;
    anyhow::ensure!(v["status"] == "success", "{promql}: {v}");
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Metric names (`gw_...`) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("gw_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            names.insert(expr[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn prometheus_scrapes_a_running_gateway_and_answers_for_xdp_drops_by_reason() {
    if !gateway_tests::netns::require_root() {
        return;
    }
    if !has("prometheus") {
        return gateway_tests::skip::skip("prometheus is not installed (run .ci/setup)");
    }
    let mut lab = Lab::new(1).unwrap();
    lab.start_gateway("").unwrap();

    let dir = lab.dir.path().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: dstack-gateway\n    static_configs:\n      - targets: ['127.0.0.1:{HTTP_PORT}']\n",
            repo_root().join(RULES).display()
        ),
    )
    .unwrap();
    let mut cmd = lab.gw.command("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _prometheus = ChildGuard::spawn(cmd, "prometheus").unwrap();
    let gw = &lab.gw;
    wait_for("prometheus ready", Duration::from_secs(30), || {
        Ok(prometheus_get(gw, "/api/v1/status/buildinfo").ok().filter(|v| v["status"] == "success"))
    })
    .unwrap();

    // A node's namespace sends what XDP drops: unknown message types
    // (malformed) and transport packets for a slot nobody holds.
    let sent = |packet: Vec<u8>, n: usize| {
        lab.nodes[0]
            .within(move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                for _ in 0..n {
                    s.send_to(&packet, (GATEWAY_LAN_IP, WG_PORT))?;
                }
                Ok(())
            })
            .unwrap()
    };
    sent(packets::unknown_type(), 5);
    sent(packets::transport(packets::index_for_slot(999), 32), 7);

    let by_reason = wait_for("Prometheus has the drops", Duration::from_secs(30), || {
        let rows = query(gw, r#"sum by (reason) (gw_xdp_packets_total{verdict="drop"})"#)?;
        let values: BTreeMap<String, f64> = rows
            .iter()
            .map(|r| (r["metric"]["reason"].as_str().unwrap_or("").to_string(), r["value"][1].as_str().unwrap_or("0").parse().unwrap_or(0.0)))
            .collect();
        let enough = values.get("drop_malformed").is_some_and(|v| *v >= 5.0) && values.get("drop_unknown_slot").is_some_and(|v| *v >= 7.0);
        Ok(enough.then_some(values))
    })
    .unwrap();
    eprintln!("XDP drops by reason, from Prometheus: {by_reason:?}");
    assert!(by_reason.keys().all(|r| r.starts_with("drop_")), "{by_reason:?}");

    // The target is up and the rules loaded and evaluate.
    let targets = prometheus_get(gw, "/api/v1/targets").unwrap();
    let active = targets["data"]["activeTargets"].as_array().unwrap();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0]["health"], "up", "{targets}");
    let rules = wait_for("rules evaluated", Duration::from_secs(20), || {
        let v = prometheus_get(gw, "/api/v1/rules")?;
        let group = v["data"]["groups"].as_array().and_then(|g| g.iter().find(|g| g["name"] == "dstack-gateway")).cloned();
        Ok(group.filter(|g| g["rules"].as_array().is_some_and(|r| r.iter().all(|r| r["health"] == "ok"))))
    })
    .unwrap();
    assert_eq!(rules["rules"].as_array().unwrap().len(), 9);
    // A healthy gateway: no alert, not even pending, once the rules have
    // seen a scrape (before the first one, GatewayXdpMissing is pending).
    wait_for("no alert on a healthy gateway", Duration::from_secs(20), || Ok(query(gw, "ALERTS")?.is_empty().then_some(()))).unwrap();


    // Every dashboard query runs, and the drops panel shows the drops.
    let dashboard: serde_json::Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut names = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            names.extend(metric_names(expr));
            let concrete = expr.replace("$__rate_interval", "1m").replace("$instance", ".*");
            query(gw, &concrete).unwrap_or_else(|e| panic!("panel {}: {e:#}", panel["title"]));
            if panel["title"] == "XDP drops by reason" {
                // A rate needs two scrapes around new drops.
                sent(packets::unknown_type(), 5);
                wait_for("the drops panel shows a malformed rate", Duration::from_secs(30), || {
                    let rows = query(gw, &concrete)?;
                    Ok(rows
                        .iter()
                        .any(|r| r["metric"]["reason"] == "drop_malformed" && r["value"][1].as_str().and_then(|v| v.parse::<f64>().ok()).is_some_and(|v| v > 0.0))
                        .then_some(()))
                })
                .unwrap();
            }
        }
    }
    for rule in alerts(&serde_yaml::from_str(&read(RULES)).unwrap()).values() {
        names.extend(metric_names(&rule.0));
    }
    let (_, metrics) = lab.http_get("/metrics").unwrap();
    let families: BTreeSet<&str> = metrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")).filter_map(|l| l.split_whitespace().next()).collect();
    for name in &names {
        let family = name.strip_suffix("_bucket").unwrap_or(name);
        assert!(families.contains(family), "{name} is named by the monitoring files but the gateway serves no {family}: {families:?}");
    }
    assert!(names.len() >= 12, "the parser found the metric names: {names:?}");

    // The gateway goes away: its series go stale at the next failed scrape
    // and GatewayXdpMissing becomes pending (it fires after its 2 m).
    lab.stop_gateway().unwrap();
    let pending = r#"ALERTS{alertname="GatewayXdpMissing",alertstate="pending"}"#;
    wait_for("GatewayXdpMissing pending", Duration::from_secs(30), || Ok((!query(&lab.gw, pending)?.is_empty()).then_some(()))).unwrap();
}
