//! Asynchronous archiving (archive-async=y) against a real PostgreSQL 15: the archiver's
//! commands answered by a background worker, locally and over SSH, and every way the worker,
//! the spool or the repository can fail without losing or faking a segment.

use crate::fixture::{Options, Site};
use crate::harness;

fn async_site(remote: bool) -> Site {
    Site::new(Options {
        remote,
        async_archiving: true,
        ..Options::default()
    })
}

fn archive_async_and_fetch_back(site: &Site) {
    crate::archive::archive_and_fetch_back(site);
    let log = site.log("archive-push-async");
    assert!(
        log.contains("pushed WAL file"),
        "the worker pushed the segments:\n{}",
        harness::tail(&log, 20)
    );
    let fg = site.log("archive-push");
    assert!(
        fg.contains("pushed WAL file") && fg.contains("asynchronously"),
        "archive_command answered from acknowledgments:\n{}",
        harness::tail(&fg, 20)
    );
}

#[test]
fn async_push_under_load_every_segment_comes_back_identical_local() {
    archive_async_and_fetch_back(&async_site(false));
}

#[test]
fn async_push_under_load_every_segment_comes_back_identical_over_ssh() {
    archive_async_and_fetch_back(&async_site(true));
}
