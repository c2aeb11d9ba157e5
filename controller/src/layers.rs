//! The controller's layers, bottom to top, checked against the code's own imports:
//!
//! | layer | modules | what it is |
//! |---|---|---|
//! | 0 | `store`, `retention`, `cron` | bytes; pure planners and parsers |
//! | 1 | `catalog`, `config`, `keys`, `window` | what the bytes mean; settings; keys; recovery windows |
//! | 2 | `repo` | ingest, packs, sealing, verified reads |
//! | 3 | `ops` | the use cases: uploads, archive, restore, retention, verify, jobs, status |
//! | 4 | `drill` | drills, on the operations |
//! | 5 | `schedule`, `cluster`, `metrics` | background work and read-outs, on the operations |
//! | 6 | `api` | the thin gRPC layer |
//! | 7 | `main` | wiring |
//!
//! A module may use modules of lower layers and of its own (never in a circle), never a
//! higher one; only `api` and `main` know gRPC. Test code is left out: a test may reach
//! anywhere.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    const LAYERS: &[&[&str]] = &[
        &["store", "retention", "cron"],
        &["catalog", "config", "keys", "window"],
        &["repo"],
        &["ops"],
        &["drill"],
        &["schedule", "cluster", "metrics"],
        &["api"],
        &["main", "layers"],
    ];

    /// Modules that may name tonic (gRPC).
    const GRPC: &[&str] = &["api", "main"];

    fn layer_of(module: &str) -> usize {
        LAYERS
            .iter()
            .position(|l| l.contains(&module))
            .unwrap_or_else(|| {
                panic!(
                    "module {module} is in no layer; add it to LAYERS and to the table in layers.rs"
                )
            })
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs")
                && p.file_name().is_some_and(|n| n != "tests.rs")
            {
                out.push(p);
            }
        }
    }

    /// The file without its test items: a `#[cfg(test)]` at the start of a line hides the
    /// item after it, up to its closing brace at the start of a line (or its `;`).
    fn without_tests(text: &str) -> String {
        let mut out = String::new();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            if line.starts_with("#[cfg(test)]") {
                for l in lines.by_ref() {
                    if l == "}" || (!l.starts_with(' ') && l.ends_with(';')) {
                        break;
                    }
                }
                continue;
            }
            // Comments may name modules without using them.
            let code = line.split("//").next().unwrap_or("");
            out.push_str(code);
            out.push('\n');
        }
        out
    }

    fn ident(s: &str) -> &str {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        &s[..end]
    }

    /// The top-level modules `code` names through `crate::`.
    fn used(code: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // use crate::{a, b::c, d::{e, f}}: the names at the group's first depth.
                let mut depth = 0;
                let mut start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => start = true,
                        c if start && (c.is_ascii_alphabetic() || c == '_') => {
                            out.insert(ident(&group[i..]).to_string());
                            start = false;
                        }
                        _ => {}
                    }
                }
            } else {
                let name = ident(rest);
                if !name.is_empty() {
                    out.insert(name.to_string());
                }
            }
        }
        out
    }

    /// module -> the modules it uses, and the modules that name tonic.
    fn graph() -> (BTreeMap<String, BTreeSet<String>>, BTreeSet<String>) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut grpc = BTreeSet::new();
        for f in files {
            let rel = f.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str();
            let module = Path::new(first)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .to_string();
            let code = without_tests(&std::fs::read_to_string(&f).unwrap());
            if code.contains("tonic") {
                grpc.insert(module.clone());
            }
            let uses = graph.entry(module.clone()).or_default();
            for u in used(&code) {
                if u != module {
                    uses.insert(u);
                }
            }
        }
        (graph, grpc)
    }

    #[test]
    fn no_module_uses_a_higher_layer() {
        let (graph, _) = graph();
        let mut wrong = Vec::new();
        for (module, uses) in &graph {
            for u in uses {
                if graph.contains_key(u) && layer_of(u) > layer_of(module) {
                    wrong.push(format!(
                        "{module} (layer {}) uses {u} (layer {})",
                        layer_of(module),
                        layer_of(u)
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    /// A circle in `graph`, if there is one: depth-first search for a back edge.
    fn find_circle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            m: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = path.iter().position(|p| p == m) {
                let mut circle = path[i..].to_vec();
                circle.push(m.to_string());
                return Some(circle);
            }
            if done.contains(m) {
                return None;
            }
            path.push(m.to_string());
            for u in graph.get(m).into_iter().flatten() {
                if graph.contains_key(u)
                    && let Some(c) = visit(u, graph, path, done)
                {
                    return Some(c);
                }
            }
            path.pop();
            done.insert(m.to_string());
            None
        }
        let mut done = BTreeSet::new();
        graph
            .keys()
            .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
    }

    #[test]
    fn no_circle_between_modules() {
        let (graph, _) = graph();
        if let Some(c) = find_circle(&graph) {
            panic!("modules in a circle: {}", c.join(" -> "));
        }
    }

    #[test]
    fn only_the_grpc_layer_knows_grpc() {
        let (_, grpc) = graph();
        let wrong: Vec<_> = grpc
            .iter()
            .filter(|m| !GRPC.contains(&m.as_str()))
            .collect();
        assert!(wrong.is_empty(), "modules below api name tonic: {wrong:?}");
    }

    #[test]
    fn the_reader_sees_imports_and_skips_tests() {
        let code = without_tests(
            "use crate::ops::{State, jobs};\nuse crate::{catalog::X, store};\n// crate::api in a comment\nfn f() { crate::drill::g(); }\n#[cfg(test)]\nmod tests {\n    use crate::api::Y;\n}\n",
        );
        let names: Vec<String> = used(&code).into_iter().collect();
        assert_eq!(names, ["catalog", "drill", "ops", "store"]);
        // A circle is found, and a chain is not.
        let graph = |edges: &[(&str, &str)]| {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (m, u) in edges {
                g.entry(m.to_string()).or_default().insert(u.to_string());
                g.entry(u.to_string()).or_default();
            }
            g
        };
        assert_eq!(
            find_circle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])).map(|c| c.len()),
            Some(4)
        );
        assert_eq!(
            find_circle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])),
            None
        );
    }
}
