//! `kiln bench SCENARIO`: in-process scenarios against a temporary data dir,
//! measuring the performance targets of docs/performance.md.
//!
//! Each scenario prints one line per figure, `name value unit`, then one line
//! per target saying `ok` or `below target`. Times here are measurements to
//! read, never assertions: tests run the scenarios small only so they cannot
//! rot.

mod api;
mod cpu;
mod listing;
mod report;
mod scaleout;
mod scenarios;

use std::process::ExitCode;

pub use report::{Figure, Report, Target};

use crate::cli::BenchArgs;

/// The scenarios, in the order `all` runs them.
pub const SCENARIOS: &[&str] =
    &["nodeset", "lock", "jobs", "lifecycle", "admin", "scale", "power-sync", "exec", "api", "list"];

/// Scenarios run only by name, not by `all`: `scale-out` needs PostgreSQL
/// and several processes.
pub const BY_NAME_ONLY: &[&str] = &["scale-out"];

/// Runs `kiln bench`.
pub fn run(args: BenchArgs, json: bool) -> ExitCode {
    let names: Vec<&str> = if args.scenario == "all" {
        SCENARIOS.to_vec()
    } else if SCENARIOS.contains(&args.scenario.as_str()) || BY_NAME_ONLY.contains(&args.scenario.as_str()) {
        vec![args.scenario.as_str()]
    } else {
        eprintln!(
            "error: unknown scenario '{}' (expected one of: {}, {}, all)",
            args.scenario,
            SCENARIOS.join(", "),
            BY_NAME_ONLY.join(", ")
        );
        return ExitCode::from(crate::exit::USAGE);
    };
    let mut report = Report::new();
    report.push(Figure::new("cores", num_cpus() as f64, "count"));
    if names.len() > 1 || args.repeat > 1 {
        if args.repeat > 1 {
            report.push(Figure::new("repeat", f64::from(args.repeat), "runs"));
        }
        // Each run of each scenario in a process of its own, so one's memory
        // (RSS) and threads do not show in another's figures.
        for name in names {
            let mut runs = Vec::with_capacity(args.repeat as usize);
            for _ in 0..args.repeat {
                // The previous run's writes (its data dir is gone, its pages
                // may still be in write-back) would land in this one's
                // fsyncs: start each on a quiet disk.
                // SAFETY: sync(2) takes no arguments and cannot fail.
                unsafe { libc::sync() };
                match run_child(name, &args) {
                    Ok(figures) => runs.push(figures.into_iter().filter(|f| f.name != "cores").collect()),
                    Err(e) => {
                        eprintln!("error: scenario {name} failed: {e:#}");
                        return ExitCode::from(crate::exit::FAILED);
                    }
                }
            }
            report.figures.extend(report::medians(&runs));
        }
        report.print(json);
        return ExitCode::SUCCESS;
    }
    for name in names {
        let started = std::time::Instant::now();
        match scenarios::run(name, &args) {
            Ok(figures) => {
                for f in figures {
                    report.push(f);
                }
                report.push(Figure::new(&format!("{name}.wall"), started.elapsed().as_secs_f64(), "s"));
            }
            Err(e) => {
                eprintln!("error: scenario {name} failed: {e:#}");
                return ExitCode::from(crate::exit::FAILED);
            }
        }
    }
    report.print(json);
    ExitCode::SUCCESS
}

/// Runs `kiln --json bench NAME` once, with this run's sizes, and reads
/// its figures.
fn run_child(name: &str, args: &BenchArgs) -> anyhow::Result<Vec<Figure>> {
    run_child_with(name, args, &[])
}

/// [`run_child`] with `env` set in the child (a scenario's own hand-off).
fn run_child_with(name: &str, args: &BenchArgs, env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .args(["--json", "bench", name])
        .args(size_args(args))
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::inherit())
        .output()?;
    if !out.status.success() {
        anyhow::bail!("exited with {}", out.status);
    }
    let report: ReportIn = serde_json::from_slice(&out.stdout)?;
    Ok(report.figures)
}

/// The size options given, as command-line arguments (never `--repeat`:
/// a child runs once).
fn size_args(args: &BenchArgs) -> Vec<String> {
    let sizes = [
        ("--nodes", args.nodes.map(|v| v as u64)),
        ("--jobs", args.jobs.map(|v| v as u64)),
        ("--clients", args.clients.map(|v| v as u64)),
        ("--requests", args.requests.map(|v| v as u64)),
        ("--tasks", args.tasks.map(|v| v as u64)),
        ("--names", args.names.map(|v| v as u64)),
        ("--fanout", args.fanout.map(u64::from)),
        ("--latency-ms", args.latency_ms),
    ];
    sizes.into_iter().filter_map(|(flag, v)| v.map(|v| [flag.to_string(), v.to_string()])).flatten().collect()
}

#[derive(serde::Deserialize)]
struct ReportIn {
    figures: Vec<Figure>,
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_gets_every_size_given_and_never_the_repeat() {
        let args = BenchArgs {
            scenario: "all".into(),
            nodes: Some(1),
            jobs: Some(2),
            clients: Some(3),
            requests: Some(4),
            tasks: Some(5),
            names: Some(6),
            fanout: Some(7),
            latency_ms: Some(8),
            repeat: 9,
        };
        let flags = "--nodes 1 --jobs 2 --clients 3 --requests 4 --tasks 5 --names 6 --fanout 7 --latency-ms 8";
        assert_eq!(size_args(&args).join(" "), flags);
        let none = BenchArgs {
            nodes: None,
            jobs: None,
            clients: None,
            requests: None,
            tasks: None,
            names: None,
            fanout: None,
            latency_ms: None,
            ..args
        };
        assert!(size_args(&none).is_empty());
    }
}
