//! Comment-preserving edits of the node config text, for `service …`, `relay add|remove` and the
//! `names:` that pairing adds.
//!
//! A serde round-trip would drop every comment a user wrote, so these functions edit lines instead.
//! They understand the block layout that `peerup init` writes (and that people write by hand):
//! top-level keys at column 0, children indented by a consistent step. Callers re-parse the result
//! and check the intended change before writing, so an edit that would break the file never lands.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::load::parse_yaml;
use super::schema::NodeConfig;
use super::validate::{node_warnings, validate_node};

/// Edits the node config file at `path`: applies `edit` to its text, re-parses the result, checks
/// the intended change with `verify` and that the result passes validation as a start would check
/// it (see [`refuse_new_problems`]), and only then writes it atomically (mode 0600).
pub fn rewrite_node_file(
    path: &Path,
    edit: impl FnOnce(&mut ConfigText) -> Result<()>,
    verify: impl FnOnce(&NodeConfig) -> bool,
) -> Result<()> {
    rewrite(path, edit, verify, true)
}

/// Like [`rewrite_node_file`] without the validation: only for an edit the user forced knowing
/// that the result will not start (`relay remove --force` of the last relay).
pub fn rewrite_node_file_forced(
    path: &Path,
    edit: impl FnOnce(&mut ConfigText) -> Result<()>,
    verify: impl FnOnce(&NodeConfig) -> bool,
) -> Result<()> {
    rewrite(path, edit, verify, false)
}

fn rewrite(
    path: &Path,
    edit: impl FnOnce(&mut ConfigText) -> Result<()>,
    verify: impl FnOnce(&NodeConfig) -> bool,
    validate: bool,
) -> Result<()> {
    // From the read to the rename, so that a concurrent edit is never written over.
    let _lock = peerup_core::fsutil::lock_exclusive(path)?;
    let before = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config {}", path.display()))?;
    let mut text = ConfigText::new(&before);
    edit(&mut text)?;
    let after = text.render();
    let (parsed, _) = parse_yaml::<NodeConfig>(&after)
        .context("the edit would make the config unreadable; nothing was written")?;
    if !verify(&parsed) {
        bail!("could not apply the edit to {} safely; nothing was written", path.display());
    }
    if validate {
        refuse_new_problems(path, &before, &parsed)?;
    }
    peerup_core::fsutil::write_private_atomic(path, after.as_bytes())?;
    Ok(())
}

/// Fails when the edited config has a problem ([`validate_node`]) that the file did not have
/// before: the next start would refuse it. Problems it had already are not the edit's doing, and
/// must not block an edit (one that fixes another problem, say).
fn refuse_new_problems(path: &Path, before: &str, after: &NodeConfig) -> Result<()> {
    // Warnings count too: a start survives them, but an edit has no business adding one.
    let all = |c: &NodeConfig| {
        let mut v = validate_node(c).err().unwrap_or_default();
        v.extend(node_warnings(c));
        v
    };
    let old = parse_yaml::<NodeConfig>(before).ok().map(|(c, _)| all(&c)).unwrap_or_default();
    let new: Vec<String> =
        all(after).into_iter().filter(|p| !old.contains(p)).map(|p| p.to_string()).collect();
    if new.is_empty() {
        return Ok(());
    }
    bail!(
        "the edit would leave {} invalid ({}); nothing was written",
        path.display(),
        new.join("; ")
    )
}

/// A config file's text as lines.
#[derive(Debug, Clone)]
pub struct ConfigText {
    lines: Vec<String>,
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Whether a line carries YAML content (not blank, not a comment).
fn is_content(line: &str) -> bool {
    let t = line.trim_start();
    !t.is_empty() && !t.starts_with('#')
}

/// The value after `key:` on a line, without a trailing comment, if the line is that key.
fn key_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let t = line.trim_start();
    let rest = t
        .strip_prefix(key)
        .or_else(|| t.strip_prefix(&format!("\"{key}\"")))
        .or_else(|| t.strip_prefix(&format!("'{key}'")))?;
    let rest = rest.strip_prefix(':')?;
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some(strip_comment(rest).trim())
}

fn strip_comment(s: &str) -> &str {
    // A # starts a comment only after whitespace (or at the start), outside quotes.
    let mut quote = None;
    let mut prev_space = true;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if prev_space => return &s[..i],
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    s
}

/// A YAML double-quoted scalar.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Unquotes a simple scalar.
fn unquoted(s: &str) -> &str {
    let s = s.trim();
    s.strip_prefix('"')
        .and_then(|x| x.strip_suffix('"'))
        .or_else(|| s.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
        .unwrap_or(s)
}

/// A mapping block: its header line and the range of lines that belong to it.
#[derive(Debug, Clone, Copy)]
struct Block {
    header: usize,
    /// One past the last line with deeper indentation (trailing comments and blanks excluded).
    end: usize,
}

impl ConfigText {
    /// Splits text into lines.
    pub fn new(text: &str) -> Self {
        Self { lines: text.lines().map(String::from).collect() }
    }

    /// Joins the lines back, ending with a newline.
    pub fn render(&self) -> String {
        let mut s = self.lines.join("\n");
        s.push('\n');
        s
    }

    /// Finds `key:` at `indent` within `range`, with its block.
    fn find(&self, key: &str, indent: usize, range: std::ops::Range<usize>) -> Option<Block> {
        let header = range.clone().find(|&i| {
            indent_of(&self.lines[i]) == indent && key_value(&self.lines[i], key).is_some()
        })?;
        let mut end = header + 1;
        for i in header + 1..range.end {
            let l = &self.lines[i];
            if is_content(l) {
                if indent_of(l) <= indent && !l.trim_start().starts_with("- ") {
                    break;
                }
                if indent_of(l) < indent {
                    break;
                }
                end = i + 1;
            }
        }
        Some(Block { header, end })
    }

    fn value(&self, b: Block, key: &str) -> String {
        key_value(&self.lines[b.header], key).unwrap_or_default().to_string()
    }

    /// The indentation of the first content line inside a block, or `parent + 2`.
    fn child_indent(&self, b: Block, parent: usize) -> usize {
        (b.header + 1..b.end)
            .map(|i| &self.lines[i])
            .find(|l| is_content(l))
            .map(|l| indent_of(l))
            .filter(|&n| n > parent)
            .unwrap_or(parent + 2)
    }

    /// The names of the services defined in the `services:` block.
    fn service_block(&self, name: &str) -> Option<(Block, usize, Block)> {
        let services = self.find("services", 0, 0..self.lines.len())?;
        let step = self.child_indent(services, 0);
        let svc = self.find(name, step, services.header + 1..services.end)?;
        Some((services, step, svc))
    }

    /// Adds a service entry.
    pub fn add_service(&mut self, name: &str, addr: &str, protocol: Option<&str>) -> Result<()> {
        let entry = |step: usize| {
            let pad = " ".repeat(step);
            let mut v = vec![
                format!("{pad}{name}:"),
                format!("{pad}{pad}enabled: true"),
                format!("{pad}{pad}local_address: {}", quoted(addr)),
            ];
            if let Some(p) = protocol {
                v.push(format!("{pad}{pad}protocol: {}", quoted(p)));
            }
            v
        };
        match self.find("services", 0, 0..self.lines.len()) {
            None => {
                if self.lines.last().is_some_and(|l| !l.trim().is_empty()) {
                    self.lines.push(String::new());
                }
                self.lines.push("services:".into());
                self.lines.extend(entry(2));
            }
            Some(b) => match self.value(b, "services").as_str() {
                "" => {
                    let step = self.child_indent(b, 0);
                    let at = b.end;
                    self.lines.splice(at..at, entry(step));
                }
                "{}" => {
                    self.lines[b.header] = "services:".into();
                    self.lines.splice(b.header + 1..b.header + 1, entry(2));
                }
                other => bail!(
                    "cannot edit 'services: {other}' (flow style); rewrite it as a block mapping first"
                ),
            },
        }
        Ok(())
    }

    /// Removes a service entry; an emptied `services:` becomes `services: {}`.
    pub fn remove_service(&mut self, name: &str) -> Result<()> {
        let Some((services, _, svc)) = self.service_block(name) else {
            bail!("service not found in config text: {name}");
        };
        self.lines.drain(svc.header..svc.end);
        let remaining = services.end - (svc.end - svc.header);
        if !(services.header + 1..remaining).any(|i| is_content(&self.lines[i])) {
            self.lines[services.header] = "services: {}".into();
        }
        Ok(())
    }

    /// Sets `services.<name>.enabled`.
    pub fn set_service_enabled(&mut self, name: &str, enabled: bool) -> Result<()> {
        let Some((_, step, svc)) = self.service_block(name) else {
            bail!("service not found in config text: {name}");
        };
        let inner = self.child_indent(svc, step);
        let value = if enabled { "true" } else { "false" };
        let existing = (svc.header + 1..svc.end).find(|&i| {
            indent_of(&self.lines[i]) == inner && key_value(&self.lines[i], "enabled").is_some()
        });
        match existing {
            Some(i) => {
                let line = &self.lines[i];
                let comment = line.find(" #").map(|p| line[p..].to_string()).unwrap_or_default();
                self.lines[i] = format!("{}enabled: {value}{comment}", " ".repeat(inner));
            }
            None => {
                self.lines.insert(svc.header + 1, format!("{}enabled: {value}", " ".repeat(inner)));
            }
        }
        Ok(())
    }

    /// Appends relay addresses under `relay.addresses`.
    pub fn add_relay_addresses(&mut self, addrs: &[String]) -> Result<()> {
        let items = |indent: usize| -> Vec<String> {
            addrs.iter().map(|a| format!("{}- {}", " ".repeat(indent), quoted(a))).collect()
        };
        let Some(relay) = self.find("relay", 0, 0..self.lines.len()) else {
            if self.lines.last().is_some_and(|l| !l.trim().is_empty()) {
                self.lines.push(String::new());
            }
            self.lines.push("relay:".into());
            self.lines.push("  addresses:".into());
            self.lines.extend(items(4));
            return Ok(());
        };
        if !self.value(relay, "relay").is_empty() {
            bail!("cannot edit a flow-style 'relay:' section; rewrite it as a block mapping first");
        }
        let step = self.child_indent(relay, 0);
        match self.find("addresses", step, relay.header + 1..relay.end) {
            None => {
                let mut new = vec![format!("{}addresses:", " ".repeat(step))];
                new.extend(items(step * 2));
                self.lines.splice(relay.header + 1..relay.header + 1, new);
            }
            Some(a) => match self.value(a, "addresses").as_str() {
                "" => {
                    let indent = self.child_indent(a, step);
                    self.lines.splice(a.end..a.end, items(indent));
                }
                "[]" => {
                    self.lines[a.header] = format!("{}addresses:", " ".repeat(step));
                    self.lines.splice(a.header + 1..a.header + 1, items(step * 2));
                }
                other => bail!(
                    "cannot edit 'addresses: {other}' (flow style); rewrite it as a block list first"
                ),
            },
        }
        Ok(())
    }

    /// Adds `name: "<peer id>"` under `names:`.
    pub fn add_name(&mut self, name: &str, peer: &str) -> Result<()> {
        let item =
            |indent: usize| format!("{}{}: {}", " ".repeat(indent), quoted(name), quoted(peer));
        let Some(names) = self.find("names", 0, 0..self.lines.len()) else {
            if self.lines.last().is_some_and(|l| !l.trim().is_empty()) {
                self.lines.push(String::new());
            }
            self.lines.push("names:".into());
            self.lines.push(item(2));
            return Ok(());
        };
        match self.value(names, "names").as_str() {
            "" => {
                let indent = self.child_indent(names, 0);
                self.lines.insert(names.end, item(indent));
            }
            "{}" => {
                self.lines[names.header] = "names:".into();
                self.lines.insert(names.header + 1, item(2));
            }
            other => {
                bail!(
                    "cannot edit 'names: {other}' (flow style); rewrite it as a block mapping first"
                )
            }
        }
        Ok(())
    }

    /// Removes one relay address; the list becomes `addresses: []` when emptied.
    pub fn remove_relay_address(&mut self, addr: &str) -> Result<()> {
        let Some(relay) = self.find("relay", 0, 0..self.lines.len()) else {
            bail!("no relay section in config");
        };
        let step = self.child_indent(relay, 0);
        let Some(a) = self.find("addresses", step, relay.header + 1..relay.end) else {
            bail!("no relay.addresses in config");
        };
        let item = (a.header + 1..a.end).find(|&i| {
            let t = strip_comment(self.lines[i].trim_start());
            t.strip_prefix("- ").is_some_and(|v| unquoted(v) == addr)
        });
        let Some(i) = item else {
            bail!("relay address not found in config text: {addr}");
        };
        self.lines.remove(i);
        let left = (a.header + 1..a.end - 1).any(|j| self.lines[j].trim_start().starts_with("- "));
        if !left {
            self.lines[a.header] = format!("{}addresses: []", " ".repeat(step));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_name_to_empty_block_and_missing_sections() {
        let id = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";
        for (before, after) in [
            (
                "version: 1\nnames: {}  # friends\n",
                format!("version: 1\nnames:\n  \"bob\": \"{id}\"\n"),
            ),
            ("version: 1\n", format!("version: 1\n\nnames:\n  \"bob\": \"{id}\"\n")),
            (
                "names:\n    a: \"x\"\n# tail\n",
                format!("names:\n    a: \"x\"\n    \"bob\": \"{id}\"\n# tail\n"),
            ),
        ] {
            let mut t = ConfigText::new(before);
            t.add_name("bob", id).unwrap();
            assert_eq!(t.render(), after);
        }
        assert!(ConfigText::new("names: {a: b}\n").add_name("bob", id).is_err());
    }

    const BASE: &str = "\
# my config
version: 1

relay:
  addresses:
    - \"/ip4/1.1.1.1/tcp/7777/p2p/A\"   # first relay
  reservation_interval: \"2m\"

services: {}

# Friendly names
names: {}
";

    #[test]
    fn add_service_to_empty_map_then_append() {
        let mut t = ConfigText::new(BASE);
        t.add_service("ssh", "localhost:22", None).unwrap();
        t.add_service("web", "127.0.0.1:80", Some("/x/1")).unwrap();
        let out = t.render();
        assert!(out.contains(
            "services:\n  ssh:\n    enabled: true\n    local_address: \"localhost:22\"\n  web:\n    enabled: true\n    local_address: \"127.0.0.1:80\"\n    protocol: \"/x/1\"\n\n# Friendly names\n"
        ), "{out}");
        assert!(out.starts_with("# my config\n"));
    }

    #[test]
    fn enable_disable_and_remove_keep_other_lines() {
        let mut t = ConfigText::new(BASE);
        t.add_service("ssh", "localhost:22", None).unwrap();
        t.add_service("web", "localhost:80", None).unwrap();
        t.set_service_enabled("ssh", false).unwrap();
        assert!(t.render().contains("  ssh:\n    enabled: false\n"));
        t.remove_service("ssh").unwrap();
        let out = t.render();
        assert!(!out.contains("ssh"), "{out}");
        assert!(out.contains("  web:\n"));
        t.remove_service("web").unwrap();
        assert_eq!(t.render(), BASE);
    }

    #[test]
    fn services_with_four_space_indent_and_comments() {
        let text = "services:\n    # the box\n    ssh:\n        local_address: a:22  # note\n";
        let mut t = ConfigText::new(text);
        t.set_service_enabled("ssh", false).unwrap();
        t.add_service("web", "b:80", None).unwrap();
        assert_eq!(
            t.render(),
            "services:\n    # the box\n    ssh:\n        enabled: false\n        local_address: a:22  # note\n    web:\n        enabled: true\n        local_address: \"b:80\"\n"
        );
    }

    #[test]
    fn relay_add_and_remove() {
        let mut t = ConfigText::new(BASE);
        t.add_relay_addresses(&["/ip4/2.2.2.2/tcp/7777/p2p/B".into()]).unwrap();
        let out = t.render();
        assert!(out.contains(
            "    - \"/ip4/1.1.1.1/tcp/7777/p2p/A\"   # first relay\n    - \"/ip4/2.2.2.2/tcp/7777/p2p/B\"\n  reservation_interval"
        ), "{out}");
        t.remove_relay_address("/ip4/1.1.1.1/tcp/7777/p2p/A").unwrap();
        t.remove_relay_address("/ip4/2.2.2.2/tcp/7777/p2p/B").unwrap();
        assert!(t.render().contains("relay:\n  addresses: []\n  reservation_interval"));
        t.add_relay_addresses(&["/ip4/3.3.3.3/tcp/1/p2p/C".into()]).unwrap();
        assert!(t.render().contains(
            "relay:\n  addresses:\n    - \"/ip4/3.3.3.3/tcp/1/p2p/C\"\n  reservation_interval"
        ));
        assert!(t.remove_relay_address("/nope").is_err());
    }

    #[test]
    fn missing_sections_are_appended() {
        let mut t = ConfigText::new("version: 1\n");
        t.add_service("ssh", "localhost:22", None).unwrap();
        t.add_relay_addresses(&["/ip4/1.1.1.1/tcp/1/p2p/A".into()]).unwrap();
        assert_eq!(
            t.render(),
            "version: 1\n\nservices:\n  ssh:\n    enabled: true\n    local_address: \"localhost:22\"\n\nrelay:\n  addresses:\n    - \"/ip4/1.1.1.1/tcp/1/p2p/A\"\n"
        );
    }

    #[test]
    fn an_edit_that_would_not_start_is_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        let id = "12D3KooWNq8c1fNjXwhRoWxSXT419bumWQFoTbowCwHEa96RJRg6";
        let text =
            format!("relay:\n  addresses: [\"/ip4/1.2.3.4/tcp/7777/p2p/{id}\"]\nnames: {{}}\n");
        std::fs::write(&path, &text).unwrap();
        for bad in ["a b", "12D3KooWPrmh163sTHW3mYQm7YsLsSR2wr71fPp4g6yjuGv3sGQt"] {
            let err =
                rewrite_node_file(&path, |t| t.add_name(bad, id), |c| c.names.contains_key(bad))
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("nothing was written") && err.contains(&format!("names.{bad}")),
                "{err}"
            );
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                text,
                "{bad}: the file is untouched"
            );
        }
        rewrite_node_file(&path, |t| t.add_name("home", id), |c| c.names.contains_key("home"))
            .unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("\"home\""));
        // A problem the file had already does not block an unrelated edit.
        let broken = format!("{text}services:\n  ssh:\n    local_address: nope\n");
        std::fs::write(&path, &broken).unwrap();
        rewrite_node_file(&path, |t| t.add_name("nas", id), |c| c.names.contains_key("nas"))
            .unwrap();
    }

    #[test]
    fn flow_style_is_refused_not_mangled() {
        let mut t = ConfigText::new("services: {ssh: {local_address: \"a:1\"}}\n");
        assert!(t.add_service("web", "b:2", None).is_err());
        assert_eq!(t.render(), "services: {ssh: {local_address: \"a:1\"}}\n");
    }
}
