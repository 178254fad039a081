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
    /// The measurement; with `--repeat`, the median of the runs.
    pub value: f64,
    pub unit: String,
    pub target: Option<Target>,
    /// With `--repeat`: each run's value, in run order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<f64>,
}

impl Figure {
    pub fn new(name: &str, value: f64, unit: &str) -> Self {
        Figure { name: name.into(), value, unit: unit.into(), target: None, runs: Vec::new() }
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

/// The figures of several runs of one scenario as one run: each figure's
/// median (the mean of the middle two for an even count), its target, and
/// every run's value. Figures are in the first run's order; one missing
/// from some run is the median of the runs that have it.
pub fn medians(runs: &[Vec<Figure>]) -> Vec<Figure> {
    let Some(first) = runs.first() else { return Vec::new() };
    first
        .iter()
        .map(|figure| {
            let values: Vec<f64> =
                runs.iter().filter_map(|run| run.iter().find(|f| f.name == figure.name)).map(|f| f.value).collect();
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let mid = sorted.len() / 2;
            let median =
                if sorted.len().is_multiple_of(2) { (sorted[mid - 1] + sorted[mid]) / 2.0 } else { sorted[mid] };
            Figure { value: median, runs: values, ..figure.clone() }
        })
        .collect()
}

/// The `p`-th percentile (0..=100) of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(values: &[(&str, f64)]) -> Vec<Figure> {
        values.iter().map(|(n, v)| Figure::new(n, *v, "x").at_least(2.0)).collect()
    }

    #[test]
    fn the_median_of_odd_and_even_counts_of_runs() {
        let three =
            medians(&[run(&[("a", 5.0), ("b", 1.0)]), run(&[("a", 1.0), ("b", 2.0)]), run(&[("a", 3.0), ("b", 9.0)])]);
        assert_eq!(three.iter().map(|f| (f.name.as_str(), f.value)).collect::<Vec<_>>(), [("a", 3.0), ("b", 2.0)]);
        assert_eq!(three[0].runs, [5.0, 1.0, 3.0], "each run's value, in run order");
        assert!(three[0].meets() && three[1].meets(), "the target is judged on the median");

        let two = medians(&[run(&[("a", 1.0)]), run(&[("a", 2.0)])]);
        assert_eq!(two[0].value, 1.5);
        assert!(!two[0].meets());
    }

    #[test]
    fn a_figure_missing_from_a_run_is_the_median_of_the_others() {
        let figures = medians(&[run(&[("a", 1.0), ("b", 4.0)]), run(&[("a", 3.0)]), run(&[("b", 8.0), ("a", 2.0)])]);
        assert_eq!(figures[0].value, 2.0);
        assert_eq!(figures[1].value, 6.0);
        assert_eq!(figures[1].runs, [4.0, 8.0]);
        assert!(medians(&[]).is_empty());
    }

    #[test]
    fn one_run_prints_no_run_list() {
        let json = serde_json::to_string(&Figure::new("a", 1.0, "s")).unwrap();
        assert!(!json.contains("runs"), "{json}");
        let with = serde_json::to_string(&medians(&[run(&[("a", 1.0)]), run(&[("a", 3.0)])])[0]).unwrap();
        assert!(with.contains("\"runs\":[1.0,3.0]"), "{with}");
    }
}
