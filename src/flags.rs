//! Flag parsing shared by the client subcommands (`listen`, `publish`,
//! `sessions`), in the style of `tether serve`: `--flag value` or
//! `--flag=value`, a one-line [`UsageError`] naming the flag, exit code 2.

use crate::cli::UsageError;

/// One flag of a subcommand.
#[derive(Debug, Clone, Copy)]
pub struct Flag {
    /// The name without `--`.
    pub name: &'static str,
    /// The value placeholder in the help; `""` marks a switch.
    pub value: &'static str,
    /// May be given several times (every value is kept).
    pub repeats: bool,
    /// The help line.
    pub help: &'static str,
}

impl Flag {
    /// A flag taking a value, given at most once.
    pub const fn value(name: &'static str, value: &'static str, help: &'static str) -> Flag {
        Flag {
            name,
            value,
            repeats: false,
            help,
        }
    }

    /// A switch.
    pub const fn switch(name: &'static str, help: &'static str) -> Flag {
        Flag::value(name, "", help)
    }

    /// A flag that may be repeated.
    pub const fn repeated(name: &'static str, value: &'static str, help: &'static str) -> Flag {
        Flag {
            repeats: true,
            ..Flag::value(name, value, help)
        }
    }
}

/// The arguments of one subcommand, split into flags and positionals.
#[derive(Debug, Default)]
pub struct Parsed {
    command: &'static str,
    values: Vec<(&'static str, String)>,
    /// Arguments that are not flags, in order.
    pub positionals: Vec<String>,
    /// `--help` or `-h` was given.
    pub help: bool,
}

/// Splits `args` (after the subcommand's name) by `flags`.
///
/// # Errors
/// An unknown flag, a missing value, a repeated flag that does not repeat,
/// or more than `max_positionals` other arguments.
pub fn parse(
    command: &'static str,
    flags: &[Flag],
    args: &[String],
    max_positionals: usize,
) -> Result<Parsed, UsageError> {
    let mut parsed = Parsed {
        command,
        ..Parsed::default()
    };
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--help" || arg == "-h" {
            parsed.help = true;
            continue;
        }
        let Some(body) = arg.strip_prefix("--") else {
            if parsed.positionals.len() == max_positionals {
                return Err(UsageError(format!(
                    "unexpected argument '{arg}' for 'tether {command}' (see tether {command} --help)"
                )));
            }
            parsed.positionals.push(arg.clone());
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let Some(flag) = flags.iter().find(|f| f.name == name) else {
            return Err(UsageError(format!(
                "unknown flag --{name} for 'tether {command}' (see tether {command} --help)"
            )));
        };
        if !flag.repeats && parsed.values.iter().any(|(n, _)| *n == flag.name) {
            return Err(UsageError(format!("--{name} is given more than once")));
        }
        let value = match (inline, flag.value.is_empty()) {
            (Some(v), _) => v,
            (None, true) => "true".into(),
            (None, false) => rest
                .next()
                .cloned()
                .ok_or_else(|| UsageError(format!("--{name} needs a value")))?,
        };
        parsed.values.push((flag.name, value));
    }
    Ok(parsed)
}

impl Parsed {
    /// The value of a flag given once, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a repeated flag, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of a required flag.
    ///
    /// # Errors
    /// A usage error naming the flag when it is missing.
    pub fn required(&self, name: &str) -> Result<&str, UsageError> {
        self.get(name).ok_or_else(|| {
            UsageError(format!(
                "--{name} is required for 'tether {}'",
                self.command
            ))
        })
    }

    /// A switch: absent is false; `--name=v` takes `1/0/true/false/yes/no`.
    ///
    /// # Errors
    /// A usage error for any other spelling.
    pub fn switch(&self, name: &str) -> Result<bool, UsageError> {
        match self.get(name) {
            None => Ok(false),
            Some(v) => crate::cli::parse_switch(v)
                .ok_or_else(|| invalid(name, v, "1, 0, true, false, yes or no")),
        }
    }

    /// A flag's value parsed by `parse`, with `expected` in the error.
    ///
    /// # Errors
    /// A usage error naming the flag when the value does not parse.
    pub fn parsed<T>(
        &self,
        name: &str,
        expected: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<Option<T>, UsageError> {
        self.get(name)
            .map(|v| parse(v).ok_or_else(|| invalid(name, v, expected)))
            .transpose()
    }
}

/// The error for a bad value.
pub fn invalid(name: &str, value: &str, expected: &str) -> UsageError {
    UsageError(format!(
        "invalid value '{value}' for --{name}: expected {expected}"
    ))
}

/// A help text: a description, a usage line and the flags.
pub fn help(description: &str, usage: &str, flags: &[Flag]) -> String {
    let mut out = format!("{description}\n\nUsage: {usage}\n\nFlags:\n");
    for flag in flags {
        let left = if flag.value.is_empty() {
            format!("--{}", flag.name)
        } else {
            format!("--{} {}", flag.name, flag.value)
        };
        out.push_str(&format!("  {left:<30} {}\n", flag.help));
    }
    out.push_str("  --help                         print this help\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAGS: &[Flag] = &[
        Flag::value("url", "URL", "where"),
        Flag::repeated("target", "ID", "who"),
        Flag::switch("json", "raw"),
    ];

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn both_value_forms_repeats_and_positionals() {
        let p = parse(
            "x",
            FLAGS,
            &args(&["--url=a", "--target", "t1", "id", "--target=t2", "--json"]),
            1,
        )
        .unwrap();
        assert_eq!(p.get("url"), Some("a"));
        assert_eq!(p.all("target"), vec!["t1", "t2"]);
        assert!(p.switch("json").unwrap());
        assert_eq!(p.positionals, vec!["id"]);
    }

    #[test]
    fn mistakes_are_one_line_naming_the_flag() {
        for (list, needle) in [
            (vec!["--nope"], "--nope"),
            (vec!["--url"], "--url"),
            (vec!["--url", "a", "--url", "b"], "--url"),
            (vec!["a", "b"], "'b'"),
            (vec!["--json=maybe"], "--json"),
        ] {
            let err = parse("x", FLAGS, &args(&list), 1)
                .and_then(|p| p.switch("json").map(|_| p))
                .unwrap_err()
                .0;
            assert!(err.contains(needle), "{err}");
            assert!(!err.contains('\n'));
        }
        let p = parse("x", FLAGS, &[], 0).unwrap();
        assert!(p.required("url").unwrap_err().0.contains("--url"));
        let p = parse("x", FLAGS, &args(&["--url", "z"]), 0).unwrap();
        let err = p
            .parsed("url", "a number", |v| v.parse::<u32>().ok())
            .unwrap_err();
        assert_eq!(err.0, "invalid value 'z' for --url: expected a number");
    }
}
