//! Every relative link and image in README.md and docs/*.md names a file of the
//! checkout, so that a report folder removed or renamed cannot leave the README
//! pointing at nothing. Links into `reports/quick/` (made by the tests, ignored by git)
//! and absolute URLs are not checked.

use std::path::{Path, PathBuf};

/// The targets of the Markdown links `[text](target)` and images `![alt](target)` of
/// `md`, without a `#fragment`.
fn link_targets(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = md;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].split('#').next().unwrap_or("").trim();
        if !target.is_empty() && !target.contains(' ') {
            out.push(target.to_owned());
        }
        rest = &rest[end..];
    }
    out
}

fn is_local(target: &str) -> bool {
    !(target.contains("://") || target.starts_with("mailto:") || target.contains("reports/quick"))
}

#[test]
fn link_targets_finds_links_and_images_and_drops_fragments() {
    let md = "see [a](docs/A.md#x), ![fig](reports/p/f.svg) and [web](https://x.org/y).";
    assert_eq!(
        link_targets(md),
        ["docs/A.md", "reports/p/f.svg", "https://x.org/y"]
    );
    assert!(!is_local("https://x.org/y"));
    assert!(is_local("reports/p/f.svg"));
}

#[test]
fn every_relative_link_of_the_readme_and_docs_names_a_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut docs: Vec<PathBuf> = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            docs.push(entry.path());
        }
    }
    let mut checked = 0;
    let mut missing = Vec::new();
    for doc in &docs {
        let md = std::fs::read_to_string(doc).unwrap();
        let dir = doc.parent().unwrap();
        for target in link_targets(&md).into_iter().filter(|t| is_local(t)) {
            checked += 1;
            if !dir.join(&target).exists() {
                missing.push(format!("{}: {target}", doc.display()));
            }
        }
    }
    assert!(checked >= 10, "only {checked} links found");
    assert!(missing.is_empty(), "links to nothing: {missing:#?}");
}
