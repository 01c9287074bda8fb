//! The architecture as DESIGN.md lays it out, checked on the sources and the dependency
//! graph: no import cycle between the files of any crate (a vocabulary several files
//! share lives in a leaf module), the pure shard layer has no runtime, storage engine or
//! network under it, and the embedded library pulls in no actors, gRPC or Torch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of `file` under the crate root directory `src` (`src/a/b.rs` and
/// `src/a/b/mod.rs` are `[a, b]`; the root file is `[]`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        name => parts.push(name.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// `use` trees flattened into paths: `a::{b, c::d}` gives `a::b` and `a::c::d`.
fn flatten(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = &tree[..open];
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut part = String::new();
        for c in inner.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    flatten(&format!("{prefix}{head}"), &part, out);
                    part.clear();
                    continue;
                }
                _ => {}
            }
            part.push(c);
        }
        if !part.trim().is_empty() {
            flatten(&format!("{prefix}{head}"), &part, out);
        }
    } else if !tree.is_empty() {
        let path = tree.split(" as ").next().unwrap().trim();
        out.push(format!("{prefix}{path}"));
    }
}

/// The source without comments, so doc links and prose do not count as imports.
fn code_of(source: &str) -> String {
    source
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What one file refers to inside its crate: `crate::`, `super::` and `self::` paths of
/// its `use` statements (but not the root's or a `mod.rs`'s `pub use` re-exports, which
/// are the facade, not a use) and of its code.
fn references(code: &str, facade: bool) -> Vec<String> {
    let mut paths = Vec::new();
    let mut lines = code.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        let is_reexport = trimmed.starts_with("pub");
        let Some(tree) = ["use ", "pub use ", "pub(crate) use ", "pub(super) use "]
            .iter()
            .find_map(|start| trimmed.strip_prefix(start))
        else {
            continue;
        };
        let mut statement = tree.to_string();
        while !statement.contains(';') {
            match lines.next() {
                Some(more) => statement.push_str(more),
                None => break,
            }
        }
        let statement = statement.split(';').next().unwrap_or_default();
        if !(facade && is_reexport) {
            flatten("", statement, &mut paths);
        }
    }
    // Paths in code, such as `crate::meta::route_key(..)`.
    for anchor in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(anchor) {
            let start = from + at;
            let preceded = code[..start]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if !preceded {
                paths.push(path.trim_end_matches(':').to_string());
            }
            from = start + anchor.len();
        }
    }
    paths
        .into_iter()
        .filter(|p| p.starts_with("crate::") || p.starts_with("super::") || p.starts_with("self::"))
        .collect()
}

/// The file a path from module `from` lands in: the deepest module of the path that has
/// a file, followed through that module's `pub use` of the next name.
fn resolve(
    path: &str,
    from: &[String],
    files: &BTreeMap<Vec<String>, PathBuf>,
    reexports: &BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>>,
) -> Option<Vec<String>> {
    let mut segments: Vec<String> = Vec::new();
    let mut parts = path.split("::").peekable();
    match parts.next()? {
        "crate" => {}
        "self" => segments.extend_from_slice(from),
        "super" => {
            segments.extend_from_slice(&from[..from.len().saturating_sub(1)]);
            while parts.peek() == Some(&"super") {
                parts.next();
                segments.pop();
            }
        }
        _ => return None,
    }
    segments.extend(parts.map(str::to_string));
    let mut module: Vec<String> = Vec::new();
    for (i, segment) in segments.iter().enumerate() {
        let mut deeper = module.clone();
        deeper.push(segment.clone());
        if files.contains_key(&deeper) {
            module = deeper;
            continue;
        }
        // A name the module re-exports from one of its submodules.
        if let Some(target) = reexports.get(&module).and_then(|r| r.get(segment)) {
            let _ = i;
            return Some(target.clone());
        }
        break;
    }
    Some(module)
}

/// The `pub use` re-exports of a facade file: name -> the module it comes from.
fn reexports_of(
    code: &str,
    module: &[String],
    files: &BTreeMap<Vec<String>, PathBuf>,
) -> BTreeMap<String, Vec<String>> {
    let mut names = BTreeMap::new();
    for line_start in code.match_indices("pub use ").map(|(at, _)| at) {
        let tail = &code[line_start + 8..];
        let end = tail.find(';').unwrap_or(tail.len());
        let mut paths = Vec::new();
        flatten("", &tail[..end], &mut paths);
        for path in paths {
            let segments: Vec<&str> = path.split("::").collect();
            let (Some(name), true) = (segments.last(), segments.len() >= 2) else {
                continue;
            };
            let mut target = module.to_vec();
            target.push(segments[0].to_string());
            if files.contains_key(&target) {
                names.insert(name.to_string(), target);
            }
        }
    }
    names
}

/// Import cycles among the files of the crate rooted at `root` (its `lib.rs` or
/// `main.rs`), each as the files it runs through.
fn cycles_in(src: &Path, root: &Path) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    rust_files(src, &mut all);
    // A binary under src/bin is a crate of its own.
    let bin = src.join("bin");
    let members: Vec<PathBuf> = all
        .into_iter()
        .filter(|f| !f.starts_with(&bin) || root.starts_with(&bin))
        .filter(|f| f.file_name().is_none_or(|n| n != "main.rs" || f == root))
        .filter(|f| f.file_name().is_none_or(|n| n != "lib.rs" || f == root))
        .collect();
    let files: BTreeMap<Vec<String>, PathBuf> = members
        .iter()
        .map(|f| (module_of(src, f), f.clone()))
        .collect();
    let code: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|(m, f)| (m.clone(), code_of(&std::fs::read_to_string(f).unwrap())))
        .collect();
    let reexports: BTreeMap<Vec<String>, BTreeMap<String, Vec<String>>> = code
        .iter()
        .map(|(m, c)| (m.clone(), reexports_of(c, m, &files)))
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, source) in &code {
        let facade = files[module]
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs" || n == "main.rs");
        for path in references(source, facade) {
            if let Some(target) = resolve(&path, module, &files, &reexports)
                && &target != module
                && !module.starts_with(&target)
            {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|component| component.len() > 1)
        .map(|component| {
            component
                .iter()
                .map(|m| {
                    files[m]
                        .strip_prefix(workspace())
                        .unwrap()
                        .display()
                        .to_string()
                })
                .collect()
        })
        .collect()
}

/// Tarjan's strongly connected components.
fn strongly_connected(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        components: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[w].min(s.low[v]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.index[w].min(s.low[v]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.clone());
                if w == v {
                    break;
                }
            }
            s.components.push(component);
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v) {
            visit(&mut state, v);
        }
    }
    state.components
}

/// Every crate root of the workspace: each member's `src/lib.rs`, `src/main.rs` and
/// `src/bin/*.rs`.
fn crate_roots() -> Vec<(PathBuf, PathBuf)> {
    let mut roots = Vec::new();
    let mut manifests = Vec::new();
    for entry in std::fs::read_dir(workspace()).unwrap().flatten() {
        for dir in [entry.path(), entry.path().join("train")] {
            if dir.join("Cargo.toml").exists() && dir.join("src").exists() {
                manifests.push(dir);
            }
        }
    }
    for dir in manifests {
        let src = dir.join("src");
        for root in ["lib.rs", "main.rs"] {
            if src.join(root).exists() {
                roots.push((src.clone(), src.join(root)));
            }
        }
        for entry in std::fs::read_dir(src.join("bin"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if entry.path().extension().is_some_and(|e| e == "rs") {
                roots.push((src.join("bin"), entry.path()));
            }
        }
    }
    roots
}

#[test]
fn no_source_file_imports_one_that_imports_it_back() {
    let mut found = Vec::new();
    let roots = crate_roots();
    assert!(
        roots.len() > 10,
        "the workspace's crates were found: {roots:?}"
    );
    for (src, root) in roots {
        for cycle in cycles_in(&src, &root) {
            found.push(cycle.join(" <-> "));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\npub use a::A;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\npub struct A(B);\n").unwrap();
    std::fs::write(
        src.join("b.rs"),
        "pub struct B;\nfn f() -> crate::A { todo() }\n",
    )
    .unwrap();
    let edges = {
        let mut all = Vec::new();
        rust_files(&src, &mut all);
        all.len()
    };
    assert_eq!(edges, 3);
    // b reaches a through the root's re-export of `A`.
    let found = cycles_in_for_test(&src);
    assert_eq!(found.len(), 1, "{found:?}");
}

fn cycles_in_for_test(src: &Path) -> Vec<Vec<String>> {
    let files: BTreeMap<Vec<String>, PathBuf> = {
        let mut all = Vec::new();
        rust_files(src, &mut all);
        all.into_iter().map(|f| (module_of(src, &f), f)).collect()
    };
    let code: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|(m, f)| (m.clone(), code_of(&std::fs::read_to_string(f).unwrap())))
        .collect();
    let reexports: BTreeMap<_, _> = code
        .iter()
        .map(|(m, c)| (m.clone(), reexports_of(c, m, &files)))
        .collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, source) in &code {
        for path in references(source, module.is_empty()) {
            if let Some(target) = resolve(&path, module, &files, &reexports)
                && &target != module
            {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    strongly_connected(&edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| c.iter().map(|m| m.join("::")).collect())
        .collect()
}

/// The packages `package` depends on for building (normal dependencies, with the features
/// the workspace gives it), from `cargo tree`.
fn dependencies(package: &str) -> BTreeSet<String> {
    let output = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn the_pure_shard_layer_has_no_runtime_engine_or_network_under_it() {
    let deps = dependencies("hanse-shard");
    for forbidden in ["tokio", "openraft", "rocksdb", "tonic", "actix"] {
        assert!(
            !deps.contains(forbidden),
            "hanse-shard depends on {forbidden}"
        );
    }
    assert!(
        deps.contains("serde") && deps.contains("thiserror"),
        "{deps:?}"
    );
}

#[test]
fn the_embedded_library_pulls_in_no_actors_grpc_or_torch() {
    let deps = dependencies("hanse");
    for forbidden in [
        "actix",
        "tonic",
        "tch",
        "torch-sys",
        "hanse-planner",
        "hanse-node",
    ] {
        assert!(!deps.contains(forbidden), "hanse depends on {forbidden}");
    }
    assert!(deps.contains("hanse-storage-rocksdb"), "{deps:?}");
}

#[test]
fn only_the_training_crate_links_torch() {
    for package in [
        "hanse-planner",
        "hanse-node",
        "hanse-cli",
        "hanse-consensus",
        "hanse-storage",
    ] {
        assert!(
            !dependencies(package).contains("tch"),
            "{package} depends on tch"
        );
    }
    assert!(dependencies("hanse-planner-train").contains("tch"));
}

#[test]
fn consensus_the_planner_and_the_storage_traits_build_without_rocksdb() {
    for package in [
        "hanse-consensus",
        "hanse-planner",
        "hanse-storage",
        "hanse-client",
    ] {
        let deps = dependencies(package);
        assert!(!deps.contains("rocksdb"), "{package} depends on rocksdb");
    }
}
