//! The testnet report: a table and the targets in `docs/BENCHMARKS.md` (a generated section of
//! its own), a plot (`docs/testnet.svg`) and the raw results (`docs/testnet.json`).

use std::{fmt::Write as _, fs, path::Path};

use anyhow::{Context, Result};

use crate::testnet::{TestnetRow, DKG_ROUNDS, SIGN_ROUNDS};

const BEGIN: &str = "<!-- vaultd-bench testnet: generated section, begin -->";
const END: &str = "<!-- vaultd-bench testnet: generated section, end -->";

/// The delay and set size the targets are stated at.
const TARGET_N: usize = 16;
const TARGET_DELAY_MS: f64 = 50.0;

fn coins(r: &TestnetRow) -> String {
    r.coins.join(" ")
}

/// The results table (markdown).
pub fn table(rows: &[TestnetRow]) -> String {
    let mut s = format!(
        "| n | t | coins | one-way delay | loss | DKG | compute + {DKG_ROUNDS} × delay | sign p50 | sign p99 | compute + {SIGN_ROUNDS} × delay | requests (failed) |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    );
    for r in rows {
        if let Some(e) = &r.error {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} ± {} ms | {} % | failed: {} | | | | | |",
                r.n,
                r.t,
                coins(r),
                r.delay_ms,
                r.jitter_ms,
                r.loss_pct,
                e.replace('|', "/").lines().next().unwrap_or_default()
            );
            continue;
        }
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} ± {} ms | {} % | {:.2} s | {:.2} s | {:.0} ms | {:.0} ms | {:.0} ms | {} ({}) |",
            r.n,
            r.t,
            coins(r),
            r.delay_ms,
            r.jitter_ms,
            r.loss_pct,
            r.dkg_s,
            r.expected_dkg_s(rows),
            r.sign_p50_ms,
            r.sign_p99_ms,
            r.expected_sign_ms(rows),
            r.requests,
            r.failed
        );
    }
    s
}

/// The targets at n = 16 and 50 ms (no loss): DKG ≤ compute + 6 × delay + 1 s, signing p50
/// ≤ compute + 4 × delay, compute being the same set's figure at 0 ms.
pub fn targets(rows: &[TestnetRow]) -> String {
    let mut s = String::from("| target | measured | met |\n|---|---:|---|\n");
    let at = rows.iter().filter(|r| {
        r.n == TARGET_N && r.delay_ms == TARGET_DELAY_MS && r.loss_pct == 0.0 && r.error.is_none()
    });
    for r in at {
        let Some(c) = r.compute(rows) else { continue };
        let d = r.delay_ms / 1e3;
        let dkg_limit = c.dkg_s + 6.0 * d + 1.0;
        let _ = writeln!(
            s,
            "| n = {}, {}, {} ms: DKG ≤ compute + 6 × delay + 1 s = {:.2} + 0.30 + 1 = {:.2} s | {:.2} s | {} |",
            r.n,
            coins(r),
            r.delay_ms,
            c.dkg_s,
            dkg_limit,
            r.dkg_s,
            if r.dkg_s <= dkg_limit { "yes" } else { "no" }
        );
        let sign_limit = c.sign_p50_ms + 4.0 * r.delay_ms;
        let _ = writeln!(
            s,
            "| n = {}, {}, {} ms: sign p50 ≤ compute + 4 × delay = {:.0} + 200 = {:.0} ms | {:.0} ms | {} |",
            r.n,
            coins(r),
            r.delay_ms,
            c.sign_p50_ms,
            sign_limit,
            r.sign_p50_ms,
            if r.sign_p50_ms <= sign_limit { "yes" } else { "no" }
        );
    }
    s
}

/// Write the report's testnet section into `out` (kept text around it), the plot and the
/// results next to it (`testnet.svg`, `testnet.json` in `out`'s directory).
pub fn write(out: &Path, machine: &str, rows: &[TestnetRow], command: &str) -> Result<()> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut section = format!(
        "{BEGIN}\n\nMeasured in one run of `{command}` on: {machine}. Each validator in its own network namespace (`scripts/testnet.sh`), only the bootstrap address in the network definition; the delay is each validator's outgoing link, so two validators are one delay apart one way. DKG: from the first node's spawn to the last vault active on the last node. Signing: one request at a time, from its t-th approval until the originator holds the signature. Compute is the same set at 0 ms.\n\n"
    );
    section.push_str(&table(rows));
    section.push_str("\nTargets (n = 16, 50 ms, no loss):\n\n");
    section.push_str(&targets(rows));
    let _ = write!(
        section,
        "\n![DKG and signing time against the one-way delay](testnet.svg)\n\n{END}"
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
    fs::create_dir_all(dir)?;
    fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    fs::write(dir.join("testnet.svg"), plot(rows))?;
    fs::write(
        dir.join("testnet.json"),
        serde_json::to_string_pretty(rows)?,
    )?;
    Ok(())
}

const COLOURS: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// Two panels against the one-way delay: DKG time, signing p50. One colour per set size and
/// coin set; solid without loss, dashed with loss, dotted the expected compute + rounds × delay.
pub fn plot(rows: &[TestnetRow]) -> String {
    let (w, h, pad) = (460.0, 320.0, 56.0);
    let mut groups: Vec<(usize, Vec<String>)> =
        rows.iter().map(|r| (r.n, r.coins.clone())).collect();
    groups.sort_by_key(|(n, c)| (*n, c.len()));
    groups.dedup();
    let mut losses: Vec<f64> = rows.iter().map(|r| r.loss_pct).collect();
    losses.sort_by(f64::total_cmp);
    losses.dedup();
    let legend_rows = groups.len().div_ceil(3) + 1;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        2.0 * w,
        h + 30.0 + 16.0 * legend_rows as f64
    );
    type Figure = fn(&TestnetRow, &[TestnetRow], bool) -> f64;
    let panels: [(&str, Figure); 2] = [
        ("DKG to every vault active (s)", |r, all, expected| {
            if expected {
                r.expected_dkg_s(all)
            } else {
                r.dkg_s
            }
        }),
        ("signing p50 (ms)", |r, all, expected| {
            if expected {
                r.expected_sign_ms(all)
            } else {
                r.sign_p50_ms
            }
        }),
    ];
    let xmax = rows.iter().map(|r| r.delay_ms).fold(1.0, f64::max);
    for (p, (title, value)) in panels.iter().enumerate() {
        let x0 = p as f64 * w;
        let ymax = rows
            .iter()
            .flat_map(|r| [value(r, rows, false), value(r, rows, true)])
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max)
            * 1.1;
        let ymax = if ymax > 0.0 { ymax } else { 1.0 };
        let px = |d: f64| x0 + pad + d / xmax * (w - 2.0 * pad);
        let py = |v: f64| h - pad + 20.0 - v / ymax * (h - 2.0 * pad);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"13\">{title}</text>",
            x0 + w / 2.0
        );
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/><line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{3}\" stroke=\"black\"/>",
            x0 + pad,
            py(0.0),
            x0 + w - pad,
            py(ymax)
        );
        let mut delays: Vec<f64> = rows.iter().map(|r| r.delay_ms).collect();
        delays.sort_by(f64::total_cmp);
        delays.dedup();
        for d in &delays {
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{d}</text>",
                px(*d),
                py(0.0) + 15.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">one-way delay (ms)</text>",
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
        for (g, (n, coins)) in groups.iter().enumerate() {
            let colour = COLOURS[g % COLOURS.len()];
            // (loss, expected): measured per loss, and the expectation from the 0 % rows.
            let mut lines: Vec<(f64, bool)> = losses.iter().map(|l| (*l, false)).collect();
            lines.push((0.0, true));
            for (loss, expected) in lines {
                let mut pts: Vec<(f64, f64)> = rows
                    .iter()
                    .filter(|r| r.n == *n && r.coins == *coins && r.loss_pct == loss)
                    .map(|r| (r.delay_ms, value(r, rows, expected)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let dash = match (expected, loss > 0.0) {
                    (true, _) => " stroke-dasharray=\"2,2\"",
                    (false, true) => " stroke-dasharray=\"6,3\"",
                    (false, false) => "",
                };
                let path: Vec<String> = pts
                    .iter()
                    .map(|(d, v)| format!("{:.1},{:.1}", px(*d), py(*v)))
                    .collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"{}\"{dash} points=\"{}\"/>",
                    if expected { 1 } else { 2 },
                    path.join(" ")
                );
                if !expected {
                    for (d, v) in &pts {
                        let _ = writeln!(
                            s,
                            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"/>",
                            px(*d),
                            py(*v)
                        );
                    }
                }
            }
        }
    }
    let legend_y = h + 25.0;
    for (g, (n, coins)) in groups.iter().enumerate() {
        let (x, y) = (
            60.0 + (g % 3) as f64 * 280.0,
            legend_y + (g / 3) as f64 * 16.0,
        );
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{0}\" y2=\"{y}\" stroke=\"{1}\" stroke-width=\"2\"/><text x=\"{2}\" y=\"{3}\">n = {n}, {4}</text>",
            x + 24.0,
            COLOURS[g % COLOURS.len()],
            x + 30.0,
            y + 4.0,
            coins.join(" ")
        );
    }
    let y = legend_y + (legend_rows - 1) as f64 * 16.0;
    for (k, (name, dash)) in [
        ("no loss", ""),
        ("1 % loss", " stroke-dasharray=\"6,3\""),
        ("compute + rounds × delay", " stroke-dasharray=\"2,2\""),
    ]
    .iter()
    .enumerate()
    {
        let x = 60.0 + k as f64 * 280.0;
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{0}\" y2=\"{y}\" stroke=\"black\" stroke-width=\"2\"{dash}/><text x=\"{1}\" y=\"{2}\">{name}</text>",
            x + 24.0,
            x + 30.0,
            y + 4.0
        );
    }
    s.push_str("</svg>\n");
    s
}
