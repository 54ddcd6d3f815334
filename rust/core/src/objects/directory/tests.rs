//! Unit tests of the object directory: holders, node loss (lost vs rebuilt), deletes and
//! owner sweeps, placement bytes, listing.

use super::*;
use crate::ids::{SessionId, TaskId};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);

fn obj(client: u32, n: u64) -> ObjectId {
    ObjectId(((client as u64) << 32) | n)
}

fn task(client: u32, n: u32) -> TaskKey {
    TaskKey {
        session: SessionId(9),
        task: TaskId::compose(ClientId(client), n),
    }
}

#[test]
fn the_first_holder_is_the_primary_and_copies_follow() {
    let mut d = Directory::new();
    let x = obj(1, 1);
    assert_eq!(d.add(x, 100, A, None), Added::Primary);
    assert_eq!(d.add(x, 100, B, None), Added::Copy);
    assert_eq!(d.add(x, 100, B, None), Added::Known);
    assert_eq!(
        d.locate(x),
        Location::Held {
            size: 100,
            holders: &[A, B]
        }
    );
    assert_eq!(d.holdings(A), (1, 100));
    assert_eq!(d.holdings(B), (1, 100));
    assert_eq!(d.holdings(C), (0, 0));
    assert_eq!(d.locate(obj(1, 2)), Location::Unknown);
}

#[test]
fn the_creator_names_the_primary_even_after_a_copy_was_announced() {
    let mut d = Directory::new();
    let (x, y) = (obj(1, 1), obj(1, 2));
    assert_eq!(d.add(x, 100, B, None), Added::Primary);
    assert_eq!(d.add_primary(x, 100, A, None), Added::Copy);
    assert_eq!(
        d.locate(x),
        Location::Held {
            size: 100,
            holders: &[A, B]
        }
    );
    d.add(y, 5, B, None);
    d.add(y, 5, A, None);
    assert_eq!(d.add_primary(y, 5, A, None), Added::Known);
    assert_eq!(
        d.locate(y),
        Location::Held {
            size: 5,
            holders: &[A, B]
        }
    );
}

#[test]
fn bytes_on_counts_only_what_the_node_holds() {
    let mut d = Directory::new();
    let (x, y, z) = (obj(1, 1), obj(1, 2), obj(1, 3));
    d.add(x, 100, A, None);
    d.add(y, 50, A, None);
    d.add(y, 50, B, None);
    d.add(z, 7, B, None);
    let reads = [x, y, z, obj(1, 99)];
    assert_eq!(d.bytes_on(A, &reads), 150);
    assert_eq!(d.bytes_on(B, &reads), 57);
    assert_eq!(d.bytes_on(C, &reads), 0);
}

#[test]
fn a_lost_node_takes_its_only_copies_and_its_results_are_rebuilt() {
    let mut d = Directory::new();
    let shared = obj(1, 1);
    let only = obj(1, 2);
    let t = task(1, 5);
    let result = ObjectId::result_of(t.task);
    d.add(shared, 10, A, None);
    d.add(shared, 10, B, None);
    d.add(only, 20, A, None);
    d.add(result, 30, A, Some(t));

    let loss = d.node_lost(A, "n1");
    assert_eq!(loss.lost, vec![only]);
    assert_eq!(loss.rebuild, vec![(result, t)]);
    // The copy on B is now the primary.
    assert_eq!(
        d.locate(shared),
        Location::Held {
            size: 10,
            holders: &[B]
        }
    );
    match d.locate(only) {
        Location::Lost { size: 20, reason } => {
            assert!(
                reason.contains("n1") && reason.contains(&only.to_string()),
                "{reason}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.locate(result), Location::Rebuilding { size: 30 });
    assert!(d.is_rebuilding(result));
    assert_eq!(d.holdings(A), (0, 0));
    // A second loss of the same node changes nothing (no second re-run).
    assert_eq!(d.node_lost(A, "n1"), NodeLoss::default());

    // The re-run's result is announced from another node: held again.
    assert_eq!(d.add(result, 30, C, Some(t)), Added::Primary);
    assert_eq!(
        d.locate(result),
        Location::Held {
            size: 30,
            holders: &[C]
        }
    );
    // Lost again: rebuilt again (once per loss).
    assert_eq!(d.node_lost(C, "n3").rebuild, vec![(result, t)]);
    d.rebuild_failed(result, "its session is closed".into());
    assert_eq!(
        d.locate(result),
        Location::Lost {
            size: 30,
            reason: "its session is closed"
        }
    );
}

#[test]
fn a_node_that_comes_back_with_a_lost_object_makes_it_held_again() {
    let mut d = Directory::new();
    let x = obj(1, 1);
    d.add(x, 10, A, None);
    d.node_lost(A, "n1");
    assert!(matches!(d.locate(x), Location::Lost { .. }));
    assert_eq!(d.add(x, 10, A, None), Added::Primary);
    assert_eq!(d.holdings(A), (1, 10));
}

#[test]
fn removing_the_last_holder_loses_the_object() {
    let mut d = Directory::new();
    let x = obj(1, 1);
    d.add(x, 10, A, None);
    d.add(x, 10, B, None);
    assert!(!d.remove(x, A, "n1"));
    assert_eq!(d.holdings(A), (0, 0));
    assert!(!d.remove(x, A, "n1"), "not held there any more");
    assert!(d.remove(x, B, "n2"));
    match d.locate(x) {
        Location::Lost { reason, .. } => assert!(reason.contains("n2"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn delete_tells_every_holder_and_a_late_copy_is_deleted_too() {
    let mut d = Directory::new();
    let (x, y) = (obj(1, 1), obj(1, 2));
    d.add(x, 10, A, None);
    d.add(x, 10, B, None);
    d.add(y, 5, B, None);
    let tell = d.delete(&[x, y, obj(1, 3)]);
    assert_eq!(tell.get(&A), Some(&vec![x]));
    assert_eq!(tell.get(&B), Some(&vec![x, y]));
    assert_eq!(tell.len(), 2);
    assert_eq!(d.locate(x), Location::Unknown);
    assert_eq!(d.holdings(B), (0, 0));
    assert!(d.is_empty());
    // A copy fetched while the delete was on its way.
    assert_eq!(d.add(x, 10, C, None), Added::Deleted);
    assert_eq!(d.locate(x), Location::Unknown);
    // Deleting twice is fine.
    assert!(d.delete(&[x]).is_empty());
}

#[test]
fn an_owner_sweep_deletes_only_that_clients_objects_lost_ones_included() {
    let mut d = Directory::new();
    let (mine, lost, theirs) = (obj(7, 1), obj(7, 2), obj(8, 1));
    d.add(mine, 1, A, None);
    d.add(lost, 2, B, None);
    d.add(theirs, 3, A, None);
    d.node_lost(B, "n2");
    assert_eq!(d.owned_by(ClientId(7)), vec![mine, lost]);
    let tell = d.delete_owner(ClientId(7));
    assert_eq!(tell.get(&A), Some(&vec![mine]));
    assert_eq!(d.locate(lost), Location::Unknown);
    assert_eq!(d.owned_by(ClientId(7)), Vec::<ObjectId>::new());
    assert_eq!(d.holdings(A), (1, 3));
}

#[test]
fn list_pages_in_id_order_and_filters_by_node() {
    let mut d = Directory::new();
    for n in (1..=5).rev() {
        d.add(obj(1, n), n, A, None);
    }
    d.add(obj(1, 3), 3, B, None);
    let (page, total) = d.list(None, 1, 2);
    assert_eq!(total, 5);
    let ids: Vec<ObjectId> = page.iter().map(|v| v.id).collect();
    assert_eq!(ids, vec![obj(1, 2), obj(1, 3)]);
    assert_eq!(page[1].holders, vec![A, B]);
    let (page, total) = d.list(Some(B), 0, 10);
    assert_eq!(total, 1);
    assert_eq!(page[0].id, obj(1, 3));
    assert_eq!(d.list(Some(C), 0, 10), (Vec::new(), 0));
}

// ---- refs nested inside objects

fn held(d: &Directory, id: ObjectId) -> bool {
    matches!(d.locate(id), Location::Held { .. })
}

#[test]
fn a_contained_object_outlives_its_creators_delete_until_its_container_goes() {
    let mut d = Directory::new();
    let (inner, outer) = (obj(1, 1), obj(1, 2));
    d.add_primary(inner, 10, A, None);
    d.add_primary(outer, 20, B, None);
    d.contains(outer, &[inner]);
    assert_eq!(d.containers_of(inner), 1);

    assert!(
        d.delete(&[inner]).is_empty(),
        "held by its container: nothing to delete yet"
    );
    assert!(held(&d, inner));

    let tell = d.delete(&[outer]);
    assert_eq!(tell.get(&B), Some(&vec![outer]));
    assert_eq!(
        tell.get(&A),
        Some(&vec![inner]),
        "released with its container"
    );
    assert_eq!(d.locate(inner), Location::Unknown);
    assert_eq!(d.containers_of(inner), 0);
}

#[test]
fn deleting_a_container_keeps_a_child_its_creator_still_holds() {
    let mut d = Directory::new();
    let (inner, outer) = (obj(1, 1), obj(1, 2));
    d.add_primary(inner, 10, A, None);
    d.add_primary(outer, 20, A, None);
    d.contains(outer, &[inner, inner]);
    assert_eq!(d.containers_of(inner), 1, "a ref pickled twice counts once");
    assert_eq!(d.delete(&[outer]).get(&A), Some(&vec![outer]));
    assert!(held(&d, inner), "its creator never released it");
    assert_eq!(d.delete(&[inner]).get(&A), Some(&vec![inner]));
}

#[test]
fn a_child_of_two_containers_goes_with_the_last_and_chains_unwind() {
    let mut d = Directory::new();
    let (x, c1, c2, top) = (obj(1, 1), obj(1, 2), obj(2, 3), obj(2, 4));
    for id in [x, c1, c2, top] {
        d.add_primary(id, 1, A, None);
    }
    d.contains(c1, &[x]);
    d.contains(c2, &[x]);
    d.contains(top, &[c1]);
    assert!(d.delete(&[x, c1]).is_empty(), "both still contained");
    d.delete(&[c2]);
    assert!(held(&d, x), "c1 still holds it (top holds c1)");
    let tell = d.delete(&[top]);
    let mut gone = tell.get(&A).cloned().unwrap_or_default();
    gone.sort_unstable();
    assert_eq!(gone, vec![x, c1, top], "top releases c1, which releases x");
    assert!(d.is_empty());
}

#[test]
fn a_deleted_container_or_child_records_no_edge() {
    let mut d = Directory::new();
    let (inner, outer) = (obj(1, 1), obj(1, 2));
    d.add_primary(inner, 10, A, None);
    d.delete(&[inner]);
    d.add_primary(outer, 20, A, None);
    d.contains(outer, &[inner]);
    assert_eq!(
        d.containers_of(inner),
        0,
        "already deleted: nothing to keep"
    );
    d.delete(&[outer]);
    d.contains(outer, &[obj(1, 3)]);
    assert_eq!(
        d.containers_of(obj(1, 3)),
        0,
        "a deleted container holds nothing"
    );
}

#[test]
fn an_owners_lease_end_releases_what_its_containers_hold() {
    let mut d = Directory::new();
    let (inner, outer) = (obj(2, 1), obj(1, 2));
    d.add_primary(inner, 10, A, None);
    d.add_primary(outer, 20, B, None);
    d.contains(outer, &[inner]);
    d.delete_owner(ClientId(2));
    assert!(held(&d, inner), "client 1's object still holds it");
    d.delete_owner(ClientId(1));
    assert!(d.is_empty());
}

#[test]
fn an_inline_result_holds_its_refs_without_bytes_until_deleted_or_its_owner_goes() {
    // A task's result that travelled inline is a container with no bytes: its id is the
    // result's object id, deleted by the client that drops the result.
    let mut d = Directory::new();
    let (x, y) = (obj(2, 1), obj(2, 2));
    d.add_primary(x, 10, A, None);
    d.add_primary(y, 10, A, None);
    let first = ObjectId::result_of(task(1, 7).task);
    let second = ObjectId::result_of(task(1, 8).task);
    d.contains(first, &[x]);
    d.contains(second, &[y]);
    assert!(d.delete(&[x, y]).is_empty(), "both held by a result");
    assert_eq!(d.delete(&[first]).get(&A), Some(&vec![x]));
    assert!(held(&d, y));
    assert_eq!(d.owned_by(ClientId(1)), vec![second]);
    assert_eq!(d.delete_owner(ClientId(1)).get(&A), Some(&vec![y]));
    assert!(d.is_empty());
}

#[test]
fn a_result_announced_without_its_producer_is_still_rebuilt_by_its_id() {
    let mut d = Directory::new();
    let t = task(1, 7);
    let result = ObjectId::result_of(t.task);
    // A node re-announces it to a restarted head: no producer comes with it.
    d.add(result, 100, A, None);
    let loss = d.node_lost(A, "a");
    assert!(loss.lost.is_empty() && loss.rebuild.is_empty());
    assert_eq!(
        loss.orphans,
        vec![(result, t.task)],
        "its id names its task"
    );
    assert!(d.is_rebuilding(result));
    d.set_producer(result, t);
    assert_eq!(d.producer(result), Some(t));
}
