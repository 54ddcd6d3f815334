//! The store against real files in a temp dir: writing and sealing, damaged files, the
//! eviction and spill order, restore, objects larger than the budget, deletes, and a
//! mapping that outlives its file's eviction.

use std::io::Read;
use std::sync::Arc;

use super::*;
use crate::objects::format::header;

fn store(budget: u64) -> (tempfile::TempDir, Arc<ObjectStore>) {
    let work = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::new(work.path(), budget);
    config.shm_root = None;
    (work, ObjectStore::open(&config).unwrap())
}

fn put(store: &Arc<ObjectStore>, id: u64, data: &[u8], kind: Kind) {
    let mut w = store.writer(ObjectId(id)).unwrap();
    w.write(&data[..data.len() / 2]).unwrap();
    w.write(&data[data.len() / 2..]).unwrap();
    let size = match kind {
        Kind::Primary => w.commit_primary(),
        Kind::Cached => w.commit_copy(),
    };
    assert_eq!(size.unwrap(), data.len() as u64);
}

/// What a local process does: header + data into the memory dir.
fn write_local(store: &ObjectStore, id: u64, data: &[u8]) -> PathBuf {
    let path = store.memory_dir().join(file_name(ObjectId(id)));
    let mut bytes = header(ObjectId(id), data.len() as u64).to_vec();
    bytes.extend_from_slice(data);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn read(store: &ObjectStore, id: u64) -> Vec<u8> {
    let mut f = store.open_object(ObjectId(id)).unwrap();
    let mut out = Vec::new();
    f.file.read_to_end(&mut out).unwrap();
    assert_eq!(out.len() as u64, f.size);
    out
}

fn place(store: &ObjectStore, id: u64) -> Option<Place> {
    store.entry(ObjectId(id)).map(|(_, _, p)| p)
}

#[test]
fn written_and_sealed_objects_are_read_back_and_counted() {
    let (_w, s) = store(1 << 20);
    put(&s, 1, b"hello world", Kind::Primary);
    write_local(&s, 2, b"sealed");
    s.seal(ObjectId(2), 6).unwrap();
    s.seal(ObjectId(2), 6).unwrap(); // again: nothing changes
    assert_eq!(read(&s, 1), b"hello world");
    assert_eq!(read(&s, 2), b"sealed");
    let stats = s.stats();
    assert_eq!((stats.objects, stats.memory_bytes), (2, 17));
    assert_eq!(stats.budget_bytes, 1 << 20);
    let err = s.writer(ObjectId(1)).unwrap_err().to_string();
    assert!(err.contains("already stored"), "{err}");
    let err = s.seal(ObjectId(2), 7).unwrap_err().to_string();
    assert!(err.contains("already stored with 6 bytes"), "{err}");
    let mut held = s.held();
    held.sort();
    assert_eq!(held, [(ObjectId(1), 11), (ObjectId(2), 6)]);
    // No leftovers of the writer's temporary files.
    let names: Vec<String> = std::fs::read_dir(s.memory_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn damaged_missing_and_missized_files_are_refused_and_removed() {
    let (_w, s) = store(1 << 20);
    let err = s.seal(ObjectId(5), 3).unwrap_err();
    assert!(matches!(err, FlameError::NotFound(_)), "{err}");
    let path = write_local(&s, 6, b"abc");
    let err = s.seal(ObjectId(6), 4).unwrap_err().to_string();
    assert!(
        err.contains("sealed as 4 bytes but its file holds 3"),
        "{err}"
    );
    assert!(!path.exists());
    let path = write_local(&s, 7, b"abcdef");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 2);
    std::fs::write(&path, bytes).unwrap();
    let err = s.seal(ObjectId(7), 6).unwrap_err().to_string();
    assert!(
        err.contains("object 0x7 is damaged") && err.contains("truncated"),
        "{err}"
    );
    assert!(!path.exists());
    // Damaged after it was stored: refused on open, removed, reported.
    let mut events = s.subscribe();
    put(&s, 8, b"12345678", Kind::Primary);
    let path = s.memory_dir().join(file_name(ObjectId(8)));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[20] ^= 0xff; // the length field: the header checksum fails
    std::fs::write(&path, bytes).unwrap();
    let err = s.open_object(ObjectId(8)).unwrap_err().to_string();
    assert!(
        err.contains("object 0x8 is damaged: its header fails its checksum"),
        "{err}"
    );
    assert!(!s.contains(ObjectId(8)) && !path.exists());
    assert_eq!(
        events.try_recv().unwrap(),
        StoreEvent::Removed(vec![ObjectId(8)])
    );
    assert_eq!(s.stats().objects, 0);
}

#[test]
fn copies_are_evicted_least_recently_used_first_then_primaries_spill() {
    let (_w, s) = store(100);
    let mut events = s.subscribe();
    put(&s, 1, &[1; 40], Kind::Primary);
    put(&s, 2, &[2; 30], Kind::Cached);
    put(&s, 3, &[3; 30], Kind::Cached);
    assert_eq!(
        events.try_recv().unwrap(),
        StoreEvent::Added(vec![(ObjectId(2), 30)])
    );
    assert_eq!(
        events.try_recv().unwrap(),
        StoreEvent::Added(vec![(ObjectId(3), 30)])
    );
    read(&s, 2); // 3 is now the least recently used copy
    write_local(&s, 4, &[4; 50]);
    s.seal(ObjectId(4), 50).unwrap();
    assert_eq!(
        events.try_recv().unwrap(),
        StoreEvent::Removed(vec![ObjectId(3), ObjectId(2)])
    );
    assert!(!s.memory_dir().join(file_name(ObjectId(3))).exists());
    // Only primaries left: the least recently used one spills, the new one stays.
    put(&s, 5, &[5; 60], Kind::Primary);
    assert_eq!(place(&s, 1), Some(Place::Spilled));
    assert_eq!(place(&s, 4), Some(Place::Spilled));
    assert_eq!(place(&s, 5), Some(Place::Memory));
    assert!(s.spill_dir().join(file_name(ObjectId(1))).exists());
    assert!(!s.memory_dir().join(file_name(ObjectId(1))).exists());
    let stats = s.stats();
    assert_eq!((stats.memory_bytes, stats.spilled_bytes), (60, 90));
    assert_eq!(stats.spilled_total_bytes, 90);
    assert!(events.try_recv().is_err(), "spilling removes nothing");
}

#[test]
fn a_spilled_primary_is_restored_on_access_and_another_spills() {
    let (_w, s) = store(100);
    put(&s, 1, &[1; 60], Kind::Primary);
    put(&s, 2, &[2; 60], Kind::Primary);
    assert_eq!(place(&s, 1), Some(Place::Spilled));
    assert_eq!(read(&s, 1), [1; 60]);
    assert_eq!(place(&s, 1), Some(Place::Memory));
    assert_eq!(place(&s, 2), Some(Place::Spilled));
    assert_eq!(read(&s, 2), [2; 60], "and back again");
    assert_eq!(s.stats().spilled_total_bytes, 180);
}

#[test]
fn an_object_larger_than_the_budget_goes_straight_to_disk() {
    let (_w, s) = store(100);
    let mut w = s.writer_sized(ObjectId(1), 150).unwrap();
    w.write(&[7; 150]).unwrap();
    w.commit_primary().unwrap();
    assert_eq!(place(&s, 1), Some(Place::Spilled));
    // A local process's file over the budget is moved there on seal.
    write_local(&s, 2, &[8; 120]);
    s.seal(ObjectId(2), 120).unwrap();
    assert_eq!(place(&s, 2), Some(Place::Spilled));
    // Read from disk: it cannot be restored into memory.
    assert_eq!(read(&s, 1), [7; 150]);
    assert_eq!(place(&s, 1), Some(Place::Spilled));
    let stats = s.stats();
    assert_eq!((stats.memory_bytes, stats.spilled_bytes), (0, 270));
    // A writer given a size refuses more or fewer bytes.
    let mut w = s.writer_sized(ObjectId(3), 4).unwrap();
    assert!(w
        .write(&[0; 5])
        .unwrap_err()
        .to_string()
        .contains("4 bytes"));
    w.write(&[0; 3]).unwrap();
    assert!(w
        .commit_primary()
        .unwrap_err()
        .to_string()
        .contains("only 3"));
    assert!(!s.contains(ObjectId(3)));
}

#[test]
fn a_mapped_copy_stays_readable_after_eviction() {
    let (_w, s) = store(100);
    put(&s, 1, &[9; 80], Kind::Cached);
    let f = s.open_object(ObjectId(1)).unwrap();
    let len = (f.size as usize) + HEADER_BYTES;
    use std::os::fd::AsRawFd;
    // SAFETY: a read-only private mapping of a file we hold open, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    drop(f);
    put(&s, 2, &[2; 90], Kind::Primary); // evicts the copy
    assert!(!s.contains(ObjectId(1)));
    assert!(!s.memory_dir().join(file_name(ObjectId(1))).exists());
    // SAFETY: the mapping is `len` bytes long and still mapped.
    let bytes = unsafe { std::slice::from_raw_parts(map as *const u8, len) };
    assert!(bytes[HEADER_BYTES..].iter().all(|b| *b == 9));
    // SAFETY: unmapping what was mapped above.
    unsafe { libc::munmap(map, len) };
}

#[test]
fn deletes_remove_every_copy_and_an_owners_objects() {
    let (_w, s) = store(100);
    let mut events = s.subscribe();
    let owned = |client: u32, n: u32| (u64::from(client) << 32) | u64::from(n);
    put(&s, owned(1, 1), &[1; 60], Kind::Primary);
    put(&s, owned(1, 2), &[1; 60], Kind::Primary); // spills the first
    put(&s, owned(2, 1), &[2; 10], Kind::Cached);
    write_local(&s, owned(3, 1), b"never sealed");
    events.try_recv().unwrap(); // the copy's Added
    assert_eq!(s.delete_owner(ClientId(1)).len(), 2);
    let removed = s.delete(&[ObjectId(owned(2, 1)), ObjectId(owned(3, 1)), ObjectId(99)]);
    assert_eq!(removed, [ObjectId(owned(2, 1))]);
    assert!(matches!(events.try_recv().unwrap(), StoreEvent::Removed(ids) if ids.len() == 2));
    assert_eq!(
        s.stats(),
        ObjectStoreStats {
            budget_bytes: 100,
            spilled_total_bytes: 60,
            ..Default::default()
        }
    );
    for dir in [s.memory_dir(), s.spill_dir()] {
        let objects: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != SPILL_DIR_FILE)
            .collect();
        assert!(objects.is_empty(), "{objects:?}");
    }
}

#[test]
fn closing_removes_both_dirs() {
    let (work, s) = store(100);
    put(&s, 1, &[1; 60], Kind::Primary);
    put(&s, 2, &[1; 60], Kind::Primary);
    let (memory, spill) = (s.memory_dir().to_path_buf(), s.spill_dir().to_path_buf());
    drop(s);
    assert!(!memory.exists() && !spill.exists());
    assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    let err = ObjectStore::open(&StoreConfig::new(work.path(), 0)).unwrap_err();
    assert!(err.to_string().contains("budget"), "{err}");
}

/// A pulled copy stays until its reader has mapped it and released it: another object
/// stored in between (the store over its budget) does not evict it.
#[test]
fn a_pinned_copy_is_not_evicted_before_its_release() {
    let (_w, s) = store(100);
    put(&s, 1, &[1; 60], Kind::Cached);
    let opened = s.open_pinned(ObjectId(1)).unwrap();
    put(&s, 2, &[2; 60], Kind::Primary); // 120 held: the copy would be the one to go
    assert!(
        opened.path.exists(),
        "the pinned copy was evicted before its reader mapped it"
    );
    assert_eq!(place(&s, 1), Some(Place::Memory));
    s.release(&[ObjectId(1)]);
    assert_eq!(
        place(&s, 1),
        None,
        "released over the budget: the copy goes at once"
    );
    assert!(!opened.path.exists());
}
