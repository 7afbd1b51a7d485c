//! The node's modules import one another without a circle (issue 14): a
//! module (a file of `src/`, or a folder with everything under it) that
//! names `crate::other` depends on `other`, and no dependency leads back.
//! The CLI's modules are held to the same rule.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on I/O failures

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Every `crate::name` in `text`.
fn crate_paths(text: &str) -> impl Iterator<Item = String> + '_ {
    text.match_indices("crate::").filter_map(|(at, _)| {
        let rest = &text[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        (!name.is_empty()).then_some(name)
    })
}

fn collect(dir: &Path, module: &str, graph: &mut Graph) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, module, graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            graph
                .entry(module.to_owned())
                .or_default()
                .extend(crate_paths(&text));
        }
    }
}

fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        if path.is_dir() {
            collect(&path, &name, &mut graph);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            graph.entry(name).or_default().extend(crate_paths(&text));
        }
    }
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    for (name, deps) in graph.iter_mut() {
        deps.retain(|d| names.contains(d) && d != name);
    }
    graph
}

/// A circle through `start`, if there is one.
fn circle_through(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_owned(), vec![start.to_owned()])];
    let mut seen = BTreeSet::new();
    while let Some((at, path)) = stack.pop() {
        for next in &graph[&at] {
            if next == start {
                let mut circle = path.clone();
                circle.push(start.to_owned());
                return Some(circle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push((next.clone(), longer));
            }
        }
    }
    None
}

fn assert_no_circle(src: &Path) {
    let graph = module_graph(src);
    assert!(graph.len() > 3, "modules found in {}", src.display());
    for name in graph.keys() {
        if let Some(circle) = circle_through(&graph, name) {
            panic!(
                "{}: modules import each other in a circle: {}",
                src.display(),
                circle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_nodes_modules_import_each_other_without_a_circle() {
    assert_no_circle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
}

/// Inside one folder of `src/`: its files (but `mod.rs`, the folder's own
/// root) and which siblings each names, as `crate::folder::file` or
/// `super::file`.
fn folder_graph(folder: &Path) -> Graph {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    let prefix = format!("crate::{name}::");
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if stem == "mod" || path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(&prefix, "crate::")
            .replace("super::", "crate::");
        graph.entry(stem).or_default().extend(crate_paths(&text));
    }
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    for (name, deps) in graph.iter_mut() {
        deps.retain(|d| names.contains(d) && d != name);
    }
    graph
}

/// Issue 14: the node's `src/` is in folders by role and service, and no
/// two files of a folder import each other in a circle either.
#[test]
fn the_nodes_folders_hold_no_circle_inside_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            let graph = folder_graph(&path);
            for name in graph.keys() {
                if let Some(circle) = circle_through(&graph, name) {
                    panic!("{}: a circle: {}", path.display(), circle.join(" -> "));
                }
            }
            folders.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    folders.sort();
    assert_eq!(
        folders,
        [
            "automation",
            "car",
            "device",
            "devices",
            "hub",
            "ota",
            "phone",
            "share"
        ]
    );
    // A circle between two files of a folder is seen.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("car");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("a.rs"), "use crate::car::b::X;").unwrap();
    std::fs::write(folder.join("b.rs"), "use super::a::Y;").unwrap();
    let graph = folder_graph(&folder);
    assert!(circle_through(&graph, "a").is_some());
}

#[test]
fn the_clis_modules_import_each_other_without_a_circle() {
    assert_no_circle(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../tether-cli/src"));
}

#[test]
fn a_circle_is_found() {
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .fold(Graph::new(), |mut g, (from, to)| {
            g.entry(from.into()).or_default().insert(to.into());
            g.entry(to.into()).or_default();
            g
        });
    assert_eq!(
        circle_through(&graph, "a").unwrap(),
        ["a", "b", "c", "a"].map(String::from)
    );
    assert!(circle_through(&graph, "d").is_none());
}

/// The crates of ours a manifest depends on (`tether-*` under
/// `[dependencies]`), dev-dependencies aside.
fn our_dependencies(manifest: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(manifest),
    )
    .unwrap();
    let mut section = String::new();
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_owned();
        } else if section == "[dependencies]" && line.starts_with("tether-") {
            out.insert(line.split(['.', ' ', '=']).next().unwrap().to_owned());
        }
    }
    out
}

/// Issue 14: the CLI and the FFI stand on the node alone (and the CLI on
/// the bench for `tether bench`); what they need of lower crates the node
/// re-exports.
#[test]
fn the_cli_and_the_ffi_depend_on_the_node_only() {
    assert_eq!(
        our_dependencies("tether-cli/Cargo.toml"),
        BTreeSet::from(["tether-bench".to_owned(), "tether-node".to_owned()])
    );
    assert_eq!(
        our_dependencies("tether-ffi/Cargo.toml"),
        BTreeSet::from(["tether-node".to_owned()])
    );
    // And the parser sees a dependency where there is one.
    assert!(our_dependencies("tether-node/Cargo.toml").contains("tether-session"));
}
