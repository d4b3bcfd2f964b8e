//! Markdown tables from `--json` result lines (scripts/bench.sh).

use std::path::Path;

use serde_json::Value;

use crate::Error;

/// Prints the markdown tables of scripts/bench.sh from JSON result lines.
pub fn report(path: &Path) -> Result<(), Error> {
    let text = std::fs::read_to_string(path)?;
    let results: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let find = |name: &str| results.iter().rev().find(|r| r["workload"] == name);
    // Load results also say whether the server logged (results from before the flag: no).
    let find_load = |name: &str, log: bool| {
        results
            .iter()
            .rev()
            .find(|r| r["workload"] == name && (r["log"] == true) == log)
    };
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(100.0 * a / b),
        _ => None,
    };
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "meets",
        Some(false) => "**misses**",
        None => "n/a",
    };
    let fmt_pct = |p: Option<f64>| p.map_or("—".to_owned(), |p| format!("{p:.0} %"));
    // What the ratio would be if both processes had the cores to themselves: the inverse
    // ratio of the CPU (server + load generator) one request costs.
    let cpu = |r: &Value| {
        Some(r["server_cpu_us_per_req"].as_f64()? + r["client_cpu_us_per_req"].as_f64()?)
    };
    let row = |label: String,
               r: &Value,
               ratio: String,
               cpu_ratio: String,
               target: &str,
               v: &str| {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        println!(
            "| {label} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} | {:.2} | {ratio} | {cpu_ratio} | {target} | {v} |",
            f("rps"),
            f("p50_ms"),
            f("p99_ms"),
            f("p999_ms"),
            r["errors"],
            f("server_cpu_us_per_req"),
            f("client_cpu_us_per_req"),
            f("other_cpu_cores"),
        );
    };

    println!("| workload | req/s | p50 ms | p99 ms | p99.9 ms | errors | server CPU µs/req | load gen. CPU µs/req | other load (cores) | ratio | ratio by CPU | target | verdict |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    // SPEC §10: with the shipped logging on; p99 ≤ 2 ms in every keep-alive mode.
    let rows: [(&str, bool, f64, &str); 14] = [
        ("register", true, 80.0, "≥ 80 % of ceiling, p99 ≤ 2 ms"),
        ("read-rotate", true, 75.0, "≥ 75 % of ceiling, p99 ≤ 2 ms"),
        ("token", true, 80.0, "≥ 80 % of ceiling, p99 ≤ 2 ms"),
        ("introspect", true, 85.0, "≥ 85 % of ceiling, p99 ≤ 2 ms"),
        ("handshake-register", true, 100.0, "≥ 100 % of ceiling"),
        ("durable-register", true, 75.0, "≥ 75 % of `register`"),
        ("discovery", true, 0.0, "— (diagnostic)"),
        (
            "route",
            true,
            100.0,
            "≥ 100 % of nginx, p99 ≤ nginx's + 1 ms",
        ),
        ("shared-register", true, 1.0, "≥ 4 000 req/s, p99 ≤ 20 ms"),
        (
            "shared-read-rotate",
            true,
            1.0,
            "≥ 4 000 req/s, p99 ≤ 20 ms",
        ),
        ("token", false, 0.0, "— (log off, for comparison)"),
        ("introspect", false, 0.0, "— (log off, for comparison)"),
        ("ceiling", false, 0.0, ""),
        ("ceiling-handshake", false, 0.0, ""),
    ];
    for (name, log, min, target) in rows {
        let Some(r) = find_load(name, log) else {
            continue;
        };
        let name = if log || name.starts_with("ceiling") {
            name.to_owned()
        } else {
            format!("{name}, log off")
        };
        let name = name.as_str();
        let base = &r["baseline"];
        if !base.is_object() {
            // A run without its interleaved baseline: numbers only.
            row(
                format!("`{name}` (alone)"),
                r,
                "—".into(),
                "—".into(),
                "—",
                "—",
            );
            continue;
        }
        let ratio = pct(r["rps"].as_f64(), base["rps"].as_f64());
        let mut ok = ratio.filter(|_| min > 0.0).map(|p| p >= min);
        if matches!(name, "register" | "read-rotate" | "token" | "introspect") {
            ok = ok
                .zip(r["p99_ms"].as_f64())
                .map(|(ok, p99)| ok && p99 <= 2.0);
        }
        if name == "route" {
            ok = ok
                .zip(r["p99_ms"].as_f64().zip(base["p99_ms"].as_f64()))
                .map(|(ok, (p99, nginx))| ok && p99 <= nginx + 1.0);
        }
        if name.starts_with("shared-") {
            // Absolute targets; the memory node beside it shows the backend's cost.
            ok = r["rps"]
                .as_f64()
                .zip(r["p99_ms"].as_f64())
                .map(|(rps, p99)| rps >= 4000.0 && p99 <= 20.0);
        }
        row(
            format!("`{name}`"),
            r,
            fmt_pct(ratio),
            fmt_pct(pct(cpu(base), cpu(r))),
            target,
            if min > 0.0 { verdict(ok) } else { "—" },
        );
        row(
            format!(
                "↳ `{}`, interleaved",
                base["workload"].as_str().unwrap_or("")
            ),
            base,
            String::new(),
            String::new(),
            "",
            "",
        );
    }

    if let Some(u) = find("route-upload") {
        let growth = u["rss_growth_kib"].as_f64().unwrap_or(f64::NAN);
        println!();
        println!("| streaming through a route | MiB/s | certgate RSS before | at most while streaming | growth | target | verdict |");
        println!("|---|---:|---:|---:|---:|---|---|");
        println!(
            "| 1 GiB upload | {:.0} | {} KiB | {} KiB | {:.0} KiB | < 64 MiB growth | {} |",
            u["mib_per_s"].as_f64().unwrap_or(f64::NAN),
            u["rss_before_kib"],
            u["rss_max_kib"],
            growth,
            verdict(Some(growth < 64.0 * 1024.0)),
        );
        println!();
    }

    let memory: Vec<&Value> = results
        .iter()
        .filter(|r| r["workload"] == "memory")
        .collect();
    if !memory.is_empty() {
        println!();
        println!(
            "| memory | RSS per client | metadata JSON | beyond the JSON | live heap per client | allocations per client | target | verdict |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---|---|");
        for r in memory {
            let over = r["overhead_bytes"].as_f64();
            let ok = (r["clients"].as_u64() >= Some(1_000_000)).then_some(over.map(|o| o <= 512.0));
            let certificates = if r["certificate_per_client"] == true {
                ", a certificate each"
            } else {
                ""
            };
            println!(
                "| {} clients{certificates} | {:.0} B | {} B | {:.0} B | {:.0} B | {:.1} | ≤ 512 B at 1M | {} |",
                r["clients"],
                r["bytes_per_client"].as_f64().unwrap_or(f64::NAN),
                r["metadata_json_bytes"],
                over.unwrap_or(f64::NAN),
                r["heap_bytes_per_client"].as_f64().unwrap_or(f64::NAN),
                r["allocations_per_client"].as_f64().unwrap_or(f64::NAN),
                ok.map_or("—", verdict),
            );
        }
    }

    if let Some(rows) = find("micro").and_then(|m| m["rows"].as_array()) {
        println!();
        println!("| step of the registration path (one thread, in-process) | µs |");
        println!("|---|---:|");
        for r in rows {
            println!(
                "| {} | {:.2} |",
                r["what"].as_str().unwrap_or(""),
                r["us"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }

    let snapshots: Vec<&Value> = results
        .iter()
        .filter(|r| r["workload"] == "snapshot")
        .collect();
    if !snapshots.is_empty() {
        println!();
        println!("| snapshot | write | restore | file size | target | verdict |");
        println!("|---:|---:|---:|---:|---|---|");
        for r in snapshots {
            let w = r["write_s"].as_f64();
            let rs = r["restore_s"].as_f64();
            let ok = (r["clients"].as_u64() >= Some(1_000_000))
                .then(|| w.zip(rs).map(|(w, rs)| w <= 3.0 && rs <= 3.0));
            println!(
                "| {} clients | {:.2} s | {:.2} s | {:.1} MB | ≤ 3 s each at 1M | {} |",
                r["clients"],
                w.unwrap_or(f64::NAN),
                rs.unwrap_or(f64::NAN),
                r["snapshot_bytes"].as_f64().unwrap_or(f64::NAN) / 1e6,
                ok.map_or("—", verdict),
            );
        }
    }
    Ok(())
}
