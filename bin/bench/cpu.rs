//! CPU time of this process, whole and by thread name.
//!
//! Why by thread: in `kiln bench jobs` one thread, the store's SQLite
//! writer, carries every submission and every job end, while the actix
//! thread carries the actors. Which of them a figure is bounded by decides
//! what would make it faster, so the scenario reports each one's CPU per
//! submission, not only the sum.

use std::collections::BTreeMap;

use super::report::Figure;

/// User and system CPU seconds of the whole process so far.
pub fn process_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a rusage for RUSAGE_SELF into the buffer.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return 0.0;
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { usage.assume_init() };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// User and system CPU seconds of each live thread, summed by thread name
/// (`/proc/self/task/*/stat`). Empty where `/proc` cannot be read.
pub fn thread_seconds() -> BTreeMap<String, f64> {
    // SAFETY: sysconf takes no pointer and only reads a constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return by_name;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        if let Some((name, cpu)) = parse_stat(&stat) {
            *by_name.entry(name.to_string()).or_insert(0.0) += cpu / ticks;
        }
    }
    by_name
}

/// The thread name and its utime + stime in clock ticks from one
/// `/proc/…/stat` line. The name is in parentheses and may itself hold
/// spaces or parentheses, so the fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    // After the name: state is field 3, utime field 14, stime field 15.
    let mut fields = stat.get(close + 1..)?.split_ascii_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU seconds each thread name used between two [`thread_seconds`]
/// readings; threads that ended in between are not counted.
pub fn thread_seconds_since(before: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    let mut used = thread_seconds();
    for (name, seconds) in &mut used {
        *seconds -= before.get(name).copied().unwrap_or(0.0);
    }
    used
}

/// CPU used over several intervals (a scenario's slices), whole and by
/// thread name.
#[derive(Default)]
pub struct Tally {
    pub seconds: f64,
    pub threads: BTreeMap<String, f64>,
}

/// Where an interval of a [`Tally`] began.
pub struct Mark {
    seconds: f64,
    threads: BTreeMap<String, f64>,
}

/// Marks the start of an interval.
pub fn mark() -> Mark {
    Mark { seconds: process_seconds(), threads: thread_seconds() }
}

impl Tally {
    /// Adds what was used since `mark`.
    pub fn add_since(&mut self, mark: &Mark) {
        self.seconds += process_seconds() - mark.seconds;
        for (name, used) in thread_seconds_since(&mark.threads) {
            *self.threads.entry(name).or_default() += used;
        }
    }
}

/// The store's own threads, by name: SQLite's one writer, the WAL's
/// fsyncs, the checkpoints.
const STORE_THREADS: [(&str, &str); 3] =
    [("kiln-store", "store_thread"), ("kiln-sync", "sync_thread"), ("kiln-checkpoint", "checkpoint_thread")];

/// CPU µs per unit of work (`units` of it done while `threads` was used, of
/// `total_seconds` in all) on each of the store's threads, and on every
/// other thread together (the actors and the kernel work they cause), as
/// `SCENARIO.cpu_store_thread` ... `SCENARIO.cpu_other_threads`.
pub fn by_thread(scenario: &str, threads: &BTreeMap<String, f64>, total_seconds: f64, units: f64) -> Vec<Figure> {
    let per_unit = |seconds: f64| seconds * 1e6 / units.max(1.0);
    let mut other = total_seconds;
    let mut figures: Vec<Figure> = STORE_THREADS
        .iter()
        .map(|(thread, figure)| {
            let used = threads.get(*thread).copied().unwrap_or(0.0);
            other -= used;
            Figure::new(&format!("{scenario}.cpu_{figure}"), per_unit(used), "us")
        })
        .collect();
    figures.push(Figure::new(&format!("{scenario}.cpu_other_threads"), per_unit(other), "us"));
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_by_thread_is_per_unit_and_the_rest_goes_to_the_other_threads() {
        let threads: BTreeMap<String, f64> =
            [("kiln-store", 2.0), ("kiln-sync", 0.5), ("actix", 3.0)].map(|(n, s)| (n.to_string(), s)).into();
        let figures = by_thread("x", &threads, 6.0, 1e6);
        let got: Vec<(&str, f64)> = figures.iter().map(|f| (f.name.as_str(), f.value)).collect();
        assert_eq!(
            got,
            [
                ("x.cpu_store_thread", 2.0),
                ("x.cpu_sync_thread", 0.5),
                ("x.cpu_checkpoint_thread", 0.0),
                ("x.cpu_other_threads", 3.5)
            ]
        );
    }

    #[test]
    fn a_stat_line_gives_the_name_and_the_cpu_ticks() {
        let line = "4242 (kiln-store) S 1 4242 4242 0 -1 4194368 10 0 0 0 250 37 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("kiln-store", 287.0)));
    }

    #[test]
    fn a_name_with_spaces_and_parentheses_is_read_whole() {
        let line = "7 (a (b) c) R 1 7 7 0 -1 0 0 0 0 0 3 4 0 0 20 0 1 0 5 0 0";
        assert_eq!(parse_stat(line), Some(("a (b) c", 7.0)));
    }

    #[test]
    fn a_line_cut_short_gives_nothing() {
        assert_eq!(parse_stat("7 (x) R 1 7"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn a_named_thread_is_found_and_its_cpu_grows_while_it_spins() {
        let spinner = std::thread::Builder::new().name("kiln-cpu-probe".into()).spawn(|| {
            let before = thread_seconds();
            // Spin (bounded) until this thread's clock-tick count moves.
            let start = std::time::Instant::now();
            let mut x = 0u64;
            loop {
                let used = thread_seconds_since(&before).get("kiln-cpu-probe").copied();
                assert!(used.is_some(), "the thread is not listed: {:?}", thread_seconds().keys());
                if used > Some(0.0) {
                    return x;
                }
                assert!(start.elapsed() < std::time::Duration::from_secs(10), "no CPU counted in 10 s of spinning");
                for i in 0..1_000_000u64 {
                    x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                }
            }
        });
        spinner.expect("spawn").join().expect("the probe thread's checks hold");
    }
}
