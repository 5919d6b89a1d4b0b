//! `help` and `help COMMAND`, generated from the command and option tables so they can never
//! disagree with what the parser accepts.

use super::commands::{Cmd, COMMANDS};
use super::options::{OptKind, OPTIONS};
use super::pgbackrest::Identity;

/// The general help: usage and the list of commands.
pub fn general(version: &str, identity: Identity) -> String {
    let program = identity.program();
    let mut out = format!(
        "{} - PostgreSQL WAL archiving and backup\n\n\
         Usage:\n    {program} [OPTIONS] COMMAND [ARGS]\n\nCommands:\n",
        identity.banner(version)
    );
    for def in COMMANDS.iter().filter(|d| !d.hidden) {
        let args = def.args.join(" ");
        let name = if args.is_empty() {
            def.name.to_string()
        } else {
            format!("{} {args}", def.name)
        };
        let note = if def.implemented {
            ""
        } else {
            " (not available yet)"
        };
        out.push_str(&format!("    {name:<34} {}{note}\n", def.summary));
    }
    let config = match identity {
        Identity::Own => {
            "/etc/pg_backrest/pg_backrest.conf, else pgBackRest's /etc/pgbackrest/pgbackrest.conf"
        }
        Identity::PgBackRest => "/etc/pgbackrest/pgbackrest.conf",
    };
    out.push_str(&format!(
        "\nOptions come from the command line (--name=value, --name, --no-name), the environment \
         (PG_BACKREST_NAME or PGBACKREST_NAME) or the config file ({config}); \
         --reset-name gives an option its default whatever the environment and the file say.\n\
         Use '{program} help COMMAND' for a command's options.\n"
    ));
    out
}

/// Help for one command: what it does and every option that applies to it.
pub fn command(identity: Identity, cmd: Cmd) -> String {
    let def = cmd.def();
    let args = def.args.join(" ");
    let mut out = format!(
        "{} {} {args}\n\n{}\n\n{}\n\nOptions:\n",
        identity.program(),
        def.name,
        def.summary,
        def.help
    );
    for opt in OPTIONS
        .iter()
        .filter(|o| o.applies_to(cmd) || o.name == "config")
    {
        let value = match opt.kind {
            OptKind::Bool => String::new(),
            OptKind::Int { min, max } => format!("=<{min}..{max}>"),
            OptKind::Enum(vals) => format!("=<{}>", vals.join("|")),
            OptKind::CmdEnum(lists) => {
                let vals = lists
                    .iter()
                    .find(|(c, _)| *c == cmd)
                    .map(|(_, v)| v.join("|"))
                    .unwrap_or_else(|| "value".into());
                format!("=<{vals}>")
            }
            OptKind::Time { min_ms, max_ms } => format!(
                "=<{}..{} seconds>",
                super::options::format_millis(min_ms),
                super::options::format_millis(max_ms)
            ),
            OptKind::Path => "=<path>".to_string(),
            OptKind::Size { min, max } if (min, max) == (0, u64::MAX) => "=<size>".to_string(),
            OptKind::Size { min, max } => format!(
                "=<{}..{}>",
                super::options::format_size(min),
                super::options::format_size(max)
            ),
            OptKind::Str => "=<value>".to_string(),
            OptKind::PathMap => "=<key>=<path> (repeatable)".to_string(),
            OptKind::List => "=<value> (repeatable)".to_string(),
            OptKind::KeyValue => "=<key>=<value> (repeatable)".to_string(),
        };
        let default = match identity.default_of(opt) {
            Some(d) => format!(" [default: {d}]"),
            None => String::new(),
        };
        out.push_str(&format!(
            "    --{}{value}\n        {}{default}\n",
            opt.name, opt.help
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_lists_every_visible_command_and_its_options() {
        let g = general("1.2.3", Identity::Own);
        for def in COMMANDS {
            assert_eq!(
                g.contains(&format!("    {}", def.name)),
                !def.hidden,
                "{}",
                def.name
            );
        }
        let push = command(Identity::Own, Cmd::ArchivePush);
        assert!(push.contains("--compress-level=<-7..22>"));
        assert!(push.contains("[default: gz]"));
        assert!(!push.contains("--start-fast"));
        // The S3 repository's options, with their types and defaults.
        for line in [
            "--repo1-type=<posix|s3>",
            "--repo1-s3-bucket=<value>",
            "--repo1-s3-key-secret=<value>",
            "--repo1-s3-key-type=<shared|auto|web-id>",
            "--repo1-s3-uri-style=<host|path>",
            "--repo1-storage-verify-tls\n",
            "--repo1-storage-port=<1..65535>",
            "--repo1-storage-upload-chunk-size=<64KiB..1TiB>",
            "[default: 5MiB]",
        ] {
            assert!(push.contains(line), "{line}");
        }
        assert!(push.contains("--archive-push-queue-max=<size>"));
        assert!(!command(Identity::Own, Cmd::Stop).contains("repo1-s3"));
    }
}
