//! Process-tree helpers over /proc: finding every descendant of a pid and signalling a whole
//! tree (used to kill, freeze and thaw sshd together with its per-connection children).

use std::collections::{HashMap, HashSet};
use std::process::Command;

/// Parent pid of every live process, read from /proc/<pid>/stat.
fn parents() -> HashMap<u32, u32> {
    let mut map = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return map;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Format: "pid (comm) state ppid ..."; comm may hold spaces and ')', so split at the
        // last ')'. The process may have exited meanwhile: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let _state = rest.next();
        if let Some(ppid) = rest.next().and_then(|s| s.parse::<u32>().ok()) {
            map.insert(pid, ppid);
        }
    }
    map
}

/// The live direct children of `pid`: under `runuser`, the program it runs (runuser would
/// forward a signal, wait and then die of it, which is not what a process signalled by a
/// scheduler sees).
pub fn children(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = parents()
        .into_iter()
        .filter(|&(_, ppid)| ppid == pid)
        .map(|(child, _)| child)
        .collect();
    out.sort();
    out
}

/// Every live descendant of `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let parents = parents();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (&pid, &ppid) in &parents {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut stack = vec![root];
    while let Some(p) = stack.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or(&[]) {
            out.push(c);
            stack.push(c);
        }
    }
    out
}

/// Sends `sig` (e.g. "STOP", "CONT", "KILL") to the given pids; pids that are already gone are
/// ignored.
pub fn signal(pids: &[u32], sig: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(std::process::Stdio::null())
        .status();
}

/// Freezes `root` and all its descendants with SIGSTOP, repeating until no unfrozen descendant
/// remains (a process may fork between listing and stopping). Returns the frozen pids, root first.
pub fn freeze_tree(root: u32) -> Vec<u32> {
    signal(&[root], "STOP");
    let mut frozen: HashSet<u32> = HashSet::from([root]);
    let mut order = vec![root];
    loop {
        let fresh: Vec<u32> = descendants(root)
            .into_iter()
            .filter(|p| !frozen.contains(p))
            .collect();
        if fresh.is_empty() {
            return order;
        }
        signal(&fresh, "STOP");
        frozen.extend(&fresh);
        order.extend(fresh);
    }
}

/// Thaws `root` and all its descendants with SIGCONT.
pub fn thaw_tree(root: u32) {
    let mut pids = descendants(root);
    pids.push(root);
    signal(&pids, "CONT");
}

/// Whether `pid` has exited (gone, or a zombie nobody reaped yet).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .is_none_or(|i| stat[i + 1..].trim_start().starts_with('Z')),
    }
}

/// SIGKILLs `root` and every descendant, then waits (up to 30 s) until they have all exited;
/// returns the pids still alive after that (normally none). The tree is frozen first so
/// nothing escapes by forking or by being re-parented away from `root` when its parent dies.
pub fn kill_tree(root: u32) -> Vec<u32> {
    let pids = freeze_tree(root);
    // Children before root, so the tree is still intact while we kill it.
    let (root_pid, rest) = pids.split_first().expect("freeze_tree returns root first");
    signal(rest, "KILL");
    signal(&[*root_pid], "KILL");
    // SIGKILL is delivered asynchronously: wait for the processes to actually be gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|&p| p != root && !is_dead(p))
            .collect();
        if alive.is_empty() || std::time::Instant::now() >= deadline {
            return alive;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Whether `root` or one of its descendants has `path` open (a command waiting on a lock file
/// it opened, for instance), read from /proc/<pid>/fd.
pub fn holds_open(root: u32, path: &std::path::Path) -> bool {
    std::iter::once(root).chain(descendants(root)).any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| t == path))
            })
            .unwrap_or(false)
    })
}
