//! The layering of `src/lib.rs` ([`hotfeed::LAYERS`]) checked against the code: every `crate::`
//! path of `src/` (a `use`, a re-export, or a path written inline) may only name a module its own
//! module may import.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hotfeed::LAYERS;

/// A `crate::` reference: the file it is in, its line, the module it is in and the one it names.
#[derive(Debug)]
struct Import {
    file: PathBuf,
    line: usize,
    from: String,
    to: String,
}

#[test]
fn no_module_imports_one_the_layering_does_not_allow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src.join("lib.rs"));
    for module in &modules {
        assert!(
            LAYERS.iter().any(|(name, _)| name == module),
            "src/lib.rs declares `{module}` but LAYERS does not place it"
        );
    }

    let mut violations = Vec::new();
    for import in imports_under(&src, &modules) {
        if import.from == import.to || allowed(&import.from, &import.to) {
            continue;
        }
        violations.push(format!(
            "{}:{}: `{}` imports `{}`",
            import.file.display(),
            import.line,
            import.from,
            import.to
        ));
    }
    assert!(
        violations.is_empty(),
        "imports the layering (hotfeed::LAYERS) forbids:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_nested_and_inline_paths() {
    let modules: BTreeSet<String> = ["feed", "cache", "store", "routes"]
        .map(str::to_owned)
        .into();
    let text = "use crate::{\n    feed::{self, Feed},\n    cache,\n};\n\
                // use crate::store::Comment;\n\
                fn f() { crate::routes::configure(); }\n";
    let found = references(text, &["feed".to_owned()], &modules);
    assert_eq!(
        found,
        [
            (1, "feed".to_owned()),
            (1, "cache".to_owned()),
            (6, "routes".to_owned())
        ]
    );
}

fn allowed(from: &str, to: &str) -> bool {
    LAYERS
        .iter()
        .find(|(name, _)| *name == from)
        .is_some_and(|(_, may)| may.contains(&to))
}

/// The `pub mod` names of `lib.rs`.
fn top_level_modules(lib: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(lib)
        .expect("src/lib.rs")
        .lines()
        .filter_map(|line| line.trim().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect()
}

/// Every reference to a top-level module in the `.rs` files under `dir` (but `lib.rs` and
/// `main.rs`, the crate roots).
fn imports_under(src: &Path, modules: &BTreeSet<String>) -> Vec<Import> {
    let mut files = Vec::new();
    collect_rs(src, &mut files);
    let mut imports = Vec::new();
    for file in files {
        let relative = file.strip_prefix(src).expect("under src").to_path_buf();
        let path = module_path(&relative);
        let Some(from) = path.first().cloned() else {
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a source file");
        for (line, to) in references(&text, &path, modules) {
            imports.push(Import {
                file: Path::new("src").join(&relative),
                line,
                from: from.clone(),
                to,
            });
        }
    }
    imports
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
}

/// `routes/users.rs` -> `[routes, users]`, `routes/mod.rs` -> `[routes]`; the crate roots -> `[]`.
fn module_path(relative: &Path) -> Vec<String> {
    let mut path: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if path.last().is_some_and(|last| last == "mod") {
        path.pop();
    }
    if path.len() == 1 && (path[0] == "lib" || path[0] == "main") {
        path.clear();
    }
    path
}

/// The top-level modules `text` names through `crate::` (or enough `super::` to reach the crate
/// root), with their line numbers; comment lines are skipped.
fn references(text: &str, path: &[String], modules: &BTreeSet<String>) -> Vec<(usize, String)> {
    let code: String = text
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("//") {
                ""
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let Some(root_end) = root_at(bytes, at, path.len()) else {
            at += 1;
            continue;
        };
        let line = code[..at].matches('\n').count() + 1;
        let mut names = Vec::new();
        if bytes.get(root_end) == Some(&b'{') {
            group_heads(bytes, root_end, &mut names);
        } else {
            names.push(ident_at(bytes, root_end));
        }
        found.extend(
            names
                .into_iter()
                .filter(|name| modules.contains(name))
                .map(|name| (line, name)),
        );
        at = root_end;
    }
    found
}

/// If a path reaching the crate root starts at `at` (`crate::`, or `depth` times `super::`), the
/// index just past it.
fn root_at(bytes: &[u8], at: usize, depth: usize) -> Option<usize> {
    if at > 0
        && (bytes[at - 1].is_ascii_alphanumeric() || matches!(bytes[at - 1], b'_' | b'$' | b':'))
    {
        return None;
    }
    if bytes[at..].starts_with(b"crate::") {
        return Some(at + "crate::".len());
    }
    let supers = b"super::".repeat(depth.max(1));
    if depth > 0 && bytes[at..].starts_with(&supers) {
        return Some(at + supers.len());
    }
    None
}

/// The first name of each item of the `{…}` group opening at `open`.
fn group_heads(bytes: &[u8], open: usize, names: &mut Vec<String>) {
    let mut depth = 0;
    let mut expect = false;
    let mut at = open;
    while at < bytes.len() {
        match bytes[at] {
            b'{' => {
                depth += 1;
                expect = depth == 1;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
            b',' if depth == 1 => expect = true,
            c if expect && (c.is_ascii_alphabetic() || c == b'_') => {
                names.push(ident_at(bytes, at));
                expect = false;
            }
            _ => {}
        }
        at += 1;
    }
}

fn ident_at(bytes: &[u8], at: usize) -> String {
    bytes[at..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
        .map(|c| char::from(*c))
        .collect()
}
