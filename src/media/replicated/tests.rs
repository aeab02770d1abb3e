//! The replicated media state: committed changes applied in order, a writer that lost a race
//! changing nothing, an entry applied twice (a restart's replay) changing nothing more, and a
//! group's share exported and installed with its references.

use std::path::Path;

use bytes::Bytes;
use prost::Message as _;

use super::super::Media;
use super::super::id::MediaId;
use super::state::offset;
use crate::config::Config;
use crate::proto::storage::{
    MediaChange, MediaRecord, ObjectRef, Removed, UploadPart, UploadRecord, media_change::Change,
};

fn open(dir: &Path) -> std::sync::Arc<Media> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("cluster.toml");
    let mut config = Config::load(&path).expect("cluster.toml");
    config.node.data_dir = dir.to_owned();
    Media::open(&config).expect("open media")
}

fn change(id: &MediaId, change: Change, from: u64) -> Bytes {
    Bytes::from(
        MediaChange {
            id: Bytes::copy_from_slice(id.as_bytes()),
            change: Some(change),
            from,
        }
        .encode_to_vec(),
    )
}

fn created(id: &MediaId) -> Bytes {
    let record = UploadRecord {
        owner: "alice".into(),
        length: 10,
        mime_type: "image/jpeg".into(),
        ..Default::default()
    };
    change(id, Change::Created(record), 0)
}

fn advanced(id: &MediaId, from: u64, start: u64, token: u64, end: u64) -> Bytes {
    change(id, Change::Advanced(UploadPart { start, token, end }), from)
}

#[test]
fn pieces_commit_in_order_and_a_lost_race_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let media = open(dir.path());
    let id = MediaId::random().unwrap();
    media.apply_replicated(7, 1, &[created(&id)]).unwrap();
    assert_eq!(media.catalog.upload(&id).unwrap().offset(), 0);
    // Two pieces of one request extend one part.
    media
        .apply_replicated(7, 2, &[advanced(&id, 0, 0, 11, 4)])
        .unwrap();
    media
        .apply_replicated(7, 3, &[advanced(&id, 4, 0, 11, 6)])
        .unwrap();
    // A second writer that started from 4 lost the race: nothing changes.
    media
        .apply_replicated(7, 4, &[advanced(&id, 4, 4, 22, 8)])
        .unwrap();
    let stored = media.replicated_upload(&id).unwrap().unwrap();
    assert_eq!(offset(&stored), 6);
    assert_eq!(stored.parts.len(), 1);
    assert_eq!(media.catalog.upload(&id).unwrap().offset(), 6);
    // A resumed writer from the committed offset starts a part of its own.
    media
        .apply_replicated(7, 5, &[advanced(&id, 6, 6, 33, 10)])
        .unwrap();
    let stored = media.replicated_upload(&id).unwrap().unwrap();
    assert_eq!(
        stored
            .parts
            .iter()
            .map(|part| (part.start, part.token, part.end))
            .collect::<Vec<_>>(),
        vec![(0, 11, 6), (6, 33, 10)]
    );
}

#[test]
fn an_entry_applied_again_changes_nothing_and_media_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id = MediaId::random().unwrap();
    let digest = [9u8; 32];
    {
        let media = open(dir.path());
        media.apply_replicated(3, 1, &[created(&id)]).unwrap();
        let record = MediaRecord {
            owner: "alice".into(),
            size: 10,
            mime_type: "image/jpeg".into(),
            sha256: Bytes::copy_from_slice(&digest),
            ..Default::default()
        };
        let object = ObjectRef {
            sha256: Bytes::copy_from_slice(&digest),
            size: 10,
        };
        let after = media
            .apply_replicated(
                3,
                2,
                &[
                    change(&id, Change::Referenced(object), 0),
                    change(&id, Change::Finished(record), 0),
                ],
            )
            .unwrap();
        assert_eq!(after.parts_gone, vec![id]);
        assert_eq!(after.objects_needed, vec![(digest, 10)]);
        assert!(media.catalog.upload(&id).is_none());
        assert_eq!(media.catalog.media(&id).unwrap().size, 10);
        // A replay of entry 1 (at or below the group's applied index) is skipped: no upload
        // comes back.
        media.apply_replicated(3, 1, &[created(&id)]).unwrap();
        assert!(media.replicated_upload(&id).unwrap().is_none());
        assert_eq!(media.referenced_objects().unwrap(), vec![(digest, 10)]);
    }
    let media = open(dir.path());
    assert_eq!(media.catalog.media(&id).unwrap().sha256, digest);
    assert_eq!(media.referenced_objects().unwrap(), vec![(digest, 10)]);
    let after = media
        .apply_replicated(
            3,
            3,
            &[
                change(&id, Change::Removed(Removed {}), 0),
                change(
                    &id,
                    Change::Released(ObjectRef {
                        sha256: Bytes::copy_from_slice(&digest),
                        size: 10,
                    }),
                    0,
                ),
            ],
        )
        .unwrap();
    assert_eq!(after.objects_gone, vec![digest], "the last reference went");
    assert!(media.catalog.media(&id).is_none());
}

#[test]
fn a_share_exported_installs_on_another_node() {
    let (from, to) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (source, target) = (open(from.path()), open(to.path()));
    let kept = MediaId::random().unwrap();
    let other = MediaId::random().unwrap();
    source.apply_replicated(1, 1, &[created(&kept)]).unwrap();
    source.apply_replicated(1, 2, &[created(&other)]).unwrap();
    source
        .apply_replicated(1, 3, &[advanced(&kept, 0, 0, 5, 3)])
        .unwrap();
    let in_share = move |key: &[u8]| key == kept.as_bytes();
    let rows = source.export_replicated(&in_share).unwrap();
    assert_eq!(rows.len(), 1, "only the share's rows");
    // The target held a stale upload of the share: replaced.
    target.apply_replicated(1, 1, &[created(&kept)]).unwrap();
    target.install_replicated(1, 3, &in_share, rows).unwrap();
    assert_eq!(target.catalog.upload(&kept).unwrap().offset(), 3);
    assert!(target.catalog.upload(&other).is_none());
    // Entries up to the snapshot's index are not applied again.
    target
        .apply_replicated(1, 3, &[advanced(&kept, 3, 3, 6, 9)])
        .unwrap();
    assert_eq!(target.catalog.upload(&kept).unwrap().offset(), 3);
}
