//! Configuration: turns the command line, the `PG_BACKREST_*` and `PGBACKREST_*` environment
//! and the INI config files into one resolved [`Config`], following the contract's precedence:
//! command line > environment > `[stanza:command]` > `[stanza]` > `[global:command]` >
//! `[global]` > built-in default.
//!
//! Every option and command comes from the tables in [`options`], [`pgbackrest`] and
//! [`commands`]; this module only applies them. A mistake is an option error (pgBackRest's
//! option-invalid, option-invalid-value, option-required, command-invalid) naming its source (file, section and key, the environment variable, or the command-line flag),
//! except where pgBackRest only warns: a key in a config file that no one knows (an error for
//! `check` alone, so that a typo never stops archive_command) or that cannot apply where it
//! stands. pgBackRest's options that pg_backrest lacks are ignored with a warning or refused,
//! as their row in [`pgbackrest::FOREIGN`] says. Rules between options (pgBackRest's
//! `depend` and `required`, e.g. the S3 options with repo1-type=s3) are applied once the values
//! are resolved ([`apply_option_rules`]).

pub mod commands;
pub mod help;
pub mod hosts;
pub mod options;
pub mod pgbackrest;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Kind, Result};
pub use commands::{Cmd, LockType};
// Role is defined below.
use options::{OptDef, OptKind, Scope, OPTIONS};
pub use pgbackrest::Identity;
use pgbackrest::{Disposition, Known};

/// The resolved configuration of one invocation. Commands read it; nothing writes it.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Cmd,
    /// Which part of the command this process plays: the command itself, or its background
    /// worker (`archive-push:async`).
    pub role: Role,
    /// Positional arguments after the command.
    pub args: Vec<String>,
    values: BTreeMap<&'static str, String>,
    /// The options set on the command line, in the environment or in a config file (the
    /// others have their default).
    explicit: BTreeSet<&'static str>,
    /// The main config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The include directory whose `*.conf` files were read, if any.
    pub config_include_path: Option<PathBuf>,
    /// Non-fatal findings (unknown keys, ignored pgBackRest options) for the log once it is open.
    pub warnings: Vec<String>,
    /// The program the binary answers as, from the name it was called by.
    pub identity: Identity,
}

/// The part a process plays in its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The command as a user or PostgreSQL runs it.
    Default,
    /// The background worker of asynchronous archiving, started by the command itself.
    Async,
}

/// Where the raw inputs come from; tests pass their own.
pub struct Sources<'a> {
    /// The arguments, without the program name.
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
    /// The name the program was called by (`argv[0]`), which decides its [`Identity`].
    pub program: &'a str,
    /// Prefix of the default config locations: `/` for real; tests give a directory of their own.
    pub root: &'a Path,
}

/// A value of an option pg_backrest does not implement itself ([`Known::Foreign`] or
/// [`Known::OtherIndex`]), with where it was found, for the warning or the error it causes.
#[derive(Debug, Clone)]
struct ForeignValue {
    known: Known,
    /// The name as written (a deprecated name stays visible in messages).
    written: String,
    value: String,
    /// `in section '[global]' of '/etc/pgbackrest.conf'`, `in environment variable 'X'`, ...
    origin: String,
}

impl Config {
    /// Resolves the configuration from real process inputs.
    pub fn from_process() -> Result<Config> {
        let mut args = std::env::args();
        let program = args.next().unwrap_or_default();
        let argv: Vec<String> = args.collect();
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::resolve(&Sources {
            argv: &argv,
            env: &env,
            program: &program,
            root: Path::new("/"),
        })
    }

    pub fn resolve(src: &Sources<'_>) -> Result<Config> {
        let identity = Identity::from_program(src.program);
        let cli = parse_command_line(src.argv)?;
        let mut warnings = Vec::new();
        let env = parse_environment(src.env, &mut warnings)?;

        let command = cli.command;
        let role = cli.role;
        let def = command.def();

        // Which files to read are options themselves: command line, then environment.
        let given = |name: &str| {
            cli.values
                .get(name)
                .or_else(|| env.values.get(name))
                .cloned()
        };
        let places = locate_config(
            &Requested {
                config: given("config"),
                no_config: cli.no_config,
                config_path: given("config-path"),
                include_path: given("config-include-path"),
            },
            identity,
            src.root,
        );
        let file = load_config(&places)?;

        let stanza = cli
            .values
            .get("stanza")
            .or_else(|| env.values.get("stanza"))
            .cloned();
        if let Some(s) = &stanza {
            validate_stanza_name(s)?;
        }

        // check is how a DBA validates an edited config: what other commands only warn
        // about (a key no one knows, a section naming no command) fails it.
        if command == Cmd::Check {
            let unknown: Vec<&str> = file
                .findings
                .iter()
                .filter(|f| f.unknown)
                .map(|f| f.message.as_str())
                .collect();
            if !unknown.is_empty() {
                return Err(Error::config(unknown.join("; ")).with_hint(
                    "correct or remove it: other commands ignore it with a warning, check refuses it",
                ));
            }
        }
        // version and help print what tools parse: the config's findings are for commands.
        for f in file.findings.iter().filter(|f| {
            f.concerns(stanza.as_deref(), command) && !matches!(command, Cmd::Version | Cmd::Help)
        }) {
            push_once(&mut warnings, format!("{}, ignored", f.message));
        }

        let mut values = BTreeMap::new();
        let mut explicit = BTreeSet::new();
        for opt in OPTIONS.iter().filter(|o| {
            o.applies_to(command)
                || matches!(
                    o.name,
                    "config" | "stanza" | "config-path" | "config-include-path"
                )
        }) {
            // --reset-NAME: the default, whatever the environment and the files say.
            let value = if cli.reset.contains(opt.name) {
                None
            } else {
                cli.values
                    .get(opt.name)
                    .or_else(|| env.values.get(opt.name))
                    .cloned()
                    .or_else(|| file.lookup(opt, stanza.as_deref(), command))
            };
            if value.is_some() {
                explicit.insert(opt.name);
            }
            if let Some(v) = value.or_else(|| identity.default_of(opt).map(String::from)) {
                values.insert(opt.name, v);
            }
        }

        // Values whose validity depends on the command (backup's and restore's `type`) are
        // checked now, before the command loads or does anything: pgBackRest's
        // option-invalid-value, whatever state the repository is in.
        for (name, v) in &values {
            if let Some(opt) = OptDef::find(name) {
                opt.validate_for(command, v).map_err(|why| {
                    Error::invalid_value(format!(
                        "invalid value '{v}' for option '--{name}': {why}"
                    ))
                })?;
            }
        }

        apply_option_rules(
            &Origins {
                cli: &cli.values,
                env: &env.keys,
                file: &file,
                stanza: stanza.as_deref(),
                command,
            },
            &mut values,
            &mut explicit,
            &mut warnings,
        )?;

        apply_foreign(
            &Foreigners {
                cli: &cli.foreign,
                env: &env.foreign,
                file: &file,
                reset: &cli.reset,
            },
            stanza.as_deref(),
            command,
            &explicit,
            &mut values,
            &mut warnings,
        )?;

        if def.needs_stanza && stanza.is_none() {
            return Err(Error::required(format!(
                "option 'stanza' is required for command '{}'",
                def.name
            ))
            .with_hint("add --stanza=NAME, the cluster's section in the config file"));
        }
        if matches!(command, Cmd::StanzaCreate | Cmd::Check) && !values.contains_key("pg1-path") {
            let file_name = places
                .files
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "the config file".into());
            return Err(Error::required(format!(
                "option 'pg1-path' is required for command '{}'",
                def.name
            ))
            .with_hint(format!(
                "set pg1-path in the [{}] section of '{file_name}' or pass --pg1-path",
                stanza.as_deref().unwrap_or("STANZA"),
            )));
        }

        let args = cli.args;
        let expected = def.args.len();
        let optional = def.args.iter().filter(|a| a.starts_with('[')).count();
        let arity_ok = match command {
            Cmd::Help => args.len() <= 1,
            _ => (expected - optional..=expected).contains(&args.len()),
        };
        if !arity_ok {
            let usage = if def.args.is_empty() {
                format!("command '{}' takes no arguments", def.name)
            } else if optional == expected {
                format!(
                    "command '{}' takes at most {}",
                    def.name,
                    def.args.join(" ")
                )
            } else {
                format!("command '{}' requires {}", def.name, def.args.join(" "))
            };
            // pgBackRest calls both a missing and an extra argument param-required.
            let kind = if expected == 0 {
                Kind::ParamInvalid
            } else {
                Kind::ParamRequired
            };
            return Err(Error::new(kind, format!("{usage}, got {}", args.len()))
                .with_hint(format!("see 'pg_backrest help {}'", def.name)));
        }
        // An empty path would resolve to the working directory and an empty name to nothing,
        // so the mistake (an empty %p or %f in a hand-written command) stops here.
        if let Some((arg, _)) = def.args.iter().zip(&args).find(|(_, a)| a.is_empty()) {
            let what = match *arg {
                "WAL_PATH" => "WAL path".to_string(),
                "WAL_NAME" => "WAL file name".to_string(),
                "DEST_PATH" => "destination path".to_string(),
                other => format!("argument {other}"),
            };
            return Err(Error::new(
                Kind::ParamInvalid,
                format!("{what} is empty for command '{}'", def.name),
            )
            .with_hint(format!(
                "see 'pg_backrest help {}'; PostgreSQL passes %p and %f as non-empty arguments",
                def.name
            )));
        }

        Ok(Config {
            command,
            role,
            args,
            values,
            explicit,
            config_file: file.main,
            config_include_path: file.include,
            warnings,
            identity,
        })
    }

    pub fn stanza(&self) -> Option<&str> {
        self.str("stanza")
    }

    /// Whether the option was set (command line, environment or config file) rather than
    /// left at its default.
    pub fn is_set(&self, name: &str) -> bool {
        self.explicit.contains(name)
    }

    /// The stanza, for commands whose table row says they need one (checked at resolve time).
    pub fn stanza_required(&self) -> Result<&str> {
        self.stanza()
            .ok_or_else(|| Error::required("option 'stanza' is required"))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.str(name).map(PathBuf::from)
    }

    pub fn required_path(&self, name: &str) -> Result<PathBuf> {
        self.path(name).ok_or_else(|| {
            Error::required(format!(
                "option '{name}' is required for command '{}'",
                self.command.name()
            ))
        })
    }

    /// The items of a repeatable option, in the order given.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.str(name)
            .map(|v| v.lines().collect())
            .unwrap_or_default()
    }

    /// The `KEY=PATH` items of a repeatable option, in the order given.
    pub fn path_map(&self, name: &str) -> Vec<(&str, &str)> {
        self.str(name)
            .map(|v| v.lines().filter_map(|l| l.split_once('=')).collect())
            .unwrap_or_default()
    }

    pub fn int(&self, name: &str) -> Option<i64> {
        self.str(name).and_then(|v| v.parse().ok())
    }

    pub fn bool(&self, name: &str) -> bool {
        self.str(name) == Some("y")
    }

    /// A size option in bytes (`128MiB`); `None` when unset.
    pub fn bytes(&self, name: &str) -> Option<u64> {
        self.str(name).and_then(options::parse_size)
    }

    /// A time option (seconds, to the millisecond).
    pub fn seconds(&self, name: &str) -> Duration {
        let ms = self
            .str(name)
            .and_then(options::parse_millis)
            .unwrap_or(0)
            .max(0);
        Duration::from_millis(ms as u64)
    }

    /// Options set to a value other than their default, for the log's start line. Secret
    /// options are masked.
    pub fn non_default_options(&self) -> Vec<(&'static str, String)> {
        OPTIONS
            .iter()
            .filter_map(|o| {
                let v = self.values.get(o.name)?;
                if self.identity.default_of(o) == Some(v.as_str()) {
                    return None;
                }
                Some((
                    o.name,
                    if o.secret {
                        "<redacted>".to_string()
                    } else {
                        v.clone()
                    },
                ))
            })
            .collect()
    }
}

/// A duration for messages, in seconds as the time options take them: `60s`, `0.5s`.
pub fn fmt_seconds(d: Duration) -> String {
    format!(
        "{}s",
        options::format_millis(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    )
}

fn push_once(warnings: &mut Vec<String>, w: String) {
    if !warnings.contains(&w) {
        warnings.push(w);
    }
}

/// Where the values of pg_backrest's own options come from, to name the source in messages.
struct Origins<'a> {
    cli: &'a BTreeMap<&'static str, String>,
    /// The environment variable of each option set there.
    env: &'a BTreeMap<&'static str, String>,
    file: &'a LoadedConfig,
    stanza: Option<&'a str>,
    command: Cmd,
}

impl Origins<'_> {
    /// The name as written and where, for an option set explicitly (the same precedence as
    /// the resolver's), e.g. `("repo-type", "in section '[global]' of '/etc/x.conf'")`.
    fn of(&self, opt: &OptDef) -> (String, String) {
        if self.cli.contains_key(opt.name) {
            (opt.name.to_string(), "on the command line".to_string())
        } else if let Some(key) = self.env.get(opt.name) {
            (
                opt.name.to_string(),
                format!("in environment variable '{key}'"),
            )
        } else {
            self.file
                .origin(opt, self.stanza, self.command)
                .unwrap_or_else(|| (opt.name.to_string(), "in the configuration".to_string()))
        }
    }
}

/// pgBackRest's rules between options (config.yaml's `depend` and `required`, load.c's
/// checks), applied to the resolved values:
/// - a value pgBackRest accepts and pg_backrest does not implement (repo1-type=azure) is
///   refused, naming where it was set;
/// - an option whose `depend` does not hold has no value; set on the command line that is
///   pgBackRest's option-invalid, set in a file or the environment a warning (pgBackRest says
///   nothing: a file may serve several setups);
/// - repo1-type=s3 with repo1-host: the repository host reads its own config, so setting both
///   on one host is a mistake;
/// - a `required` option whose `depend` holds must be set (pgBackRest's option-required);
/// - with TLS verification, an S3 bucket name with a dot is refused (load.c).
fn apply_option_rules(
    origins: &Origins<'_>,
    values: &mut BTreeMap<&'static str, String>,
    explicit: &mut BTreeSet<&'static str>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    for (name, v) in values.iter() {
        let refused = pgbackrest::refused_value(name, v);
        let (Some(r), Some(opt)) = (refused, OptDef::find(name)) else {
            continue;
        };
        let (written, origin) = origins.of(opt);
        let shown = if written == *name {
            format!("'{name}'")
        } else {
            format!("'{written}' (pgBackRest's deprecated name of '{name}')")
        };
        return Err(Error::new(
            Kind::NotImplemented,
            format!(
                "option {shown} {origin} is set to '{v}', which pg_backrest does not support: {}",
                r.why
            ),
        )
        .with_hint(format!(
            "remove it (pgBackRest's default is {name}={}), or keep this stanza on pgBackRest",
            opt.default.unwrap_or("")
        )));
    }

    let holds = |values: &BTreeMap<&'static str, String>, d: &options::Depend| {
        values
            .get(d.option)
            .is_some_and(|v| d.values.contains(&v.as_str()))
    };
    for opt in OPTIONS {
        let Some(d) = &opt.depend else { continue };
        if !values.contains_key(opt.name) || holds(values, d) {
            continue;
        }
        values.remove(opt.name);
        if !explicit.remove(opt.name) {
            continue;
        }
        let (written, origin) = origins.of(opt);
        if origins.cli.contains_key(opt.name) {
            return Err(Error::config(format!(
                "option '{}' not valid without {}",
                opt.name,
                describe_depend(d, values)
            ))
            .with_hint(format!(
                "leave out --{}, or set {}={}",
                opt.name,
                d.option,
                d.values.join("|")
            )));
        }
        // A warning names the option that decides (repo1-type for repo1-s3-key, whose own
        // depend, repo1-s3-key-type, has no value with a posix repository).
        let mut root = *d;
        while !values.contains_key(root.option) {
            match OptDef::find(root.option).and_then(|o| o.depend) {
                Some(up) => root = up,
                None => break,
            }
        }
        push_once(
            warnings,
            format!(
                "option '{written}' {origin} is ignored: it is not valid without {}",
                describe_depend(&root, values)
            ),
        );
    }

    if values.get("repo1-type").map(String::as_str) == Some("s3") {
        if let Some(host) = values.get("repo1-host") {
            return Err(Error::new(
                Kind::Config,
                format!(
                    "options 'repo1-type' = 's3' and 'repo1-host' = '{host}' are both set: \
                     the repository is either in S3 or on the repository host"
                ),
            )
            .with_hint(
                "on the database host keep repo1-host and set repo1-type=s3 in the repository \
                 host's own config, or remove repo1-host to reach S3 from here",
            ));
        }
    }

    for opt in OPTIONS.iter().filter(|o| o.required) {
        let Some(d) = &opt.depend else { continue };
        if holds(values, d) && !values.contains_key(opt.name) {
            let env = opt.name.to_uppercase().replace('-', "_");
            return Err(Error::required(format!(
                "{} command requires option: {}",
                origins.command.name(),
                opt.name
            ))
            .with_hint(format!(
                "{}={} needs it: set {} in the config file or in the environment (PGBACKREST_{env})",
                d.option,
                values.get(d.option).map(String::as_str).unwrap_or_default(),
                opt.name
            )));
        }
    }

    if let Some(bucket) = values.get("repo1-s3-bucket") {
        if bucket.contains('.')
            && values.get("repo1-storage-verify-tls").map(String::as_str) == Some("y")
        {
            return Err(Error::invalid_value(format!(
                "'{bucket}' is not valid for option 'repo1-s3-bucket'"
            ))
            .with_hint(
                "RFC-2818 forbids dots in wildcard matches. \
                 HINT: TLS/SSL verification cannot proceed with this bucket name. \
                 HINT: remove dots from the bucket name.",
            ));
        }
    }
    Ok(())
}

/// pgBackRest's words for a depend that does not hold: `option 'repo1-type' = 's3'`, or the
/// option alone when it has no value.
fn describe_depend(d: &options::Depend, values: &BTreeMap<&'static str, String>) -> String {
    match d.values {
        _ if !values.contains_key(d.option) => format!("option '{}'", d.option),
        [one] => format!("option '{}' = '{one}'", d.option),
        many => format!(
            "option '{}' in ({})",
            d.option,
            many.iter()
                .map(|v| format!("'{v}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Gives the pgBackRest options pg_backrest does not implement what their row says, for the
/// values that reach this command: pgBackRest's default passes silently, an ignored option
/// warns once, a refused one stops the command naming where it was set and why.
/// Where the values of pgBackRest's options that pg_backrest lacks come from.
struct Foreigners<'a> {
    cli: &'a BTreeMap<String, ForeignValue>,
    env: &'a BTreeMap<String, ForeignValue>,
    file: &'a LoadedConfig,
    /// `--reset-NAME` options: their values elsewhere do not count.
    reset: &'a BTreeSet<String>,
}

fn apply_foreign(
    sources: &Foreigners<'_>,
    stanza: Option<&str>,
    command: Cmd,
    explicit: &BTreeSet<&'static str>,
    values: &mut BTreeMap<&'static str, String>,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Foreigners {
        cli,
        env,
        file,
        reset,
    } = *sources;
    let mut names: BTreeSet<&str> = cli.keys().chain(env.keys()).map(String::as_str).collect();
    names.extend(file.foreign_names(stanza, command));
    // A reset option is at pgBackRest's default, which pg_backrest matches.
    names.retain(|n| !reset.contains(*n));
    for name in names {
        let found = cli
            .get(name)
            .or_else(|| env.get(name))
            .cloned()
            .or_else(|| file.lookup_foreign(name, stanza, command));
        let Some(fv) = found else { continue };
        if !fv.known.applies_to(command) {
            continue;
        }
        let shown = if fv.written == name {
            format!("'{name}'")
        } else {
            format!(
                "'{}' (pgBackRest's deprecated name of '{name}')",
                fv.written
            )
        };
        match fv.known {
            Known::Foreign(f) => {
                if f.is_default(&fv.value) {
                    continue;
                }
                match f.disposition {
                    Disposition::Ignored(why) => push_once(
                        warnings,
                        format!("option {shown} {} is ignored: {why}", fv.origin),
                    ),
                    Disposition::Refused(why) => {
                        let set_to = if f.secret {
                            String::new()
                        } else {
                            format!(" is set to '{}', which", fv.value)
                        };
                        let hint = match f.default {
                            Some(d) => format!(
                                "remove it (pgBackRest's default is {name}={d}), or keep this stanza on pgBackRest"
                            ),
                            None => "remove it, or keep this stanza on pgBackRest".to_string(),
                        };
                        return Err(Error::new(
                            Kind::NotImplemented,
                            format!(
                                "option {shown} {}{set_to} pg_backrest does not support: {why}",
                                fv.origin
                            ),
                        )
                        .with_hint(hint));
                    }
                    Disposition::Translated(_) => {
                        // compress, deprecated: as pgBackRest, compress=n means
                        // compress-type=none, and setting both is a mistake.
                        if explicit.contains("compress-type") {
                            return Err(Error::config(format!(
                                "options 'compress' ({}) and 'compress-type' should not both be set",
                                fv.origin
                            ))
                            .with_hint("'compress-type' is preferred; 'compress' is deprecated"));
                        }
                        if fv.value == "n" {
                            values.insert("compress-type", "none".to_string());
                        }
                    }
                }
            }
            Known::OtherIndex {
                repo: true, index, ..
            } => {
                return Err(Error::new(
                    Kind::NotImplemented,
                    format!(
                        "option {shown} {} configures repository repo{index}, which pg_backrest does not support: \
                         it writes one repository, repo1, so repo{index} would miss what pgBackRest writes there",
                        fv.origin
                    ),
                )
                .with_hint(format!(
                    "remove the repo{index}-* options, or keep this stanza on pgBackRest"
                )));
            }
            Known::OtherIndex { index, .. } => push_once(
                warnings,
                format!(
                    "option {shown} {} is ignored: pg_backrest works with pg1 only \
                     (pgBackRest reads pg{index} to find the primary or back up from a standby)",
                    fv.origin
                ),
            ),
            Known::Ours(_) => {}
        }
    }
    Ok(())
}

struct CommandLine {
    command: Cmd,
    role: Role,
    args: Vec<String>,
    values: BTreeMap<&'static str, String>,
    /// pgBackRest's options pg_backrest does not implement, by current name.
    foreign: BTreeMap<String, ForeignValue>,
    /// `--no-config`: read no main config file.
    no_config: bool,
    /// `--reset-NAME`: these options take their default, whatever the environment and the
    /// config files say (current names).
    reset: BTreeSet<String>,
}

/// What [`take_pgbackrest_options`] takes out of the command line.
struct Taken {
    rest: Vec<String>,
    foreign: BTreeMap<String, ForeignValue>,
    no_config: bool,
    reset: BTreeSet<String>,
}

/// Takes out of `argv` what clap does not parse: `--no-config`, pgBackRest's options that
/// pg_backrest does not implement, pgBackRest's deprecated names of pg_backrest's own
/// options (rewritten to the current name) and `--reset-NAME`. A name no one knows is left
/// for clap to refuse.
fn take_pgbackrest_options(argv: &[String]) -> Result<Taken> {
    let mut rest = Vec::with_capacity(argv.len());
    let mut foreign = BTreeMap::new();
    let mut no_config = false;
    let mut reset = BTreeSet::new();
    let mut words = argv.iter();
    while let Some(word) = words.next() {
        let Some(body) = word.strip_prefix("--") else {
            rest.push(word.clone());
            continue;
        };
        let (flag, inline) = match body.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (body, None),
        };
        if flag == "no-config" && inline.is_none() {
            no_config = true;
            continue;
        }
        if let Some(target) = flag.strip_prefix("reset-") {
            reset.insert(take_reset(flag, target, inline, &reset)?);
            continue;
        }
        let (negated, resolved) = match pgbackrest::resolve_name(flag) {
            Some(r) => (false, Some(r)),
            None => match flag.strip_prefix("no-") {
                Some(f) => (true, pgbackrest::resolve_name(f)),
                None => (false, None),
            },
        };
        let Some((name, known)) = resolved else {
            rest.push(word.clone());
            continue;
        };
        let written = if negated { &flag[3..] } else { flag };
        if let Known::Ours(_) = known {
            if written != name {
                let no = if negated { "no-" } else { "" };
                rest.push(match inline {
                    Some(v) => format!("--{no}{name}={v}"),
                    None => format!("--{no}{name}"),
                });
            } else {
                rest.push(word.clone());
            }
            continue;
        }
        let value = if known.is_bool() {
            match (negated, inline) {
                (true, None) => "n".to_string(),
                (false, None) => "y".to_string(),
                (false, Some(v)) => pgbackrest::normalize(true, v),
                (true, Some(_)) => {
                    return Err(Error::config(format!(
                        "option '--no-{written}' takes no value"
                    )))
                }
            }
        } else {
            if negated {
                return Err(Error::config(format!(
                    "option '--{written}' cannot be negated with --no-"
                )));
            }
            match inline {
                Some(v) => v.to_string(),
                None => words.next().cloned().ok_or_else(|| {
                    Error::config(format!("option '--{written}' requires a value"))
                })?,
            }
        };
        foreign.insert(
            name,
            ForeignValue {
                known,
                written: written.to_string(),
                value,
                origin: "on the command line".to_string(),
            },
        );
    }
    Ok(Taken {
        rest,
        foreign,
        no_config,
        reset,
    })
}

/// `--reset-NAME` as pgBackRest reads it: NAME goes back to its default, ignoring the
/// environment and the config files. Only an option a config file can hold can be reset
/// (a command-line-only one has nothing to reset), and the flag takes no value. Every
/// mistake is pgBackRest's option-invalid. Returns NAME's current name.
fn take_reset(
    flag: &str,
    target: &str,
    inline: Option<&str>,
    seen: &BTreeSet<String>,
) -> Result<String> {
    let Some((name, known)) = pgbackrest::resolve_name(target) else {
        return Err(Error::config(format!("invalid option '--{flag}'"))
            .with_hint("see 'pg_backrest help' for commands and options"));
    };
    if known.scope() == Scope::CommandLine {
        return Err(
            Error::config(format!("option '{flag}' cannot be reset")).with_hint(format!(
                "'{name}' is a command-line option: leave it out to have its default"
            )),
        );
    }
    if inline.is_some() {
        return Err(
            Error::config(format!("option '{flag}' does not allow an argument"))
                .with_hint(format!("--{flag} alone gives '{name}' its default")),
        );
    }
    if seen.contains(&name) {
        return Err(Error::config(format!(
            "option '{name}' is reset multiple times"
        )));
    }
    Ok(name)
}

fn parse_command_line(argv: &[String]) -> Result<CommandLine> {
    use clap::{Arg, ArgAction};

    let Taken {
        rest: argv,
        foreign,
        no_config,
        reset,
    } = take_pgbackrest_options(argv)?;
    let mut app = clap::Command::new("pg_backrest")
        .no_binary_name(true)
        .disable_help_flag(true)
        .disable_version_flag(true)
        .arg(Arg::new("words").num_args(0..).action(ArgAction::Append))
        .arg(
            Arg::new("help-flag")
                .long("help")
                .action(ArgAction::SetTrue),
        );
    for opt in OPTIONS {
        if opt.kind == OptKind::Bool {
            app = app
                .arg(
                    Arg::new(opt.name)
                        .long(opt.name)
                        .num_args(0..=1)
                        .require_equals(true)
                        .default_missing_value("y")
                        .action(ArgAction::Append),
                )
                .arg(
                    Arg::new(format!("no-{}", opt.name))
                        .long(format!("no-{}", opt.name))
                        .action(ArgAction::Count),
                );
        } else {
            app = app.arg(
                Arg::new(opt.name)
                    .long(opt.name)
                    .num_args(1)
                    .allow_hyphen_values(true)
                    .action(ArgAction::Append),
            );
        }
    }

    let matches = app.try_get_matches_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .to_string();
        Error::config(format!("invalid command line: {first}"))
            .with_hint("see 'pg_backrest help' for commands and options")
    })?;

    let mut values = BTreeMap::new();
    for opt in OPTIONS {
        let given: Vec<&String> = matches
            .get_many::<String>(opt.name)
            .map(|v| v.collect())
            .unwrap_or_default();
        let negated =
            opt.kind == OptKind::Bool && matches.get_count(&format!("no-{}", opt.name)) > 0;
        // pgBackRest's rule and words: `ps` shows the command line to every user.
        if opt.secure && !given.is_empty() {
            return Err(Error::config(format!(
                "option '{}' is not allowed on the command-line",
                opt.name
            ))
            .with_hint(
                "this option could expose secrets in the process list. \
                 HINT: specify the option in a configuration file or an environment variable instead.",
            ));
        }
        if opt.kind.repeatable() && !given.is_empty() {
            let items = given
                .iter()
                .map(|raw| {
                    opt.validate(raw).map_err(|why| {
                        Error::invalid_value(format!(
                            "invalid value '{raw}' for option '--{}': {why}",
                            opt.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            values.insert(opt.name, items.join("\n"));
            continue;
        }
        if given.len() + usize::from(negated) > 1 {
            return Err(Error::config(format!(
                "option '{}' is given more than once on the command line",
                opt.name
            )));
        }
        let raw = if negated {
            Some("n".to_string())
        } else {
            given.first().map(|s| s.to_string())
        };
        if let Some(raw) = raw {
            let v = opt.validate(&raw).map_err(|why| {
                Error::invalid_value(format!(
                    "invalid value '{raw}' for option '--{}': {why}",
                    opt.name
                ))
            })?;
            values.insert(opt.name, v);
        }
    }

    let mut words: Vec<String> = matches
        .get_many::<String>("words")
        .map(|v| v.cloned().collect())
        .unwrap_or_default();
    if words.is_empty() {
        words.push("help".into());
    }
    let name = words.remove(0);
    // `archive-push:async`: pgBackRest's name for a command's background worker.
    let (name, role) = match name.split_once(':') {
        Some((base, "async")) if matches!(base, "archive-push" | "archive-get") => {
            (base.to_string(), Role::Async)
        }
        _ => (name, Role::Default),
    };
    let command = Cmd::from_name(&name).ok_or_else(|| {
        Error::new(Kind::CommandInvalid, format!("invalid command '{name}'"))
            .with_hint("see 'pg_backrest help' for the list of commands")
    })?;
    let (command, args) = if matches.get_flag("help-flag") && command != Cmd::Help {
        (Cmd::Help, vec![name])
    } else {
        (command, words)
    };

    for name in values.keys() {
        // Safe: keys come from OPTIONS.
        if let Some(opt) = OptDef::find(name) {
            if !opt.applies_to(command) && !matches!(command, Cmd::Help | Cmd::Version) {
                if opt.name == "config" {
                    continue;
                }
                return Err(Error::config(format!(
                    "option '--{}' is not valid for command '{}'",
                    opt.name,
                    command.name()
                ))
                .with_hint(format!("see 'pg_backrest help {}'", command.name())));
            }
        }
    }
    for name in &reset {
        if values.contains_key(name.as_str()) || foreign.contains_key(name) {
            return Err(
                Error::config(format!("option '{name}' cannot be set and reset")).with_hint(
                    format!("give either --{name}=VALUE or --reset-{name}, not both"),
                ),
            );
        }
        let applies = pgbackrest::resolve_name(name).is_some_and(|(_, k)| k.applies_to(command));
        if !applies && !matches!(command, Cmd::Help | Cmd::Version) {
            return Err(Error::config(format!(
                "option '--reset-{name}' is not valid for command '{}'",
                command.name()
            ))
            .with_hint(format!("see 'pg_backrest help {}'", command.name())));
        }
    }
    for (name, fv) in &foreign {
        if !fv.known.applies_to(command) && !matches!(command, Cmd::Help | Cmd::Version) {
            return Err(Error::config(format!(
                "option '--{}' is not valid for command '{}'",
                fv.written,
                command.name()
            ))
            .with_hint(format!(
                "'{name}' is a pgBackRest option that does not apply to '{}'",
                command.name()
            )));
        }
    }
    Ok(CommandLine {
        command,
        role,
        args,
        values,
        foreign,
        no_config,
        reset,
    })
}

struct Environment {
    values: BTreeMap<&'static str, String>,
    /// The variable each of `values` came from, for messages.
    keys: BTreeMap<&'static str, String>,
    foreign: BTreeMap<String, ForeignValue>,
}

/// Reads `PGBACKREST_*` (pgBackRest's names) and `PG_BACKREST_*` (pg_backrest's). When both
/// carry the same option, `PG_BACKREST_*` wins: it can only have been meant for pg_backrest,
/// while a `PGBACKREST_*` variable may be left for a pgBackRest that still runs beside it.
fn parse_environment(env: &[(String, String)], warnings: &mut Vec<String>) -> Result<Environment> {
    let mut out = Environment {
        values: BTreeMap::new(),
        keys: BTreeMap::new(),
        foreign: BTreeMap::new(),
    };
    let mut seen: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for prefix in ["PGBACKREST_", "PG_BACKREST_"] {
        for (key, raw) in env {
            let Some(rest) = key.strip_prefix(prefix) else {
                continue;
            };
            let written = rest.to_lowercase().replace('_', "-");
            let Some((name, known)) = pgbackrest::resolve_name(&written) else {
                warnings.push(format!("environment contains unknown option '{key}'"));
                continue;
            };
            if let Some((other, other_raw)) = seen.insert(name.clone(), (key, raw)) {
                if other_raw != raw {
                    warnings.push(format!(
                        "environment variables '{other}' and '{key}' both set option '{name}'; '{key}' is used"
                    ));
                }
            }
            let Known::Ours(opt) = known else {
                out.foreign.insert(
                    name,
                    ForeignValue {
                        known,
                        written,
                        value: pgbackrest::normalize(known.is_bool(), raw),
                        origin: format!("in environment variable '{key}'"),
                    },
                );
                continue;
            };
            // A repeatable option takes its items comma-separated in one variable.
            let items: Vec<&str> = if opt.kind.repeatable() {
                raw.split(',').collect()
            } else {
                vec![raw.as_str()]
            };
            let v = items
                .iter()
                .map(|item| {
                    opt.validate(item).map_err(|why| {
                        Error::invalid_value(format!(
                            "invalid value '{raw}' in environment variable '{key}': {why}"
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?
                .join("\n");
            out.values.insert(opt.name, v);
            out.keys.insert(opt.name, key.clone());
        }
    }
    Ok(out)
}

/// A stanza name becomes a directory name in the repository (`archive/NAME`, `backup/NAME`)
/// and part of lock and log file names, so `.` and `..` (which would name the parent or the
/// directory itself) and a leading `-` or `.` are refused along with every character outside
/// the documented set.
fn validate_stanza_name(name: &str) -> Result<()> {
    let ok = name != "global"
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        // escape_debug keeps a control character from breaking the one-line error.
        Err(
            Error::invalid_value(format!("invalid stanza name '{}'", name.escape_debug()))
                .with_hint(
                    "use letters, digits, '-', '_' and '.', starting with a letter, digit or '_'; \
             'global' is reserved",
                ),
        )
    }
}

/// The config options of the command line and environment that decide which files to read.
struct Requested {
    config: Option<String>,
    no_config: bool,
    config_path: Option<String>,
    include_path: Option<String>,
}

/// Which config files to read.
#[derive(Debug, PartialEq)]
struct Places {
    /// Main file candidates: the first that exists is read.
    files: Vec<PathBuf>,
    /// The main file must exist (named by --config).
    file_required: bool,
    /// Directory whose `*.conf` files are read after the main file.
    include: Option<PathBuf>,
    /// The include directory must exist (named by --config-include-path).
    include_required: bool,
}

/// pgBackRest's rules (src/config/parse.c): `--config` alone reads that file only;
/// `--config-include-path` adds that directory, which must exist; `--config-path=P` moves the
/// defaults to P/<file> and P/conf.d, neither required; `--no-config` reads no main file.
/// Without any of them, pg_backrest reads /etc/pg_backrest/pg_backrest.conf and
/// /etc/pg_backrest/conf.d when either exists, and otherwise pgBackRest's own configuration:
/// /etc/pgbackrest/pgbackrest.conf (or the older /etc/pgbackrest.conf) and
/// /etc/pgbackrest/conf.d. Called as `pgbackrest`, it reads pgBackRest's only.
fn locate_config(req: &Requested, identity: Identity, root: &Path) -> Places {
    let under_root = |p: &str| root.join(p.trim_start_matches('/'));
    let pgbackrest_files = vec![
        under_root("/etc/pgbackrest/pgbackrest.conf"),
        under_root("/etc/pgbackrest.conf"),
    ];
    let pgbackrest_include = under_root("/etc/pgbackrest/conf.d");
    let (default_files, default_include) = match (&req.config_path, identity) {
        (Some(p), Identity::Own) => (
            vec![
                Path::new(p).join("pg_backrest.conf"),
                Path::new(p).join("pgbackrest.conf"),
            ],
            Path::new(p).join("conf.d"),
        ),
        (Some(p), Identity::PgBackRest) => (
            vec![Path::new(p).join("pgbackrest.conf")],
            Path::new(p).join("conf.d"),
        ),
        (None, Identity::Own) => {
            let own_file = under_root("/etc/pg_backrest/pg_backrest.conf");
            let own_include = under_root("/etc/pg_backrest/conf.d");
            if own_file.exists() || own_include.is_dir() {
                (vec![own_file], own_include)
            } else {
                (pgbackrest_files, pgbackrest_include)
            }
        }
        (None, Identity::PgBackRest) => (pgbackrest_files, pgbackrest_include),
    };
    let (files, file_required) = match (&req.config, req.no_config) {
        (_, true) => (Vec::new(), false),
        (Some(c), false) => (vec![PathBuf::from(c)], true),
        (None, false) => (default_files, false),
    };
    let named_file = req.config.is_some() || req.no_config;
    let (include, include_required) = match &req.include_path {
        Some(p) => (Some(PathBuf::from(p)), true),
        None if named_file && req.config_path.is_none() => (None, false),
        None => (Some(default_include), false),
    };
    Places {
        files,
        file_required,
        include,
        include_required,
    }
}

/// The config files read, merged.
struct LoadedConfig {
    main: Option<PathBuf>,
    include: Option<PathBuf>,
    sections: Vec<Section>,
    findings: Vec<Finding>,
}

fn read_config_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        Error::new(
            Kind::of_io("open", &e),
            format!("unable to read config file '{}': {e}", path.display()),
        )
        .with_hint("check the path given by --config (or found in conf.d) and its permissions")
    })
}

fn load_config(places: &Places) -> Result<LoadedConfig> {
    let mut parsed = Vec::new();
    let mut main = None;
    for path in &places.files {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                parsed.push(parse_config_text(path, &text)?);
                main = Some(path.clone());
                break;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !places.file_required => {}
            Err(_) => {
                read_config_file(path)?;
            }
        }
    }
    let mut include = None;
    if let Some(dir) = &places.include {
        match std::fs::read_dir(dir) {
            Ok(entries) => {
                let mut names: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| {
                        p.extension().is_some_and(|x| x == "conf")
                            && p.file_stem().is_some_and(|s| !s.is_empty())
                    })
                    .collect();
                names.sort();
                for path in names {
                    if path.is_dir() {
                        continue;
                    }
                    let text = read_config_file(&path)?;
                    parsed.push(parse_config_text(&path, &text)?);
                }
                include = Some(dir.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !places.include_required => {}
            Err(e) => {
                return Err(Error::config(format!(
                    "unable to list config include path '{}': {e}",
                    dir.display()
                ))
                .with_hint(
                    "check the directory given by --config-include-path and its permissions",
                ))
            }
        }
    }
    merge_config_files(parsed, main, include)
}

/// Joins the files read into one configuration, as pgBackRest reads them as one text: a
/// section may continue in another file, but an option set twice in one section is an error
/// naming both files (pgBackRest: "cannot be set multiple times").
fn merge_config_files(
    files: Vec<ConfigFile>,
    main: Option<PathBuf>,
    include: Option<PathBuf>,
) -> Result<LoadedConfig> {
    let mut sections: Vec<Section> = Vec::new();
    let mut findings = Vec::new();
    for file in files {
        findings.extend(file.findings);
        for s in file.sections {
            for earlier in sections
                .iter()
                .filter(|e| e.stanza == s.stanza && e.command == s.command)
            {
                let twice = s
                    .values
                    .keys()
                    .copied()
                    .filter(|k| {
                        earlier.values.contains_key(k)
                            && !OptDef::find(k).is_some_and(|o| o.kind.repeatable())
                    })
                    .map(String::from)
                    .chain(
                        s.foreign
                            .keys()
                            .filter(|k| earlier.foreign.contains_key(*k))
                            .cloned(),
                    )
                    .next();
                if let Some(key) = twice {
                    return Err(Error::config(format!(
                        "option '{key}' is set in section '[{}]' of both '{}' and '{}'",
                        s.name, earlier.file, s.file
                    ))
                    .with_hint("keep one of them"));
                }
            }
            sections.push(s);
        }
    }
    Ok(LoadedConfig {
        main,
        include,
        sections,
        findings,
    })
}

impl LoadedConfig {
    /// The sections that apply to this stanza and command, by the contract's precedence.
    fn in_order<'s>(
        &'s self,
        stanza: Option<&'s str>,
        cmd: Cmd,
    ) -> impl Iterator<Item = Vec<&'s Section>> + 's {
        let mut order = Vec::with_capacity(4);
        if let Some(s) = stanza {
            order.extend([(Some(s), Some(cmd)), (Some(s), None)]);
        }
        order.extend([(None, Some(cmd)), (None, None)]);
        order.into_iter().map(move |(want_stanza, want_cmd)| {
            self.sections
                .iter()
                .filter(|s| s.stanza.as_deref() == want_stanza && s.command == want_cmd)
                .collect()
        })
    }

    /// The value of `opt` for this stanza and command, by the contract's precedence.
    fn lookup(&self, opt: &OptDef, stanza: Option<&str>, cmd: Cmd) -> Option<String> {
        if !opt.applies_to(cmd) {
            return None;
        }
        self.in_order(stanza, cmd).find_map(|level| {
            // A section continued in another file: a list option gathers every file's items.
            let items: Vec<&String> = level
                .iter()
                .filter_map(|s| s.values.get(opt.name))
                .collect();
            (!items.is_empty()).then(|| {
                items
                    .into_iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        })
    }

    /// Where [`lookup`](Self::lookup) found `opt`: the name as written and
    /// `in section '[S]' of 'FILE'`.
    fn origin(&self, opt: &OptDef, stanza: Option<&str>, cmd: Cmd) -> Option<(String, String)> {
        self.in_order(stanza, cmd).find_map(|level| {
            level
                .iter()
                .find(|s| s.values.contains_key(opt.name))
                .map(|s| {
                    let written = s.written.get(opt.name).map_or(opt.name, String::as_str);
                    (
                        written.to_string(),
                        format!("in section '[{}]' of '{}'", s.name, s.file),
                    )
                })
        })
    }

    fn lookup_foreign(&self, name: &str, stanza: Option<&str>, cmd: Cmd) -> Option<ForeignValue> {
        self.in_order(stanza, cmd)
            .find_map(|level| level.iter().find_map(|s| s.foreign.get(name).cloned()))
    }

    /// The names of pgBackRest-only options set in sections that apply to this invocation.
    fn foreign_names<'s>(&'s self, stanza: Option<&'s str>, cmd: Cmd) -> Vec<&'s str> {
        self.in_order(stanza, cmd)
            .flatten()
            .flat_map(|s| s.foreign.keys().map(String::as_str))
            .collect()
    }
}

/// Something in a config file that is not used but does not stop the command: pgBackRest
/// warns about it when it reads the section for the command at hand, and so does
/// pg_backrest. `check` refuses the `unknown` ones wherever they are.
#[derive(Debug)]
struct Finding {
    stanza: Option<String>,
    /// `None`: a section of every command, or one naming no command pg_backrest knows.
    command: Option<Cmd>,
    /// A key or section command that no one knows (a typo), as opposed to a misplaced one.
    unknown: bool,
    /// For an option in a section that cannot hold it: warn only if it concerns this command.
    option: Option<Known>,
    message: String,
}

impl Finding {
    fn concerns(&self, stanza: Option<&str>, cmd: Cmd) -> bool {
        (self.stanza.is_none() || self.stanza.as_deref() == stanza)
            && (self.command.is_none() || self.command == Some(cmd))
            && self.option.is_none_or(|k| k.applies_to(cmd))
    }
}

/// One section of a config file, its keys checked.
#[derive(Debug)]
struct Section {
    /// As written, e.g. `global:archive-push`.
    name: String,
    /// The file it is in, for messages.
    file: String,
    /// `None` for global.
    stanza: Option<String>,
    command: Option<Cmd>,
    values: BTreeMap<&'static str, String>,
    /// The keys of `values` as written where that is not the current name (pgBackRest's
    /// deprecated names), for messages.
    written: BTreeMap<&'static str, String>,
    /// pgBackRest's options that pg_backrest does not implement, by current name.
    foreign: BTreeMap<String, ForeignValue>,
}

#[derive(Debug)]
struct ConfigFile {
    sections: Vec<Section>,
    findings: Vec<Finding>,
}
/// One `[section]` of the config file as written, before its keys are checked.
struct RawSection<'t> {
    name: &'t str,
    /// `(key, value, line number)` in file order; a key may repeat (list options).
    entries: Vec<(&'t str, &'t str, usize)>,
}

/// Splits the config file into sections and `key=value` lines, pgBackRest's way: one line is
/// one option, the value is everything after the first `=` taken literally (a trailing `\`
/// is part of it, nothing continues onto the next line), whitespace around key and value is
/// trimmed, whole lines starting with `#` or `;` are comments, and a leading UTF-8 BOM (as
/// some editors write) is skipped. Anything else is an error naming the line, since a line
/// silently merged into its neighbour would change what another option means.
fn split_config_lines<'t>(file: &str, text: &'t str) -> Result<Vec<RawSection<'t>>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sections: Vec<RawSection<'t>> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let bad = |why: &str| {
            Error::new(
                Kind::Format,
                format!("unable to parse config file '{file}' line {n}: {why}"),
            )
        };
        if let Some(rest) = line.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .map(str::trim)
                .filter(|n| !n.is_empty() && !n.contains(['[', ']']))
                .ok_or_else(|| {
                    bad(&format!("'{line}' is not a section header"))
                        .with_hint("write a section as [global], [STANZA] or [STANZA:COMMAND]")
                })?;
            sections.push(RawSection {
                name,
                entries: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(&format!("'{line}' has no '='")).with_hint(
                "write one option per line as key=value; comment lines start with '#'",
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(bad(&format!("'{line}' has no option name before '='")));
        }
        let Some(section) = sections.last_mut() else {
            return Err(Error::config(format!(
                "option '{key}' in '{file}' is outside any section"
            ))
            .with_hint("put options under [global] or a [STANZA] section"));
        };
        section.entries.push((key, value.trim(), n));
    }
    Ok(sections)
}

fn parse_config_text(path: &Path, text: &str) -> Result<ConfigFile> {
    let file = path.display().to_string();
    let mut sections: Vec<Section> = Vec::new();
    let mut findings = Vec::new();
    for raw_section in split_config_lines(&file, text)? {
        let name = raw_section.name;
        let (base, cmd_name) = match name.split_once(':') {
            Some((b, c)) => (b, Some(c)),
            None => (name, None),
        };
        let stanza = if base == "global" {
            None
        } else {
            validate_stanza_name(base)
                .map_err(|e| e.context(format!("section '[{name}]' in '{file}'")))?;
            Some(base.to_string())
        };
        let command = match cmd_name {
            None => None,
            Some(c) => match Cmd::from_name(c).filter(|c| !c.def().hidden) {
                Some(cmd) => Some(cmd),
                // A command of pgBackRest's that pg_backrest lacks never runs, so its section
                // is never read, in pgBackRest either.
                None if pgbackrest::PGBACKREST_COMMANDS.contains(&c) => continue,
                None => {
                    // pgBackRest never reads such a section; a typo in its name must not stop
                    // archive_command, so it is a warning (and an error for check).
                    findings.push(Finding {
                        stanza: stanza.clone(),
                        command: None,
                        unknown: true,
                        option: None,
                        message: format!(
                            "section '[{name}]' in '{file}' names unknown command '{c}' (nearest known command: '{}'): its options are not read",
                            pgbackrest::nearest_command(c)
                        ),
                    });
                    continue;
                }
            },
        };
        if sections
            .iter()
            .any(|s| s.stanza == stanza && s.command == command)
        {
            return Err(Error::config(format!(
                "section '[{name}]' appears twice in '{file}'"
            )));
        }

        let mut values: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut written: BTreeMap<&'static str, String> = BTreeMap::new();
        let mut foreign: BTreeMap<String, ForeignValue> = BTreeMap::new();
        for (key, raw, line) in raw_section.entries {
            let where_ = format!("in section '[{name}]' of '{file}'");
            let mut finding = |unknown: bool, option: Option<Known>, message: String| {
                findings.push(Finding {
                    stanza: stanza.clone(),
                    command,
                    unknown,
                    option,
                    message,
                })
            };
            let Some((current, known)) = pgbackrest::resolve_name(key) else {
                finding(
                    true,
                    None,
                    format!(
                        "unknown option '{key}' {where_} (nearest known option: '{}')",
                        pgbackrest::nearest(key)
                    ),
                );
                continue;
            };
            if known.scope() == Scope::CommandLine {
                finding(
                    false,
                    None,
                    format!("option '{key}' {where_} can only be given on the command line or in the environment"),
                );
                continue;
            }
            if known.scope() == Scope::Stanza && stanza.is_none() {
                finding(
                    false,
                    Some(known),
                    format!(
                        "option '{key}' {where_} describes one cluster and belongs in a stanza section such as [main]"
                    ),
                );
                continue;
            }
            if let Some(c) = command {
                if !known.applies_to(c) {
                    finding(
                        false,
                        None,
                        format!(
                            "option '{key}' {where_} does not apply to command '{}'",
                            c.name()
                        ),
                    );
                    continue;
                }
            }
            let opt = match known {
                Known::Ours(opt) => opt,
                _ => {
                    if foreign.contains_key(&current) {
                        return Err(Error::config(format!(
                            "option '{key}' is set twice {where_} (again at line {line})"
                        ))
                        .with_hint("keep one line"));
                    }
                    foreign.insert(
                        current,
                        ForeignValue {
                            known,
                            written: key.to_string(),
                            value: pgbackrest::normalize(known.is_bool(), raw),
                            origin: where_,
                        },
                    );
                    continue;
                }
            };
            let v = opt.validate(raw).map_err(|why| {
                Error::invalid_value(format!(
                    "invalid value '{raw}' for option '{key}' {where_}: {why}"
                ))
            })?;
            match values.get_mut(opt.name) {
                // A repeatable option accumulates one mapping per line.
                Some(existing) if opt.kind.repeatable() => {
                    existing.push('\n');
                    existing.push_str(&v);
                }
                Some(_) => {
                    return Err(Error::config(format!(
                        "option '{key}' is set twice {where_} (again at line {line})"
                    ))
                    .with_hint(
                        "only list options such as tablespace-map may repeat; keep one line",
                    ))
                }
                None => {
                    values.insert(opt.name, v);
                    if key != opt.name {
                        written.insert(opt.name, key.to_string());
                    }
                }
            }
        }
        sections.push(Section {
            name: name.to_string(),
            file: file.clone(),
            stanza,
            command,
            values,
            written,
            foreign,
        });
    }
    Ok(ConfigFile { sections, findings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

    fn resolve_with(argv: &[&str], env: &[(&str, &str)], file: Option<&str>) -> Result<Config> {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("pg_backrest.conf");
        let mut argv: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        if let Some(text) = file {
            std::fs::write(&conf, text).unwrap();
            argv.push(format!("--config={}", conf.display()));
        } else {
            argv.push(format!("--config={}", conf.display()));
            std::fs::write(&conf, "").unwrap();
        }
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&Sources {
            argv: &argv,
            env: &env,
            program: "pg_backrest",
            root: dir.path(),
        })
    }

    const FILE: &str = "[global]\nrepo1-path=/g\ncompress-level=3\n\
        [global:archive-push]\ncompress-level=4\n\
        [main]\npg1-path=/data\nrepo1-path=/s\n\
        [main:archive-push]\nrepo1-path=/sc\n";

    #[test]
    fn precedence_follows_the_contract() {
        let c = resolve_with(&["--stanza=main", "archive-push", "/x"], &[], Some(FILE)).unwrap();
        assert_eq!(c.str("repo1-path"), Some("/sc"));
        assert_eq!(c.str("compress-level"), Some("4"));
        assert_eq!(c.str("pg1-path"), Some("/data"));
        let c = resolve_with(&["--stanza=main", "archive-get", "a", "b"], &[], Some(FILE)).unwrap();
        assert_eq!(c.str("repo1-path"), Some("/s"));
        let c = resolve_with(
            &["--stanza=other", "archive-get", "a", "b"],
            &[],
            Some(FILE),
        )
        .unwrap();
        assert_eq!(c.str("repo1-path"), Some("/g"));
        assert_eq!(c.str("pg1-path"), None);
        let env = [("PG_BACKREST_REPO1_PATH", "/env")];
        let c = resolve_with(&["--stanza=main", "archive-push", "/x"], &env, Some(FILE)).unwrap();
        assert_eq!(c.str("repo1-path"), Some("/env"));
        let c = resolve_with(
            &[
                "archive-push",
                "--stanza",
                "main",
                "/x",
                "--repo1-path=/cli",
            ],
            &env,
            Some(FILE),
        )
        .unwrap();
        assert_eq!(c.str("repo1-path"), Some("/cli"));
        assert_eq!(c.args, vec!["/x".to_string()]);
        // Defaults fill the rest.
        assert_eq!(c.str("compress-type"), Some("gz"));
    }

    #[test]
    fn reset_gives_the_default_over_the_file_and_the_environment() {
        let file =
            "[global]\nrepo1-path=/g\ncompress-type=zst\narchive-async=y\n[main]\npg1-path=/data\n";
        let env = [("PG_BACKREST_PROCESS_MAX", "4")];
        let c = resolve_with(
            &[
                "--stanza=main",
                "--reset-repo1-path",
                "--reset-compress-type",
                "--reset-process-max",
                "backup",
            ],
            &env,
            Some(file),
        )
        .unwrap();
        assert_eq!(c.str("repo1-path"), Some("/var/lib/pg_backrest"));
        assert_eq!(c.str("compress-type"), Some("gz"));
        assert_eq!(c.str("process-max"), Some("1"));
        assert!(!c.is_set("repo1-path"));
        // archive-async is pgBackRest's; reset, it is at its default and warns no more.
        let c = resolve_with(
            &[
                "--stanza=main",
                "--reset-archive-async",
                "archive-push",
                "/x",
            ],
            &[],
            Some(file),
        )
        .unwrap();
        assert!(
            !c.warnings.iter().any(|w| w.contains("archive-async")),
            "{:?}",
            c.warnings
        );
        // pgBackRest's deprecated name is reset as its current one.
        let c = resolve_with(
            &["--stanza=main", "--reset-repo-path", "archive-push", "/x"],
            &[],
            Some(file),
        )
        .unwrap();
        assert_eq!(c.str("repo1-path"), Some("/var/lib/pg_backrest"));
        for (argv, says) in [
            (
                &["--reset-bogus", "info"][..],
                "invalid option '--reset-bogus'",
            ),
            (
                &["--reset-set", "info"],
                "option 'reset-set' cannot be reset",
            ),
            (
                &["--reset-config", "info"],
                "option 'reset-config' cannot be reset",
            ),
            (
                &["--reset-repo1-path=/x", "info"],
                "option 'reset-repo1-path' does not allow an argument",
            ),
            (
                &["--reset-repo1-path", "--repo1-path=/x", "info"],
                "option 'repo1-path' cannot be set and reset",
            ),
            (
                &["--reset-repo1-path", "--reset-repo-path", "info"],
                "option 'repo1-path' is reset multiple times",
            ),
            (
                &["--reset-start-fast", "info"],
                "option '--reset-start-fast' is not valid for command 'info'",
            ),
        ] {
            let e = resolve_with(argv, &[], Some(file)).unwrap_err();
            assert_eq!(e.kind, Kind::OptionInvalid, "{argv:?}: {e:?}");
            assert_eq!(e.message, says, "{argv:?}");
        }
    }

    #[test]
    fn type_is_checked_for_the_command_before_anything_runs() {
        let e = resolve_with(&["--stanza=main", "--type=xid", "backup"], &[], None).unwrap_err();
        assert_eq!(e.kind, Kind::OptionInvalidValue);
        assert_eq!(
            e.message,
            "invalid value 'xid' for option '--type': must be one of: full, diff, incr for backup"
        );
        let e = resolve_with(&["--stanza=main", "--type=full", "restore"], &[], None).unwrap_err();
        assert_eq!(e.kind, Kind::OptionInvalidValue);
        let c = resolve_with(&["--stanza=main", "--type=diff", "backup"], &[], None).unwrap();
        assert_eq!(c.str("type"), Some("diff"));
        let env = [("PG_BACKREST_TYPE", "bogus")];
        let e = resolve_with(&["--stanza=main", "backup"], &env, None).unwrap_err();
        assert_eq!(e.kind, Kind::OptionInvalidValue);
    }

    #[test]
    fn time_options_keep_milliseconds() {
        let file = "[global]\nio-timeout=0.5\n[main]\npg1-path=/data\n";
        let c = resolve_with(
            &["--stanza=main", "--db-timeout=1.25", "backup"],
            &[],
            Some(file),
        )
        .unwrap();
        assert_eq!(c.seconds("io-timeout"), Duration::from_millis(500));
        assert_eq!(c.seconds("db-timeout"), Duration::from_millis(1250));
        assert_eq!(c.seconds("protocol-timeout"), Duration::from_secs(1830));
        assert_eq!(fmt_seconds(Duration::from_millis(1250)), "1.25s");
        let e = resolve_with(
            &["--stanza=main", "--io-timeout=0.01", "backup"],
            &[],
            Some(file),
        )
        .unwrap_err();
        assert_eq!(e.kind, Kind::OptionInvalidValue);
    }

    #[test]
    fn booleans_on_the_command_line() {
        let c = resolve_with(
            &["--stanza=main", "--no-delta", "archive-get", "a", "b"],
            &[],
            None,
        );
        assert_eq!(
            c.unwrap_err().message,
            "option '--delta' is not valid for command 'archive-get'"
        );
        let f = "[main]\npg1-path=/d\n";
        let c = resolve_with(&["--stanza=main", "check"], &[], Some(f)).unwrap();
        assert!(!c.bool("start-fast"));
    }

    fn err(argv: &[&str], env: &[(&str, &str)], file: Option<&str>) -> String {
        let e = resolve_with(argv, env, file).unwrap_err();
        assert!(
            matches!(
                e.kind,
                Kind::OptionInvalid
                    | Kind::OptionInvalidValue
                    | Kind::OptionRequired
                    | Kind::CommandInvalid
                    | Kind::ParamRequired
                    | Kind::ParamInvalid
                    | Kind::FileMissing
                    | Kind::Format
            ),
            "{e:?}"
        );
        e.message
    }

    #[test]
    fn every_mistake_is_a_config_error_naming_its_source() {
        let push = ["--stanza=main", "archive-push", "/x"];
        assert!(err(&push, &[], Some("[global]\ncompress-level=30\n"))
            .contains("invalid value '30' for option 'compress-level' in section '[global]'"));
        assert!(err(&push, &[], Some("repo1-path=/x\n")).contains("is outside any section"));
        assert!(
            err(&push, &[], Some("[main]\nrepo1-path=/a\nrepo1-path=/b\n")).contains("set twice")
        );
        assert!(err(&push, &[], Some("[main\n")).contains("unable to parse config file '/"));
        assert_eq!(
            err(&["archive-push", "/x"], &[], None),
            "option 'stanza' is required for command 'archive-push'"
        );
        assert!(err(&["--stanza=main", "check"], &[], None)
            .starts_with("option 'pg1-path' is required"));
        assert!(err(&["--stanza=main", "archive-push"], &[], None)
            .starts_with("command 'archive-push' requires WAL_PATH"));
        assert!(err(
            &["--stanza=main", "--bogus", "archive-push", "/x"],
            &[],
            None
        )
        .starts_with("invalid command line: unexpected argument '--bogus'"));
        assert!(err(
            &["--stanza=main", "--compress-level=x", "archive-push", "/x"],
            &[],
            None
        )
        .contains("'--compress-level': must be an integer"));
        assert!(err(&push, &[("PG_BACKREST_COMPRESS_TYPE", "xz")], None)
            .contains("environment variable 'PG_BACKREST_COMPRESS_TYPE'"));
        assert!(err(&["frobnicate"], &[], None).starts_with("invalid command 'frobnicate'"));
        assert_eq!(
            err(&["--stanza=main", "archive-push", ""], &[], None),
            "WAL path is empty for command 'archive-push'"
        );
        assert_eq!(
            err(&["--stanza=main", "archive-get", "", "/x"], &[], None),
            "WAL file name is empty for command 'archive-get'"
        );
        assert_eq!(
            err(
                &[
                    "--stanza=main",
                    "archive-get",
                    "000000010000000000000001",
                    ""
                ],
                &[],
                None
            ),
            "destination path is empty for command 'archive-get'"
        );
        assert!(
            err(&["--stanza=a:b", "archive-push", "/x"], &[], None).contains("invalid stanza name")
        );
    }

    fn parsed(text: &str) -> Result<ConfigFile> {
        parse_config_text(Path::new("/etc/x.conf"), text)
    }

    fn value(file: &ConfigFile, section: usize, key: &str) -> Option<String> {
        file.sections[section].values.get(key).cloned()
    }

    #[test]
    fn a_trailing_backslash_is_part_of_the_value_and_joins_nothing() {
        let f = parsed("[global]\nrepo1-path=/x\\\nlock-path=/l\n").unwrap();
        assert_eq!(value(&f, 0, "repo1-path").as_deref(), Some("/x\\"));
        assert_eq!(value(&f, 0, "lock-path").as_deref(), Some("/l"));
    }

    #[test]
    fn a_line_without_equals_is_an_error_naming_file_and_line() {
        let e = parsed("[global]\n# comment\nrepo1-path\nlock-path=/l\n").unwrap_err();
        assert_eq!(e.kind, Kind::Format);
        assert_eq!(
            e.message,
            "unable to parse config file '/etc/x.conf' line 3: 'repo1-path' has no '='"
        );
        let e = parsed("[global]\nrepo1-path: /x\n").unwrap_err();
        assert_eq!(
            e.message,
            "unable to parse config file '/etc/x.conf' line 2: 'repo1-path: /x' has no '='"
        );
        let e = parsed("[global]\n=/x\n").unwrap_err();
        assert!(
            e.message.contains("line 2: '=/x' has no option name"),
            "{e:?}"
        );
        let e = parsed("\n[main\n").unwrap_err();
        assert!(
            e.message
                .contains("line 2: '[main' is not a section header"),
            "{e:?}"
        );
    }

    #[test]
    fn bom_comments_whitespace_and_first_equals() {
        let text = "\u{feff}[global]\n  ; old style\n\t# hash\n\n  repo1-path = /a=b  \r\n\
            hook-backup-start=echo x=1 # not a comment\n[main]\npg1-path=/d\n";
        let f = parsed(text).unwrap();
        assert_eq!(value(&f, 0, "repo1-path").as_deref(), Some("/a=b"));
        assert_eq!(
            value(&f, 0, "hook-backup-start").as_deref(),
            Some("echo x=1 # not a comment")
        );
        assert_eq!(f.sections[1].stanza.as_deref(), Some("main"));
        assert_eq!(value(&f, 1, "pg1-path").as_deref(), Some("/d"));
    }

    #[test]
    fn a_repeated_key_is_refused_unless_the_option_is_a_list() {
        let e = parsed("[main]\nrepo1-path=/a\n\nrepo1-path=/b\n").unwrap_err();
        assert!(e
            .message
            .contains("set twice in section '[main]' of '/etc/x.conf' (again at line 4)"));
        let f = parsed("[main]\nlink-map=a=/a\nlink-map=b=/b\n").unwrap();
        assert_eq!(value(&f, 0, "link-map").as_deref(), Some("a=/a\nb=/b"));
    }

    #[test]
    fn stanza_names_that_are_not_plain_directory_names_are_refused() {
        for bad in [
            "", ".", "..", "-x", ".hidden", "a/b", "a\nb", "global", "a b",
        ] {
            let e = validate_stanza_name(bad).unwrap_err();
            assert_eq!(e.kind, Kind::OptionInvalidValue, "{bad:?}");
            assert!(!e.render().contains('\n'), "{bad:?}");
        }
        for good in ["main", "pg15", "_x", "a.b-c_d", "9"] {
            validate_stanza_name(good).unwrap();
        }
        let push = ["--stanza=..", "archive-push", "/x"];
        assert!(err(&push, &[], None).starts_with("invalid stanza name '..'"));
    }

    #[test]
    fn missing_explicit_config_is_an_error_but_missing_default_is_not() {
        let argv = vec![
            "--config=/nonexistent/x.conf".to_string(),
            "version".to_string(),
        ];
        let e = Config::resolve(&Sources {
            argv: &argv,
            env: &[],
            program: "pg_backrest",
            root: Path::new("/nonexistent"),
        })
        .unwrap_err();
        assert!(e
            .message
            .starts_with("unable to read config file '/nonexistent/x.conf'"));
        let env = vec![(
            "PG_BACKREST_CONFIG".to_string(),
            "/nonexistent/y.conf".to_string(),
        )];
        let argv = vec!["version".to_string()];
        assert!(Config::resolve(&Sources {
            argv: &argv,
            env: &env,
            program: "pg_backrest",
            root: Path::new("/nonexistent"),
        })
        .is_err());
    }

    #[test]
    fn repeatable_mappings_accumulate_from_every_source() {
        let file = "[main]\ntablespace-map=ts1=/a\ntablespace-map=ts2=/b/\n";
        let c = resolve_with(&["--stanza=main", "restore"], &[], Some(file)).unwrap();
        assert_eq!(
            c.path_map("tablespace-map"),
            vec![("ts1", "/a"), ("ts2", "/b")]
        );
        let c = resolve_with(
            &[
                "--stanza=main",
                "--link-map=pg_wal=/w",
                "--link-map",
                "x=/y",
                "restore",
            ],
            &[],
            None,
        )
        .unwrap();
        assert_eq!(c.path_map("link-map"), vec![("pg_wal", "/w"), ("x", "/y")]);
        let env = [("PG_BACKREST_TABLESPACE_MAP", "1=/one,2=/two")];
        let c = resolve_with(&["--stanza=main", "restore"], &env, None).unwrap();
        assert_eq!(
            c.path_map("tablespace-map"),
            vec![("1", "/one"), ("2", "/two")]
        );
        let e = resolve_with(
            &["--stanza=main", "--tablespace-map=ts1", "restore"],
            &[],
            None,
        )
        .unwrap_err();
        assert!(e.message.contains("must be KEY=/absolute/path"), "{e:?}");
    }

    fn warnings_of(argv: &[&str], env: &[(&str, &str)], file: &str) -> Vec<String> {
        resolve_with(argv, env, Some(file)).unwrap().warnings
    }

    #[test]
    fn an_unknown_key_warns_naming_the_nearest_option_and_fails_check_only() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let file = "[global]\nrepo1-paht=/x\n[main]\npg1-path=/d\n";
        let w = warnings_of(&push, &[], file);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("unknown option 'repo1-paht' in section '[global]' of '/")
                && w[0].ends_with("(nearest known option: 'repo1-path'), ignored"),
            "{w:?}"
        );
        let e = resolve_with(&["--stanza=main", "check"], &[], Some(file)).unwrap_err();
        assert_eq!(e.kind, Kind::OptionInvalid);
        assert!(
            e.message.starts_with("unknown option 'repo1-paht'"),
            "{e:?}"
        );
        // check refuses it in any section, even one another stanza reads.
        let other = "[other]\nbogus=1\n[main]\npg1-path=/d\n";
        assert!(warnings_of(&push, &[], other).is_empty());
        assert!(resolve_with(&["--stanza=main", "check"], &[], Some(other)).is_err());
        // A section naming no command is the same kind of typo.
        let server = "[global:server]\ntls-server-address=*\n[main]\npg1-path=/d\n";
        assert!(resolve_with(&["--stanza=main", "check"], &[], Some(server)).is_ok());
        let w = warnings_of(&push, &[], "[global:archive-pusj]\nrepo1-path=/x\n");
        assert!(
            w[0].contains(
                "names unknown command 'archive-pusj' (nearest known command: 'archive-push')"
            ),
            "{w:?}"
        );
    }

    #[test]
    fn a_key_where_it_cannot_apply_warns_when_its_section_is_read() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let w = warnings_of(&push, &[], "[global]\npg1-path=/d\n");
        assert!(
            w[0].contains("option 'pg1-path' in section '[global]' of '/"),
            "{w:?}"
        );
        assert!(w[0].contains("belongs in a stanza section"), "{w:?}");
        let c = resolve_with(&push, &[], Some("[global]\npg1-path=/d\n")).unwrap();
        assert_eq!(c.str("pg1-path"), None);
        let w = warnings_of(&push, &[], "[main]\nstanza=x\n");
        assert!(
            w[0].contains("can only be given on the command line"),
            "{w:?}"
        );
        let w = warnings_of(&push, &[], "[main:archive-push]\nstart-fast=y\n");
        assert!(
            w[0].contains("does not apply to command 'archive-push'"),
            "{w:?}"
        );
        // Sections this invocation does not read stay quiet, as in pgBackRest.
        assert!(warnings_of(&push, &[], "[main:archive-get]\ncompress-level=1\n").is_empty());
        assert!(warnings_of(&push, &[], "[other]\nstanza=x\n").is_empty());
        // A stanza option in [global] concerns only the commands that read it.
        assert!(warnings_of(&["info"], &[], "[global]\npg1-path=/d\n").is_empty());
    }

    #[test]
    fn pgbackrest_options_pg_backrest_lacks_are_ignored_with_one_warning() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let file = "[global]\narchive-header-check=n\nlog-timestamp=n\n\
            [global:archive-push]\narchive-header-check=n\n";
        let w = warnings_of(&push, &[], file);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("option 'archive-header-check' in section '[global:archive-push]'"),
            "{w:?}"
        );
        assert!(
            w[0].contains("is ignored: pg_backrest always checks"),
            "{w:?}"
        );
        // pgBackRest's default changes nothing and needs no warning.
        assert!(warnings_of(
            &push,
            &[],
            "[global]\narchive-header-check=y\nrepo1-type=posix\n"
        )
        .is_empty());
        // Options of a command they do not concern are not looked at.
        assert!(warnings_of(
            &["--stanza=main", "expire"],
            &[],
            "[global]\narchive-header-check=n\n"
        )
        .is_empty());
        // Object-store settings with a posix repository, secrets never echoed.
        let w = warnings_of(&push, &[], "[global]\nrepo1-s3-key-secret=SECRET\n");
        assert!(
            w[0].contains("repo1-s3-key-secret") && !w[0].contains("SECRET"),
            "{w:?}"
        );
        // A second cluster is ignored: the repository is the same.
        let w = warnings_of(&push, &[], "[main]\npg1-path=/d\npg2-path=/s\n");
        assert!(
            w[0].contains("option 'pg2-path'") && w[0].contains("pg1 only"),
            "{w:?}"
        );
    }

    #[test]
    fn pgbackrest_options_that_change_what_is_stored_are_refused() {
        let push = ["--stanza=main", "archive-push", "/x"];
        for (file, expect) in [
            (
                "[global]\nrepo1-cipher-type=aes-256-cbc\nrepo1-cipher-pass=p\n",
                "option 'repo1-cipher-type' in section '[global]' of '/",
            ),
            (
                "[global]\nrepo1-type=azure\n",
                "option 'repo1-type' in section '[global]' of '/",
            ),
            (
                "[global]\nrepo-type=gcs\n",
                "option 'repo-type' (pgBackRest's deprecated name of 'repo1-type') in section '[global]'",
            ),
            ("[global]\nrepo2-path=/r2\n", "configures repository repo2"),
            (
                "[main:archive-push]\nrepo3-s3-verify-ssl=n\n",
                "repo3-s3-verify-ssl",
            ),
        ] {
            let e = resolve_with(&push, &[], Some(file)).unwrap_err();
            assert_eq!(e.kind, Kind::NotImplemented, "{file}");
            assert!(e.message.contains(expect), "{file}: {e:?}");
            assert!(!e.render().contains('\n'));
        }
        let backup = ["--stanza=main", "backup"];
        let e = resolve_with(&backup, &[], Some("[global]\nrepo1-bundle=y\n")).unwrap_err();
        assert!(e.message.contains("repo1-bundle"), "{e:?}");
        // repo1-bundle concerns backup only: archive-push writes the same WAL either way.
        assert!(resolve_with(&push, &[], Some("[global]\nrepo1-bundle=y\n")).is_ok());
        // A refused option set for another stanza does not concern this one.
        assert!(resolve_with(&push, &[], Some("[other]\nrepo1-cipher-type=aes-256-cbc\n")).is_ok());
        // On the command line too.
        let e = resolve_with(&["--stanza=main", "--repo=2", "info"], &[], None).unwrap_err();
        assert!(
            e.message
                .contains("option 'repo' on the command line is set to '2'"),
            "{e:?}"
        );
        assert!(resolve_with(&["--stanza=main", "--repo=1", "info"], &[], None).is_ok());
        let e = resolve_with(&["--stanza=main", "--no-online", "backup"], &[], None).unwrap_err();
        assert!(e.message.contains("'online'"), "{e:?}");
    }

    /// The repository options of an S3 repository, as test/harness/s3.rs writes them.
    const S3: &str = "[global]\nrepo1-type=s3\nrepo1-s3-bucket=bucket\n\
        repo1-s3-endpoint=127.0.0.1:9000\nrepo1-s3-region=us-east-1\n\
        repo1-s3-key=KEYID\nrepo1-s3-key-secret=SECRETKEY\nrepo1-s3-uri-style=path\n";

    #[test]
    fn an_s3_repository_is_configured_with_pgbackrests_options_and_defaults() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let c = resolve_with(&push, &[], Some(S3)).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.str("repo1-type"), Some("s3"));
        assert_eq!(c.str("repo1-s3-bucket"), Some("bucket"));
        assert_eq!(c.str("repo1-s3-endpoint"), Some("127.0.0.1:9000"));
        assert_eq!(c.str("repo1-s3-key"), Some("KEYID"));
        assert_eq!(c.str("repo1-s3-key-type"), Some("shared"));
        assert_eq!(c.str("repo1-s3-uri-style"), Some("path"));
        assert!(c.bool("repo1-storage-verify-tls"));
        assert_eq!(c.int("repo1-storage-port"), Some(443));
        assert_eq!(c.bytes("repo1-storage-upload-chunk-size"), Some(5 << 20));
        assert_eq!(c.str("repo1-s3-token"), None);
        // Every repository command reads them; the others do not.
        for argv in [
            &["--stanza=main", "backup"][..],
            &["--stanza=main", "info"],
            &["--stanza=main", "remote"],
            &["--stanza=main", "repo-ls"],
        ] {
            let c = resolve_with(argv, &[], Some(S3)).unwrap();
            assert_eq!(c.str("repo1-s3-region"), Some("us-east-1"), "{argv:?}");
        }
        let c = resolve_with(&["--stanza=main", "stop"], &[], Some(S3)).unwrap();
        assert_eq!(c.str("repo1-s3-bucket"), None);
        // pgBackRest's deprecated names, and values of its own types and ranges.
        let file = "[global]\nrepo-type=s3\nrepo-s3-bucket=b\nrepo-s3-endpoint=e\n\
            repo-s3-region=r\nrepo-s3-key=k\nrepo-s3-key-secret=s\nrepo-s3-verify-ssl=n\n\
            repo-s3-host=h\nrepo1-s3-port=9000\nrepo-s3-ca-path=/etc/ca/\n\
            repo1-storage-upload-chunk-size=64KiB\n";
        let c = resolve_with(&push, &[], Some(file)).unwrap();
        assert_eq!(c.str("repo1-s3-bucket"), Some("b"));
        assert!(!c.bool("repo1-storage-verify-tls"));
        assert_eq!(c.str("repo1-storage-host"), Some("h"));
        assert_eq!(c.int("repo1-storage-port"), Some(9000));
        assert_eq!(c.str("repo1-storage-ca-path"), Some("/etc/ca"));
        assert_eq!(c.bytes("repo1-storage-upload-chunk-size"), Some(64 << 10));
        for (bad, why) in [
            (
                "repo1-storage-upload-chunk-size=1k",
                "must be between 64KiB and 1TiB",
            ),
            (
                "repo1-storage-upload-chunk-size=2TiB",
                "must be between 64KiB and 1TiB",
            ),
            ("repo1-storage-port=70000", "must be between 1 and 65535"),
            ("repo1-s3-uri-style=virtual", "must be one of: host, path"),
            (
                "repo1-s3-key-type=iam",
                "must be one of: shared, auto, web-id",
            ),
            ("repo1-type=nfs", "must be one of: posix, s3"),
        ] {
            let e = resolve_with(&push, &[], Some(&format!("{S3}{bad}\n"))).unwrap_err();
            assert_eq!(e.kind, Kind::OptionInvalidValue, "{bad}");
            assert!(e.message.ends_with(why), "{bad}: {e:?}");
        }
        // Instance credentials need no key; a role goes with them.
        let auto = "[global]\nrepo1-type=s3\nrepo1-s3-bucket=b\nrepo1-s3-endpoint=e\n\
            repo1-s3-region=r\nrepo1-s3-key-type=auto\nrepo1-s3-role=backup\n";
        let c = resolve_with(&push, &[], Some(auto)).unwrap();
        assert_eq!(c.str("repo1-s3-role"), Some("backup"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn s3_secrets_come_from_the_file_or_the_environment_and_are_never_echoed() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let file = S3.replace("repo1-s3-key-secret=SECRETKEY\n", "repo1-s3-token=TOKEN\n");
        for var in [
            "PGBACKREST_REPO1_S3_KEY_SECRET",
            "PG_BACKREST_REPO1_S3_KEY_SECRET",
            "PGBACKREST_REPO_S3_KEY_SECRET",
        ] {
            let c = resolve_with(&push, &[(var, "FROMENV")], Some(&file)).unwrap();
            assert_eq!(c.str("repo1-s3-key-secret"), Some("FROMENV"), "{var}");
            let echo = format!("{:?}", c.non_default_options());
            for secret in ["FROMENV", "TOKEN", "KEYID"] {
                assert!(!echo.contains(secret), "{var}: {echo}");
            }
            assert!(
                echo.contains("(\"repo1-s3-key-secret\", \"<redacted>\")"),
                "{echo}"
            );
            assert!(
                echo.contains("(\"repo1-s3-token\", \"<redacted>\")"),
                "{echo}"
            );
        }
        let c = resolve_with(&push, &[], Some(&format!("{S3}repo1-s3-kms-key-id=KMS\n"))).unwrap();
        assert!(!format!("{:?}", c.non_default_options()).contains("KMS"));
        // Not on the command line, where ps shows them (pgBackRest's error); the key id of
        // the KMS key may be, as in pgBackRest, and is masked all the same.
        for opt in [
            "--repo1-s3-key=K",
            "--repo1-s3-key-secret=S",
            "--repo1-s3-token=T",
            "--repo-s3-key-secret=S",
        ] {
            let e = resolve_with(&["--stanza=main", opt, "archive-push", "/x"], &[], Some(S3))
                .unwrap_err();
            assert_eq!(e.kind, Kind::OptionInvalid, "{opt}");
            assert!(
                e.message.ends_with("is not allowed on the command-line"),
                "{e:?}"
            );
            let shown = e.render();
            assert!(!shown.contains("=K") && !shown.contains("=S") && !shown.contains("=T"));
            assert!(shown.contains("HINT: specify the option in a configuration file or an environment variable instead."), "{shown}");
        }
        let c = resolve_with(
            &[
                "--stanza=main",
                "--repo1-s3-kms-key-id=KMS",
                "archive-push",
                "/x",
            ],
            &[],
            Some(S3),
        )
        .unwrap();
        assert_eq!(c.str("repo1-s3-kms-key-id"), Some("KMS"));
        assert!(!format!("{:?}", c.non_default_options()).contains("KMS"));
    }

    #[test]
    fn an_s3_repository_needs_bucket_endpoint_region_and_shared_keys() {
        let push = ["--stanza=main", "archive-push", "/x"];
        for (missing, hint) in [
            ("repo1-s3-bucket", "repo1-type=s3 needs it"),
            ("repo1-s3-endpoint", "repo1-type=s3 needs it"),
            ("repo1-s3-region", "repo1-type=s3 needs it"),
            ("repo1-s3-key", "repo1-s3-key-type=shared needs it"),
            ("repo1-s3-key-secret", "repo1-s3-key-type=shared needs it"),
        ] {
            let file: String = S3
                .lines()
                .filter(|l| !l.starts_with(&format!("{missing}=")))
                .map(|l| format!("{l}\n"))
                .collect();
            let e = resolve_with(&push, &[], Some(&file)).unwrap_err();
            assert_eq!(e.kind, Kind::OptionRequired, "{missing}");
            assert_eq!(
                e.message,
                format!("archive-push command requires option: {missing}")
            );
            let got = e.hint.clone().unwrap_or_default();
            assert!(
                got.starts_with(hint) && got.contains(&format!("set {missing} in the config file")),
                "{got}"
            );
        }
    }

    #[test]
    fn s3_options_without_repo1_type_s3_are_refused_on_the_command_line_and_ignored_elsewhere() {
        let push = ["--stanza=main", "archive-push", "/x"];
        // pgBackRest's option-invalid, word for word.
        for (argv, message) in [
            (
                vec!["--stanza=main", "--repo1-s3-bucket=b", "archive-push", "/x"],
                "option 'repo1-s3-bucket' not valid without option 'repo1-type' = 's3'",
            ),
            (
                vec!["--stanza=main", "--no-repo1-storage-verify-tls", "info"],
                "option 'repo1-storage-verify-tls' not valid without option 'repo1-type' = 's3'",
            ),
            (
                vec!["--stanza=main", "--repo1-storage-upload-chunk-size=1MiB", "info"],
                "option 'repo1-storage-upload-chunk-size' not valid without option 'repo1-type' = 's3'",
            ),
        ] {
            let e = resolve_with(&argv, &[], None).unwrap_err();
            assert_eq!(e.kind, Kind::OptionInvalid, "{argv:?}");
            assert_eq!(e.message, message);
            assert!(e.hint.unwrap().contains("repo1-type=s3"));
        }
        // A role without instance credentials, as pgBackRest.
        let argv = ["--stanza=main", "--repo1-s3-role=r", "archive-push", "/x"];
        let e = resolve_with(&argv, &[], Some(S3)).unwrap_err();
        assert_eq!(
            e.message,
            "option 'repo1-s3-role' not valid without option 'repo1-s3-key-type' = 'auto'"
        );
        // In a file or the environment: a warning naming the option that decides, and no
        // value, not even a default.
        let file =
            "[global]\nrepo1-s3-bucket=b\nrepo1-s3-key-secret=SECRET\nrepo-s3-verify-ssl=n\n";
        let c = resolve_with(&push, &[("PGBACKREST_REPO1_S3_REGION", "r")], Some(file)).unwrap();
        for name in [
            "repo1-s3-bucket",
            "repo1-s3-key-secret",
            "repo1-s3-region",
            "repo1-storage-verify-tls",
            "repo1-storage-port",
            "repo1-storage-upload-chunk-size",
            "repo1-s3-key-type",
        ] {
            assert_eq!(c.str(name), None, "{name}");
            assert!(!c.is_set(name), "{name}");
        }
        assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
        for (written, origin) in [
            ("repo1-s3-bucket", "in section '[global]' of '/"),
            ("repo1-s3-key-secret", "in section '[global]' of '/"),
            ("repo-s3-verify-ssl", "in section '[global]' of '/"),
            (
                "repo1-s3-region",
                "in environment variable 'PGBACKREST_REPO1_S3_REGION'",
            ),
        ] {
            let start = format!("option '{written}' {origin}");
            assert!(
                c.warnings.iter().any(|w| w.starts_with(&start)
                    && w.ends_with(
                        "is ignored: it is not valid without option 'repo1-type' = 's3'"
                    )),
                "{start}: {:?}",
                c.warnings
            );
        }
        assert!(!format!("{:?}", c.warnings).contains("SECRET"));
        // With repo1-type=s3 nothing of it is a warning.
        let c = resolve_with(
            &push,
            &[("PGBACKREST_REPO1_TYPE", "s3")],
            Some(&S3.replace("repo1-type=s3\n", "")),
        )
        .unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        // Shared keys with instance credentials: ignored with a warning.
        let file = format!("{S3}repo1-s3-key-type=web-id\n");
        let c = resolve_with(&push, &[], Some(&file)).unwrap();
        assert_eq!(c.str("repo1-s3-key"), None);
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("'repo1-s3-key-secret'")
                    && w.ends_with("not valid without option 'repo1-s3-key-type' = 'shared'")),
            "{:?}",
            c.warnings
        );
    }

    #[test]
    fn a_dotted_bucket_with_tls_verification_is_refused_as_pgbackrest_does() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let dotted = S3.replace("bucket=bucket", "bucket=my.bucket");
        for style in ["host", "path"] {
            let file = format!(
                "{}repo1-s3-uri-style={style}\n",
                dotted.replace("repo1-s3-uri-style=path\n", "")
            );
            let e = resolve_with(&push, &[], Some(&file)).unwrap_err();
            assert_eq!(e.kind, Kind::OptionInvalidValue);
            assert_eq!(
                e.render(),
                "ERROR: [032]: 'my.bucket' is not valid for option 'repo1-s3-bucket' \
                 HINT: RFC-2818 forbids dots in wildcard matches. \
                 HINT: TLS/SSL verification cannot proceed with this bucket name. \
                 HINT: remove dots from the bucket name."
            );
        }
        let file = format!("{dotted}repo1-storage-verify-tls=n\n");
        assert!(resolve_with(&push, &[], Some(&file)).is_ok());
    }

    #[test]
    fn s3_with_repo1_host_on_one_host_is_refused_naming_both() {
        let file = format!("{S3}repo1-host=backup.example\n");
        let e =
            resolve_with(&["--stanza=main", "archive-push", "/x"], &[], Some(&file)).unwrap_err();
        assert_eq!(e.kind, Kind::Config);
        assert!(
            e.message.starts_with(
                "options 'repo1-type' = 's3' and 'repo1-host' = 'backup.example' are both set"
            ),
            "{e:?}"
        );
        assert!(e.hint.unwrap().contains("repository host's own config"));
        // The repository host runs remote with its own config, without repo1-host.
        assert!(resolve_with(&["--stanza=main", "remote"], &[], Some(S3)).is_ok());
    }

    #[test]
    fn object_stores_other_than_s3_stay_refused_where_they_concern_the_command() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let code = Kind::NotImplemented;
        for (argv, env, file, expect) in [
            (&push[..], vec![], "[main]\nrepo1-type=azure\n", "option 'repo1-type' in section '[main]' of '/"),
            (&push[..], vec![("PGBACKREST_REPO1_TYPE", "gcs")], "", "option 'repo1-type' in environment variable 'PGBACKREST_REPO1_TYPE' is set to 'gcs'"),
            (&["--stanza=main", "--repo1-type=cifs", "info"][..], vec![], "", "option 'repo1-type' on the command line is set to 'cifs', which pg_backrest does not support"),
            (&["--stanza=main", "remote"][..], vec![], "[global]\nrepo1-type=azure\n", "is set to 'azure'"),
        ] {
            let e = resolve_with(argv, &env, Some(file)).unwrap_err();
            assert_eq!(e.kind, code, "{argv:?}");
            assert!(e.message.contains(expect), "{e:?}");
            assert_eq!(
                e.hint.as_deref(),
                Some("remove it (pgBackRest's default is repo1-type=posix), or keep this stanza on pgBackRest")
            );
        }
        assert!(resolve_with(&push, &[], Some("[other]\nrepo1-type=azure\n")).is_ok());
        // azure's own options stay ignored with a warning.
        let w = warnings_of(&push, &[], "[global]\nrepo1-azure-container=c\n");
        assert!(
            w[0].contains("applies only to an azure or gcs repository"),
            "{w:?}"
        );
    }

    #[test]
    fn deprecated_names_and_the_compress_option_keep_their_pgbackrest_meaning() {
        let file = "[global]\nrepo-path=/old\nretention-full=2\nbackup-user=backrest\n\
            [main]\ndb-path=/data\ndb-port=5433\n";
        let c = resolve_with(&["--stanza=main", "backup"], &[], Some(file)).unwrap();
        assert_eq!(c.str("repo1-path"), Some("/old"));
        assert_eq!(c.str("repo1-retention-full"), Some("2"));
        assert_eq!(c.str("pg1-path"), Some("/data"));
        assert_eq!(c.str("pg1-port"), Some("5433"));
        let c = resolve_with(&["--stanza=main", "info"], &[], Some(file)).unwrap();
        assert_eq!(c.str("repo1-host-user"), Some("backrest"));
        let c = resolve_with(&["--stanza=main", "--db-path=/cli", "restore"], &[], None).unwrap();
        assert_eq!(c.str("pg1-path"), Some("/cli"));
        let e = resolve_with(
            &["--stanza=main", "check"],
            &[],
            Some("[main]\ndb-path=/a\npg1-path=/b\n"),
        )
        .unwrap_err();
        assert!(e.message.contains("set twice"), "{e:?}");
        let push = ["--stanza=main", "archive-push", "/x"];
        let c = resolve_with(&push, &[], Some("[global]\ncompress=n\n")).unwrap();
        assert_eq!(c.str("compress-type"), Some("none"));
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let c = resolve_with(&push, &[], Some("[global]\ncompress=y\n")).unwrap();
        assert_eq!(c.str("compress-type"), Some("gz"));
        let e =
            resolve_with(&push, &[], Some("[global]\ncompress=n\ncompress-type=gz\n")).unwrap_err();
        assert!(e.message.contains("should not both be set"), "{e:?}");
        let c = resolve_with(
            &["--stanza=main", "backup"],
            &[],
            Some("[global]\nexpire-auto=n\n"),
        )
        .unwrap();
        assert!(!c.bool("expire-auto"));
    }

    #[test]
    fn pgbackrest_environment_variables_and_their_precedence() {
        let push = ["--stanza=main", "archive-push", "/x"];
        let c = resolve_with(&push, &[("PGBACKREST_REPO1_PATH", "/pgbr")], Some(FILE)).unwrap();
        assert_eq!(c.str("repo1-path"), Some("/pgbr"));
        let env = [
            ("PGBACKREST_REPO1_PATH", "/pgbr"),
            ("PG_BACKREST_REPO1_PATH", "/ours"),
        ];
        let c = resolve_with(&push, &env, Some(FILE)).unwrap();
        assert_eq!(c.str("repo1-path"), Some("/ours"));
        assert!(
            c.warnings[0].contains("'PG_BACKREST_REPO1_PATH' is used"),
            "{:?}",
            c.warnings
        );
        let c = resolve_with(&push, &[("PGBACKREST_ARCHIVE_HEADER_CHECK", "n")], None).unwrap();
        assert!(
            c.warnings[0]
                .contains("in environment variable 'PGBACKREST_ARCHIVE_HEADER_CHECK' is ignored"),
            "{:?}",
            c.warnings
        );
        let e = resolve_with(
            &push,
            &[("PGBACKREST_REPO1_CIPHER_TYPE", "aes-256-cbc")],
            None,
        )
        .unwrap_err();
        assert!(
            e.message
                .contains("environment variable 'PGBACKREST_REPO1_CIPHER_TYPE'"),
            "{e:?}"
        );
        let c = resolve_with(
            &["--stanza=main", "restore"],
            &[("PGBACKREST_DB_PATH", "/d")],
            None,
        )
        .unwrap();
        assert_eq!(c.str("pg1-path"), Some("/d"));
        let c = resolve_with(&["version"], &[("PGBACKREST_NOPE", "1")], None).unwrap();
        assert_eq!(
            c.warnings,
            vec!["environment contains unknown option 'PGBACKREST_NOPE'"]
        );
    }

    fn touch(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn requested() -> Requested {
        Requested {
            config: None,
            no_config: false,
            config_path: None,
            include_path: None,
        }
    }

    #[test]
    fn config_locations_fall_back_to_pgbackrests() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let places = |req: &Requested, id| locate_config(req, id, r);
        // Nothing of ours: pgBackRest's files, in its order.
        let p = places(&requested(), Identity::Own);
        assert_eq!(
            p.files,
            vec![
                r.join("etc/pgbackrest/pgbackrest.conf"),
                r.join("etc/pgbackrest.conf")
            ]
        );
        assert_eq!(p.include, Some(r.join("etc/pgbackrest/conf.d")));
        assert!(!p.file_required && !p.include_required);
        touch(
            &r.join("etc/pgbackrest.conf"),
            "[global]\nrepo1-path=/old-place\n",
        );
        let loaded = load_config(&p).unwrap();
        assert_eq!(loaded.main, Some(r.join("etc/pgbackrest.conf")));
        touch(
            &r.join("etc/pgbackrest/pgbackrest.conf"),
            "[global]\nrepo1-path=/pgbr\n",
        );
        touch(
            &r.join("etc/pgbackrest/conf.d/b.conf"),
            "[main]\npg1-path=/d\n",
        );
        touch(&r.join("etc/pgbackrest/conf.d/ignored.txt"), "nonsense\n");
        let loaded = load_config(&p).unwrap();
        assert_eq!(loaded.main, Some(r.join("etc/pgbackrest/pgbackrest.conf")));
        assert_eq!(loaded.sections.len(), 2);
        // Ours, once it exists, wins; called as pgbackrest, pgBackRest's stays.
        touch(&r.join("etc/pg_backrest/pg_backrest.conf"), "[global]\n");
        let p = places(&requested(), Identity::Own);
        assert_eq!(p.files, vec![r.join("etc/pg_backrest/pg_backrest.conf")]);
        assert_eq!(p.include, Some(r.join("etc/pg_backrest/conf.d")));
        let p = places(&requested(), Identity::PgBackRest);
        assert_eq!(p.files[0], r.join("etc/pgbackrest/pgbackrest.conf"));
        // --config alone: that file only; with --config-include-path: that directory too.
        let explicit = Requested {
            config: Some("/x.conf".into()),
            ..requested()
        };
        let p = places(&explicit, Identity::Own);
        assert_eq!(
            (p.files, p.file_required, p.include),
            (vec![PathBuf::from("/x.conf")], true, None)
        );
        let both = Requested {
            config: Some("/x.conf".into()),
            include_path: Some("/inc".into()),
            ..requested()
        };
        let p = places(&both, Identity::Own);
        assert_eq!(
            (p.include, p.include_required),
            (Some(PathBuf::from("/inc")), true)
        );
        // --config-path moves both defaults, neither required.
        let moved = Requested {
            config_path: Some("/cp".into()),
            ..requested()
        };
        let p = places(&moved, Identity::Own);
        assert_eq!(
            p.files,
            vec![
                PathBuf::from("/cp/pg_backrest.conf"),
                PathBuf::from("/cp/pgbackrest.conf")
            ]
        );
        assert_eq!(
            (p.include, p.include_required),
            (Some(PathBuf::from("/cp/conf.d")), false)
        );
        // --no-config: no main file, and no default include directory.
        let none = Requested {
            no_config: true,
            ..requested()
        };
        let p = places(&none, Identity::Own);
        assert!(p.files.is_empty() && p.include.is_none());
    }

    #[test]
    fn include_files_continue_sections_but_may_not_set_an_option_twice() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        touch(&main, "[global]\nrepo1-path=/r\n[main]\npg1-path=/d\n");
        touch(
            &dir.path().join("conf.d/10-log.conf"),
            "[global]\nlog-level-console=info\n",
        );
        touch(
            &dir.path().join("conf.d/20-main.conf"),
            "[main]\npg1-port=5433\n",
        );
        let argv = |extra: &str| {
            vec![
                format!("--config={}", main.display()),
                extra.to_string(),
                "--stanza=main".to_string(),
                "check".to_string(),
            ]
        };
        let args = argv(&format!(
            "--config-include-path={}",
            dir.path().join("conf.d").display()
        ));
        let c = Config::resolve(&Sources {
            argv: &args,
            env: &[],
            program: "pg_backrest",
            root: dir.path(),
        })
        .unwrap();
        assert_eq!(c.str("log-level-console"), Some("info"));
        assert_eq!(c.str("pg1-port"), Some("5433"));
        assert_eq!(c.str("pg1-path"), Some("/d"));
        assert_eq!(c.config_include_path, Some(dir.path().join("conf.d")));
        touch(
            &dir.path().join("conf.d/30-dup.conf"),
            "[global]\nrepo1-path=/other\n",
        );
        let e = Config::resolve(&Sources {
            argv: &args,
            env: &[],
            program: "pg_backrest",
            root: dir.path(),
        })
        .unwrap_err();
        assert!(
            e.message
                .contains("option 'repo1-path' is set in section '[global]' of both"),
            "{e:?}"
        );
        // A missing include directory named explicitly is an error.
        let args = argv("--config-include-path=/nonexistent/conf.d");
        let e = Config::resolve(&Sources {
            argv: &args,
            env: &[],
            program: "pg_backrest",
            root: dir.path(),
        })
        .unwrap_err();
        assert!(
            e.message
                .contains("unable to list config include path '/nonexistent/conf.d'"),
            "{e:?}"
        );
    }

    #[test]
    fn called_as_pgbackrest_it_takes_pgbackrests_defaults() {
        let root = tempfile::tempdir().unwrap();
        let argv = vec!["--stanza=main".to_string(), "info".to_string()];
        let resolve = |program| {
            Config::resolve(&Sources {
                argv: &argv,
                env: &[],
                program,
                root: root.path(),
            })
            .unwrap()
        };
        let c = resolve("/usr/bin/pgbackrest");
        assert_eq!(c.identity, Identity::PgBackRest);
        assert_eq!(c.str("repo1-path"), Some("/var/lib/pgbackrest"));
        assert_eq!(c.str("lock-path"), Some("/tmp/pgbackrest"));
        assert_eq!(c.str("log-path"), Some("/var/log/pgbackrest"));
        assert_eq!(c.str("repo1-host-user"), Some("pgbackrest"));
        assert!(c
            .non_default_options()
            .iter()
            .all(|(k, _)| *k != "repo1-path"));
        // A default is not "set": the remote side then finds its own config.
        assert!(!c.is_set("repo1-host-config") && c.is_set("stanza"));
        let c = resolve("pg_backrest");
        assert_eq!(c.str("repo1-path"), Some("/var/lib/pg_backrest"));
    }

    #[test]
    fn unknown_environment_option_is_a_warning() {
        let c = resolve_with(&["version"], &[("PG_BACKREST_NOPE", "1")], None).unwrap();
        assert_eq!(
            c.warnings,
            vec!["environment contains unknown option 'PG_BACKREST_NOPE'"]
        );
    }
}

#[cfg(test)]
mod sample_tests {
    use super::*;

    /// The shipped sample configs parse: every uncommented option exists, is allowed in its
    /// section and has a valid value.
    #[test]
    fn sample_configs_are_valid() {
        for (name, text) in [
            ("pg_backrest.conf", include_str!("../conf/pg_backrest.conf")),
            (
                "pg_backrest-db-host.conf",
                include_str!("../conf/pg_backrest-db-host.conf"),
            ),
            (
                "pg_backrest-repo-host.conf",
                include_str!("../conf/pg_backrest-repo-host.conf"),
            ),
        ] {
            let parsed = parse_config_text(Path::new(name), text);
            assert!(parsed.is_ok(), "conf/{name}: {:?}", parsed.err());
            let findings = parsed.unwrap().findings;
            assert!(findings.is_empty(), "conf/{name}: {findings:?}");
        }
    }
}
