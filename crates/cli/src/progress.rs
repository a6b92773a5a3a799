//! A progress bar on stderr for the commands that write many entities (`copy`, `import`, `import backstage`):
//! one line at most a second, `[#####.....] done / total what (rate/s) label`, so it reads the same in a
//! terminal and in a CI log.

use std::time::Instant;

pub struct Progress {
    total: u64,
    what: &'static str,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(total: u64, what: &'static str) -> Progress {
        Progress { total, what, started: Instant::now(), last: None }
    }

    /// Shows `done` of the total, unless a line was shown less than a second ago (`last` shows it anyway).
    pub fn show(&mut self, done: u64, label: &str, last: bool) {
        if !last && self.last.is_some_and(|t| t.elapsed().as_millis() < 1_000) {
            return;
        }
        self.last = Some(Instant::now());
        eprintln!("  {}", self.line(done, label));
    }

    fn line(&self, done: u64, label: &str) -> String {
        const WIDTH: u64 = 30;
        let filled = (done * WIDTH).checked_div(self.total).unwrap_or(WIDTH).min(WIDTH) as usize;
        let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let label = if label.is_empty() { String::new() } else { format!(" {label}") };
        format!(
            "[{}{}] {done} / {} {} ({rate:.0}/s){label}",
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled),
            self.total,
            self.what
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_with_the_share_done() {
        let p = Progress::new(200, "entities");
        let line = p.line(50, "of service");
        assert!(line.starts_with(&format!("[{}{}] 50 / 200 entities (", "#".repeat(7), ".".repeat(23))), "{line}");
        assert!(line.ends_with("/s) of service"), "{line}");
        assert!(Progress::new(0, "x").line(0, "").starts_with(&format!("[{}]", "#".repeat(30))));
        assert!(p.line(999, "").starts_with(&format!("[{}]", "#".repeat(30))), "never past full");
    }
}
