//! The figures: a table on stdout and a JSON file for scripts.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::harness::output_within;
use crate::stats::round;

struct Row {
    metric: String,
    value: f64,
    unit: &'static str,
    /// The figure meets its target when it is at most this.
    target: f64,
    /// Not measured in this run, and why.
    skipped: Option<String>,
}

impl Row {
    /// Met when at most the target; a figure that could not be measured
    /// (NaN) is a miss.
    fn met(&self) -> bool {
        self.value.partial_cmp(&self.target) != Some(std::cmp::Ordering::Greater)
            && self.value.is_finite()
    }
}

#[derive(Default)]
pub struct Report {
    pub json: Map<String, Value>,
    rows: Vec<Row>,
    notes: Vec<String>,
    peers: Vec<PeerRow>,
}

/// One line of the side-by-side table: marvel's figure and each peer's.
struct PeerRow {
    what: String,
    unit: &'static str,
    marvel: f64,
    peers: Vec<(String, f64)>,
}

impl Report {
    /// A headline figure with its target (at most): in the table and in
    /// the JSON under `key`.
    pub fn figure(&mut self, key: &str, value: f64, unit: &'static str, target: f64) {
        self.set(key, value);
        self.rows.retain(|r| r.metric != key);
        self.rows.push(Row {
            metric: key.to_string(),
            value,
            unit,
            target,
            skipped: None,
        });
    }

    /// A headline figure this run does not measure: `null` in the JSON,
    /// and neither met nor missed.
    pub fn skip(&mut self, key: &str, unit: &'static str, target: f64, why: &str) {
        if self.rows.iter().any(|r| r.metric == key) {
            return;
        }
        self.json.insert(key.to_string(), Value::Null);
        self.rows.push(Row {
            metric: key.to_string(),
            value: f64::NAN,
            unit,
            target,
            skipped: Some(why.to_string()),
        });
    }

    /// A supporting number: JSON only.
    pub fn set(&mut self, key: &str, value: f64) {
        let v = if value.is_finite() {
            json!(round(value, 3))
        } else {
            Value::Null
        };
        self.json.insert(key.to_string(), v);
    }

    pub fn set_value(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }

    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        println!("  note: {text}");
        self.notes.push(text);
    }

    /// A side-by-side figure: what, marvel's figure and a peer's.
    pub fn peer_figure(
        &mut self,
        what: &str,
        unit: &'static str,
        marvel: f64,
        peer: &str,
        value: f64,
    ) {
        match self.peers.iter_mut().find(|r| r.what == what) {
            Some(r) => r.peers.push((peer.to_string(), value)),
            None => self.peers.push(PeerRow {
                what: what.to_string(),
                unit,
                marvel,
                peers: vec![(peer.to_string(), value)],
            }),
        }
    }

    /// Every target met?
    pub fn misses(&self) -> Vec<String> {
        self.rows
            .iter()
            .filter(|r| r.skipped.is_none() && !r.met())
            .map(|r| r.metric.clone())
            .collect()
    }

    pub fn print(&self) {
        println!();
        println!("{:<40} {:>14}  {:>12}  result", "metric", "value", "target");
        println!("{}", "-".repeat(78));
        for r in &self.rows {
            let target = format!("<= {}", fmt_num(r.target));
            let verdict = match &r.skipped {
                Some(why) => format!("not run ({why})"),
                None if r.met() => "ok".into(),
                None => "MISS".into(),
            };
            println!(
                "{:<40} {:>14}  {:>12}  {verdict}",
                r.metric,
                format!("{} {}", fmt_num(r.value), r.unit),
                target
            );
        }
        if !self.peers.is_empty() {
            println!();
            let names: Vec<&str> = self.peers[0]
                .peers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect();
            let mut head = format!(
                "{:<48} {:>12}",
                "side by side (ratio: marvel / peer)", "marvel"
            );
            for n in &names {
                head += &format!(" {n:>12} {:>6}", "ratio");
            }
            println!("{head}");
            println!("{}", "-".repeat(head.chars().count()));
            for r in &self.peers {
                let mut line = format!(
                    "{:<48} {:>12}",
                    r.what,
                    format!("{} {}", fmt_num(r.marvel), r.unit)
                );
                for (_, v) in &r.peers {
                    let ratio = if *v > 0.0 { r.marvel / v } else { f64::NAN };
                    line += &format!(
                        " {:>12} {:>6}",
                        format!("{} {}", fmt_num(*v), r.unit),
                        fmt_num(ratio)
                    );
                }
                println!("{line}");
            }
        }
        if !self.notes.is_empty() {
            println!();
            for n in &self.notes {
                println!("note: {n}");
            }
        }
    }

    pub fn write(&mut self, path: &Path) -> std::io::Result<()> {
        self.json.insert("notes".into(), json!(self.notes));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let targets: Map<String, Value> = self
            .rows
            .iter()
            .map(|r| (r.metric.clone(), json!(r.target)))
            .collect();
        self.json.insert("targets".into(), Value::Object(targets));
        let text = serde_json::to_string_pretty(&Value::Object(self.json.clone()))?;
        std::fs::write(path, text + "\n")
    }
}

pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x == 0.0 {
        "0".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x.abs() >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// The machine the figures were taken on.
pub fn machine(tmux: &Path, marvel: &str) -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    let mem_kb: u64 = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let version = |mut c: Command| {
        output_within(
            {
                c.env_remove("TMUX");
                c
            },
            Duration::from_secs(10),
        )
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
    };
    let mut t = Command::new(tmux);
    t.arg("-V");
    let mut m = Command::new(marvel);
    m.arg("--version");
    json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": round(mem_kb as f64 / 1024.0 / 1024.0, 1),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "tmux": version(t),
        "marvel": version(m),
        "clock_ticks_per_second": crate::harness::clock_ticks_per_second(),
    })
}
