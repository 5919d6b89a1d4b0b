//! The command table: every command pg_backrest knows, declared once, with the lock it
//! takes, whether it needs a stanza, its positional arguments and its help text. The
//! dispatcher, the parser and `help` all read this table; nothing else lists commands.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmd {
    StanzaCreate,
    Check,
    ArchivePush,
    ArchiveGet,
    Backup,
    Expire,
    Restore,
    Info,
    Verify,
    Drill,
    Version,
    Help,
    /// Hidden: the server side of the SSH protocol, started by a remote client.
    Remote,
    // Administration commands of pgBackRest (src/command/stop.rs and the files beside it).
    Stop,
    Start,
    StanzaUpgrade,
    StanzaDelete,
    RepoLs,
    RepoGet,
    Annotate,
}

/// Which per-stanza lock file a command holds while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockType {
    None,
    Archive,
    Backup,
    /// Both: the commands that rewrite archive.info and backup.info together.
    All,
}

pub struct CmdDef {
    pub cmd: Cmd,
    pub name: &'static str,
    pub lock: LockType,
    /// Writes into a local repository: refused up front when another user owns it.
    pub writes_repo: bool,
    pub needs_stanza: bool,
    /// Positional arguments, by name; a name in brackets (`[PATH]`) is optional.
    pub args: &'static [&'static str],
    /// False for commands of the contract that this build does not have yet.
    pub implemented: bool,
    pub hidden: bool,
    pub summary: &'static str,
    pub help: &'static str,
}

pub const COMMANDS: &[CmdDef] = &[
    CmdDef {
        cmd: Cmd::StanzaCreate,
        name: "stanza-create",
        lock: LockType::All,
        writes_repo: true,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "create the stanza's archive.info and backup.info in the repository",
        help: "Connects to the cluster, reads its system identifier and version, checks that \
               pg1-path is the running cluster's data directory, and writes archive.info and \
               backup.info (each with a .copy). Running it again is harmless; it refuses a \
               repository that belongs to another cluster.",
    },
    CmdDef {
        cmd: Cmd::Check,
        name: "check",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "check the configuration, the database and that WAL reaches the repository",
        help: "Checks the configuration and the database connection, that archive_mode is on \
               and archive_command calls pg_backrest for this stanza, then forces a WAL switch \
               and waits up to archive-timeout seconds for that segment to reach the repository.",
    },
    CmdDef {
        cmd: Cmd::ArchivePush,
        name: "archive-push",
        lock: LockType::Archive,
        writes_repo: true,
        needs_stanza: true,
        args: &["WAL_PATH"],
        implemented: true,
        hidden: false,
        summary: "push a WAL segment to the archive (archive_command)",
        help: "Validates the WAL file's name and page header against archive.info, then streams \
               it through SHA-1 and gzip into the repository atomically. Pushing a segment that \
               is already archived with the same content succeeds; different content is refused.",
    },
    CmdDef {
        cmd: Cmd::ArchiveGet,
        name: "archive-get",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: true,
        args: &["WAL_NAME", "DEST_PATH"],
        implemented: true,
        hidden: false,
        summary: "get a WAL segment from the archive (restore_command)",
        help: "Finds the segment (newest archive id first), decompresses it, verifies its SHA-1 \
               and writes it atomically to DEST_PATH. Exits 1 only when the segment is not in the \
               archive; every other failure is a hard error.",
    },
    CmdDef {
        cmd: Cmd::Backup,
        name: "backup",
        lock: LockType::Backup,
        writes_repo: true,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "take a full, differential or incremental backup",
        help: "Takes a consistent, compressed, checksummed backup of the running cluster: \
               pg_backup_start, a parallel copy of every file PostgreSQL's base-backup rules \
               include (diff and incr store only files changed since their prior), \
               pg_backup_stop, then a wait until every WAL segment the backup needs is archived. \
               An interrupted backup is resumed by the next one of the same type and prior.",
    },
    CmdDef {
        cmd: Cmd::Expire,
        name: "expire",
        lock: LockType::Backup,
        writes_repo: true,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "remove backups and WAL beyond the retention settings",
        help: "Removes full backups beyond repo1-retention-full (a count, or days with \
               repo1-retention-full-type=time) with every backup that depends on them, \
               differential backups beyond repo1-retention-diff, and WAL older than the oldest \
               backup that repo1-retention-archive keeps, except the WAL each kept backup needs \
               to be consistent. --set=LABEL expires one backup and its dependents (the newest \
               full only with --force); --dry-run shows what would go. Also runs at the end of \
               every successful backup. A killed expire leaves a valid repository; the next one \
               finishes the job.",
    },
    CmdDef {
        cmd: Cmd::Restore,
        name: "restore",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "restore a backup into pg1-path",
        help: "Restores a backup (the latest, or --set=LABEL) into an empty or absent pg1-path, \
               verifying every file's SHA-1, and writes restore_command and recovery.signal so \
               that starting PostgreSQL recovers to the end of the archive.",
    },
    CmdDef {
        cmd: Cmd::Info,
        name: "info",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "show the repository's stanzas, backups and WAL range",
        help: "Shows, per stanza, its cluster, the archived WAL range and every backup with \
               its type, prior, times, LSNs, WAL range and sizes. --output=json for scripts.",
    },
    CmdDef {
        cmd: Cmd::Verify,
        name: "verify",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "verify every backup file and WAL segment against its checksum",
        help: "Reads back every stored backup file and archived WAL segment and checks each \
               against its SHA-1 (in parallel, with process-max workers), checks that every \
               backup's WAL from start to stop is archived, and reports gaps in the WAL from the \
               oldest backup on and files no manifest lists. Exits with the integrity code on \
               any problem. --output=json for scripts.",
    },
    CmdDef {
        cmd: Cmd::Drill,
        name: "drill",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "rehearse a restore: restore, start, check and remove a throwaway copy",
        help: "Restores a backup (--set, --type and --target as for restore) into a temporary \
               directory under drill-path, starts PostgreSQL there on a free port with archiving \
               and replication off, waits for recovery to reach its target, runs pg_amcheck when \
               installed and a sanity query in every database, reports the recovered position \
               and the time each step took, then stops and removes the copy. Run it as the \
               cluster's owner. Fails on any problem.",
    },
    CmdDef {
        cmd: Cmd::Version,
        name: "version",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "print the version",
        help: "Prints the version, read from the VERSION file at build time.",
    },
    CmdDef {
        cmd: Cmd::Help,
        name: "help",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "show help, for one command with `help COMMAND`",
        help: "Without an argument lists the commands; `help COMMAND` describes the command and \
               every option it accepts, with its default.",
    },
    CmdDef {
        cmd: Cmd::Remote,
        name: "remote",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &[],
        implemented: true,
        hidden: true,
        summary: "serve the remote protocol on stdin/stdout (started over SSH)",
        help: "Internal: started by another pg_backrest over SSH. Speaks the framed protocol \
               described in docs/protocol.md on stdin/stdout.",
    },
    CmdDef {
        cmd: Cmd::Stop,
        name: "stop",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "forbid backup, expire, archive-push and stanza commands (a stop file)",
        help: "Creates STANZA.stop (all.stop without --stanza) in lock-path, the file \
               pgBackRest uses too: from then on backup, expire, archive-push, stanza-create \
               and stanza-upgrade fail with the stop code (62) until `start`. Running \
               commands finish, unless --force, which sends SIGTERM to the processes holding \
               the stanza's locks (all stanzas' without --stanza). Required by stanza-delete.",
    },
    CmdDef {
        cmd: Cmd::Start,
        name: "start",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "allow the commands that stop forbade again",
        help: "Removes the stop file that `stop` created (STANZA.stop, or all.stop without \
               --stanza). Warns when there is none.",
    },
    CmdDef {
        cmd: Cmd::StanzaUpgrade,
        name: "stanza-upgrade",
        lock: LockType::All,
        writes_repo: true,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "bind the stanza to the upgraded cluster (after pg_upgrade)",
        help: "After pg_upgrade (or when pg1-path now holds another cluster), adds the running \
               cluster's version and system identifier as a new entry to archive.info and \
               backup.info, so that WAL goes to a new archive id (e.g. 15-2) and backups are \
               taken of the new cluster; older backups and WAL stay listed and restorable. \
               Does nothing (and says so) when the stanza already matches the cluster.",
    },
    CmdDef {
        cmd: Cmd::StanzaDelete,
        name: "stanza-delete",
        lock: LockType::All,
        writes_repo: true,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "remove the stanza's backups and WAL from the repository",
        help: "Permanently removes archive/STANZA and backup/STANZA. Requires `stop` for the \
               stanza first, and refuses while PostgreSQL runs in pg1-path unless --force. The \
               info files go first, so an interrupted delete leaves a stanza no command uses \
               and that running stanza-delete again finishes. Removes the stop file at the end.",
    },
    CmdDef {
        cmd: Cmd::RepoLs,
        name: "repo-ls",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &["[PATH]"],
        implemented: true,
        hidden: false,
        summary: "list files in the repository",
        help: "Lists PATH (relative to the repository, or absolute under repo1-path; default \
               its root), one name per line, or with --output=json as pgBackRest does: an \
               object of name -> {type, size, time} (destination for links). --recurse \
               descends, --filter keeps names matching a regular expression, --sort=asc|desc|none.",
    },
    CmdDef {
        cmd: Cmd::RepoGet,
        name: "repo-get",
        lock: LockType::None,
        writes_repo: false,
        needs_stanza: false,
        args: &["PATH"],
        implemented: true,
        hidden: false,
        summary: "write a repository file to stdout, as stored",
        help: "Writes the file at PATH (relative to the repository, or absolute under \
               repo1-path) to stdout byte for byte, as stored: compressed files stay \
               compressed (pipe through `gzip -d`). A missing file is an error, or exit 1 \
               with --ignore-missing.",
    },
    CmdDef {
        cmd: Cmd::Annotate,
        name: "annotate",
        lock: LockType::Backup,
        writes_repo: true,
        needs_stanza: true,
        args: &[],
        implemented: true,
        hidden: false,
        summary: "add, change or remove annotations of a backup",
        help: "Sets --annotation=KEY=VALUE pairs (repeatable) on the backup --set names, in \
               backup.info as pgBackRest does; KEY= with an empty value removes KEY. `info \
               --set` shows them.",
    },
];

impl Cmd {
    /// The commands a stop file forbids, checked once the command holds its lock (so that
    /// `stop --force`, which creates the file before it reads the locks, either sees the
    /// holder or the holder sees the file). pgBackRest's list: archive-get is not in it.
    pub fn honours_stop(self) -> bool {
        matches!(
            self,
            Cmd::Backup | Cmd::Expire | Cmd::ArchivePush | Cmd::StanzaCreate | Cmd::StanzaUpgrade
        )
    }
    pub fn def(self) -> &'static CmdDef {
        // The table covers every variant; a unit test proves it, so the fallback is unreachable.
        COMMANDS
            .iter()
            .find(|d| d.cmd == self)
            .unwrap_or(&COMMANDS[0])
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn from_name(name: &str) -> Option<Cmd> {
        COMMANDS.iter().find(|d| d.name == name).map(|d| d.cmd)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_is_in_the_table_once() {
        let all = [
            Cmd::StanzaCreate,
            Cmd::Check,
            Cmd::ArchivePush,
            Cmd::ArchiveGet,
            Cmd::Backup,
            Cmd::Expire,
            Cmd::Restore,
            Cmd::Info,
            Cmd::Verify,
            Cmd::Drill,
            Cmd::Version,
            Cmd::Help,
            Cmd::Remote,
            Cmd::Stop,
            Cmd::Start,
            Cmd::StanzaUpgrade,
            Cmd::StanzaDelete,
            Cmd::RepoLs,
            Cmd::RepoGet,
            Cmd::Annotate,
        ];
        assert_eq!(all.len(), COMMANDS.len());
        for c in all {
            assert_eq!(COMMANDS.iter().filter(|d| d.cmd == c).count(), 1, "{c:?}");
            assert_eq!(Cmd::from_name(c.name()), Some(c));
        }
    }
}
