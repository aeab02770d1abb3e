//! The mailbox service, groups and the directory of who is online sit below the session layer:
//! they speak in mailbox events to reply addresses and never name a session, a connection or
//! the whole node.

use std::path::{Path, PathBuf};

fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .expect("read dir")
            .map(|entry| entry.expect("dir entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            rust_files(&entry, out);
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        out.push(path.to_owned());
    }
}

#[test]
fn the_mailbox_groups_and_directory_never_name_the_layers_above() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for part in [
        "mailbox",
        "mailbox.rs",
        "group",
        "group.rs",
        "registry.rs",
        "presence.rs",
    ] {
        rust_files(&root.join(part), &mut files);
    }
    assert!(files.len() > 20, "found only {files:?}");
    let mut offences = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (number, line) in text.lines().enumerate() {
            for upper in ["crate::session", "crate::connection", "crate::node::Node"] {
                if line.contains(upper) {
                    offences.push(format!(
                        "{}:{}: {}",
                        file.display(),
                        number + 1,
                        line.trim()
                    ));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "upward imports:\n{}",
        offences.join("\n")
    );
}
