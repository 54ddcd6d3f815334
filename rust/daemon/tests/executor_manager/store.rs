//! The node's object store with a real node (#12): a file another process wrote, sealed
//! over the node's Unix socket, is accounted, pulled, announced when the node registers
//! again, counted in heartbeats as the budget spills it and restores it, deleted by the
//! head's command (reported removed); a pull of an object the node lacks goes through its
//! `RemoteFetch` (the copy is announced) or is NOT_FOUND naming it; executors learn where
//! the store is; and a stopped node leaves none of its dirs behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use flame_core::client::node_objects::NodeObjects;
use flame_core::ids::ObjectId;
use flame_core::objects::format::header;
use flame_core::objects::remote::RemoteFetch;
use flame_core::objects::store::{ObjectStore, StoreConfig};
use flame_core::proto::{node_command, node_message, ObjectRefs, ObjectStoreStats};
use flame_daemon::executor_manager::{LocalNode, NodeConfig};

use super::fake_head::{within, Harness, NodeConn};
use super::ECHO;

const A: ObjectId = ObjectId(0x5_0000_0001);
const B: ObjectId = ObjectId(0x5_0000_0002);

/// A node config with a small store in the work dir; its id and socket come on `report`.
fn config(
    h: &Harness,
    budget: u64,
) -> (NodeConfig, tokio::sync::watch::Receiver<Option<LocalNode>>) {
    let (tx, rx) = tokio::sync::watch::channel(None);
    let config = NodeConfig {
        object_store_bytes: Some(budget),
        object_shm_root: None,
        local_report: Some(Arc::new(tx)),
        ..h.config(1, &[ECHO])
    };
    (config, rx)
}

async fn local_node(rx: &mut tokio::sync::watch::Receiver<Option<LocalNode>>) -> LocalNode {
    within(rx.wait_for(Option::is_some))
        .await
        .expect("reported")
        .clone()
        .expect("some")
}

/// Another process writes the object file, with the Python writer of the repository.
fn write_with_python(dir: &Path, id: ObjectId, len: usize) {
    let module = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../python/flame/_object_file.py"
    );
    let script = "import importlib.util as u, sys\n\
         s = u.spec_from_file_location('of', sys.argv[1]); m = u.module_from_spec(s)\n\
         s.loader.exec_module(m)\n\
         m.write_object(sys.argv[2], int(sys.argv[3]), [bytes([7]) * int(sys.argv[4])])\n";
    let status = std::process::Command::new("python3")
        .args(["-c", script, module])
        .arg(dir)
        .args([id.0.to_string(), len.to_string()])
        .status()
        .expect("python3 runs");
    assert!(status.success());
}

fn write_here(dir: &Path, id: ObjectId, data: &[u8]) {
    let mut bytes = header(id, data.len() as u64).to_vec();
    bytes.extend_from_slice(data);
    std::fs::write(dir.join(format!("{:016x}", id.0)), bytes).expect("write");
}

/// The next message `pick` accepts, skipping the others (heartbeats...); fails after
/// [`super::fake_head::WAIT`] in all.
async fn until<T>(node: &mut NodeConn, mut pick: impl FnMut(node_message::Msg) -> Option<T>) -> T {
    let wait = async {
        loop {
            if let Some(found) = node.next().await.and_then(&mut pick) {
                return found;
            }
        }
    };
    within(wait).await
}

/// The first heartbeat whose store figures satisfy `ok`.
async fn stats(node: &mut NodeConn, ok: impl Fn(&ObjectStoreStats) -> bool) -> ObjectStoreStats {
    until(node, |m| match m {
        node_message::Msg::Heartbeat(b) => b.objects.filter(|s| ok(s)),
        _ => None,
    })
    .await
}

fn dirs_under(work: &Path) -> Vec<PathBuf> {
    ["objects-mem", "objects-spill"]
        .iter()
        .filter_map(|d| std::fs::read_dir(work.join(d)).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_object_is_accounted_announced_spilled_restored_deleted_and_cleaned_up() {
    let mut h = Harness::start("store-seal").await;
    let (config, mut report) = config(&h, 1000);
    let work = config.work_dir.clone();
    let (task, token, mut node) = h.node_with(config, 7).await;
    let local = local_node(&mut report).await;
    assert_eq!(local.node_id, 7);
    let memory = local.socket.parent().expect("memory dir").to_path_buf();
    let objects = within(NodeObjects::connect(&local.socket))
        .await
        .expect("socket");

    write_with_python(&memory, A, 600);
    objects.seal(A, 600).await.expect("sealed");
    assert_eq!(objects.pull(&[A]).await.expect("pulled"), [(A, 600)]);
    let s = stats(&mut node, |s| s.objects == 1).await;
    assert_eq!(
        (s.memory_bytes, s.spilled_bytes, s.budget_bytes),
        (600, 0, 1000)
    );

    // A second object over the budget: the least recently used primary spills...
    write_here(&memory, B, &[1; 600]);
    objects.seal(B, 600).await.expect("sealed");
    let s = stats(&mut node, |s| s.objects == 2).await;
    assert_eq!(
        (s.memory_bytes, s.spilled_bytes, s.spilled_total_bytes),
        (600, 600, 600)
    );
    let spill = PathBuf::from(std::fs::read_to_string(memory.join("spill_dir")).expect("note"));
    assert!(spill.join(format!("{:016x}", A.0)).exists());
    // ... and comes back on a pull, while the other goes.
    assert_eq!(objects.pull(&[A]).await.expect("pulled"), [(A, 600)]);
    assert!(memory.join(format!("{:016x}", A.0)).exists());
    assert!(spill.join(format!("{:016x}", B.0)).exists());
    stats(&mut node, |s| s.spilled_total_bytes == 1200).await;

    // A head that restarts hears of everything held when the node registers again.
    h.restart().await;
    drop(node); // the old head ends the stream
    let (mut node, register) = h.accept(7).await;
    assert_eq!(register.previous_node_id, 7);
    let mut announced = until(&mut node, |m| match m {
        node_message::Msg::ObjectsAdded(added) => Some(added.objects),
        _ => None,
    })
    .await;
    announced.sort_by_key(|o| o.object_id);
    let announced: Vec<_> = announced.iter().map(|o| (o.object_id, o.size)).collect();
    assert_eq!(announced, [(A.0, 600), (B.0, 600)]);

    // The head deletes one: gone from disk, reported removed, no longer counted.
    node.send(node_command::Msg::DeleteObjects(ObjectRefs {
        object_ids: vec![B.0],
    }))
    .await;
    let removed = until(&mut node, |m| match m {
        node_message::Msg::ObjectsRemoved(r) => Some(r.object_ids),
        _ => None,
    })
    .await;
    assert_eq!(removed, [B.0]);
    assert!(!spill.join(format!("{:016x}", B.0)).exists());
    stats(&mut node, |s| s.objects == 1 && s.spilled_bytes == 0).await;

    // Bad input is named: a missing object, a damaged file.
    let err = objects.pull(&[B]).await.unwrap_err().to_string();
    assert!(
        err.contains("0x500000002") && err.contains("not on this node"),
        "{err}"
    );
    let damaged = ObjectId(0x5_0000_0003);
    write_here(&memory, damaged, b"abc");
    let path = memory.join(format!("{:016x}", damaged.0));
    let mut bytes = std::fs::read(&path).expect("read");
    bytes.truncate(bytes.len() - 1);
    std::fs::write(&path, bytes).expect("write");
    let err = objects.seal(damaged, 3).await.unwrap_err().to_string();
    assert!(err.contains("object 0x500000003 is damaged"), "{err}");
    assert!(!path.exists(), "a damaged file is removed");

    drop(objects);
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    assert!(
        report.borrow().is_none(),
        "a stopped node is no longer reported"
    );
    assert!(!memory.exists() && !spill.exists());
    assert_eq!(dirs_under(&work), Vec::<PathBuf>::new());
    h.stop().await;
}

/// Copies from another store, as a transfer from another node would.
#[derive(Debug)]
struct FromStore(Arc<ObjectStore>);

#[tonic::async_trait]
impl RemoteFetch for FromStore {
    async fn fetch(&self, store: Arc<ObjectStore>, id: ObjectId) -> flame_core::Result<u64> {
        use std::io::Read;
        let mut source = self.0.open_object(id)?;
        let mut data = Vec::new();
        source.file.read_to_end(&mut data).expect("read");
        let mut writer = store.writer_sized(id, source.size)?;
        writer.write(&data)?;
        let size = writer.commit_copy()?;
        store.record_transfer(size);
        Ok(size)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_of_a_missing_object_goes_through_the_remote_fetch_and_the_copy_is_announced() {
    let mut h = Harness::start("store-pull").await;
    let other = tempfile::tempdir().expect("tempdir");
    let mut other_config = StoreConfig::new(other.path(), 1 << 20);
    other_config.shm_root = None;
    let source = ObjectStore::open(&other_config).expect("store");
    let mut w = source.writer(A).expect("writer");
    w.write(b"far away").expect("write");
    w.commit_primary().expect("commit");
    let (mut config, mut report) = config(&h, 1000);
    config.remote_fetch = Some(Arc::new(FromStore(source.clone())));
    let (task, token, mut node) = h.node_with(config, 3).await;
    let local = local_node(&mut report).await;
    let objects = within(NodeObjects::connect(&local.socket))
        .await
        .expect("socket");

    assert_eq!(
        objects.pull(&[A, A]).await.expect("pulled"),
        [(A, 8), (A, 8)]
    );
    let added = until(&mut node, |m| match m {
        node_message::Msg::ObjectsAdded(a) => Some(a.objects),
        _ => None,
    })
    .await;
    assert_eq!((added[0].object_id, added[0].size), (A.0, 8));
    let s = stats(&mut node, |s| s.transfers_total == 1).await;
    assert_eq!((s.transferred_bytes, s.objects), (8, 1));
    let err = objects.pull(&[B]).await.unwrap_err().to_string();
    assert!(err.contains("0x500000002"), "{err}");

    // Executors are told where the store is and which node they are on.
    node.spawn(1).await;
    let _executors = h.executors(1).await; // held: dropping them ends the executor
    let pid = *h.tagged_pids().iter().next().expect("executor");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let environ = String::from_utf8_lossy(&environ);
    let memory = local.socket.parent().expect("dir").display().to_string();
    for var in [
        format!("FLAME_NODE_SOCKET={}", local.socket.display()),
        format!("FLAME_NODE_OBJECTS={memory}"),
        "FLAME_NODE_ID=3".to_string(),
    ] {
        assert!(environ.split('\0').any(|v| v == var), "{var} missing");
    }

    drop(objects);
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    h.no_children_left().await;
    assert!(!Path::new(&memory).exists());
    h.stop().await;
}
