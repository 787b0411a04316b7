//! runc's command line, read the way runc reads it, so the wrapper edits the config.json runc
//! will load, for the container id runc will create — or refuses, and touches nothing.
//!
//! runc 1.1 to 1.4 parse with urfave/cli v1 over Go's `flag` package:
//! - global flags: Go's `flag` over the arguments, up to the first non-flag (the command);
//! - a command's flags: urfave first moves the flags in front of the other arguments
//!   (`reorderArgs`; runc 1.1 vendors v1.22.1, runc 1.2+ v1.22.14+, which reorder slightly
//!   differently), then Go's `flag` parses up to the first non-flag; what is left must be
//!   exactly one argument, the container id (runc's `checkArgs(context, 1, exactArgs)`);
//! - Go's `flag`: `-name` or `--name`, value as `=v` or (not for booleans) the next argument,
//!   whatever it looks like; `--` ends the flags; a name neither the command nor Go knows is
//!   an error; urfave refuses two names of one flag (`-b` and `--bundle`) on one line;
//! - `-h`/`--help` (a boolean) makes runc print the command's help and do nothing else.
//!
//! The flag tables are the union over runc 1.1 to 1.4 (`create.go`, `run.go`, `main.go`):
//! a flag one version lacks (runc 1.1 has no `--pidfd-socket`, 1.4 no `--criu`) is still read
//! as what it is, and that runc refuses it itself. crun takes runc's command line; its own
//! global `--cgroup-manager` and `--log-level` take values, its `create/run -f/--config FILE`
//! (another spec file than config.json) is refused. (runc's main branch, past 1.4, moved to
//! urfave/cli v3, which parses differently: its tables and reorder need reading again then.)

/// Whether a flag takes a value (Go: string and int flags) or not (bool flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Takes {
    Nothing,
    Value,
}

/// One flag: its names (urfave's `"bundle, b"`), what it takes.
pub type Flag = (&'static [&'static str], Takes);

use Takes::{Nothing, Value};

/// runc's global flags (main.go; urfave adds help and version), plus crun's two value flags.
pub const GLOBAL_FLAGS: &[Flag] = &[
    (&["debug"], Nothing),
    (&["log"], Value),
    (&["log-format"], Value),
    (&["root"], Value),
    (&["criu"], Value),
    (&["systemd-cgroup"], Nothing),
    (&["rootless"], Value),
    (&["help", "h"], Nothing),
    (&["version", "v"], Nothing),
    // crun's; runc refuses them itself.
    (&["cgroup-manager"], Value),
    (&["log-level"], Value),
];

/// `runc create` (create.go; urfave adds help).
pub const CREATE_FLAGS: &[Flag] = &[
    (&["bundle", "b"], Value),
    (&["console-socket"], Value),
    (&["pidfd-socket"], Value),
    (&["pid-file"], Value),
    (&["no-pivot"], Nothing),
    (&["no-new-keyring"], Nothing),
    (&["preserve-fds"], Value),
    (&["help", "h"], Nothing),
];

/// `runc run` (run.go): create's flags and these.
pub const RUN_ONLY_FLAGS: &[Flag] =
    &[(&["detach", "d"], Nothing), (&["keep"], Nothing), (&["no-subreaper"], Nothing)];

/// crun's `create`/`run` flag naming another spec file than `<bundle>/config.json`.
const CRUN_CONFIG_FLAG: &[&str] = &["config", "f"];

/// A command line the wrapper will not act on. Each reads as the rest of a
/// `dataplane-hook: ...` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgError {
    #[error("cannot read the runtime command line: runc 1.1 to 1.4 have no {scope} flag {flag} (pass only runc's flags: dataplane-runtime does not guess which file to edit; nothing was changed)")]
    UnknownFlag { scope: String, flag: String },
    #[error("cannot read the runtime command line: {flag} makes the runtime read another spec file than the bundle's config.json (drop {flag}: dataplane-runtime edits <bundle>/config.json; nothing was changed)")]
    OtherSpecFile { flag: String },
    #[error("cannot read the runtime command line: flag {flag} needs a value (give it one, as runc requires; nothing was changed)")]
    MissingValue { flag: String },
    #[error("cannot read the runtime command line: flag {flag} takes true or false, not {value:?} (runc refuses it too; nothing was changed)")]
    BadBool { flag: String, value: String },
    #[error("cannot read the runtime command line: bad flag syntax {arg:?} (runc refuses it too; nothing was changed)")]
    BadSyntax { arg: String },
    #[error("cannot read the runtime command line: {first} and {second} are one flag given twice (give one of them, as runc requires; nothing was changed)")]
    TwoForms { first: String, second: String },
    #[error("cannot read the runtime command line: {command} takes exactly one container id, got {ids:?} (call it like runc: {command} [flags] <id>; nothing was changed)")]
    Ids { command: String, ids: Vec<String> },
    #[error("cannot read the runtime command line: runc 1.1 and runc 1.2+ read this {command} command line differently (put every flag before the container id and no -- after it; nothing was changed)")]
    Versions { command: String },
}

/// What Go's `flag` made of a flag set: (name as given without dashes, value), in order, and
/// the index of the first argument it did not take.
struct Parsed {
    flags: Vec<(String, Option<String>)>,
    rest: usize,
}

fn lookup(tables: &[&[Flag]], name: &str) -> Option<Flag> {
    tables.iter().flat_map(|t| t.iter()).find(|(names, _)| names.contains(&name)).copied()
}

/// Go's `strconv.ParseBool`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Go's `flag.FlagSet.Parse` over `args` with the flags of `tables`, then urfave's
/// `normalizeFlags` (two names of one flag on one line are an error). `scope` names the flag
/// set in errors.
fn go_flag_parse(args: &[String], tables: &[&[Flag]], scope: &str) -> Result<Parsed, ArgError> {
    let mut flags = vec![];
    let mut i = 0;
    while i < args.len() {
        let s = &args[i];
        if s.len() < 2 || !s.starts_with('-') {
            break;
        }
        if s == "--" {
            i += 1;
            break;
        }
        let dashes = if s.starts_with("--") { 2 } else { 1 };
        let body = &s[dashes..];
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(ArgError::BadSyntax { arg: s.clone() });
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        let shown = format!("{}{name}", &s[..dashes]);
        let Some((_, takes)) = lookup(tables, name) else {
            if scope != "global" && CRUN_CONFIG_FLAG.contains(&name) {
                return Err(ArgError::OtherSpecFile { flag: shown });
            }
            return Err(ArgError::UnknownFlag { scope: scope.to_string(), flag: shown });
        };
        i += 1;
        let value = match (takes, value) {
            (Nothing, None) => None,
            (Nothing, Some(v)) => {
                go_bool(&v)
                    .ok_or_else(|| ArgError::BadBool { flag: shown.clone(), value: v.clone() })?;
                Some(v)
            }
            // `--preserve-fds` is an int: runc checks the number itself; it cannot change
            // how the line splits, so it is not checked here.
            (Value, Some(v)) => Some(v),
            // Go takes the next argument whatever it looks like (`--pid-file -x`).
            (Value, None) => match args.get(i) {
                Some(v) => {
                    i += 1;
                    Some(v.clone())
                }
                None => return Err(ArgError::MissingValue { flag: shown }),
            },
        };
        flags.push((name.to_string(), value));
    }
    for (names, _) in tables.iter().flat_map(|t| t.iter()) {
        let given: Vec<&str> =
            names.iter().copied().filter(|n| flags.iter().any(|(f, _)| f == n)).collect();
        if given.len() > 1 {
            let dash = |n: &str| if n.len() == 1 { format!("-{n}") } else { format!("--{n}") };
            return Err(ArgError::TwoForms { first: dash(given[0]), second: dash(given[1]) });
        }
    }
    Ok(Parsed { flags, rest: i })
}

impl Parsed {
    /// The last value given to a flag under any of its names (Go keeps the last).
    fn last(&self, names: &[&str]) -> Option<&Option<String>> {
        self.flags.iter().rev().find(|(n, _)| names.contains(&n.as_str())).map(|(_, v)| v)
    }
    /// A bool flag's value.
    fn is_set(&self, names: &[&str]) -> bool {
        match self.last(names) {
            Some(None) => true,
            Some(Some(v)) => go_bool(v).unwrap_or(false),
            None => false,
        }
    }
}

/// urfave/cli v1.22.1's `reorderArgs` (runc 1.1): every argument that starts with `-` moves to
/// the front, with the one after it when that does not start with `-` and the flag has no `=`;
/// `--` and all after it stay at the end.
fn reorder_runc_1_1(args: &[String]) -> Vec<String> {
    let (mut flags, mut others) = (vec![], vec![]);
    let mut value_next = false;
    for (i, a) in args.iter().enumerate() {
        if a == "--" {
            others.extend(args[i..].iter().cloned());
            break;
        }
        if value_next && !a.starts_with('-') {
            value_next = false;
            flags.push(a.clone());
            continue;
        }
        value_next = false;
        if a != "-" && a.starts_with('-') {
            flags.push(a.clone());
            value_next = !a.contains('=');
        } else {
            others.push(a.clone());
        }
    }
    flags.extend(others);
    flags
}

/// urfave/cli v1.22.14+'s `argIsFlag`: an argument naming one of the command's flags (after
/// dropping up to two leading dashes, then one more, and anything from `=`).
fn arg_is_flag(tables: &[&[Flag]], a: &str) -> bool {
    if a == "-" || a == "--" || !a.starts_with('-') {
        return false;
    }
    let mut s = a;
    if s.starts_with("--") {
        s = &s[2..];
    }
    if let Some(t) = s.strip_prefix('-') {
        s = t;
    }
    let name = s.split('=').next().unwrap_or("");
    lookup(tables, name).is_some()
}

/// urfave/cli v1.22.14+'s `reorderArgs` (runc 1.2+): the command's own flags move to the
/// front, each with the argument after it unless that is one of the flags; `--` moves to the
/// front of the rest, and what follows it stays in place.
fn reorder_runc_1_2(tables: &[&[Flag]], args: &[String]) -> Vec<String> {
    let (mut flags, mut others) = (vec![], vec![]);
    let mut value_next = false;
    for (i, a) in args.iter().enumerate() {
        if value_next && !arg_is_flag(tables, a) {
            value_next = false;
            flags.push(a.clone());
        } else if a == "--" {
            others.insert(0, a.clone());
            others.extend(args[i + 1..].iter().cloned());
            break;
        } else if arg_is_flag(tables, a) {
            flags.push(a.clone());
            value_next = !a.contains('=');
        } else {
            others.push(a.clone());
        }
    }
    flags.extend(others);
    flags
}

/// What runc does with a `create`/`run` command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateLine {
    /// `-h`/`--help`: runc prints the command's help and does nothing else.
    Help,
    /// The container: runc chdirs to `bundle` when given and not empty, reads config.json.
    Create { bundle: Option<String>, id: String },
}

fn read_create(command: &str, args: &[String], tables: &[&[Flag]]) -> Result<CreateLine, ArgError> {
    let p = go_flag_parse(args, tables, command)?;
    if p.is_set(&["help", "h"]) {
        return Ok(CreateLine::Help);
    }
    let ids = &args[p.rest..];
    if ids.len() != 1 {
        return Err(ArgError::Ids { command: command.to_string(), ids: ids.to_vec() });
    }
    let bundle = p.last(&["bundle", "b"]).cloned().flatten().filter(|b| !b.is_empty());
    Ok(CreateLine::Create { bundle, id: ids[0].clone() })
}

/// A `create`/`run` command line after the command word, as runc 1.1 and runc 1.2+ read it;
/// where they would read it differently, an error.
pub fn parse_create(command: &str, rest: &[String]) -> Result<CreateLine, ArgError> {
    let tables: &[&[Flag]] =
        if command == "run" { &[CREATE_FLAGS, RUN_ONLY_FLAGS] } else { &[CREATE_FLAGS] };
    let old = read_create(command, &reorder_runc_1_1(rest), tables);
    let new = read_create(command, &reorder_runc_1_2(tables, rest), tables);
    match (old, new) {
        (a, b) if a == b => b,
        // A flag runc does not have is the reason either reads the line wrong: name it.
        (Err(e @ (ArgError::UnknownFlag { .. } | ArgError::OtherSpecFile { .. })), _)
        | (_, Err(e @ (ArgError::UnknownFlag { .. } | ArgError::OtherSpecFile { .. }))) => Err(e),
        // Both refuse it (runc of either version would fail): the newer one's reason.
        (Err(_), Err(e)) => Err(e),
        _ => Err(ArgError::Versions { command: command.to_string() }),
    }
}

/// The global part of a runc command line: where the command is, and whether runc would run
/// it at all (`--help`/`--version` print and stop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalLine {
    /// Index of the command word (args.len() when there is none).
    pub command_index: usize,
    /// `-h`/`--help`/`-v`/`--version`: runc prints and runs no command.
    pub prints_only: bool,
}

pub fn parse_global(args: &[String]) -> Result<GlobalLine, ArgError> {
    let p = go_flag_parse(args, &[GLOBAL_FLAGS], "global")?;
    Ok(GlobalLine {
        command_index: p.rest,
        prints_only: p.is_set(&["help", "h"]) || p.is_set(&["version", "v"]),
    })
}

/// runc's own log on this command line: `--log FILE` (non-empty) and whether
/// `--log-format json` is set. `None` when there is none or the line does not parse.
pub fn global_log(args: &[String]) -> Option<(String, bool)> {
    let p = go_flag_parse(args, &[GLOBAL_FLAGS], "global").ok()?;
    let path = p.last(&["log"])?.clone().filter(|l| !l.is_empty())?;
    let json = matches!(p.last(&["log-format"]), Some(Some(f)) if f == "json");
    Some((path, json))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_args as v;

    #[test]
    fn global_log_is_the_last_log_flag_before_the_command_with_its_format() {
        let shim = v(&[
            "--root",
            "/r",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "id",
        ]);
        assert_eq!(global_log(&shim), Some(("/b/log.json".into(), true)));
        assert_eq!(
            global_log(&v(&["--log=/a", "--log=/l", "create", "id"])),
            Some(("/l".into(), false))
        );
        assert_eq!(
            global_log(&v(&["--log-format=text", "--log", "/l", "create", "id"])),
            Some(("/l".into(), false))
        );
        // After the command word it is create's (unknown) flag, not runc's log.
        assert_eq!(global_log(&v(&["create", "--log", "/l", "id"])), None);
        assert_eq!(global_log(&v(&["--log=", "create", "id"])), None);
        assert_eq!(global_log(&v(&["--bogus", "--log", "/l", "create", "id"])), None);
    }

    fn create(args: &[&str]) -> Result<CreateLine, ArgError> {
        parse_create("create", &v(args))
    }
    fn run(args: &[&str]) -> Result<CreateLine, ArgError> {
        parse_create("run", &v(args))
    }
    fn made(bundle: Option<&str>, id: &str) -> Result<CreateLine, ArgError> {
        Ok(CreateLine::Create { bundle: bundle.map(String::from), id: id.to_string() })
    }

    /// Every create/run flag of runc 1.1 to 1.4, each form: `--x v`, `-x v`, `--x=v`, `-x=v`
    /// for value flags, `--x`, `-x`, `--x=true`, `-x=false` for booleans; before and after the id.
    #[test]
    fn every_create_and_run_flag_in_every_form_leaves_bundle_and_id_right() {
        for (command, tables) in
            [("create", vec![CREATE_FLAGS]), ("run", vec![CREATE_FLAGS, RUN_ONLY_FLAGS])]
        {
            for (names, takes) in tables.iter().flat_map(|t| t.iter()) {
                for name in names.iter().filter(|n| **n != "help" && **n != "h") {
                    let is_bundle = *name == "bundle" || *name == "b";
                    let forms: Vec<Vec<String>> = match takes {
                        Value => vec![
                            vec![format!("--{name}"), "/val".into()],
                            vec![format!("-{name}"), "/val".into()],
                            vec![format!("--{name}=/val")],
                            vec![format!("-{name}=/val")],
                        ],
                        Nothing => vec![
                            vec![format!("--{name}")],
                            vec![format!("-{name}")],
                            vec![format!("--{name}=true")],
                            vec![format!("-{name}=false")],
                        ],
                    };
                    for form in forms {
                        // Flag first, the bundle flag (unless it is the one tested) and the id.
                        let mut line = form.clone();
                        if !is_bundle {
                            line.extend(["--bundle".to_string(), "/b".to_string()]);
                        }
                        line.push("ctr".into());
                        let want = CreateLine::Create {
                            bundle: Some(if is_bundle { "/val" } else { "/b" }.into()),
                            id: "ctr".into(),
                        };
                        assert_eq!(
                            parse_create(command, &line),
                            Ok(want.clone()),
                            "{command} {line:?}"
                        );
                        // The id first: urfave moves the flags in front.
                        let mut line = vec!["ctr".to_string()];
                        line.extend(form.clone());
                        if !is_bundle {
                            line.extend(["-b".to_string(), "/b".to_string()]);
                        }
                        assert_eq!(parse_create(command, &line), Ok(want), "{command} {line:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn pidfd_socket_takes_a_value_and_is_not_the_container_id() {
        assert_eq!(
            create(&["--pidfd-socket", "/run/s.sock", "--bundle", "/b", "ctr"]),
            made(Some("/b"), "ctr")
        );
        assert_eq!(
            create(&["--bundle", "/b", "--pidfd-socket=/run/s.sock", "ctr"]),
            made(Some("/b"), "ctr")
        );
        assert_eq!(run(&["-d", "--pidfd-socket", "/run/s.sock", "ctr"]), made(None, "ctr"));
        // What containerd's go-runc passes.
        let shim = [
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "--console-socket",
            "/tmp/c.sock",
            "--pidfd-socket",
            "/tmp/p.sock",
            "--no-pivot",
            "--no-new-keyring",
            "--preserve-fds",
            "2",
            "ctr",
        ];
        assert_eq!(create(&shim), made(Some("/b"), "ctr"));
    }

    #[test]
    fn unknown_flags_are_refused_by_name() {
        for (args, flag) in [
            (&["--no-such", "--bundle", "/b", "ctr"][..], "--no-such"),
            (&["--bundle", "/b", "ctr", "--no-such=1"], "--no-such"),
            (&["-x", "ctr"], "-x"),
            (&["--pidfd-sock", "/s", "ctr"], "--pidfd-sock"),
            (&["--detach", "ctr"], "--detach"),
            (&["-d", "ctr"], "-d"),
            (&["--keep", "ctr"], "--keep"),
            (&["--root", "/r", "ctr"], "--root"),
        ] {
            let e = create(args).unwrap_err();
            assert_eq!(
                e,
                ArgError::UnknownFlag { scope: "create".into(), flag: flag.into() },
                "{args:?}"
            );
            assert!(e.to_string().contains(&format!("have no create flag {flag} (")), "{e}");
        }
        assert!(matches!(run(&["--no-such", "ctr"]), Err(ArgError::UnknownFlag { .. })));
        for args in [
            &["-f", "other.json", "ctr"][..],
            &["--config=other.json", "ctr"],
            &["ctr", "--config", "x"],
        ] {
            assert!(
                matches!(create(args), Err(ArgError::OtherSpecFile { .. })),
                "{args:?}: {:?}",
                create(args)
            );
            assert!(matches!(run(args), Err(ArgError::OtherSpecFile { .. })), "{args:?}");
        }
    }

    #[test]
    fn help_anywhere_runc_reads_it_is_help() {
        for args in [
            &["-h"][..],
            &["--help"],
            &["-help"],
            &["--help=true"],
            &["-h=1"],
            &["ctr", "-h"],
            &["--bundle", "/b", "--help", "ctr"],
            &["--bundle", "/b", "ctr", "--help"],
            &["--no-pivot", "-h", "ctr"],
        ] {
            assert_eq!(create(args), Ok(CreateLine::Help), "{args:?}");
            assert_eq!(run(args), Ok(CreateLine::Help), "{args:?}");
        }
        // Not help: a value, after --, or false.
        assert_eq!(create(&["--pid-file", "-h", "ctr"]), made(None, "ctr"));
        assert_eq!(create(&["--help=false", "ctr"]), made(None, "ctr"));
        assert!(matches!(create(&["--", "-h"]), Ok(CreateLine::Create { .. })));
        assert!(matches!(create(&["-h=maybe", "ctr"]), Err(ArgError::BadBool { .. })));
    }

    #[test]
    fn values_are_taken_as_go_takes_them() {
        // The next argument whatever it looks like.
        assert_eq!(create(&["--pid-file", "--bundle", "ctr"]), made(None, "ctr"));
        assert_eq!(create(&["--bundle", "-", "ctr"]), made(Some("-"), "ctr"));
        // The last of repeats wins; an empty bundle is the working directory.
        assert_eq!(create(&["--bundle", "/a", "--bundle=/z", "ctr"]), made(Some("/z"), "ctr"));
        assert_eq!(create(&["-b", "/a", "-b", "rel", "ctr"]), made(Some("rel"), "ctr"));
        assert_eq!(create(&["--bundle=", "ctr"]), made(None, "ctr"));
        assert_eq!(create(&["--bundle=a=b", "ctr"]), made(Some("a=b"), "ctr"));
        assert_eq!(create(&["--", "ctr"]), made(None, "ctr"));
        assert_eq!(create(&["--bundle", "/b", "--", "-ctr"]), made(Some("/b"), "-ctr"));
    }

    #[test]
    fn what_runc_refuses_is_refused() {
        assert_eq!(create(&["--bundle"]), Err(ArgError::MissingValue { flag: "--bundle".into() }));
        // urfave moves `ctr` behind `--bundle` as its value: no id is left.
        assert_eq!(
            create(&["ctr", "--bundle"]),
            Err(ArgError::Ids { command: "create".into(), ids: vec![] })
        );
        assert!(matches!(create(&["--no-pivot=yes", "ctr"]), Err(ArgError::BadBool { .. })));
        assert!(matches!(create(&["---bundle", "/b", "ctr"]), Err(ArgError::BadSyntax { .. })));
        assert!(matches!(create(&["-=x", "ctr"]), Err(ArgError::BadSyntax { .. })));
        assert_eq!(
            create(&["-b", "/a", "--bundle", "/b", "ctr"]),
            Err(ArgError::TwoForms { first: "--bundle".into(), second: "-b".into() })
        );
        assert!(matches!(run(&["-d", "--detach", "ctr"]), Err(ArgError::TwoForms { .. })));
        assert_eq!(create(&[]), Err(ArgError::Ids { command: "create".into(), ids: vec![] }));
        assert!(matches!(create(&["a", "b"]), Err(ArgError::Ids { .. })));
        // A boolean stops Go's flag at the id after it: the rest are arguments (runc: "exactly 1").
        assert!(matches!(
            create(&["--no-pivot", "ctr", "--bundle", "/b"]),
            Err(ArgError::Ids { .. })
        ));
        // runc 1.1 reads `ctr --` as two arguments, runc 1.2+ as one.
        assert_eq!(create(&["ctr", "--"]), Err(ArgError::Versions { command: "create".into() }));
        for e in [
            create(&["ctr", "--"]).unwrap_err(),
            create(&["a", "b"]).unwrap_err(),
            create(&["-x"]).unwrap_err(),
        ] {
            let s = e.to_string();
            assert!(
                s.starts_with("cannot read the runtime command line: ")
                    && s.ends_with(')')
                    && !s.contains('\n'),
                "{s}"
            );
        }
    }

    #[test]
    fn every_global_flag_in_every_form_finds_the_command() {
        for (names, takes) in GLOBAL_FLAGS {
            for name in names.iter() {
                let forms: Vec<Vec<String>> = match takes {
                    Value => vec![
                        vec![format!("--{name}"), "create".into()],
                        vec![format!("-{name}"), "x".into()],
                        vec![format!("--{name}=x")],
                        vec![format!("-{name}=x")],
                    ],
                    Nothing => vec![
                        vec![format!("--{name}")],
                        vec![format!("-{name}")],
                        vec![format!("--{name}=false")],
                        vec![format!("-{name}=true")],
                    ],
                };
                for form in forms {
                    let mut line = form.clone();
                    line.extend(["create".to_string(), "ctr".to_string()]);
                    let g = parse_global(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
                    assert_eq!(g.command_index, form.len(), "{line:?}");
                    let prints = ["help", "h", "version", "v"].contains(name)
                        && !form[0].ends_with("=false");
                    assert_eq!(g.prints_only, prints, "{line:?}");
                }
            }
        }
        let g = parse_global(&v(&[
            "--root",
            "/r",
            "--log=/l",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "--debug",
            "run",
            "-d",
            "c",
        ]))
        .unwrap();
        assert_eq!(g, GlobalLine { command_index: 7, prints_only: false });
        assert_eq!(parse_global(&v(&[])).unwrap().command_index, 0);
        assert_eq!(parse_global(&v(&["--root", "/r", "--", "create"])).unwrap().command_index, 3);
        let e = parse_global(&v(&["--no-such", "create", "c"])).unwrap_err();
        assert_eq!(e, ArgError::UnknownFlag { scope: "global".into(), flag: "--no-such".into() });
        assert!(matches!(parse_global(&v(&["--root"])), Err(ArgError::MissingValue { .. })));
        assert!(matches!(
            parse_global(&v(&["--bundle", "/b", "create", "c"])),
            Err(ArgError::UnknownFlag { .. })
        ));
    }

    #[test]
    fn the_two_reorders_match_urfave() {
        let r11 = |a: &[&str]| reorder_runc_1_1(&v(a));
        let r12 = |a: &[&str]| reorder_runc_1_2(&[CREATE_FLAGS], &v(a));
        assert_eq!(r11(&["ctr", "--bundle", "/b"]), v(&["--bundle", "/b", "ctr"]));
        assert_eq!(r12(&["ctr", "--bundle", "/b"]), v(&["--bundle", "/b", "ctr"]));
        // v1.22.1 moves any dash argument; v1.22.14 only the command's flags.
        assert_eq!(r11(&["ctr", "-zz"]), v(&["-zz", "ctr"]));
        assert_eq!(r12(&["ctr", "-zz"]), v(&["ctr", "-zz"]));
        // `--` : v1.22.1 keeps it after the arguments, v1.22.14 puts it first.
        assert_eq!(r11(&["ctr", "--", "x"]), v(&["ctr", "--", "x"]));
        assert_eq!(r12(&["ctr", "--", "x"]), v(&["--", "ctr", "x"]));
    }
}
