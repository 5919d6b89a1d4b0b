//! The process-max workers of backup, restore and verify: a rayon pool, and the repository
//! each worker uses. A local repository is shared by all workers; a remote one serves one
//! stream per connection, so each worker gets a connection of its own (all multiplexed over
//! one SSH master when ssh-persist is on).

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::{self, Storage};

pub struct Workers {
    pool: rayon::ThreadPool,
    /// One per worker for a remote repository; empty for a local one.
    repos: Vec<Box<dyn Storage>>,
}

impl Workers {
    pub fn new(cfg: &Config) -> Result<Workers> {
        let count = cfg.int("process-max").unwrap_or(1).max(1) as usize;
        let repos = if cfg.str("repo1-host").is_some() {
            (0..count)
                .map(|_| storage::repo(cfg))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(count)
            .build()
            .map_err(|e| Error::internal(format!("unable to start workers: {e}")))?;
        Ok(Workers { pool, repos })
    }

    /// The repository the calling worker uses; `shared` when the repository is local.
    pub fn repo<'a>(&'a self, shared: &'a dyn Storage) -> &'a dyn Storage {
        match rayon::current_thread_index() {
            Some(i) if !self.repos.is_empty() => self.repos[i % self.repos.len()].as_ref(),
            _ => shared,
        }
    }

    /// Runs `work` inside the pool (rayon's parallel iterators then use these workers).
    pub fn install<R: Send>(&self, work: impl FnOnce() -> R + Send) -> R {
        self.pool.install(work)
    }
}
