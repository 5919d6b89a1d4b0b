//! Progress of a long copy (backup, restore): a line in the log every 10 % of the bytes, and
//! on a terminal a progress bar with bytes done, rate and ETA (indicatif, kept at this edge
//! so the commands stay free of terminal code). Thread-safe: workers report as they finish.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct Progress {
    what: &'static str,
    total: u64,
    done: AtomicU64,
    next_log: AtomicU64,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(what: &'static str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what);
            bar
        });
        Progress {
            what,
            total,
            done: AtomicU64::new(0),
            next_log: AtomicU64::new(10),
            bar,
        }
    }

    /// Records `bytes` more done; logs when a new tenth is crossed.
    pub fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        }
        let percent = done
            .saturating_mul(100)
            .checked_div(self.total)
            .unwrap_or(100);
        let next = self.next_log.load(Ordering::Relaxed);
        if percent >= next
            && self
                .next_log
                .compare_exchange(
                    next,
                    (percent / 10 + 1) * 10,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            crate::info!(
                "{} progress: {percent}% ({done} of {} bytes)",
                self.what,
                self.total
            );
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_bytes_and_steps_through_tenths() {
        let p = Progress::new("test", 1000);
        for _ in 0..10 {
            p.add(100);
        }
        assert_eq!(p.done.load(Ordering::Relaxed), 1000);
        assert_eq!(p.next_log.load(Ordering::Relaxed), 110);
        let empty = Progress::new("empty", 0);
        empty.add(0);
        assert_eq!(empty.next_log.load(Ordering::Relaxed), 110);
    }
}
