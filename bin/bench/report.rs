//! Figures, targets and how they are printed.

use serde::{Deserialize, Serialize};

/// What a figure must reach.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    AtLeast(f64),
    AtMost(f64),
}

/// One measured figure.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub target: Option<Target>,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Figure { name: name.into(), value, unit: unit.into(), target: None }
    }

    pub fn at_least(mut self, v: f64) -> Self {
        self.target = Some(Target::AtLeast(v));
        self
    }

    pub fn at_most(mut self, v: f64) -> Self {
        self.target = Some(Target::AtMost(v));
        self
    }

    /// True when the figure meets its target (or has none).
    pub fn meets(&self) -> bool {
        match self.target {
            None => true,
            Some(Target::AtLeast(t)) => self.value >= t,
            Some(Target::AtMost(t)) => self.value <= t,
        }
    }
}

/// Every figure of a run.
#[derive(Default, Serialize)]
pub struct Report {
    pub figures: Vec<Figure>,
}

fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.3}") }
}

impl Report {
    pub fn new() -> Self {
        Report::default()
    }

    pub fn push(&mut self, f: Figure) {
        self.figures.push(f);
    }

    pub fn print(&self, json: bool) {
        if json {
            crate::output::json(self);
            return;
        }
        for f in &self.figures {
            println!("{} {} {}", f.name, show(f.value), f.unit);
        }
        for f in self.figures.iter().filter(|f| f.target.is_some()) {
            let (op, t) = match f.target {
                Some(Target::AtLeast(t)) => (">=", t),
                Some(Target::AtMost(t)) => ("<=", t),
                None => continue,
            };
            let verdict = if f.meets() { "ok" } else { "below target" };
            println!("target {} {} {op} {} {}: {verdict}", f.name, show(f.value), show(t), f.unit);
        }
    }
}

/// The `p`-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
