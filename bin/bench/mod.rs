//! `kiln bench SCENARIO`: in-process scenarios against a temporary data dir,
//! measuring the spec's performance targets (section 11).
//!
//! Each scenario prints one line per figure, `name value unit`, then one line
//! per target saying `ok` or `below target`. Times here are measurements to
//! read, never assertions: tests run the scenarios small only so they cannot
//! rot.

mod cpu;
mod report;
mod scenarios;

use std::process::ExitCode;

pub use report::{Figure, Report, Target};

use crate::cli::BenchArgs;

/// The scenarios, in the order `all` runs them.
pub const SCENARIOS: &[&str] = &["nodeset", "lock", "jobs", "lifecycle", "admin", "scale", "power-sync", "exec"];

/// Runs `kiln bench`.
pub fn run(args: BenchArgs, json: bool) -> ExitCode {
    let names: Vec<&str> = if args.scenario == "all" {
        SCENARIOS.to_vec()
    } else if SCENARIOS.contains(&args.scenario.as_str()) {
        vec![args.scenario.as_str()]
    } else {
        eprintln!("error: unknown scenario '{}' (expected one of: {}, all)", args.scenario, SCENARIOS.join(", "));
        return ExitCode::from(crate::exit::USAGE);
    };
    let mut report = Report::new();
    report.push(Figure::new("cores", num_cpus() as f64, "count"));
    if names.len() > 1 {
        // Each scenario in a process of its own, so one's memory (RSS) and
        // threads do not show in another's figures.
        for name in names {
            // The previous scenario's writes (its data dir is gone, its
            // pages may still be in write-back) would land in this one's
            // fsyncs: start each on a quiet disk.
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            match run_child(name) {
                Ok(figures) => report.figures.extend(figures.into_iter().filter(|f| f.name != "cores")),
                Err(e) => {
                    eprintln!("error: scenario {name} failed: {e:#}");
                    return ExitCode::from(crate::exit::FAILED);
                }
            }
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

/// Runs `kiln bench NAME --json` with this run's options and reads its figures.
fn run_child(name: &str) -> anyhow::Result<Vec<Figure>> {
    let exe = std::env::current_exe()?;
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Replace the scenario `all` with this one; the options stay.
    let pos = args.iter().position(|a| a == "all").ok_or_else(|| anyhow::anyhow!("no scenario in the arguments"))?;
    args[pos] = name.to_string();
    args.retain(|a| a != "--json");
    let out =
        std::process::Command::new(exe).arg("--json").args(&args).stderr(std::process::Stdio::inherit()).output()?;
    if !out.status.success() {
        anyhow::bail!("exited with {}", out.status);
    }
    let report: ReportIn = serde_json::from_slice(&out.stdout)?;
    Ok(report.figures)
}

#[derive(serde::Deserialize)]
struct ReportIn {
    figures: Vec<Figure>,
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
