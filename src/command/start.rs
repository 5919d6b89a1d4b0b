//! start: removes the stop file that `stop` (ours or pgBackRest's) created.

use crate::config::Config;
use crate::error::{Error, Result};
use crate::storage::posix::sync_dir;

pub fn run(cfg: &Config) -> Result<()> {
    let lock_path = cfg.required_path("lock-path")?;
    let stanza = cfg.stanza();
    let file = super::stop::stop_file(&lock_path, stanza);
    match std::fs::remove_file(&file) {
        Ok(()) => {
            sync_dir(&lock_path)?;
            crate::info!("removed stop file '{}'", file.display());
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            crate::warn!(
                "stop file does not exist{}",
                stanza.map_or(String::new(), |s| format!(" for stanza {s}"))
            );
            Ok(())
        }
        Err(e) => Err(Error::io("remove stop file", &file, e)),
    }
}
