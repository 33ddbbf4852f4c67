//! The bad-manifest corpus (`tests/manifests/bad/`): every file gives its expected error
//! at its expected place (first line: `# expect: LINE:COL: SUBSTRING`), and none of them
//! changes the catalog when applied next to a good manifest.

use std::path::{Path, PathBuf};

use crate::common::{text, Project};

fn corpus() -> Vec<(PathBuf, usize, usize, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/manifests/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let first = std::fs::read_to_string(&f)
                .unwrap()
                .lines()
                .next()
                .unwrap_or_default()
                .to_string();
            let rest = first
                .strip_prefix("# expect: ")
                .unwrap_or_else(|| panic!("{} lacks `# expect: LINE:COL: TEXT`", f.display()));
            let mut parts = rest.splitn(3, ':');
            let line = parts.next().unwrap().trim().parse().expect("line");
            let col = parts.next().unwrap().trim().parse().expect("col");
            let want = parts.next().unwrap().trim().to_string();
            (f, line, col, want)
        })
        .collect()
}

#[test]
fn every_bad_manifest_reports_its_error_at_its_location() {
    let cases = corpus();
    assert!(
        cases.len() >= 15,
        "the corpus has only {} files",
        cases.len()
    );
    for (file, line, col, want) in cases {
        let errors = match lakectl::plan::load_valid(&file) {
            Ok(_) => panic!("{} was accepted", file.display()),
            Err(d) => d.0,
        };
        assert!(
            errors
                .iter()
                .any(|e| e.line == line && e.column == col && e.message.contains(&want)),
            "{}: expected {line}:{col}: …{want}…, got:\n{}",
            file.display(),
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            errors.iter().all(|e| e.file == file),
            "errors name another file: {errors:?}"
        );
    }
}

#[test]
fn no_bad_manifest_changes_the_catalog() {
    let p = Project::new();
    p.write(
        "good.yaml",
        "apiVersion: lakectl/v1\nkind: Table\nmetadata:\n  name: good\n  namespace: ok\nspec:\n  columns:\n    - name: id\n      type: long\n",
    );
    p.apply_converges();
    let snapshot_of_lakehouse = || {
        let mut files: Vec<(String, u64)> = walk(&p.root().join(".lakectl"));
        files.sort();
        (std::fs::read(p.catalog_db()).unwrap(), files)
    };
    let before = snapshot_of_lakehouse();
    for (file, ..) in corpus() {
        let name = file.file_name().unwrap().to_str().unwrap().to_string();
        std::fs::copy(&file, p.manifests().join(&name)).unwrap();
        let out = p.run(&["apply", "manifests"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: apply did not fail:\n{}",
            text(&out)
        );
        assert!(
            text(&out).contains(&name),
            "{name}: the error does not name the file:\n{}",
            text(&out)
        );
        assert!(
            snapshot_of_lakehouse() == before,
            "{name} changed the lakehouse"
        );
        std::fs::remove_file(p.manifests().join(&name)).unwrap();
    }
}

fn walk(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push((e.path().display().to_string(), e.metadata().unwrap().len()));
        }
    }
    out
}

#[test]
fn the_json_schema_describes_both_kinds_and_type_strings() {
    let out = std::process::Command::new(crate::common::LAKECTL)
        .arg("schema")
        .output()
        .unwrap();
    assert!(out.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let text = schema.to_string();
    for needle in [
        "TableManifest",
        "LakehouseManifest",
        "renamedFrom",
        "allowDestructive",
        "onError",
        "bucket\\\\[\\\\d+\\\\]",
    ] {
        assert!(text.contains(needle), "the schema lacks {needle}");
    }
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}
