use super::*;

fn d(b: u8) -> Digest {
    Digest([b; 32])
}

fn e(seq: u64, digest: u8, view: u64) -> Entry {
    Entry { seq: SeqNo(seq), digest: d(digest), view: View(view) }
}

/// A view-change message from `r` with stable checkpoint `h` (digest 0xC0+h).
fn vc(r: u16, h: u64, prepared: &[Entry], pre_prepared: &[Entry]) -> ViewChangeInfo {
    ViewChangeInfo {
        replica: ReplicaId(r),
        stable: SeqNo(h),
        checkpoints: vec![(SeqNo(h), d(0xC0 + h as u8))],
        prepared: prepared.to_vec(),
        pre_prepared: pre_prepared.to_vec(),
    }
}

const F: usize = 1;
const L: u64 = 256;

#[test]
fn a_prepared_request_is_carried_into_the_new_view() {
    let p = [e(1, 7, 0)];
    let msgs = [vc(0, 0, &p, &p), vc(1, 0, &p, &p), vc(2, 0, &[], &p)];
    let got = decide(F, L, &msgs).expect("decides");
    assert_eq!(got.checkpoint, (SeqNo(0), d(0xC0)));
    assert_eq!(got.choices, vec![(SeqNo(1), Choice::Request(d(7)))]);
}

#[test]
fn gaps_are_filled_with_null_requests() {
    let p = [e(3, 7, 0)];
    let msgs = [vc(0, 0, &p, &p), vc(1, 0, &p, &p), vc(2, 0, &[], &[])];
    let got = decide(F, L, &msgs).expect("decides");
    assert_eq!(
        got.choices,
        vec![(SeqNo(1), Choice::Null), (SeqNo(2), Choice::Null), (SeqNo(3), Choice::Request(d(7)))]
    );
}

#[test]
fn the_highest_certified_checkpoint_is_chosen() {
    // Checkpoint 8 is listed by two (f+1) messages and three have h <= 8;
    // checkpoint 16 is listed by one message only.
    let mut a = vc(0, 8, &[], &[]);
    a.checkpoints.push((SeqNo(16), d(0xD0)));
    let msgs = [a, vc(1, 8, &[], &[]), vc(2, 0, &[], &[])];
    assert_eq!(decide(F, L, &msgs).expect("decides").checkpoint, (SeqNo(8), d(0xC8)));
}

#[test]
fn a_checkpoint_most_replicas_are_past_is_not_chosen() {
    // Two messages list checkpoint 0 but only one has h <= 0: 2f+1 are past it,
    // and nothing else is certified.
    let mut a = vc(0, 0, &[], &[]);
    a.checkpoints.push((SeqNo(8), d(0xD8)));
    let mut b = vc(1, 8, &[], &[]);
    b.checkpoints.push((SeqNo(0), d(0xC0)));
    let msgs = [a, b, vc(2, 16, &[], &[])];
    assert_eq!(decide(F, L, &msgs), Err(Undecided::NoCheckpoint));
}

#[test]
fn prepared_in_an_old_view_and_pre_prepared_with_another_digest_in_a_newer_one() {
    // d7 prepared in view 1 at replicas 0 and 1 (so it may have committed); in
    // view 2 a faulty primary pre-prepared d9 at replica 2, which did not
    // prepare it. d7 must be chosen: the newer pre-prepare is not a prepared
    // certificate and does not conflict.
    let p7 = e(1, 7, 1);
    let q9 = e(1, 9, 2);
    let msgs = [vc(0, 0, &[p7], &[p7]), vc(1, 0, &[p7], &[p7]), vc(2, 0, &[], &[q9])];
    let got = decide(F, L, &msgs).expect("decides");
    assert_eq!(got.choices, vec![(SeqNo(1), Choice::Request(d(7)))]);
}

#[test]
fn a_request_prepared_in_a_newer_view_wins() {
    // d7 prepared in view 1 at replica 0; d9 prepared in view 2 at replicas 1, 2
    // (so d7 cannot have committed). Only d9 passes A1.
    let p7 = e(1, 7, 1);
    let p9 = e(1, 9, 2);
    let msgs = [vc(0, 0, &[p7], &[p7]), vc(1, 0, &[p9], &[p7, p9]), vc(2, 0, &[p9], &[p9])];
    let got = decide(F, L, &msgs).expect("decides");
    assert_eq!(got.choices, vec![(SeqNo(1), Choice::Request(d(9)))]);
}

#[test]
fn a_lying_prepared_entry_without_pre_prepare_support_is_not_chosen() {
    // Replica 3 (faulty) claims d66 prepared in a high view; nobody else
    // pre-prepared it, so A2 fails for it. The real d7 still has 2f+1 messages
    // without a conflicting P entry (0, 1, 2) and f+1 Q entries.
    let p7 = e(1, 7, 0);
    let lie = e(1, 66, 5);
    let msgs = [vc(0, 0, &[p7], &[p7]), vc(1, 0, &[p7], &[p7]), vc(2, 0, &[], &[p7]), vc(3, 0, &[lie], &[lie])];
    let got = decide(F, L, &msgs).expect("decides");
    assert_eq!(got.choices, vec![(SeqNo(1), Choice::Request(d(7)))]);
}

#[test]
fn a1_and_a2_are_both_required() {
    let p7 = e(1, 7, 1);
    let p9 = e(1, 9, 2);
    let msgs = [vc(0, 0, &[p7], &[p7]), vc(1, 0, &[p9], &[p7]), vc(2, 0, &[p9], &[])];
    // d7: A2 holds (0 and 1 list it in Q at view >= 1) but A1 fails (1 and 2
    // have a conflicting P entry in a higher view). d9: A1 holds for 1 and 2 only
    // plus 0? 0 has P at view 1 < 2: no conflict, so A1 holds; A2 fails (no Q
    // entry for d9). With "or" instead of "and" one of them would be chosen.
    assert_eq!(decide(F, L, &msgs), Err(Undecided::Seq(SeqNo(1))));
}

#[test]
fn the_null_request_needs_2f_plus_1_messages_below_the_sequence_number() {
    // Checkpoint 0 is certified by replicas 0, 1, 2 (h = 0). At seq 1 replica 0
    // has d7 prepared (with too little pre-prepare support to choose it);
    // replicas 1 and 2 have nothing there, and replica 3 has nothing because it
    // is past it (h = 8). Without the "h < n'" condition, 1, 2 and 3 would make
    // 2f+1 messages with no P entry and the null request would replace a
    // request that may have committed; with it, the decision must wait.
    let p7 = e(1, 7, 0);
    let mut past = vc(3, 8, &[], &[]);
    past.checkpoints.push((SeqNo(0), d(0xC0)));
    let msgs = [vc(0, 0, &[p7], &[p7]), vc(1, 0, &[], &[]), vc(2, 0, &[], &[]), past];
    assert_eq!(decide(F, L, &msgs), Err(Undecided::Seq(SeqNo(1))));
}

#[test]
fn too_few_messages_are_undecided() {
    let p = [e(1, 7, 0)];
    // Two messages cannot certify a checkpoint (2f+1 at or below it), nor choose
    // anything after one.
    let msgs = [vc(0, 0, &p, &p), vc(1, 0, &p, &p)];
    assert_eq!(decide(F, L, &msgs), Err(Undecided::NoCheckpoint));
}

#[test]
fn entries_beyond_the_window_are_ignored() {
    let far = e(L + 1, 7, 0);
    let msgs = [vc(0, 0, &[far], &[far]), vc(1, 0, &[far], &[far]), vc(2, 0, &[], &[])];
    assert_eq!(decide(F, L, &msgs).expect("decides").choices, vec![]);
}

#[test]
fn larger_clusters_need_larger_quorums() {
    // f = 2: 2f+1 = 5 messages, f+1 = 3 pre-prepares.
    let p = e(1, 7, 0);
    let msgs: Vec<_> = (0..5).map(|r| if r < 3 { vc(r, 0, &[p], &[p]) } else { vc(r, 0, &[], &[]) }).collect();
    assert_eq!(decide(2, L, &msgs).expect("decides").choices, vec![(SeqNo(1), Choice::Request(d(7)))]);
    let two: Vec<_> = (0..5).map(|r| if r < 2 { vc(r, 0, &[p], &[p]) } else { vc(r, 0, &[], &[]) }).collect();
    // Only 2 < f+1 pre-prepares: not a request; and 3 < 2f+1 messages without a
    // P entry: not null either.
    assert_eq!(decide(2, L, &two), Err(Undecided::Seq(SeqNo(1))));
}
