//! `kiln bench SCENARIO`: in-process scenarios against a temporary data dir,
//! measuring the spec's performance targets (section 11).
//!
//! Each scenario prints one line per figure, `name value unit`, then one line
//! per target saying `ok` or `below target`. Times here are measurements to
//! read, never assertions: tests run the scenarios small only so they cannot
//! rot.

mod report;
mod scenarios;

use std::process::ExitCode;

pub use report::{Figure, Report, Target};

use crate::cli::BenchArgs;

/// The scenarios, in the order `all` runs them.
pub const SCENARIOS: &[&str] = &["nodeset", "lock", "jobs", "lifecycle", "admin", "scale"];

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

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}
