//! The report: a markdown table, the targets, an SVG plot, the raw results.

use std::{fmt::Write as _, fs, path::Path, process::Command};

use anyhow::{Context, Result};

use crate::Row;

const BEGIN: &str = "<!-- vaultd-bench: generated section, begin -->";
const END: &str = "<!-- vaultd-bench: generated section, end -->";

/// The machine and build the figures come from.
pub fn machine(profile: &str) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    format!(
        "{cpu}, {cores} cores available, {mem_gib:.0} GiB; Linux {}; {}; `{profile}` build",
        run("uname", &["-r"]),
        run("rustc", &["--version"]),
    )
}

fn ratio(a: f64, b: f64) -> f64 {
    a / b
}

/// The results table (markdown).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| n | t | coins | DKG in-process | DKG cluster | ratio | DKG CPU cluster (all nodes) | DKG bytes/node in-process | DKG bytes/node cluster | sign p50 / p99 in-process | sign p50 / p99 cluster | sig/s in-process | sig/s cluster | ratio | failed | idle RSS/node (median, max; private max) | peak RSS/node | bytes sent/node (whole run) |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} s | {:.2} s | {:.2}x | {:.2} s ({:.1}x) | {} | {} | {:.1} / {:.1} ms | {:.1} / {:.1} ms | {:.1} | {:.1} | {:.2}x | {} | {:.1}, {:.1}; {:.1} MiB | {:.1} MiB | {} |",
            r.n,
            r.t,
            r.coins.join(" "),
            r.inproc_dkg_s,
            r.cluster_dkg_s,
            ratio(r.cluster_dkg_s, r.inproc_dkg_s),
            r.cluster_dkg_cpu_s,
            ratio(r.cluster_dkg_cpu_s, r.inproc_dkg_s),
            bytes(r.inproc_dkg_bytes_per_node),
            bytes(r.cluster_dkg_bytes_per_node),
            r.inproc_sign_p50_ms,
            r.inproc_sign_p99_ms,
            r.cluster_sign_p50_ms,
            r.cluster_sign_p99_ms,
            r.inproc_sign_per_s,
            r.cluster_sign_per_s,
            ratio(r.cluster_sign_per_s, r.inproc_sign_per_s),
            r.cluster_sign_failed,
            r.idle_rss_median_mib,
            r.idle_rss_max_mib,
            r.idle_anon_max_mib,
            r.peak_rss_max_mib,
            bytes(r.cluster_total_bytes_per_node),
        );
    }
    for r in rows {
        if let Some(e) = &r.cluster_error {
            let _ = writeln!(
                s,
                "\nn = {}, {}: **the cluster run failed** (its figures are NaN): {e}",
                r.n,
                r.coins.join(" ")
            );
        }
    }
    s
}

/// The cluster against the bare limit (markdown): the issue's four ratios.
pub fn bare_table(rows: &[Row]) -> String {
    let mut s = String::from(
        "| n | t | coins | bare DKG CPU | cluster DKG CPU | ratio | of which start-up (n × one node) | ratio without start-up | cluster DKG wall | wall / (bare CPU / cores) | bare signature CPU (preprocess + shares + aggregation) | cluster sign p50 | p50 / bare | cluster sig/s | bare limit sig/s (cores / bare CPU) | ratio | failed |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let cores = r.cores.max(1) as f64;
        let startup = r.node_startup_cpu_s * r.n as f64;
        let limit = cores / r.bare_sign_cpu_s;
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:.2} s | {:.2} s | {:.2}x | {:.2} s | {:.2}x | {:.2} s | {:.2}x | {:.1} ms | {:.1} ms | {:.2}x | {:.2} | {:.2} | {:.2}x | {} |",
            r.n,
            r.t,
            r.coins.join(" "),
            r.bare_dkg_cpu_s,
            r.cluster_dkg_cpu_s,
            ratio(r.cluster_dkg_cpu_s, r.bare_dkg_cpu_s),
            startup,
            ratio(r.cluster_dkg_cpu_s - startup, r.bare_dkg_cpu_s),
            r.cluster_dkg_s,
            ratio(r.cluster_dkg_s, r.bare_dkg_cpu_s / cores),
            r.bare_sign_cpu_s * 1e3,
            r.cluster_sign_p50_ms,
            ratio(r.cluster_sign_p50_ms / 1e3, r.bare_sign_cpu_s),
            r.cluster_sign_per_s,
            limit,
            ratio(r.cluster_sign_per_s, limit),
            r.cluster_sign_failed,
        );
    }
    s.push_str("\nThe bare limit per curve (CPU of all parties together):\n\n| n | t | curve | DKG | signature | preprocess | shares | aggregation |\n|---:|---:|---|---:|---:|---:|---:|---:|\n");
    let mut seen = std::collections::BTreeSet::new();
    for r in rows.iter().filter(|r| seen.insert(r.n)) {
        for (name, c) in [
            ("secp256k1", &r.bare.secp256k1),
            ("ed25519", &r.bare.ed25519),
        ] {
            // A curve no coin set of this size uses is not measured (n = 128: BTC only).
            if c.dkg_cpu_s <= 0.0 {
                continue;
            }
            let _ = writeln!(
                s,
                "| {} | {} | {name} | {:.2} s | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
                r.n,
                r.t,
                c.dkg_cpu_s,
                c.sign_cpu_s * 1e3,
                c.preprocess_cpu_s * 1e3,
                c.share_cpu_s * 1e3,
                c.aggregate_cpu_s * 1e3
            );
        }
    }
    s
}

fn bytes(b: u64) -> String {
    match b {
        b if b >= 10 << 20 => format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
        b if b >= 10 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// The issue's targets against this run's figures.
pub fn targets(rows: &[Row]) -> String {
    let mut s = String::from("| target | figure | met |\n|---|---|---|\n");
    let mut line = |what: String, figure: String, met: bool| {
        let _ = writeln!(
            s,
            "| {what} | {figure} | {} |",
            if met { "yes" } else { "**no**" }
        );
    };
    for (n, limit) in [(16, 4.0), (64, 2.0)] {
        for r in rows.iter().filter(|r| r.n == n) {
            let coins = r.coins.join(" ");
            let cpu = ratio(r.cluster_dkg_cpu_s, r.bare_dkg_cpu_s);
            line(
                format!("DKG cluster CPU / bare CPU ≤ {limit}x, n = {n}, {coins}"),
                format!("{cpu:.2}x"),
                cpu <= limit,
            );
            let wall = ratio(r.cluster_dkg_s, r.bare_dkg_cpu_s / r.cores.max(1) as f64);
            line(
                format!("DKG cluster wall / (bare CPU / cores) ≤ {limit}x, n = {n}, {coins}"),
                format!("{wall:.2}x"),
                wall <= limit,
            );
        }
    }
    for r in rows.iter().filter(|r| r.n == 16 || r.n == 64) {
        let x = ratio(r.cluster_sign_p50_ms / 1e3, r.bare_sign_cpu_s);
        line(
            format!(
                "signature p50 / bare signature CPU ≤ 2x, n = {}, {}",
                r.n,
                r.coins.join(" ")
            ),
            format!("{x:.2}x ({:.1} ms)", r.cluster_sign_p50_ms),
            x <= 2.0,
        );
    }
    for r in rows.iter().filter(|r| r.n == 4) {
        line(
            format!("signature p50 ≤ 30 ms, n = 4, {}", r.coins.join(" ")),
            format!("{:.1} ms", r.cluster_sign_p50_ms),
            r.cluster_sign_p50_ms <= 30.0,
        );
    }
    for r in rows.iter().filter(|r| r.n == 64) {
        let limit = r.cores.max(1) as f64 / r.bare_sign_cpu_s;
        let x = ratio(r.cluster_sign_per_s, limit);
        line(
            format!(
                "throughput ≥ half the bare limit and ≥ 3/s, no failed request, n = 64, {}",
                r.coins.join(" ")
            ),
            format!(
                "{:.2}/s, {x:.2} of {limit:.2}/s, {} failed",
                r.cluster_sign_per_s, r.cluster_sign_failed
            ),
            x >= 0.5 && r.cluster_sign_per_s >= 3.0 && r.cluster_sign_failed == 0,
        );
    }
    if let Some(max) = rows
        .iter()
        .map(|r| r.idle_rss_max_mib)
        .filter(|m| m.is_finite())
        .max_by(f64::total_cmp)
    {
        line(
            "idle node < 40 MB resident (largest node of any run)".into(),
            format!("{:.1} MB", max * 1.048_576),
            max * 1.048_576 < 40.0,
        );
    }
    s
}

/// Write the report: the generated section of `out` (kept text around it), the SVG plot and
/// the JSON results next to it.
pub fn write(out: &Path, machine: &str, rows: &[Row], profile: &str, quick: bool) -> Result<()> {
    let svg = out.with_extension("svg");
    let json = out.with_extension("json");
    let svg_name = svg
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("benchmarks.svg")
        .to_string();
    let mut section = format!(
        "{BEGIN}\n\nMeasured in one run of `scripts/bench.sh{}{}` on: {machine}.\n\n",
        if profile == "dev" { " --dev" } else { "" },
        if quick { " --quick" } else { "" }
    );
    section.push_str("Against the bare limit (dkg-pedpop and modular-frost alone, thread CPU time, same run, same machine):\n\n");
    section.push_str(&bare_table(rows));
    section.push_str("\nAll figures, with vaultd's in-process harness:\n\n");
    section.push_str(&table(rows));
    section.push_str("\nTargets:\n\n");
    section.push_str(&targets(rows));
    let _ = write!(
        section,
        "\n![DKG time and signing throughput against n]({svg_name})\n\n{END}"
    );
    let text = match fs::read_to_string(out) {
        Ok(old) => match (old.find(BEGIN), old.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{section}{}", &old[..b], &old[e + END.len()..])
            }
            _ => format!("{old}\n{section}\n"),
        },
        Err(_) => format!("# Benchmarks\n\n{section}\n"),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    fs::write(&svg, plot(rows)).with_context(|| format!("writing {}", svg.display()))?;
    fs::write(&json, serde_json::to_string_pretty(rows)?)
        .with_context(|| format!("writing {}", json.display()))?;
    Ok(())
}

/// The stroke of a series: the bare limit dotted, in process dashed, the cluster solid.
fn dash(which: u8) -> &'static str {
    match which {
        0 => " stroke-dasharray=\"2,2\"",
        1 => " stroke-dasharray=\"5,3\"",
        _ => "",
    }
}

/// Two panels: DKG time against n, and signing throughput against n; the bare limit (its CPU
/// spread over the cores), in process and the cluster, one coin and three.
pub fn plot(rows: &[Row]) -> String {
    let (w, h, pad) = (460.0, 320.0, 56.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        h + 60.0
    );
    // (name, colour, which figure: 0 the bare limit, 1 in process, 2 the cluster, coins)
    let series: [(&str, &str, u8, usize); 6] = [
        ("bare limit, 1 coin", "#7f7f7f", 0, 1),
        ("in-process, 1 coin", "#1f77b4", 1, 1),
        ("cluster, 1 coin", "#ff7f0e", 2, 1),
        ("bare limit, 3 coins", "#000000", 0, 3),
        ("in-process, 3 coins", "#2ca02c", 1, 3),
        ("cluster, 3 coins", "#d62728", 2, 3),
    ];
    type Figure = fn(&Row, u8) -> f64;
    let panels: [(&str, Figure); 2] = [
        (
            "DKG time to every vault active (s)",
            |r, which| match which {
                0 => r.bare_dkg_cpu_s / r.cores.max(1) as f64,
                1 => r.inproc_dkg_s,
                _ => r.cluster_dkg_s,
            },
        ),
        (
            "signing throughput (signatures/s)",
            |r, which| match which {
                0 => r.cores.max(1) as f64 / r.bare_sign_cpu_s,
                1 => r.inproc_sign_per_s,
                _ => r.cluster_sign_per_s,
            },
        ),
    ];
    let mut ns: Vec<usize> = rows.iter().map(|r| r.n).collect();
    ns.sort();
    ns.dedup();
    let (lo, hi) = (
        (*ns.first().unwrap_or(&2) as f64).log2(),
        (*ns.last().unwrap_or(&4) as f64)
            .log2()
            .max(ns.first().map_or(2.0, |n| *n as f64 + 1.0).log2()),
    );
    for (p, (title, value)) in panels.iter().enumerate() {
        let x0 = p as f64 * w;
        let ymax = rows
            .iter()
            .flat_map(|r| [value(r, 0), value(r, 1), value(r, 2)])
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            * 1.1;
        let ymax = if ymax > 0.0 { ymax } else { 1.0 };
        let px = |n: usize| x0 + pad + ((n as f64).log2() - lo) / (hi - lo) * (w - 2.0 * pad);
        let py = |v: f64| h - pad + 20.0 - v / ymax * (h - 2.0 * pad);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"13\">{title}</text>",
            x0 + w / 2.0
        );
        // Axes, ticks.
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/><line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{3}\" stroke=\"black\"/>",
            x0 + pad,
            py(0.0),
            x0 + w - pad,
            py(ymax)
        );
        for &n in &ns {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{n}</text>",
                px(n),
                py(0.0) + 15.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">validators n (log scale)</text>",
            x0 + w / 2.0,
            py(0.0) + 30.0
        );
        for k in 0..=4 {
            let v = ymax * k as f64 / 4.0;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text><line x1=\"{}\" y1=\"{2:.1}\" x2=\"{}\" y2=\"{2:.1}\" stroke=\"#ddd\"/>",
                x0 + pad - 4.0,
                py(v) + 4.0,
                if ymax >= 10.0 { format!("{v:.0}") } else { format!("{v:.2}") },
                x0 + pad,
                x0 + w - pad,
            );
        }
        for (_, color, which, ncoins) in series {
            let mut pts: Vec<(usize, f64)> = rows
                .iter()
                .filter(|r| r.coins.len() == ncoins)
                .map(|r| (r.n, value(r, which)))
                .filter(|(_, v)| v.is_finite())
                .collect();
            pts.sort_by_key(|(n, _)| *n);
            let path: Vec<String> = pts
                .iter()
                .map(|(n, v)| format!("{:.1},{:.1}", px(*n), py(*v)))
                .collect();
            let dash = dash(which);
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash} points=\"{}\"/>",
                path.join(" ")
            );
            for (n, v) in &pts {
                let _ = writeln!(
                    s,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"/>",
                    px(*n),
                    py(*v)
                );
            }
        }
    }
    for (k, (name, color, which, _)) in series.iter().enumerate() {
        let (x, y) = (
            60.0 + (k % 3) as f64 * 280.0,
            h + 25.0 + (k / 3) as f64 * 16.0,
        );
        let dash = dash(*which);
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{0}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"2\"{dash}/><text x=\"{1}\" y=\"{2}\">{name}</text>",
            x + 24.0,
            x + 30.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
