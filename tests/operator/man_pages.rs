//! The man pages: `clawdbot(1)` and one page per subcommand (clap_mangen renders NAME,
//! SYNOPSIS, DESCRIPTION, OPTIONS and the subcommand list from the CLI definition; FILES,
//! ENVIRONMENT, EXIT STATUS, EXAMPLES and SEE ALSO are added here, the examples taken from
//! the README's command blocks, which `docs_fresh` checks against the CLI), and
//! `clawdbot.yaml(5)`, the config reference, generated from `src/config/schema.rs`: its key
//! list and doc comments are read from the source, its defaults from a parsed config
//! serialized back, and a test checks the key list against what serde itself accepts.
//!
//! `docs_fresh` compares the committed `man/` with what this renders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Every page: (path relative to the repository root, contents).
pub(super) fn pages(root: &Path) -> Vec<(String, Vec<u8>)> {
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let examples = readme_examples(&readme);
    let mut cmd = without_help_subcommands(clawdbot::cli::command());
    cmd.build();
    let mut names = Vec::new();
    page_names(&cmd, "clawdbot", &mut names);
    let mut out = Vec::new();
    command_pages(&cmd, "clawdbot", &names, &examples, &mut out);
    let schema = std::fs::read_to_string(root.join("src/config/schema.rs")).unwrap();
    out.push((
        "man/clawdbot.yaml.5".to_string(),
        config_page(&schema).into_bytes(),
    ));
    out
}

/// clap's generated `help` subcommand would get a `clawdbot-help(1)` that nobody writes.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    names
        .iter()
        .fold(cmd.disable_help_subcommand(true), |cmd, name| {
            cmd.mut_subcommand(name, without_help_subcommands)
        })
}

fn page_names(cmd: &clap::Command, page: &str, out: &mut Vec<String>) {
    out.push(page.to_string());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page_names(sub, &format!("{page}-{}", sub.get_name()), out);
    }
}

fn command_pages(
    cmd: &clap::Command,
    page: &str,
    all: &[String],
    examples: &[String],
    out: &mut Vec<(String, Vec<u8>)>,
) {
    let man = clap_mangen::Man::new(cmd.clone().name(page.to_string()))
        .date("")
        .manual("clawdbot manual");
    let mut buf = Vec::new();
    man.render_title(&mut buf).unwrap();
    man.render_name_section(&mut buf).unwrap();
    man.render_synopsis_section(&mut buf).unwrap();
    man.render_description_section(&mut buf).unwrap();
    man.render_options_section(&mut buf).unwrap();
    if cmd.get_subcommands().next().is_some() {
        man.render_subcommands_section(&mut buf).unwrap();
    }
    let words = page.replace('-', " ");
    let mine: Vec<&String> = examples
        .iter()
        .filter(|e| {
            e.strip_prefix(&words)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(' '))
        })
        .collect();
    let mut text = String::from_utf8(buf).unwrap();
    text.push_str(&common_sections(page, all, &mine));
    out.push((format!("man/{page}.1"), text.into_bytes()));
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("{page}-{}", sub.get_name());
        command_pages(sub, &name, all, examples, out);
    }
}

/// roff text: backslashes, hyphens and non-ASCII characters escaped, and no line starting
/// with a control character.
fn esc(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    // groff reads ASCII: anything else is written as its Unicode escape (an ASCII terminal
    // gets the form [`ASCII_FALLBACKS`] gives it).
    let t: String = t
        .chars()
        .map(|c| match c {
            c if c.is_ascii() => c.to_string(),
            c => format!("\\[u{:04X}]", c as u32),
        })
        .collect();
    let t = t.replace("\n.", "\n\\&.").replace("\n'", "\n\\&'");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

/// A doc comment as man text: an intra-doc link to code is dropped when it is an aside
/// (`([`crate::...`])`), else replaced by what it stands for (an enum's values, a
/// constant's value); a link nobody taught this function fails the generation.
fn plain_doc(schema: &Schema, doc: &str) -> String {
    let constants = [
        (
            "MIN_PROMPT_CHARS",
            clawdbot::config::checks::MIN_PROMPT_CHARS.to_string(),
        ),
        (
            "crate::model::ANSWER_CUT_MARK",
            format!("\"{}\"", clawdbot::model::ANSWER_CUT_MARK),
        ),
    ];
    let mut out = String::new();
    let mut rest = doc;
    while let Some(start) = rest.find("[`") {
        let Some(len) = rest[start..].find("`]") else {
            break;
        };
        let target = &rest[start + 2..start + len];
        let before = &rest[..start];
        let after = &rest[start + len + 2..];
        if before.ends_with('(') && after.starts_with(')') && target.contains("::") {
            out.push_str(before.trim_end_matches('(').trim_end());
            rest = &after[1..];
            continue;
        }
        out.push_str(before);
        if let Some(values) = schema.enums.get(target) {
            out.push_str(&format!("one of {}", values.join(", ")));
        } else if let Some((_, v)) = constants.iter().find(|(n, _)| *n == target) {
            out.push_str(v);
        } else {
            panic!("the doc link [`{target}`] has no man page form: teach plain_doc ({doc})");
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

/// What a non-ASCII character the docs use looks like where the terminal has no glyph for
/// it (`man` in the C locale renders for ASCII); the rendering test names any other.
const ASCII_FALLBACKS: [(&str, &str); 3] = [("u2026", "..."), ("u2014", "--"), ("u2192", "->")];

/// `.char` requests giving each Unicode escape `page` uses its ASCII form where the output
/// device has no glyph for it.
fn ascii_fallbacks(page: &str) -> String {
    ASCII_FALLBACKS
        .iter()
        .filter(|(code, _)| page.contains(&format!("\\[{code}]")))
        .map(|(code, ascii)| format!(".if !c\\[{code}] .char \\[{code}] {ascii}\n"))
        .collect()
}

/// `code` spans in doc text shown in bold.
fn inline(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in esc(text).split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str(&format!("\\fB{part}\\fR"));
        } else {
            out.push_str(part);
        }
    }
    out
}

/// FILES, ENVIRONMENT, EXIT STATUS, EXAMPLES and SEE ALSO of a command page.
fn common_sections(page: &str, all: &[String], examples: &[&String]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        ".SH FILES\n\
         The folders depend on who runs the command; \\fB\\-\\-home\\fR \\fIDIR\\fR (or \
         \\fBCLAWDBOT_HOME\\fR) puts all of them under \\fIDIR\\fR.\n\
         .TP\n\\fICONFIG_DIR\\fR\n{}\n\
         .TP\n\\fICONFIG_DIR\\fR/\\fINAME\\fR.yaml\n{}\n\
         .TP\n\\fISTATE_DIR\\fR/\\fINAME\\fR/\n{}\n\
         .TP\n\\fILOG_DIR\\fR/\\fINAME\\fR.log\n{}\n\
         .TP\n\\fIRUN_DIR\\fR/\\fINAME\\fR/control.sock\n{}\n",
        esc("/etc/clawdbot for root; ~/.config/clawdbot for other users; DIR/config with --home DIR."),
        esc("The config daemon NAME reads without --config (see clawdbot.yaml(5)); `onboard --name NAME` writes it."),
        esc("STATE_DIR is /var/lib/clawdbot for root, ~/.local/state/clawdbot for other users, DIR/state with --home: the pid file, the start lock, the saved launch settings and the message journal."),
        esc("LOG_DIR is /var/log/clawdbot for root, ~/.local/state/clawdbot/logs for other users, DIR/logs with --home: the daemon's log, rotated by size (NAME.log.1 is the newest rotated file)."),
        esc("RUN_DIR is /run/clawdbot for root, $XDG_RUNTIME_DIR/clawdbot for other users (without it ~/.local/state/clawdbot/run), DIR/run with --home: the daemon's control socket. Under systemd, $RUNTIME_DIRECTORY, $STATE_DIRECTORY, $LOGS_DIRECTORY and $CONFIGURATION_DIRECTORY replace these folders."),
    ));
    s.push_str(&format!(
        ".SH ENVIRONMENT\n\
         .TP\n\\fBCLAWDBOT_HOME\\fR\n{}\n\
         .TP\n\\fBDINGTALK_CLIENT_ID\\fR, \\fBDINGTALK_CLIENT_SECRET\\fR\n{}\n\
         .TP\n\\fBNO_COLOR\\fR\n{}\n\
         .TP\n\\fBXDG_CONFIG_HOME\\fR, \\fBXDG_STATE_HOME\\fR, \\fBXDG_RUNTIME_DIR\\fR\n{}\n\
         .TP\n\\fBCOMPLETE\\fR\n{}\n",
        esc("Like --home: keep every file under this folder."),
        esc("The app's credentials for `onboard` when not given as flags."),
        esc("When set, no colours."),
        esc("Where the folders of users other than root are (see FILES)."),
        esc("Set by the shell completion scripts of `clawdbot completions` to ask for candidates; not for other use."),
    ));
    s.push_str(
        ".SH \"EXIT STATUS\"\n\
         .TP\n0\nOK (for \\fBdaemon status\\fR: running).\n\
         .TP\n1\nFailure (for \\fBdaemon status\\fR: dead, a stale pid file is left).\n\
         .TP\n2\nUsage or config error.\n\
         .TP\n3\nThe daemon is not running (\\fBdaemon status\\fR, \\fBhealthcheck\\fR, \\fBsend\\fR).\n\
         .TP\n4\nCannot tell (the control socket answers nothing, or permission denied).\n",
    );
    if !examples.is_empty() {
        s.push_str(".SH EXAMPLES\n");
        for e in examples {
            s.push_str(&format!(".PP\n.nf\n{}\n.fi\n", esc(e)));
        }
    }
    let parent = page.rsplit_once('-').map(|(p, _)| p);
    let mut see: Vec<String> = Vec::new();
    if let Some(parent) = parent {
        see.push(format!("{parent}(1)"));
    }
    see.extend(
        all.iter()
            .filter(|p| p.rsplit_once('-').map(|(p, _)| p) == Some(page))
            .map(|p| format!("{p}(1)")),
    );
    if page != "clawdbot" && parent != Some("clawdbot") {
        see.push("clawdbot(1)".into());
    }
    see.push("clawdbot.yaml(5)".into());
    s.push_str(&format!(
        ".SH \"SEE ALSO\"\n{}\n",
        see.iter()
            .map(|p| {
                let (name, section) = p.split_once('(').unwrap();
                format!("\\fB{}\\fR({section}", esc(name))
            })
            .collect::<Vec<_>>()
            .join(",\n")
    ));
    s
}

/// The `clawdbot ...` lines of the README's `sh` blocks as written (`sudo` and comments
/// dropped, continuations joined), for the EXAMPLES sections.
fn readme_examples(readme: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(head) = line.strip_suffix('\\') {
            pending.push_str(head);
            continue;
        }
        pending.push_str(line);
        let whole = std::mem::take(&mut pending);
        let code = whole.split("  #").next().unwrap_or("").trim();
        let code = code.strip_prefix("sudo ").unwrap_or(code);
        let code = code.split_whitespace().collect::<Vec<_>>().join(" ");
        if code.starts_with("clawdbot ") && !out.contains(&code) {
            out.push(code);
        }
    }
    out
}

// ---- clawdbot.yaml(5) -------------------------------------------------------------

/// One field of a config struct, as the source declares it.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
    docs: String,
    has_default: bool,
}

/// The structs (fields in order, and the struct's own doc) and enums (values as written
/// in YAML) of `schema.rs`.
#[derive(Debug, Default)]
struct Schema {
    structs: BTreeMap<String, (String, Vec<Field>)>,
    enums: BTreeMap<String, Vec<String>>,
}

/// Reads the declarations of `schema.rs` (the file is rustfmt-formatted: one field per
/// line, attributes and doc comments above it).
fn read_schema(src: &str) -> Schema {
    let mut schema = Schema::default();
    let mut docs: Vec<String> = Vec::new();
    let mut attrs = String::new();
    let mut in_attr = false;
    let mut current: Option<(bool, String, String, Vec<Field>)> = None; // (is_enum, name, doc, fields)
    let mut variants: Vec<String> = Vec::new();
    for line in src.lines() {
        let t = line.trim();
        if in_attr {
            attrs.push_str(t);
            in_attr = !t.ends_with(")]");
            continue;
        }
        if let Some(d) = t.strip_prefix("///") {
            docs.push(d.trim().to_string());
            continue;
        }
        if t.starts_with("#[") {
            attrs.push_str(t);
            in_attr = !t.ends_with(']');
            continue;
        }
        if let Some(rest) = t.strip_prefix("pub struct ") {
            if let Some(name) = rest.strip_suffix(" {") {
                // A struct's first paragraph is for users; the rest (its invariants) is
                // for the code's readers.
                let summary = docs.split(String::is_empty).next().unwrap_or_default();
                current = Some((false, name.to_string(), summary.join(" "), Vec::new()));
            }
        } else if let Some(rest) = t.strip_prefix("pub enum ") {
            if let Some(name) = rest.strip_suffix(" {") {
                current = Some((true, name.to_string(), String::new(), Vec::new()));
                variants.clear();
            }
        } else if line == "}" {
            if let Some((is_enum, name, doc, fields)) = current.take() {
                if is_enum {
                    schema.enums.insert(name, std::mem::take(&mut variants));
                } else {
                    schema.structs.insert(name, (doc, fields));
                }
            }
        } else if let Some((is_enum, _, _, fields)) = current.as_mut() {
            if *is_enum {
                let v = t.trim_end_matches(',');
                if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()) {
                    variants.push(snake_case(v));
                }
            } else if let Some(rest) = t.strip_prefix("pub ") {
                if let Some((name, ty)) = rest.split_once(": ") {
                    fields.push(Field {
                        name: name.to_string(),
                        ty: ty.trim_end_matches(',').to_string(),
                        docs: docs
                            .iter()
                            .filter(|d| !d.is_empty())
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(" "),
                        has_default: attrs.contains("default"),
                    });
                }
            }
        }
        docs.clear();
        attrs.clear();
    }
    schema
}

fn snake_case(v: &str) -> String {
    let mut out = String::new();
    for (i, c) in v.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// A config key as the page lists it.
#[derive(Debug)]
struct Key {
    /// `models.NAME.base_url`, `routing.rules[].model`.
    path: String,
    /// The struct that declares it (for the serde check).
    section: String,
    /// The section's path (`models.NAME`), empty at the top.
    section_path: String,
    kind: String,
    docs: String,
    required: bool,
    has_default: bool,
}

/// What a Rust field type is in YAML, and the struct it opens (if any) with the path
/// suffix it adds (`.NAME` for a map of structs, `[]` for a list of them).
fn yaml_type(schema: &Schema, ty: &str) -> (String, Option<(String, &'static str)>) {
    let inner = |outer: &str| ty.strip_prefix(outer).and_then(|r| r.strip_suffix('>'));
    if let Some(t) = inner("Option<") {
        return yaml_type(schema, t);
    }
    if let Some(t) = inner("BTreeMap<String, ") {
        if schema.structs.contains_key(t) {
            return ("map of NAME to section".into(), Some((t.into(), ".NAME")));
        }
        return (format!("map of NAME to {}", yaml_type(schema, t).0), None);
    }
    if let Some(t) = inner("Vec<") {
        if schema.structs.contains_key(t) {
            return ("list of sections".into(), Some((t.into(), "[]")));
        }
        return (format!("list of {}", yaml_type(schema, t).0), None);
    }
    if schema.structs.contains_key(ty) {
        return ("section".into(), Some((ty.into(), "")));
    }
    if let Some(values) = schema.enums.get(ty) {
        return (format!("one of {}", values.join(", ")), None);
    }
    let t = match ty {
        "String" => "string",
        "Secret" => "string (secret; ${VAR} keeps it out of the file)",
        "bool" => "boolean",
        "u32" | "u64" | "usize" => "integer",
        "f32" | "f64" => "number",
        other => other,
    };
    (t.into(), None)
}

/// Every key under struct `name` at `prefix`: its plain keys first, then each section it
/// opens with that section's keys (so a key is listed under its own section's heading).
fn walk(schema: &Schema, name: &str, prefix: &str, out: &mut Vec<Key>) {
    let (_, fields) = &schema.structs[name];
    let (leaves, sections): (Vec<&Field>, Vec<&Field>) = fields
        .iter()
        .partition(|f| yaml_type(schema, &f.ty).1.is_none());
    for f in leaves.into_iter().chain(sections) {
        let path = if prefix.is_empty() {
            f.name.clone()
        } else {
            format!("{prefix}.{}", f.name)
        };
        let (kind, opens) = yaml_type(schema, &f.ty);
        out.push(Key {
            path: path.clone(),
            section: name.to_string(),
            section_path: prefix.to_string(),
            kind,
            docs: plain_doc(schema, &f.docs),
            required: !f.has_default && !f.ty.starts_with("Option<"),
            has_default: f.has_default,
        });
        if let Some((sub, suffix)) = opens {
            walk(schema, &sub, &format!("{path}{suffix}"), out);
        }
    }
}

/// A config with every required key (and one of each optional section), whose parsed and
/// re-serialized form gives every default.
const SAMPLE: &str = r#"
models:
  NAME:
    kind: openai_compatible
    base_url: http://127.0.0.1:8000/v1
    model: local-chat
routing:
  defaults:
    model: NAME
  rules:
    - model: NAME
channel:
  dingtalk:
    client_id: dingexample
    client_secret: example-secret
ops:
  listen: 127.0.0.1:9464
"#;

/// The value at `path` (`NAME` and `[]` as in [`SAMPLE`]) of a YAML document.
fn at<'a>(doc: &'a serde_yaml::Value, path: &str) -> Option<&'a serde_yaml::Value> {
    let mut v = doc;
    for part in path.split('.') {
        let (key, list) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        v = v.get(key)?;
        if list {
            v = v.get(0)?;
        }
    }
    Some(v)
}

/// Like [`at`], making the sections on the way that the sample leaves out.
fn at_mut<'a>(doc: &'a mut serde_yaml::Value, path: &str) -> &'a mut serde_yaml::Value {
    let mut v = doc;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, list) = match part.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (part, false),
        };
        if v.is_null() {
            *v = serde_yaml::Value::Mapping(Default::default());
        }
        let map = v
            .as_mapping_mut()
            .unwrap_or_else(|| panic!("{path}: not a section"));
        v = map.entry(key.into()).or_insert(serde_yaml::Value::Null);
        if list {
            if v.as_sequence().is_none_or(|l| l.is_empty()) {
                *v = serde_yaml::Value::Sequence(vec![serde_yaml::Value::Null]);
            }
            v = v.get_mut(0).unwrap();
        }
    }
    v
}

fn show_value(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::Null => "unset".into(),
        serde_yaml::Value::String(s) => format!("\"{s}\""),
        serde_yaml::Value::Mapping(m) if m.is_empty() => "{} (none)".into(),
        serde_yaml::Value::Sequence(s) if s.is_empty() => "[] (none)".into(),
        other => serde_yaml::to_string(other).unwrap().trim().to_string(),
    }
}

fn config_keys(src: &str) -> (Schema, Vec<Key>) {
    let schema = read_schema(src);
    let mut keys = Vec::new();
    walk(&schema, "Config", "", &mut keys);
    (schema, keys)
}

/// clawdbot.yaml(5).
fn config_page(src: &str) -> String {
    let (schema, keys) = config_keys(src);
    let config = clawdbot::config::parse(SAMPLE).expect("the sample config loads");
    let defaults = serde_yaml::to_value(&config).unwrap();
    let sample: serde_yaml::Value = serde_yaml::from_str(SAMPLE).unwrap();
    let mut s = String::from(
        ".TH clawdbot.yaml 5 \"\" \"\" \"clawdbot manual\"\n\
         .SH NAME\nclawdbot.yaml \\- the config file of a clawdbot bot daemon\n\
         .SH SYNOPSIS\n\\fICONFIG_DIR\\fR/\\fINAME\\fR.yaml\n\
         .SH DESCRIPTION\n",
    );
    s.push_str(&inline(
        "A YAML file read by `clawdbot daemon start|run --name NAME` (CONFIG_DIR/NAME.yaml, or --config FILE), \
         `clawdbot healthcheck --config FILE` and `clawdbot config check --config FILE`; \
         `clawdbot onboard` writes one. Every section rejects unknown keys (with a \"did you mean\"), \
         so a typo is an error naming its line and column, never a silently ignored setting. \
         A string may use ${VAR} (the variable must be set) or ${VAR:-default}; write secrets that way \
         to keep them out of the file. A file holding a secret should be readable by its owner only (0600).",
    ));
    s.push_str("\n.PP\n");
    s.push_str(&esc(
        "In the key names below, NAME stands for a name of your choice (a model name) and [] for each entry of a list. \
         This page is generated from the config's definition (src/config/schema.rs), defaults included.",
    ));
    s.push('\n');
    let mut section = None;
    for k in &keys {
        if k.kind == "section"
            || k.kind.starts_with("map of NAME to section")
            || k.kind == "list of sections"
        {
            let doc = plain_doc(&schema, &schema.structs[&struct_of(&schema, k)].0);
            s.push_str(&format!(".SH \"{}\"\n", esc(&k.path).to_uppercase()));
            let text = [k.docs.as_str(), doc.as_str()]
                .iter()
                .filter(|d| !d.is_empty())
                .cloned()
                .collect::<Vec<_>>()
                .join(" ");
            let mut head = format!("A {}", k.kind);
            head.push_str(if k.required {
                ", required."
            } else {
                ", optional."
            });
            s.push_str(&format!("{}\n", inline(&format!("{head} {text}"))));
            section = Some(k.path.clone());
            continue;
        }
        if section.is_none() {
            s.push_str(".SH KEYS\n");
            section = Some(String::new());
        }
        let default = if k.required {
            "Required.".to_string()
        } else if k.has_default && at(&sample, &k.path).is_some() {
            // The sample's own value (a `base_url` needed unless `replicas` is given),
            // not a default.
            "No default.".to_string()
        } else if k.has_default {
            match at(&defaults, &k.path) {
                Some(v) => format!("Default: {}.", show_value(v)),
                None => "Default: unset.".into(),
            }
        } else {
            "Default: unset.".to_string()
        };
        s.push_str(&format!(
            ".TP\n\\fB{}\\fR (\\fI{}\\fR)\n{}\n",
            esc(&k.path),
            esc(&k.kind),
            inline(format!("{} {default}", k.docs).trim())
        ));
    }
    s.push_str(&format!(
        ".SH EXAMPLE\n.nf\n{}.fi\n",
        esc(SAMPLE.trim_start())
    ));
    s.push_str(
        ".SH FILES\n.TP\n\\fICONFIG_DIR\\fR/\\fINAME\\fR.yaml\n\
         /etc/clawdbot/\\fINAME\\fR.yaml for root, ~/.config/clawdbot/\\fINAME\\fR.yaml for other users, \
         \\fIDIR\\fR/config/\\fINAME\\fR.yaml with \\fB\\-\\-home\\fR \\fIDIR\\fR.\n\
         .TP\nconfig\\-templates/dingtalk.yaml\nA commented template in the source tree.\n\
         .SH \"SEE ALSO\"\n\\fBclawdbot\\fR(1), \\fBclawdbot\\-onboard\\fR(1), \\fBclawdbot\\-config\\-check\\fR(1), \
         \\fBclawdbot\\-daemon\\-start\\fR(1)\n",
    );
    let (title, body) = s.split_once('\n').unwrap();
    format!("{title}\n{}{body}", ascii_fallbacks(body))
}

/// The struct a section key opens.
fn struct_of(schema: &Schema, k: &Key) -> String {
    yaml_type(schema, &field_type(schema, k)).1.unwrap().0
}

fn field_type(schema: &Schema, k: &Key) -> String {
    let name = k.path.rsplit('.').next().unwrap().trim_end_matches("[]");
    schema.structs[&k.section]
        .1
        .iter()
        .find(|f| f.name == name)
        .unwrap()
        .ty
        .clone()
}

/// The key list read from the source is the one serde takes: for each section, an unknown
/// key is refused with the list of known ones, which must be the page's.
#[test]
fn the_config_page_lists_every_key_serde_takes_and_no_other() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let src = std::fs::read_to_string(root.join("src/config/schema.rs")).unwrap();
    let (_, keys) = config_keys(&src);
    assert!(keys.len() > 60, "only {} keys read", keys.len());
    let mut sections: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for k in &keys {
        let leaf = k.path.rsplit('.').next().unwrap().trim_end_matches("[]");
        sections
            .entry(k.section_path.clone())
            .or_default()
            .insert(leaf.to_string());
    }
    let sample: serde_yaml::Value = serde_yaml::from_str(SAMPLE).unwrap();
    for (path, listed) in &sections {
        let mut doc = sample.clone();
        let section = at_mut(&mut doc, path);
        if section.is_null() {
            *section = serde_yaml::Value::Mapping(Default::default());
        }
        section
            .as_mapping_mut()
            .unwrap_or_else(|| panic!("{path} is not a mapping in the sample"))
            .insert("zz_not_a_key".into(), 1.into());
        let err = serde_yaml::from_value::<clawdbot::config::Config>(doc)
            .expect_err("an unknown key is refused")
            .to_string();
        let expected = err
            .split_once("expected")
            .unwrap_or_else(|| panic!("{path}: {err}"))
            .1;
        let known: BTreeSet<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        assert_eq!(&known, listed, "section {path:?}: serde takes {known:?}");
    }
}

/// Every default the page shows is the loader's: setting each key to the shown value
/// changes nothing.
#[test]
fn the_defaults_on_the_config_page_are_the_loaders() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let page = std::fs::read_to_string(root.join("man/clawdbot.yaml.5")).unwrap();
    let base = clawdbot::config::parse(SAMPLE).unwrap();
    let mut checked = 0;
    for block in page.split(".TP\n").skip(1) {
        let Some(path) = block
            .strip_prefix("\\fB")
            .and_then(|b| b.split_once("\\fR"))
            .map(|(p, _)| p.replace("\\-", "-"))
        else {
            continue;
        };
        let Some(shown) = block.split("Default: ").nth(1) else {
            continue;
        };
        let shown = shown.split_once(".\n").map(|(v, _)| v).unwrap_or(shown);
        let shown = shown.replace("\\-", "-").replace("\\e", "\\");
        if shown == "unset" || shown.ends_with("(none)") || path.contains('[') {
            continue;
        }
        let value: serde_yaml::Value =
            serde_yaml::from_str(&shown).unwrap_or_else(|e| panic!("{path}: {shown:?}: {e}"));
        let mut doc: serde_yaml::Value = serde_yaml::from_str(SAMPLE).unwrap();
        let (parent, leaf) = path.rsplit_once('.').unwrap_or(("", &path));
        let section = at_mut(&mut doc, parent);
        if section.is_null() {
            *section = serde_yaml::Value::Mapping(Default::default());
        }
        section.as_mapping_mut().unwrap().insert(leaf.into(), value);
        let text = serde_yaml::to_string(&doc).unwrap();
        let with = clawdbot::config::parse(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(with, base, "{path}: the page says the default is {shown}");
        checked += 1;
    }
    assert!(checked > 40, "only {checked} defaults checked");
}

/// The pages render with groff without a warning, for a UTF-8 terminal and for an ASCII
/// one (what `man -l` uses in the C locale).
#[test]
#[ignore = "needs groff (apt-get install groff-base; .ci/run installs it)"]
fn every_man_page_renders_without_warnings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut rendered = 0;
    for entry in std::fs::read_dir(root.join("man")).unwrap() {
        let path = entry.unwrap().path();
        for device in ["-Tutf8", "-Tascii"] {
            let out = std::process::Command::new("groff")
                .args(["-man", device, "-ww", "-z"])
                .arg(&path)
                .output()
                .expect("groff");
            let warnings = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && warnings.trim().is_empty(),
                "{} ({device}): {warnings}",
                path.display()
            );
        }
        rendered += 1;
    }
    assert!(rendered > 20, "only {rendered} pages");
}

/// The pages say what the issue found missing: real sections, defined folders, no page
/// that does not exist.
#[test]
fn man_pages_have_the_sections_and_refer_only_to_pages_that_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let generated = pages(root);
    let names: BTreeSet<String> = generated
        .iter()
        .map(|(p, _)| {
            let file = p.trim_start_matches("man/");
            let (name, section) = file.rsplit_once('.').unwrap();
            format!("{name}({section})")
        })
        .collect();
    for (path, body) in &generated {
        let text = String::from_utf8_lossy(body);
        let sections: &[&str] = if path.ends_with(".5") {
            &["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "\"SEE ALSO\""]
        } else {
            &[
                "NAME",
                "SYNOPSIS",
                "DESCRIPTION",
                "OPTIONS",
                "FILES",
                "ENVIRONMENT",
                "\"EXIT STATUS\"",
                "\"SEE ALSO\"",
            ]
        };
        for s in sections {
            assert!(text.contains(&format!("\n.SH {s}\n")), "{path}: no {s}");
        }
        if text.contains("CONFIG_DIR") {
            assert!(
                text.contains("/etc/clawdbot") && text.contains("~/.config/clawdbot"),
                "{path}"
            );
        }
        // Every page it names, in SEE ALSO or the subcommand list, exists.
        let plain = text
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fR", "");
        for (at, _) in plain.match_indices("clawdbot") {
            let rest = &plain[at..];
            let word: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-.()".contains(*c))
                .collect();
            if let Some(end) = word.find(')') {
                let reference = &word[..=end];
                if reference.ends_with("(1)") || reference.ends_with("(5)") {
                    assert!(names.contains(reference), "{path} names {reference}");
                }
            }
        }
    }
    let start = generated
        .iter()
        .find(|(p, _)| p == "man/clawdbot-daemon-start.1")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&start.1).contains(".SH EXAMPLES"),
        "daemon start has no examples"
    );
}
