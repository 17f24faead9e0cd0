//! The server's source is in layers (see the `//!` of `src/lib.rs`): `core` < `session` <
//! `strategy` < `server` < `cli`. This test reads `src/` and fails when a file refers to a layer
//! above its own, or when files refer to each other in a circle (within a layer too), so the
//! layering cannot rot silently. References are the paths `crate::…`, `super::…` and, in a
//! `mod.rs`, paths into its own child modules; `#[cfg(test)]` code and comments are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first; a file may refer to its own layer and those below.
const LAYERS: &[&str] = &["core", "session", "strategy", "server", "cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, as a path relative to it (`core/stats.rs`).
fn files(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(src()).expect("under src");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The module path of a file: `core/stats.rs` → [core, stats]; `strategy/mod.rs` → [strategy].
fn module_of(file: &str) -> Vec<String> {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The file that defines a module path, or the nearest enclosing module's file (an item in it).
fn file_of(module: &[String], known: &BTreeSet<String>) -> Option<String> {
    for len in (0..=module.len()).rev() {
        let prefix = module[..len].join("/");
        let candidates = if len == 0 {
            vec!["lib.rs".to_string()]
        } else {
            vec![format!("{prefix}.rs"), format!("{prefix}/mod.rs")]
        };
        if let Some(found) = candidates.into_iter().find(|c| known.contains(c)) {
            return Some(found);
        }
    }
    None
}

/// The code of a file without comments and without its `#[cfg(test)]` part.
fn code(file: &str) -> String {
    let text = std::fs::read_to_string(src().join(file)).expect("read source");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths that start with `prefix` (`crate::`, `super::`, `child::`), each as its segments,
/// with `use a::{b, c}` groups cut at the brace (the group's parent is what is referred to).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut at = 0;
    while let Some(offset) = code[at..].find(prefix) {
        let start = at + offset;
        at = start + prefix.len();
        let preceded_by_ident = start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] == b'_'
                || bytes[start - 1] == b':');
        if preceded_by_ident {
            continue;
        }
        let rest: String = code[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let segments: Vec<String> = rest
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        found.push(segments);
    }
    found
}

/// Which files each file refers to.
fn references() -> BTreeMap<String, BTreeSet<String>> {
    let mut list = Vec::new();
    files(&src(), &mut list);
    let known: BTreeSet<String> = list.iter().cloned().collect();
    let mut graph = BTreeMap::new();
    for file in &list {
        let code = code(file);
        let module = module_of(file);
        let mut targets = BTreeSet::new();
        for path in paths_after(&code, "crate::") {
            targets.extend(file_of(&path, &known));
        }
        // `super::` from `a/b.rs` (module a::b) is module a; from `a/mod.rs` (module a), the root.
        let parent = &module[..module.len().saturating_sub(1)];
        for path in paths_after(&code, "super::") {
            let full: Vec<String> = parent.iter().cloned().chain(path).collect();
            targets.extend(file_of(&full, &known));
        }
        // A module file referring into its child modules (`rayon::Rayon::start` in mod.rs).
        if file.ends_with("mod.rs") || file == "lib.rs" {
            let dir = file.rsplit_once('/').map_or("", |(d, _)| d);
            for child in known
                .iter()
                .filter(|k| k.rsplit_once('/').map_or("", |(d, _)| d) == dir && *k != file)
            {
                let name = child
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .trim_end_matches(".rs");
                for path in paths_after(&code, &format!("{name}::")) {
                    let full: Vec<String> = module
                        .iter()
                        .cloned()
                        .chain([name.to_string()])
                        .chain(path)
                        .collect();
                    targets.extend(file_of(&full, &known));
                }
            }
        }
        targets.remove(file);
        graph.insert(file.clone(), targets);
    }
    graph
}

fn layer_of(file: &str) -> Option<usize> {
    let top = module_of(file).into_iter().next()?;
    LAYERS.iter().position(|layer| *layer == top)
}

#[test]
fn no_file_refers_to_a_layer_above_its_own() {
    let graph = references();
    assert!(
        graph.len() > 10 && graph.values().map(BTreeSet::len).sum::<usize>() > 20,
        "the scan found too little to judge: {graph:#?}"
    );
    let mut wrong = Vec::new();
    for (file, targets) in &graph {
        let Some(own) = layer_of(file) else {
            continue; // lib.rs and main.rs sit above every layer
        };
        for target in targets {
            match layer_of(target) {
                Some(layer) if layer <= own => {}
                Some(layer) => wrong.push(format!(
                    "{file} ({}) -> {target} ({})",
                    LAYERS[own], LAYERS[layer]
                )),
                None => wrong.push(format!(
                    "{file} -> {target}: use the layer's own path, not the crate root"
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "references against the layer order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_files_refer_to_each_other_in_a_circle() {
    let graph = references();
    // Depth-first search; a file met again while still on the stack closes a circle.
    fn visit(
        file: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|f| f == file) {
            let mut circle = stack[at..].to_vec();
            circle.push(file.to_string());
            return Some(circle);
        }
        if done.contains(file) {
            return None;
        }
        stack.push(file.to_string());
        for next in graph.get(file).into_iter().flatten() {
            if let Some(circle) = visit(next, graph, stack, done) {
                return Some(circle);
            }
        }
        stack.pop();
        done.insert(file.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for file in graph.keys() {
        if let Some(circle) = visit(file, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", circle.join(" -> "));
        }
    }
}

/// The scan itself: a circle and an upward reference in a made-up pair of files are found.
#[test]
fn the_scan_sees_paths_in_use_groups_and_super() {
    let code = "use crate::core::stats::{Counters, Outcome};\nuse super::live::LiveSessions;\nfoo::crate::x";
    assert_eq!(
        paths_after(code, "crate::"),
        vec![vec!["core".to_string(), "stats".to_string()]]
    );
    assert_eq!(
        paths_after(code, "super::"),
        vec![vec!["live".to_string(), "LiveSessions".to_string()]]
    );
    let known: BTreeSet<String> = ["lib.rs", "core/mod.rs", "core/stats.rs", "strategy/live.rs"]
        .map(str::to_string)
        .into();
    let stats = ["core", "stats", "Counters"].map(str::to_string);
    assert_eq!(file_of(&stats, &known).as_deref(), Some("core/stats.rs"));
    let item = ["core", "Thing"].map(str::to_string);
    assert_eq!(file_of(&item, &known).as_deref(), Some("core/mod.rs"));
    assert_eq!(layer_of("strategy/live.rs"), Some(2));
    assert_eq!(layer_of("server.rs"), Some(3));
}
