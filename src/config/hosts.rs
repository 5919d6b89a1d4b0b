//! The other hosts a command talks to (pg1-host, repo1-host), resolved from their options
//! into what the transport needs: an [`SshTarget`] and the command that starts the remote
//! side. The protocol and storage layers get these values, never the [`Config`].

use crate::config::Config;
use crate::error::Result;
use crate::protocol::ssh::{RemoteCommand, SshTarget};

/// Which host: the name of the option that gives it, the prefix of its other options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Repo,
    Pg,
}

impl Host {
    fn option(self) -> &'static str {
        match self {
            Host::Repo => "repo1-host",
            Host::Pg => "pg1-host",
        }
    }
}

/// Where and how to reach `host` over SSH.
pub fn ssh_target(cfg: &Config, host: Host) -> Result<SshTarget> {
    let role = host.option();
    let opt = |suffix: &str| format!("{role}{suffix}");
    Ok(SshTarget {
        role,
        host: cfg.str(role).unwrap_or_default().to_string(),
        user: cfg.str(&opt("-user")).unwrap_or("postgres").to_string(),
        port: cfg.int(&opt("-port")).unwrap_or(22) as u16,
        ssh_config: cfg.path("ssh-config"),
        persist: cfg.int("ssh-persist").unwrap_or(0) as u64,
        control_root: cfg.required_path("lock-path")?,
        io_timeout: cfg.seconds("io-timeout"),
        protocol_timeout: cfg.seconds("protocol-timeout"),
    })
}

/// The command that starts `pg_backrest remote` on `host`: its `-cmd` option, with the
/// host's own config (its `-config` option) for this stanza.
pub fn remote_command(cfg: &Config, host: Host) -> RemoteCommand {
    let role = host.option();
    let config_option = format!("{role}-config");
    // Left at its default, the remote side finds its config as it would on its own (its own
    // file, else pgBackRest's, with conf.d), as pgBackRest passes only a config it was given.
    let mut args = Vec::new();
    if cfg.is_set(&config_option) {
        args.push(format!(
            "--config={}",
            cfg.str(&config_option).unwrap_or_default()
        ));
    }
    if let Some(s) = cfg.stanza() {
        args.push(format!("--stanza={s}"));
    }
    args.push("remote".to_string());
    RemoteCommand {
        program: cfg
            .str(&format!("{role}-cmd"))
            .unwrap_or("pg_backrest")
            .to_string(),
        args,
    }
}
