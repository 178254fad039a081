//! `kiln completions SHELL` and `kiln manpage`: generated from the clap
//! definition in [`crate::cli`], so they can never disagree with the
//! commands the binary accepts.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::Cli;

/// Prints the completion script of `shell` to stdout.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "kiln", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// Prints `kiln(1)` to stdout, or writes a page per command into `out_dir`.
pub fn manpage(out_dir: Option<&Path>) -> ExitCode {
    let result = match out_dir {
        None => render(),
        Some(dir) => write_all(dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(crate::exit::FAILED)
        }
    }
}

fn render() -> anyhow::Result<()> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    std::io::stdout().write_all(&out)?;
    Ok(())
}

fn write_all(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir).with_context(|| format!("cannot write into {}", dir.display()))?;
    println!("man pages written to {}", dir.display());
    Ok(())
}
