//! Opening the media data after a crash: uploads whose last bytes were fsynced but never
//! committed are finished, and files no record names are removed.

use std::path::Path;

use sha2::{Digest as _, Sha256};

use super::index::Index;
use super::layout::Layout;
use super::{Media, MediaId};
use crate::config::Config;
use crate::proto::storage::UploadRecord;

fn config(dir: &Path) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
    let mut config = Config::load(&path).expect("cluster.toml");
    config.node.data_dir = dir.to_owned();
    config
}

#[test]
fn open_finishes_complete_uploads_and_removes_strays() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let layout = Layout::new(dir.path());
    layout.create().unwrap();
    let complete = MediaId::random().unwrap();
    let partial = MediaId::random().unwrap();
    let stray = MediaId::random().unwrap();
    {
        let index = Index::open(&layout.index, 1 << 20).unwrap();
        for (id, length) in [(complete, 5), (partial, 10)] {
            let record = UploadRecord {
                owner: "alice".into(),
                length,
                mime_type: "text/plain".into(),
                ..Default::default()
            };
            index.put_upload(&id, &record).unwrap();
        }
    }
    std::fs::write(layout.staging_file(&complete), b"hello").unwrap();
    std::fs::write(layout.staging_file(&partial), b"abc").unwrap();
    std::fs::write(layout.staging_file(&stray), b"left by a crash").unwrap();
    let orphan = layout.object_file(&[1; 32]);
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"never recorded").unwrap();

    let media = Media::open(&config).unwrap();
    let meta = media.catalog.media(&complete).expect("finished at open");
    assert_eq!(meta.size, 5);
    assert_eq!(&*meta.mime, "text/plain");
    assert_eq!(meta.sha256, <[u8; 32]>::from(Sha256::digest(b"hello")));
    assert_eq!(
        std::fs::read(layout.object_file(&meta.sha256)).unwrap(),
        b"hello"
    );
    let upload = media.catalog.upload(&partial).expect("still unfinished");
    assert_eq!(upload.offset(), 3);
    assert!(!layout.staging_file(&stray).exists());
    assert!(!layout.staging_file(&complete).exists());
    assert!(!orphan.exists());
    assert_eq!(media.catalog.usage("alice").bytes, 15);
    drop(media);

    // And all of it is what the next start sees.
    let media = Media::open(&config).unwrap();
    assert!(media.catalog.media(&complete).is_some());
    assert_eq!(media.catalog.upload(&partial).unwrap().offset(), 3);
}

#[test]
fn an_upload_whose_staging_file_vanished_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let layout = Layout::new(dir.path());
    layout.create().unwrap();
    let id = MediaId::random().unwrap();
    {
        let index = Index::open(&layout.index, 1 << 20).unwrap();
        let record = UploadRecord {
            owner: "alice".into(),
            length: 10,
            ..Default::default()
        };
        index.put_upload(&id, &record).unwrap();
    }
    let media = Media::open(&config).unwrap();
    assert!(media.catalog.upload(&id).is_none());
    assert_eq!(media.catalog.usage("alice").bytes, 0);
}
