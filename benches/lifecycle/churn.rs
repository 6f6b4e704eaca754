//! A crash loop that never settles, for minutes: does anything grow? The
//! tmux server's memory is sampled while programs die and restart in
//! their panes. Each pane's scrollback fills up to tmux's `history-limit`
//! first (a few minutes at this rate), so the growth per minute is the
//! slope of a least-squares line through the samples of the second half.

use std::time::{Duration, Instant};

use crate::harness::{Instance, Options, check_interrupt, nap, rss_kb};
use crate::phases::Plan;
use crate::report::{Report, fmt_num};

/// Programs that print a line and crash at once.
const CRASHING: &str = r#"["sh", "-c", "echo crashing; exit 3"]"#;
const REPLICAS: u32 = 4;

fn team() -> String {
    format!(
        "Team(name: \"churn\", workspace: \"bench\", roles: [Role(name: \"w\", \
         replicas: {REPLICAS}, command: {CRASHING}, backoff: (initial: \"50ms\", \
         max: \"50ms\", factor: 1.0, jitter: 0.0), max_restarts: None)])\n"
    )
}

/// Slope of the least-squares line through `(x, y)` points.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

pub fn crash_loop(plan: &Plan, rep: &mut Report) {
    let inst = Instance::new("churn", &plan.tmux, Options::default());
    let path = inst.manifest("team.ron", &team());
    let out = inst.cmd(&["run", &path]).output().expect("marvel run");
    assert!(out.status.success(), "marvel run failed: {out:?}");
    let restarts = |inst: &Instance| {
        inst.roles()
            .first()
            .and_then(|r| r["restarts"].as_u64())
            .unwrap_or(0)
    };
    inst.wait("the crash loop", Duration::from_millis(50), |i| {
        (restarts(i) >= u64::from(REPLICAS)).then_some(())
    });
    let server = inst.tmux_server_pid().expect("tmux server pid");
    let daemon = inst.daemon_pid();
    // `MARVEL_BENCH_CHURN_S`, else 10 minutes (6 s for a quick run).
    let total = plan.churn_window;
    let every = (total / 60).max(Duration::from_millis(500));
    println!(
        "  {REPLICAS} programs crashing every ~50 ms for {}s",
        total.as_secs()
    );
    let crashes_at_start = restarts(&inst);
    let start_kb = rss_kb(server).expect("tmux server RSS");
    let daemon_start_kb = rss_kb(daemon).expect("daemon RSS");
    let t0 = Instant::now();
    let mut samples = vec![(0.0, start_kb as f64)];
    while t0.elapsed() < total {
        check_interrupt();
        nap(every.min(total.saturating_sub(t0.elapsed())));
        let kb = rss_kb(server).expect("tmux server RSS");
        samples.push((t0.elapsed().as_secs_f64() / 60.0, kb as f64));
    }
    let end_kb = rss_kb(server).expect("tmux server RSS");
    let daemon_end_kb = rss_kb(daemon).expect("daemon RSS");
    let crashes = restarts(&inst) - crashes_at_start;
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let half = samples.len() / 2;
    let growth = slope(&samples[half..]);
    let first_half = slope(&samples[..=half]);
    let panes = String::from_utf8_lossy(
        &inst
            .tmux_cmd(&["list-panes", "-a", "-F", "#{pane_id}"])
            .output()
            .expect("list-panes")
            .stdout,
    )
    .lines()
    .count();
    rep.figure("tmux_rss_growth_kb_per_min", growth, "KB/min", 10.0);
    rep.set("tmux_rss_growth_first_half_kb_per_min", first_half);
    rep.set("tmux_rss_churn_start_kb", start_kb as f64);
    rep.set("tmux_rss_churn_end_kb", end_kb as f64);
    rep.set("daemon_rss_churn_start_kb", daemon_start_kb as f64);
    rep.set("daemon_rss_churn_end_kb", daemon_end_kb as f64);
    rep.set("churn_minutes", minutes);
    rep.set("churn_crashes", crashes as f64);
    rep.set("churn_panes_at_end", panes as f64);
    rep.set_value(
        "tmux_rss_churn_samples_kb",
        serde_json::json!(samples.iter().map(|(_, kb)| *kb).collect::<Vec<f64>>()),
    );
    println!(
        "  {crashes} crashes in {} min: tmux server {start_kb} → {end_kb} KB ({} KB/min in the first half, {} KB/min in the second), daemon {daemon_start_kb} → {daemon_end_kb} KB, {panes} panes",
        fmt_num(minutes),
        fmt_num(first_half),
        fmt_num(growth)
    );
}
