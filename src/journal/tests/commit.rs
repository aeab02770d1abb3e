//! Group commit tests: batching, completion order, close, back-pressure, callbacks.

use std::sync::{Arc, Mutex, mpsc};

use bytes::Bytes;

use super::*;

#[tokio::test]
async fn group_commit_batches_many_appends_into_few_fsyncs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) = open(&JournalConfig::new(dir.path()));
    let fsyncs_before = journal.stats().fsyncs;
    let pending: Vec<Pending> = (1..=1000)
        .map(|i| journal.append(payload(i)).expect("queued"))
        .collect();
    let mut lsns = Vec::new();
    for waiting in pending {
        lsns.push(waiting.await.expect("durable"));
    }
    assert_eq!(lsns, (1..=1000).collect::<Vec<_>>());
    let fsyncs = journal.stats().fsyncs - fsyncs_before;
    assert!(fsyncs >= 1);
    assert!(fsyncs < 1000, "{fsyncs} fsyncs for 1000 records");
    assert_eq!(journal.stats().durable_lsn, 1000);
}

/// Appends that arrive one at a time, each after the previous one is durable, within one commit
/// interval of the last fsync share the next fsync: the writer waits out the interval instead
/// of syncing each alone. A sender that waits for its ack then sees every ack of a round come
/// from the same fsync.
#[test]
fn a_commit_interval_gathers_lone_appends_into_one_fsync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig {
        // Longer than any scheduling hiccup of the appending threads below.
        commit_interval_us: 500_000,
        ..JournalConfig::new(dir.path())
    };
    let (journal, _) = open(&config);
    let journal = Arc::new(journal);
    // The first append is synced at once (no fsync before it), and starts the interval.
    journal.append_with(payload(0), |_| {}).expect("queued");
    wait_for("the first fsync", || journal.stats().fsyncs == 1);
    // Ten senders append one record each while the interval runs.
    let (done, finished) = mpsc::channel();
    for i in 1..=10 {
        let done = done.clone();
        journal
            .append_with(payload(i), move |result| {
                let _ = done.send(result.expect("durable"));
            })
            .expect("queued");
    }
    let lsns: Vec<u64> = (0..10).map(|_| finished.recv().expect("ack")).collect();
    assert_eq!(lsns, (2..=11).collect::<Vec<_>>());
    assert_eq!(journal.stats().fsyncs, 2, "ten lone appends, one fsync");
}

#[tokio::test]
async fn close_makes_queued_records_durable_and_completes_them_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig::new(dir.path());
    let (journal, _) = open(&config);
    let seen = Arc::new(Mutex::new(Vec::new()));
    for i in 1..=300 {
        let seen = Arc::clone(&seen);
        journal
            .append_with(payload(i), move |result| {
                seen.lock()
                    .expect("lock")
                    .push((i, result.expect("durable")));
            })
            .expect("queued");
    }
    let last = journal.append(payload(301)).expect("queued");
    journal.close().expect("close");
    assert_eq!(last.await.expect("durable"), 301);
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, (1..=300).map(|i| (i, i)).collect::<Vec<_>>());
    let (_journal, recovery) = open(&config);
    assert_eq!(recovery.next_lsn(), 302);
    assert_eq!(records(&recovery, 0).len(), 301);
}

#[tokio::test]
async fn full_queue_is_overloaded_and_oversized_payloads_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = JournalConfig {
        queue_capacity: 4,
        ..JournalConfig::new(dir.path())
    };
    let (journal, _) = open(&config);
    let too_big = Bytes::from(vec![0; MAX_PAYLOAD_BYTES as usize + 1]);
    assert!(matches!(
        journal.append(too_big),
        Err(JournalError::PayloadTooLarge { .. })
    ));
    // Hold the journal thread inside a completion callback.
    let (entered_tx, entered_rx) = mpsc::channel();
    let (gate_tx, gate_rx) = mpsc::channel::<()>();
    journal
        .append_with(payload(1), move |result| {
            let _ = entered_tx.send(result);
            let _ = gate_rx.recv();
        })
        .expect("queued");
    assert_eq!(entered_rx.recv().expect("entered").expect("durable"), 1);
    let queued: Vec<Pending> = (2..=5)
        .map(|i| journal.append(payload(i)).expect("room in queue"))
        .collect();
    assert!(matches!(
        journal.append(payload(6)),
        Err(JournalError::Overloaded)
    ));
    drop(gate_tx);
    for (expected, waiting) in (2..).zip(queued) {
        assert_eq!(waiting.await.expect("durable"), expected);
    }
    assert_eq!(append_each(&journal, [payload(6)]).await, vec![6]);
}

#[tokio::test]
async fn a_panicking_callback_does_not_stop_the_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (journal, _) = open(&JournalConfig::new(dir.path()));
    journal
        .append_with(payload(1), |_| panic!("callback bug"))
        .expect("queued");
    assert_eq!(append_each(&journal, [payload(2)]).await, vec![2]);
    assert_eq!(journal.stats().callback_panics, 1);
    assert!(journal.healthy());
}
