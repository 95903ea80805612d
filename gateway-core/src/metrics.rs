//! Prometheus text exposition format 0.0.4 (pure): metric families in,
//! text out, labels escaped, families in the order given.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One sample: a suffix for histogram parts (`_bucket`, `_sum`, `_count`),
/// labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub suffix: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl Sample {
    pub fn new(value: f64) -> Self {
        Sample { suffix: "", labels: Vec::new(), value }
    }
    pub fn label(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.labels.push((name, value.into()));
        self
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricKind,
    pub samples: Vec<Sample>,
}

impl Family {
    pub fn new(name: &'static str, help: &'static str, kind: MetricKind) -> Self {
        Family { name, help, kind, samples: Vec::new() }
    }
    pub fn with(mut self, sample: Sample) -> Self {
        self.samples.push(sample);
        self
    }

    /// A cumulative histogram from upper bounds and per-bucket counts
    /// (`counts[i]` observations fell in `(bounds[i-1], bounds[i]]`, the
    /// last count is above every bound).
    pub fn histogram(name: &'static str, help: &'static str, bounds: &[f64], counts: &[u64], sum: f64) -> Self {
        let mut f = Family::new(name, help, MetricKind::Histogram);
        let mut cumulative = 0u64;
        for (i, bound) in bounds.iter().enumerate() {
            cumulative += counts.get(i).copied().unwrap_or(0);
            f.samples.push(Sample { suffix: "_bucket", labels: vec![("le", format_value(*bound))], value: cumulative as f64 });
        }
        cumulative += counts.get(bounds.len()).copied().unwrap_or(0);
        f.samples.push(Sample { suffix: "_bucket", labels: vec![("le", "+Inf".into())], value: cumulative as f64 });
        f.samples.push(Sample { suffix: "_sum", labels: Vec::new(), value: sum });
        f.samples.push(Sample { suffix: "_count", labels: Vec::new(), value: cumulative as f64 });
        f
    }
}

fn format_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf".into() } else { "-Inf".into() }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Renders every family.
pub fn render(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let kind = match f.kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {} {}", f.name, f.help);
        let _ = writeln!(out, "# TYPE {} {kind}", f.name);
        for s in &f.samples {
            out.push_str(f.name);
            out.push_str(s.suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", format_value(s.value));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let text = render(&[
            Family::new("gw_xdp_packets_total", "Packets by verdict reason.", MetricKind::Counter)
                .with(Sample::new(3.0).label("reason", "drop_unknown_slot"))
                .with(Sample::new(0.0).label("reason", "pass_transport")),
            Family::new("gw_chain_head_block", "Chain head.", MetricKind::Gauge).with(Sample::new(1234.0)),
            Family::histogram("gw_revocation_latency_seconds", "Revoke to kernel drop.", &[0.1, 0.5], &[2, 1, 1], 1.25),
        ]);
        let expected = "\
# HELP gw_xdp_packets_total Packets by verdict reason.
# TYPE gw_xdp_packets_total counter
gw_xdp_packets_total{reason=\"drop_unknown_slot\"} 3
gw_xdp_packets_total{reason=\"pass_transport\"} 0
# HELP gw_chain_head_block Chain head.
# TYPE gw_chain_head_block gauge
gw_chain_head_block 1234
# HELP gw_revocation_latency_seconds Revoke to kernel drop.
# TYPE gw_revocation_latency_seconds histogram
gw_revocation_latency_seconds_bucket{le=\"0.1\"} 2
gw_revocation_latency_seconds_bucket{le=\"0.5\"} 3
gw_revocation_latency_seconds_bucket{le=\"+Inf\"} 4
gw_revocation_latency_seconds_sum 1.25
gw_revocation_latency_seconds_count 4
";
        assert_eq!(text, expected);
    }

    #[test]
    fn label_values_are_escaped() {
        let text = render(&[Family::new("m", "h", MetricKind::Gauge).with(Sample::new(1.0).label("endpoint", "a\"b\\c\nd"))]);
        assert!(text.contains(r#"m{endpoint="a\"b\\c\nd"} 1"#), "{text}");
    }
}
