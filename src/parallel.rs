//! The process-max workers of backup, restore and verify: a rayon pool, and the repository
//! each worker uses. A local repository is shared by all workers; a remote one serves one
//! stream per connection, so each worker gets a connection of its own (all multiplexed over
//! one SSH master when ssh-persist is on).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::storage::Storage;

pub struct Workers {
    pool: rayon::ThreadPool,
    /// One per worker for a remote repository; empty for a local one.
    repos: Vec<Box<dyn Storage>>,
}

impl Workers {
    /// `count` workers; `own` holds one repository connection per worker (a remote
    /// repository), or is empty when they share the caller's (a local one).
    pub fn new(count: usize, own: Vec<Box<dyn Storage>>) -> Result<Workers> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .build()
            .map_err(|e| Error::internal(format!("unable to start workers: {e}")))?;
        Ok(Workers { pool, repos: own })
    }

    /// The repository the calling worker uses; `shared` when the repository is local.
    pub fn repo<'a>(&'a self, shared: &'a dyn Storage) -> &'a dyn Storage {
        match rayon::current_thread_index() {
            Some(i) if !self.repos.is_empty() => self.repos[i % self.repos.len()].as_ref(),
            _ => shared,
        }
    }

    /// Runs `work` on every item, each worker taking the next item in the order given as
    /// soon as it is free, and stops handing out items at the first error, which it returns.
    /// A caught signal is such an error ([`crate::signal::check`]).
    ///
    /// Callers sort their files largest first, so that the largest files start first on
    /// different workers and the small ones fill in around them. A rayon parallel iterator
    /// does not keep that order: it splits the list in halves, a second worker starts on the
    /// small files of the middle, and the worker that began with the largest file goes on
    /// with the next largest ones, all on its own (at scale 100 the 1 GiB, 270 MiB and
    /// 214 MiB files, so a delta restore's hashing took 1.2 s on one core instead of 0.8 s).
    pub fn try_each_in_order<T: Sync>(
        &self,
        items: &[T],
        work: impl Fn(&T) -> Result<()> + Sync,
    ) -> Result<()> {
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        self.pool.broadcast(|_| {
            while !failed.load(Ordering::Relaxed) {
                let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                if let Err(e) = crate::signal::check().and_then(|_| work(item)) {
                    failed.store(true, Ordering::Relaxed);
                    if let Ok(mut first) = first_error.lock() {
                        first.get_or_insert(e);
                    }
                    return;
                }
            }
        });
        match first_error.into_inner() {
            Ok(Some(e)) => Err(e),
            Ok(None) => Ok(()),
            Err(_) => Err(Error::internal("a worker panicked")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Polls `flag` until it is set or a generous deadline passes; the deadline only turns a
    /// deadlock into a failure, it is not a timing assumption.
    fn wait_for(flag: &AtomicBool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !flag.load(Ordering::SeqCst) {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// The property the largest-first order is for: the first two items run side by side.
    /// Item 0 waits for item 1 to start, and so does every later item. A rayon parallel
    /// iterator fails this: its second worker starts in the middle of the list, and waits
    /// there for item 1, which only the first worker would reach after item 0 — a deadlock
    /// that the bounded wait turns into a failure.
    #[test]
    fn the_first_items_start_together_on_different_workers() {
        let workers = Workers::new(2, Vec::new()).unwrap();
        let one_started = AtomicBool::new(false);
        let items: Vec<usize> = (0..20).collect();
        let seen = Mutex::new(Vec::new());
        workers
            .try_each_in_order(&items, |&i| {
                if i == 1 {
                    one_started.store(true, Ordering::SeqCst);
                } else {
                    assert!(
                        wait_for(&one_started),
                        "item {i} ran while item 1 had not started"
                    );
                }
                seen.lock().unwrap().push(i);
                Ok(())
            })
            .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, items, "every item ran once");
    }

    #[test]
    fn the_first_error_stops_the_rest_and_is_returned() {
        let workers = Workers::new(1, Vec::new()).unwrap();
        let ran = AtomicUsize::new(0);
        let items: Vec<usize> = (0..10).collect();
        let e = workers
            .try_each_in_order(&items, |&i| {
                ran.fetch_add(1, Ordering::Relaxed);
                if i == 3 {
                    return Err(Error::internal("item 3 failed"));
                }
                Ok(())
            })
            .unwrap_err();
        assert!(e.message.contains("item 3 failed"), "{e:?}");
        assert_eq!(ran.into_inner(), 4, "nothing after the failed item ran");
    }
}
