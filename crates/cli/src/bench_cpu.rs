//! Where the machine's CPU went during a phase of a bench, read from `/proc` (Linux; elsewhere nothing is
//! printed): this process's threads by the part they play, the brokers' processes, and the machine as a
//! whole. On a machine that runs the brokers beside Berth, a figure means little without it: the same code
//! gives different throughputs when the brokers and receivers leave the writes less of the machine.

use std::collections::BTreeMap;
use std::time::Instant;

/// CPU time so far, in clock ticks (`USER_HZ`, 100 a second on Linux).
pub struct Sample {
    at: Instant,
    parts: BTreeMap<String, u64>,
    /// The machine's busy ticks (all but idle and I/O wait) and its number of CPUs.
    machine: u64,
    cpus: usize,
}

/// The part a thread of this process plays, by its name.
fn part_of(thread: &str) -> &'static str {
    if thread.starts_with("berth-delivery") {
        "delivery"
    } else if thread.starts_with("bench-receiver") {
        "receivers"
    } else {
        // The runtime's workers, the writer's blocking threads, SQLite's checkpoints, the bench's client.
        "writes"
    }
}

/// User and system ticks from a `stat` file (the fields after the command's closing parenthesis).
fn ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the parenthesis: state is field 3 of stat(5), utime 14 and stime 15.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Now's CPU times: this process's threads by part, and the processes named in `others` (whole processes:
/// all their threads).
pub fn sample(others: &[&str]) -> Option<Sample> {
    let mut parts = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = task.path();
        let (Ok(name), Ok(stat)) =
            (std::fs::read_to_string(path.join("comm")), std::fs::read_to_string(path.join("stat")))
        else {
            continue;
        };
        *parts.entry(part_of(name.trim()).to_string()).or_insert(0) += ticks(&stat).unwrap_or(0);
    }
    for process in std::fs::read_dir("/proc").ok()?.flatten() {
        let path = process.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else { continue };
        let name = name.trim();
        if others.contains(&name) {
            if let Some(t) = std::fs::read_to_string(path.join("stat")).ok().as_deref().and_then(ticks) {
                *parts.entry(name.to_string()).or_insert(0) += t;
            }
        }
    }
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let machine_line = stat.lines().next()?;
    let numbers: Vec<u64> = machine_line.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal ...: busy is all but idle and iowait (guest time is
    // counted in user already).
    let busy = numbers.iter().take(8).sum::<u64>() - numbers.get(3)? - numbers.get(4)?;
    let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    Some(Sample { at: Instant::now(), parts, machine: busy, cpus })
}

/// The share of the machine's CPUs that were busy since `before` (0 to 1).
pub fn machine_busy(before: &Option<Sample>) -> Option<f64> {
    let (before, now) = (before.as_ref()?, sample(&[])?);
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(0.001);
    // USER_HZ ticks: 100 a second.
    Some(now.machine.saturating_sub(before.machine) as f64 / 100.0 / seconds / now.cpus.max(1) as f64)
}

/// The CPU each part used since `before`, as a percentage of one core, with the machine's total.
pub fn since(before: &Option<Sample>, others: &[&str]) -> String {
    let (Some(before), Some(now)) = (before, sample(others)) else { return String::new() };
    let seconds = now.at.duration_since(before.at).as_secs_f64().max(0.001);
    // USER_HZ is 100 on every Linux architecture Berth builds for.
    let percent = |ticks: u64| ticks as f64 / seconds;
    let parts: Vec<String> = now
        .parts
        .iter()
        .map(|(name, t)| (name, t.saturating_sub(before.parts.get(name).copied().unwrap_or(0))))
        .filter(|(_, t)| *t > 0)
        .map(|(name, t)| format!("{name} {:.0}", percent(t)))
        .collect();
    format!(
        "CPU, % of one core: {}; the machine {:.0} of {}",
        parts.join(", "),
        percent(now.machine.saturating_sub(before.machine)),
        now.cpus * 100
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_lines_ticks_are_its_user_and_system_time() {
        // A command with spaces and a parenthesis in its name, as the kernel prints it.
        let stat = "1234 (tokio (rt) w) S 1 1234 1234 0 -1 4194560 500 0 0 0 170 30 0 0 20 0 9 0 100 0 0";
        assert_eq!(ticks(stat), Some(200));
        assert_eq!(ticks("1234 (x) S 1"), None);
        assert_eq!(part_of("berth-delivery"), "delivery");
        assert_eq!(part_of("bench-receivers"), "receivers");
        assert_eq!(part_of("tokio-rt-worker"), "writes");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_busy_thread_shows_in_the_writes_part() {
        let before = sample(&[]);
        assert!(before.is_some(), "/proc is readable");
        let started = Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let line = since(&before, &[]);
        let busy = machine_busy(&before).expect("the machine's share");
        assert!(busy > 0.2 / before.as_ref().map_or(1.0, |b| b.cpus as f64) && busy <= 1.05, "{busy}");
        assert!(line.contains("writes "), "a thread spinning for 300 ms shows: {line}");
        assert!(line.contains("the machine "), "{line}");
    }
}
