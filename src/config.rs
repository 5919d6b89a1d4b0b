//! Configuration: turns the command line, the `PG_BACKREST_*` environment and the INI config
//! file into one resolved [`Config`], following the contract's precedence:
//! command line > environment > `[stanza:command]` > `[stanza]` > `[global:command]` >
//! `[global]` > built-in default.
//!
//! Every option and command comes from the tables in [`options`] and [`commands`]; this
//! module only applies them. Any mistake is a [`Kind::Config`] error naming the source
//! (file, section and key, the environment variable, or the command-line flag).

pub mod commands;
pub mod help;
pub mod options;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
pub use commands::{Cmd, LockType};
use options::{OptDef, OptKind, Scope, OPTIONS};

/// The resolved configuration of one invocation. Commands read it; nothing writes it.
#[derive(Debug, Clone)]
pub struct Config {
    pub command: Cmd,
    /// Positional arguments after the command.
    pub args: Vec<String>,
    values: BTreeMap<&'static str, String>,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// Non-fatal findings (unknown environment variables) for the log once it is open.
    pub warnings: Vec<String>,
}

/// Where the raw inputs come from; tests pass their own.
pub struct Sources<'a> {
    pub argv: &'a [String],
    pub env: &'a [(String, String)],
}

impl Config {
    /// Resolves the configuration from real process inputs.
    pub fn from_process() -> Result<Config> {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let env: Vec<(String, String)> = std::env::vars().collect();
        Config::resolve(&Sources {
            argv: &argv,
            env: &env,
        })
    }

    pub fn resolve(src: &Sources<'_>) -> Result<Config> {
        let cli = parse_command_line(src.argv)?;
        let mut warnings = Vec::new();
        let env = parse_environment(src.env, &mut warnings)?;

        let command = cli.command;
        let def = command.def();

        // Which file to read is itself an option: command line, then environment.
        let explicit_config = cli
            .values
            .get("config")
            .or_else(|| env.get("config"))
            .cloned();
        let config_path = PathBuf::from(
            explicit_config
                .clone()
                .or_else(|| OptDef::find("config").and_then(|o| o.default.map(String::from)))
                .unwrap_or_default(),
        );
        let file = load_config_file(&config_path, explicit_config.is_some())?;

        let stanza = cli
            .values
            .get("stanza")
            .or_else(|| env.get("stanza"))
            .cloned();
        if let Some(s) = &stanza {
            validate_stanza_name(s)?;
        }

        let mut values = BTreeMap::new();
        for opt in OPTIONS
            .iter()
            .filter(|o| o.applies_to(command) || o.name == "config" || o.name == "stanza")
        {
            let value = cli
                .values
                .get(opt.name)
                .or_else(|| env.get(opt.name))
                .cloned()
                .or_else(|| {
                    file.as_ref()
                        .and_then(|f| f.lookup(opt, stanza.as_deref(), command))
                })
                .or_else(|| opt.default.map(String::from));
            if let Some(v) = value {
                values.insert(opt.name, v);
            }
        }

        if def.needs_stanza && stanza.is_none() {
            return Err(Error::config(format!(
                "option 'stanza' is required for command '{}'",
                def.name
            ))
            .with_hint("add --stanza=NAME, the cluster's section in the config file"));
        }
        if matches!(command, Cmd::StanzaCreate | Cmd::Check) && !values.contains_key("pg1-path") {
            return Err(Error::config(format!(
                "option 'pg1-path' is required for command '{}'",
                def.name
            ))
            .with_hint(format!(
                "set pg1-path in the [{}] section of '{}' or pass --pg1-path",
                stanza.as_deref().unwrap_or("STANZA"),
                config_path.display()
            )));
        }

        let args = cli.args;
        let expected = def.args.len();
        let arity_ok = match command {
            Cmd::Help => args.len() <= 1,
            _ => args.len() == expected,
        };
        if !arity_ok {
            let usage = if def.args.is_empty() {
                format!("command '{}' takes no arguments", def.name)
            } else {
                format!("command '{}' requires {}", def.name, def.args.join(" "))
            };
            return Err(Error::config(format!("{usage}, got {}", args.len()))
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
            return Err(
                Error::config(format!("{what} is empty for command '{}'", def.name)).with_hint(
                    format!(
                "see 'pg_backrest help {}'; PostgreSQL passes %p and %f as non-empty arguments",
                def.name
            ),
                ),
            );
        }

        Ok(Config {
            command,
            args,
            values,
            config_file: file.map(|f| f.path),
            warnings,
        })
    }

    pub fn stanza(&self) -> Option<&str> {
        self.str("stanza")
    }

    /// The stanza, for commands whose table row says they need one (checked at resolve time).
    pub fn stanza_required(&self) -> Result<&str> {
        self.stanza()
            .ok_or_else(|| Error::config("option 'stanza' is required"))
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn path(&self, name: &str) -> Option<PathBuf> {
        self.str(name).map(PathBuf::from)
    }

    pub fn required_path(&self, name: &str) -> Result<PathBuf> {
        self.path(name).ok_or_else(|| {
            Error::config(format!(
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

    pub fn seconds(&self, name: &str) -> Duration {
        Duration::from_secs(self.int(name).unwrap_or(0).max(0) as u64)
    }

    /// Options set to a value other than their default, for the log's start line. Secret
    /// options are masked.
    pub fn non_default_options(&self) -> Vec<(&'static str, String)> {
        OPTIONS
            .iter()
            .filter_map(|o| {
                let v = self.values.get(o.name)?;
                if o.default == Some(v.as_str()) {
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

struct CommandLine {
    command: Cmd,
    args: Vec<String>,
    values: BTreeMap<&'static str, String>,
}

fn parse_command_line(argv: &[String]) -> Result<CommandLine> {
    use clap::{Arg, ArgAction};

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
        if opt.kind.repeatable() && !given.is_empty() {
            let items = given
                .iter()
                .map(|raw| {
                    opt.validate(raw).map_err(|why| {
                        Error::config(format!(
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
                Error::config(format!(
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
    let command = Cmd::from_name(&name).ok_or_else(|| {
        Error::config(format!("invalid command '{name}'"))
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
    Ok(CommandLine {
        command,
        args,
        values,
    })
}

fn parse_environment(
    env: &[(String, String)],
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<&'static str, String>> {
    let mut values = BTreeMap::new();
    for (key, raw) in env {
        let Some(rest) = key.strip_prefix("PG_BACKREST_") else {
            continue;
        };
        let name = rest.to_lowercase().replace('_', "-");
        let Some(opt) = OptDef::find(&name) else {
            warnings.push(format!("environment contains unknown option '{key}'"));
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
                    Error::config(format!(
                        "invalid value '{raw}' in environment variable '{key}': {why}"
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?
            .join("\n");
        values.insert(opt.name, v);
    }
    Ok(values)
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
            Error::config(format!("invalid stanza name '{}'", name.escape_debug())).with_hint(
                "use letters, digits, '-', '_' and '.', starting with a letter, digit or '_'; \
             'global' is reserved",
            ),
        )
    }
}

/// One section of the config file, already validated.
#[derive(Debug)]
struct Section {
    /// `None` for global.
    stanza: Option<String>,
    command: Option<Cmd>,
    values: BTreeMap<&'static str, String>,
}

#[derive(Debug)]
struct ConfigFile {
    path: PathBuf,
    sections: Vec<Section>,
}

impl ConfigFile {
    /// The value of `opt` for this stanza and command, by the contract's precedence.
    fn lookup(&self, opt: &OptDef, stanza: Option<&str>, cmd: Cmd) -> Option<String> {
        if !opt.applies_to(cmd) {
            return None;
        }
        let mut order = Vec::with_capacity(4);
        if let Some(s) = stanza {
            order.extend([(Some(s), Some(cmd)), (Some(s), None)]);
        }
        order.extend([(None, Some(cmd)), (None, None)]);
        order.into_iter().find_map(|(want_stanza, want_cmd)| {
            self.sections
                .iter()
                .find(|s| s.stanza.as_deref() == want_stanza && s.command == want_cmd)
                .and_then(|s| s.values.get(opt.name).cloned())
        })
    }
}

fn load_config_file(path: &Path, explicit: bool) -> Result<Option<ConfigFile>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => {
            return Err(Error::config(format!(
                "unable to read config file '{}': {e}",
                path.display()
            ))
            .with_hint("check the path given by --config and its permissions"))
        }
    };
    parse_config_text(path, &text).map(Some)
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
            Error::config(format!(
                "unable to parse config file '{file}' line {n}: {why}"
            ))
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
    for raw_section in split_config_lines(&file, text)? {
        let name = raw_section.name;
        let (base, cmd_name) = match name.split_once(':') {
            Some((b, c)) => (b, Some(c)),
            None => (name, None),
        };
        let command =
            match cmd_name {
                None => None,
                Some(c) => Some(Cmd::from_name(c).filter(|c| !c.def().hidden).ok_or_else(
                    || {
                        Error::config(format!(
                            "section '[{name}]' in '{file}' names unknown command '{c}'"
                        ))
                    },
                )?),
            };
        let stanza = if base == "global" {
            None
        } else {
            validate_stanza_name(base)
                .map_err(|e| e.context(format!("section '[{name}]' in '{file}'")))?;
            Some(base.to_string())
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
        for (key, raw, line) in raw_section.entries {
            let where_ = format!("in section '[{name}]' of '{file}'");
            let opt = OptDef::find(key).ok_or_else(|| {
                Error::config(format!("unknown option '{key}' {where_}"))
                    .with_hint("see 'pg_backrest help' for the option names")
            })?;
            if opt.scope == Scope::CommandLine {
                return Err(Error::config(format!(
                    "option '{key}' {where_} cannot be set in a config file"
                ))
                .with_hint(format!("pass it on the command line as --{key}")));
            }
            if opt.scope == Scope::Stanza && stanza.is_none() {
                return Err(Error::config(format!(
                    "option '{key}' {where_} cannot apply there: it describes one cluster"
                ))
                .with_hint(format!(
                    "move '{key}' to the stanza's own section, e.g. [main]"
                )));
            }
            if let Some(c) = command {
                if !opt.applies_to(c) {
                    return Err(Error::config(format!(
                        "option '{key}' {where_} cannot apply to command '{}'",
                        c.name()
                    )));
                }
            }
            let v = opt.validate(raw).map_err(|why| {
                Error::config(format!(
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
                }
            }
        }
        sections.push(Section {
            stanza,
            command,
            values,
        });
    }
    Ok(ConfigFile {
        path: path.to_path_buf(),
        sections,
    })
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
        assert_eq!(e.kind, Kind::Config);
        e.message
    }

    #[test]
    fn every_mistake_is_a_config_error_naming_its_source() {
        let push = ["--stanza=main", "archive-push", "/x"];
        assert!(err(&push, &[], Some("[global]\nbogus=1\n"))
            .starts_with("unknown option 'bogus' in section '[global]' of '/"));
        assert!(err(&push, &[], Some("[global:bogus]\nrepo1-path=/x\n"))
            .contains("section '[global:bogus]' in '/"));
        assert!(err(&push, &[], Some("[global]\ncompress-level=30\n"))
            .contains("invalid value '30' for option 'compress-level' in section '[global]'"));
        assert!(err(&push, &[], Some("[global]\npg1-path=/d\n"))
            .contains("option 'pg1-path' in section '[global]' of '/"));
        assert!(
            err(&push, &[], Some("[main:archive-get]\ncompress-level=1\n"))
                .contains("cannot apply to command 'archive-get'")
        );
        assert!(
            err(&push, &[], Some("[main]\nstanza=x\n")).contains("cannot be set in a config file")
        );
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
        assert_eq!(e.kind, Kind::Config);
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
            assert_eq!(e.kind, Kind::Config, "{bad:?}");
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
            env: &env
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
        }
    }
}
