//! `TestDir`: owns a fresh per-test scratch directory under /tmp, owned by `postgres`, that is
//! removed on drop unless `PGBR_KEEP=1`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh directory `/tmp/pgbr-test-<pid>-<n>-<nanos>`, owned by postgres, mode 0755.
/// Kept on drop (and its path printed) when the environment has `PGBR_KEEP=1`.
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    pub fn new() -> TestDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            // Short on purpose: unix socket paths are limited to 107 bytes.
            let path = PathBuf::from(format!(
                "/tmp/pgbr-test-{}-{n}-{:x}",
                std::process::id(),
                nanos
            ));
            match std::fs::create_dir(&path) {
                Ok(()) => {
                    super::chown_postgres(&path);
                    super::chmod(&path, 0o755);
                    return TestDir { path };
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating test directory {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Creates `rel` (and missing parents) inside this directory, owned by postgres, mode 0755.
    pub fn mkdir(&self, rel: impl AsRef<Path>) -> PathBuf {
        let path = self.path.join(rel);
        super::mkdir_postgres(&path);
        path
    }
}

impl Default for TestDir {
    fn default() -> Self {
        TestDir::new()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if std::env::var("PGBR_KEEP").as_deref() == Ok("1") {
            eprintln!(
                "PGBR_KEEP=1: keeping test directory {}",
                self.path.display()
            );
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            // No panic in drop (it may run during unwinding); say what was left behind.
            eprintln!(
                "warning: could not remove test directory {}: {e}",
                self.path.display()
            );
        }
    }
}
