use super::*;
use crate::push::Platform;

const MS: Duration = Duration::from_millis(1);

fn timing() -> Timing {
    Timing {
        offline_delay: 250 * MS,
        ack_grace: 5000 * MS,
        renotify: 300_000 * MS,
        defer_base: 500 * MS,
        defer_max: 2_000 * MS,
        give_up: 10_000 * MS,
    }
}

fn target(preview: bool) -> Arc<Target> {
    Arc::new(Target {
        platform: Platform::Apns,
        token: Arc::from("tok"),
        app_id: Arc::from("app"),
        preview,
        registered_ms: 5_000,
    })
}

fn arrival(seq: u64, online: bool, preview: bool) -> Arrival {
    Arrival {
        owner: Id::from("bob"),
        device: Id::from("phone"),
        target: target(preview),
        seq,
        server_id: 100 + seq,
        conversation: Conversation::User(Id::from("alice")),
        sender: Id::from("alice"),
        preview: Some(Arc::from(format!("hello {seq}").as_str())),
        online,
    }
}

#[test]
fn a_burst_of_fifty_is_one_push_with_the_count_and_the_latest() {
    let start = Instant::now();
    let mut bursts = Bursts::new(timing());
    assert_eq!(
        bursts.arrive(arrival(1, false, true), start),
        Arrived::Scheduled
    );
    for seq in 2..=50 {
        assert_eq!(
            bursts.arrive(arrival(seq, false, true), start + seq as u32 * MS),
            Arrived::Collapsed
        );
    }
    assert!(bursts.take_due(start + 249 * MS).is_empty());
    let due = bursts.take_due(start + 250 * MS);
    assert_eq!(due.len(), 1);
    let push = &due[0];
    assert_eq!((push.count, push.seq, push.server_id), (50, 50, 150));
    assert_eq!(push.id, "bob/phone/50");
    assert_eq!(push.sender.as_deref(), Some("alice"));
    assert_eq!(push.preview.as_deref(), Some("hello 50"));
    assert_eq!((push.conversation.as_str(), push.group), ("alice", false));
    assert_eq!(push.registered_secs, 5);
    // Outstanding: more messages are collapsed, not pushed.
    assert_eq!(
        bursts.arrive(arrival(51, false, true), start + 1000 * MS),
        Arrived::Collapsed
    );
    assert!(bursts.take_due(start + 100_000 * MS).is_empty());
    assert_eq!(bursts.next_due(), None);
}

#[test]
fn no_push_for_what_the_device_acked_and_a_new_burst_after_catching_up() {
    let start = Instant::now();
    let mut bursts = Bursts::new(timing());
    let (bob, phone) = (Id::from("bob"), Id::from("phone"));
    bursts.arrive(arrival(1, true, false), start);
    bursts.arrive(arrival(2, true, false), start);
    bursts.ack(&bob, &phone, 2);
    assert!(bursts.is_empty());
    assert!(bursts.take_due(start + 10_000 * MS).is_empty());
    // A stale arrival after the ack schedules nothing; a new one starts a new burst.
    assert_eq!(
        bursts.arrive(arrival(3, true, false), start),
        Arrived::Scheduled
    );
    // The online device had the grace period to ack.
    assert!(bursts.take_due(start + 4_999 * MS).is_empty());
    let due = bursts.take_due(start + 5_000 * MS);
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].count, due[0].sender.as_ref()), (1, None));
    assert_eq!(due[0].preview, None, "a preview without the device asking");
}

#[test]
fn a_partial_ack_lowers_the_count_and_renotify_pushes_again() {
    let start = Instant::now();
    let mut bursts = Bursts::new(timing());
    let (bob, phone) = (Id::from("bob"), Id::from("phone"));
    for seq in 1..=3 {
        bursts.arrive(arrival(seq, false, false), start);
    }
    bursts.ack(&bob, &phone, 1);
    let due = bursts.take_due(start + 250 * MS);
    assert_eq!(due[0].count, 2);
    let later = start + 300_250 * MS;
    assert_eq!(
        bursts.arrive(arrival(4, false, false), later),
        Arrived::Scheduled
    );
    let due = bursts.take_due(later + 250 * MS);
    assert_eq!((due.len(), due[0].count, due[0].seq), (1, 3, 4));
    bursts.forget(&bob, &phone);
    assert!(bursts.is_empty());
}

#[test]
fn a_push_the_sender_had_no_room_for_comes_back_later_then_is_given_up() {
    let start = Instant::now();
    let mut bursts = Bursts::new(timing());
    bursts.arrive(arrival(1, false, false), start);
    let due = bursts.take_due(start + 250 * MS);
    assert_eq!(due.len(), 1);
    assert_eq!(
        bursts.defer("bob", "phone", start + 250 * MS),
        Deferred::Later
    );
    // A message meanwhile joins the push put back.
    assert_eq!(
        bursts.arrive(arrival(2, false, false), start + 300 * MS),
        Arrived::Collapsed
    );
    assert!(bursts.take_due(start + 749 * MS).is_empty());
    let again = bursts.take_due(start + 750 * MS);
    assert_eq!((again.len(), again[0].count, again[0].seq), (1, 2, 2));
    // The pause doubles, up to its ceiling; past the retry time the push is given up.
    assert_eq!(
        bursts.defer("bob", "phone", start + 750 * MS),
        Deferred::Later
    );
    assert!(bursts.take_due(start + 1_749 * MS).is_empty());
    assert_eq!(bursts.take_due(start + 1_750 * MS).len(), 1);
    assert_eq!(
        bursts.defer("bob", "phone", start + 10_250 * MS),
        Deferred::GivenUp
    );
    assert_eq!(bursts.next_due(), None);
    // Taken at last: the deferral count starts over; a device that acked is gone.
    assert_eq!(bursts.defer("carol", "phone", start), Deferred::Gone);
}
