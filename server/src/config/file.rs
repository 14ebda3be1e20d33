//! Settings from a TOML file, `--config FILE` (or `PUSHCHAT_CONFIG`). Each key is the long
//! name of a flag (`vapid-subject = "mailto:ops@example.org"`, `trusted-proxy =
//! ["10.0.0.2"]`); its value becomes that flag's default, so the command line and the
//! environment still override the file. A key no subcommand knows is an error naming it.

use std::{
    collections::BTreeSet,
    ffi::OsString,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use clap::{Command, CommandFactory, FromArgMatches};
use toml::{Table, Value};

use crate::config::cli::Cli;

/// Parses the command line, with the defaults of the config file it names if any.
/// Exits with clap's message when the command line is wrong.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Cli> {
    let mut command = Cli::command();
    if let Some(path) = config_path(&args) {
        command = with_defaults_from(command, &path)?;
    }
    let matches = command.get_matches_from(args);
    Ok(Cli::from_arg_matches(&matches)?)
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut args = args.iter().skip(1).take_while(|arg| *arg != "--");
    while let Some(arg) = args.next() {
        if arg == "--config" {
            return args.next().map(PathBuf::from);
        }
        if let Some(path) = arg.to_str().and_then(|arg| arg.strip_prefix("--config=")) {
            return Some(path.into());
        }
    }
    std::env::var_os("PUSHCHAT_CONFIG").map(PathBuf::from)
}

fn with_defaults_from(command: Command, path: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --config {}", path.display()))?;
    let settings: Table = text
        .parse()
        .with_context(|| format!("--config {} is not valid TOML", path.display()))?;
    let mut defaults = Vec::new();
    for (key, value) in &settings {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Integer(_) | Value::Float(_) | Value::Boolean(_) => value.to_string(),
            Value::Array(items) => items
                .iter()
                .map(|item| match item {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            _ => bail!(
                "--config {}: {key} must be a string, a number, true/false or a list",
                path.display()
            ),
        };
        defaults.push((key.clone(), text));
    }
    let mut known = BTreeSet::new();
    let command = set_defaults(command, &defaults, &mut known);
    if let Some((key, _)) = defaults.iter().find(|(key, _)| !known.contains(key)) {
        bail!(
            "--config {}: no pushchat flag is called --{key} (see pushchat SUBCOMMAND --help)",
            path.display()
        );
    }
    Ok(command)
}

/// Gives every flag of `command` and its subcommands named in `defaults` that default;
/// notes in `known` the keys that named one.
fn set_defaults(
    command: Command,
    defaults: &[(String, String)],
    known: &mut BTreeSet<String>,
) -> Command {
    let mut command = command.mut_args(|arg| {
        let value = arg
            .get_long()
            .filter(|long| *long != "config")
            .and_then(|long| defaults.iter().find(|(key, _)| key == long));
        match value {
            Some((key, value)) => {
                known.insert(key.clone());
                arg.default_value(value.clone())
            }
            None => arg,
        }
    });
    let names: Vec<String> = command
        .get_subcommands()
        .map(|sub| sub.get_name().to_owned())
        .collect();
    for name in names {
        command = command.mut_subcommand(name, |sub| set_defaults(sub, defaults, known));
    }
    command
}
