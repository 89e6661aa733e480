//! The crate map holds: every `crate::` path in `src/` runs along an arrow
//! that the table in `src/lib.rs` allows, and sled is named only in
//! `src/kv.rs`.
//!
//! The table is read from `src/lib.rs` itself (the rows `//! | `module` |
//! may use |`), so the documentation and this check cannot drift apart;
//! `docs/architecture.md` must show the same rows. A failure names the
//! file, the line and the forbidden arrow.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a module may use: every module, or the listed ones.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Allowed {
    Everything,
    Only(BTreeSet<String>),
}

/// Modules any module may use: the deliberate-bug hooks for the simulator,
/// and the helpers of unit tests (compiled only under `cfg(test)`).
const USABLE_BY_ALL: &[&str] = &["sim_bugs", "test_support"];

/// Rows of the crate map: `| `module` | `a`, `b` |`.
fn map_rows(lib_rs: &str) -> Vec<String> {
    lib_rs
        .lines()
        .filter_map(|l| l.strip_prefix("//! "))
        .filter(|l| l.starts_with("| `"))
        .map(str::to_string)
        .collect()
}

/// Parses the crate map's rows.
fn parse_map(rows: &[String]) -> BTreeMap<String, Allowed> {
    let mut map = BTreeMap::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 2, "crate map row {row:?} has two cells");
        let module = cells[0].trim_matches('`').to_string();
        let allowed = if cells[1] == "every module" {
            Allowed::Everything
        } else {
            Allowed::Only(
                cells[1]
                    .split(',')
                    .filter_map(|c| {
                        // `name`, possibly followed by a remark in words.
                        let name = c.trim().strip_prefix('`')?;
                        name.split_once('`').map(|(name, _)| name.to_string())
                    })
                    .collect(),
            )
        };
        map.insert(module, allowed);
    }
    map
}

/// Blanks out comments and the contents of string and char literals, so
/// that only code is searched; keeps every newline, so offsets keep their
/// line numbers.
// One small lexer: comments, strings, raw strings and chars are told apart
// in one loop, which reads best whole.
#[allow(clippy::too_many_lines)]
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                    i += 1;
                }
            }
        } else if b[i] == b'r' && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) && !ident_byte(b, i) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            let close: Vec<u8> = std::iter::once(b'"').chain(std::iter::repeat_n(b'#', hashes)).collect();
            out.extend(std::iter::repeat_n(b' ', j + 1 - i));
            i = j + 1;
            while i < b.len() && !b[i..].starts_with(&close) {
                out.push(if b[i] == b'\n' { b'\n' } else { b' ' });
                i += 1;
            }
            out.extend(std::iter::repeat_n(b' ', close.len().min(b.len() - i)));
            i += close.len();
        } else if b[i] == b'"' {
            out.push(b' ');
            i += 1;
            while i < b.len() && b[i] != b'"' {
                let n = if b[i] == b'\\' { 2 } else { 1 };
                for k in 0..n {
                    if let Some(&c) = b.get(i + k) {
                        out.push(if c == b'\n' { b'\n' } else { b' ' });
                    }
                }
                i += n;
            }
            out.push(b' ');
            i += 1;
        } else if b[i] == b'\'' {
            // A char literal ('x', '\n', '"'), or a lifetime ('a), kept.
            let lit = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..].iter().position(|&c| c == b'\'').map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                None
            };
            match lit {
                Some(end) => {
                    out.extend(std::iter::repeat_n(b' ', end + 1 - i));
                    i = end + 1;
                }
                None => {
                    out.push(b[i]);
                    i += 1;
                }
            }
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII was replaced")
}

fn ident_byte(b: &[u8], i: usize) -> bool {
    i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_')
}

/// The top-level modules that `crate::` paths in `src` name, with the line
/// of each: `crate::a::x`, `use crate::a;` and every head of a group
/// `use crate::{a::x, b, c::{..}}` (which may span lines).
fn arrows(src: &str) -> Vec<(usize, String)> {
    let code = code_only(src);
    let b = code.as_bytes();
    let line_of = |off: usize| code[..off].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = code[from..].find("crate::") {
        let at = from + p;
        from = at + "crate::".len();
        if ident_byte(b, at) || (at > 0 && b[at - 1] == b'$') {
            continue;
        }
        let rest = &code[from..];
        if let Some(group) = rest.strip_prefix('{') {
            // Heads of a group: identifiers right after `{` or a `,` at depth 1.
            let mut depth = 1;
            let mut expect_head = true;
            let mut k = 0;
            let gb = group.as_bytes();
            while k < gb.len() && depth > 0 {
                let c = gb[k];
                if c == b'{' {
                    depth += 1;
                } else if c == b'}' {
                    depth -= 1;
                } else if c == b',' && depth == 1 {
                    expect_head = true;
                } else if expect_head && (c.is_ascii_alphabetic() || c == b'_') {
                    let end = k + group[k..]
                        .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                        .unwrap_or(group.len() - k);
                    out.push((line_of(from + 1 + k), group[k..end].to_string()));
                    expect_head = false;
                    k = end;
                    continue;
                }
                k += 1;
            }
        } else {
            let end = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            if end > 0 {
                out.push((line_of(at), rest[..end].to_string()));
            }
        }
    }
    out
}

/// Lines that name sled in code.
fn sled_lines(src: &str) -> Vec<usize> {
    code_only(src)
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("sled::"))
        .map(|(i, _)| i + 1)
        .collect()
}

/// The top-level module a file under `src/` belongs to; `None` for the
/// crate root and the binary.
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    match first.as_str() {
        "lib.rs" | "main.rs" => None,
        f => Some(f.strip_suffix(".rs").unwrap_or(f).to_string()),
    }
}

/// Every forbidden arrow in `files` (path relative to `src/`, text), as
/// `src/<path>:<line>: <from> -> <to> (...)`.
fn violations(map: &BTreeMap<String, Allowed>, files: &[(PathBuf, String)]) -> Vec<String> {
    let mut out = Vec::new();
    for (rel, text) in files {
        let shown = format!("src/{}", rel.display());
        if rel != Path::new("kv.rs") {
            for line in sled_lines(text) {
                out.push(format!("{shown}:{line}: names sled, which is private to `kv`"));
            }
        }
        let Some(module) = module_of(rel) else { continue };
        let Some(allowed) = map.get(&module) else {
            out.push(format!(
                "{shown}: module `{module}` is not on the crate map in src/lib.rs"
            ));
            continue;
        };
        for (line, to) in arrows(text) {
            if to == module || to == "self" || USABLE_BY_ALL.contains(&to.as_str()) {
                continue;
            }
            let ok = match allowed {
                Allowed::Everything => true,
                Allowed::Only(set) => set.contains(&to),
            };
            if !ok {
                let may = match allowed {
                    Allowed::Only(set) if set.is_empty() => "nothing".to_string(),
                    Allowed::Only(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
                    Allowed::Everything => unreachable!(),
                };
                out.push(format!(
                    "{shown}:{line}: {module} -> {to} is not on the crate map ({module} may use: {may})"
                ));
            }
        }
    }
    out
}

fn rust_files(dir: &Path, root: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read src/").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for e in entries {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let text = std::fs::read_to_string(&p).expect("read a source file");
            out.push((p.strip_prefix(root).expect("under src/").to_path_buf(), text));
        }
    }
}

fn crate_map() -> (Vec<String>, BTreeMap<String, Allowed>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).expect("read src/lib.rs");
    let rows = map_rows(&lib);
    let map = parse_map(&rows);
    (rows, map)
}

#[test]
fn every_crate_path_in_src_follows_the_crate_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let (_, map) = crate_map();
    assert!(map.len() >= 10, "the crate map in src/lib.rs has its rows: {map:?}");
    let mut files = Vec::new();
    rust_files(&root, &root, &mut files);
    assert!(files.len() > 50, "found the sources ({} files)", files.len());
    let v = violations(&map, &files);
    assert!(
        v.is_empty(),
        "arrows the crate map (src/lib.rs, # Layout) forbids:\n{}\nfix the import, or change the map \
         in src/lib.rs and docs/architecture.md if the layering really changed; repro: cargo test \
         --release --test layering",
        v.join("\n")
    );
    // Every row of the map names a module that exists.
    let modules: BTreeSet<String> = files.iter().filter_map(|(p, _)| module_of(p)).collect();
    for m in map.keys() {
        assert!(
            modules.contains(m),
            "the crate map names `{m}`, which has no file under src/"
        );
    }
}

#[test]
fn the_architecture_page_shows_the_same_crate_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/architecture.md")).expect("read docs/architecture.md");
    let (rows, _) = crate_map();
    for row in rows {
        assert!(
            doc.lines().any(|l| l.trim() == row.trim()),
            "docs/architecture.md lacks the crate map row {row:?} of src/lib.rs"
        );
    }
}

#[test]
fn a_forbidden_arrow_fails_and_is_named() {
    let rows: Vec<String> = [
        "| `api` | `tsdb` |",
        "| `tsdb` | `kv` |",
        "| `kv` | nothing |",
        "| `cli` | every module |",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let map = parse_map(&rows);
    let file = |p: &str, t: &str| (PathBuf::from(p), t.to_string());
    let files = vec![
        // Allowed: down the map, within the module, comments and strings.
        file(
            "api/write.rs",
            "use crate::tsdb::Db;\nuse super::x;\n// use crate::kv::Kv;\nlet s = \"crate::kv::x\";\n",
        ),
        file("cli/demo.rs", "use crate::{api::x, kv::y};\n"),
        // Forbidden: up the map, in a `use`, a path and a multi-line group.
        file(
            "tsdb/head.rs",
            "use crate::tsdb::x;\nuse crate::api::prompb;\nfn f() { crate::kv::run(); crate::api::y(); }\nuse crate::{\n    kv::A,\n    cli::{B, C},\n};\n",
        ),
        file("kv.rs", "use crate::tsdb::Db;\nuse sled::Db;\n"),
        file("raft/log.rs", "fn f(d: &sled::Db) {}\n"),
        file("stray.rs", "use crate::kv::A;\n"),
    ];
    let v = violations(&map, &files);
    let want = [
        "src/tsdb/head.rs:2: tsdb -> api is not on the crate map (tsdb may use: kv)",
        "src/tsdb/head.rs:3: tsdb -> api is not on the crate map (tsdb may use: kv)",
        "src/tsdb/head.rs:6: tsdb -> cli is not on the crate map (tsdb may use: kv)",
        "src/kv.rs:1: kv -> tsdb is not on the crate map (kv may use: nothing)",
        "src/raft/log.rs:1: names sled, which is private to `kv`",
        "src/raft/log.rs: module `raft` is not on the crate map in src/lib.rs",
        "src/stray.rs: module `stray` is not on the crate map in src/lib.rs",
    ];
    let got: BTreeSet<&str> = v.iter().map(String::as_str).collect();
    let want_set: BTreeSet<&str> = want.iter().copied().collect();
    assert_eq!(
        got,
        want_set,
        "violations found in the synthetic sources:\n{}",
        v.join("\n")
    );
}

#[test]
fn arrows_are_read_from_code_only() {
    let src = "use crate::a::x; // crate::b\n/* crate::c */ let q = '\"'; let s = r#\"crate::d\"#;\ncrate::e::f();\nlet t = \"\\\"crate::g\";\n";
    let got: Vec<(usize, String)> = arrows(src);
    assert_eq!(got, vec![(1, "a".to_string()), (3, "e".to_string())]);
}

/// Lines of `src` (code only) that read a `config` field: `x.config.` or
/// `x.config` as a value. The API's handlers get the sections they need
/// copied into their state; the whole node configuration stays in `node`.
fn config_reaches(src: &str) -> Vec<usize> {
    let code = code_only(src);
    code.lines()
        .enumerate()
        .filter(|(_, l)| {
            l.match_indices(".config").any(|(i, _)| {
                let after = l.as_bytes().get(i + ".config".len()).copied();
                !after.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'(')
            })
        })
        .map(|(n, _)| n + 1)
        .collect()
}

#[test]
fn the_api_reads_no_node_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root.join("api"), &root, &mut files);
    assert!(files.len() >= 5, "found the API sources ({} files)", files.len());
    let hits: Vec<String> = files
        .iter()
        .flat_map(|(p, text)| {
            config_reaches(text)
                .into_iter()
                .map(move |n| format!("src/{}:{n}", p.display()))
        })
        .collect();
    assert!(
        hits.is_empty(),
        "src/api reads the node's whole configuration (give the handler the value in AppState instead):\n{}",
        hits.join("\n")
    );
    // The check sees a reach, and not a method or path of that name.
    assert_eq!(config_reaches("let x = node.config.query.timeout;\n"), vec![1]);
    assert_eq!(config_reaches("f(&n.config);\n"), vec![1]);
    assert!(config_reaches("let q = node.query_config();\nuse crate::config::X;\n").is_empty());
    assert!(config_reaches("// node.config.query\n").is_empty());
}
