//! A pulled object stays where its reader will map it (#12): a `Pull` with `pin` keeps the
//! object in the node's memory dir — another object sealed meanwhile, over the budget, does
//! not move it — until the reader's `Release`, after which the store makes room at once.

use std::path::Path;

use flame_core::client::node_objects::NodeObjects;
use flame_core::ids::ObjectId;
use flame_core::objects::format::header;
use flame_daemon::executor_manager::NodeConfig;

use super::fake_head::{within, Harness};
use super::ECHO;

const A: ObjectId = ObjectId(0x6_0000_0001);
const B: ObjectId = ObjectId(0x6_0000_0002);

fn write_here(dir: &Path, id: ObjectId, data: &[u8]) {
    let mut bytes = header(id, data.len() as u64).to_vec();
    bytes.extend_from_slice(data);
    std::fs::write(dir.join(format!("{:016x}", id.0)), bytes).expect("write");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pinned_pull_stays_in_memory_until_released() {
    let mut h = Harness::start("store-pin").await;
    let (tx, mut report) = tokio::sync::watch::channel(None);
    let config = NodeConfig {
        object_store_bytes: Some(1000),
        object_shm_root: None,
        local_report: Some(std::sync::Arc::new(tx)),
        ..h.config(1, &[ECHO])
    };
    let (task, token, _node) = h.node_with(config, 7).await;
    let local = within(report.wait_for(Option::is_some))
        .await
        .expect("reported")
        .clone()
        .expect("some");
    let memory = local.socket.parent().expect("memory dir").to_path_buf();
    let spill = std::path::PathBuf::from(
        std::fs::read_to_string(memory.join("spill_dir")).expect("spill note"),
    );
    let objects = within(NodeObjects::connect(&local.socket))
        .await
        .expect("socket");
    let file = |dir: &Path, id: ObjectId| dir.join(format!("{:016x}", id.0));

    write_here(&memory, A, &[1; 600]);
    objects.seal(A, 600).await.expect("sealed");
    assert_eq!(objects.pull_pinned(&[A]).await.expect("pulled"), [(A, 600)]);
    // Over the budget while A is pinned: A, the least recently used, would spill.
    write_here(&memory, B, &[2; 600]);
    objects.seal(B, 600).await.expect("sealed");
    assert!(
        file(&memory, A).exists(),
        "a pinned object moved before its reader released it"
    );
    objects.release(&[A]).await.expect("released");
    assert!(
        file(&spill, A).exists(),
        "released over the budget: A spills at once"
    );
    assert!(file(&memory, B).exists());
    // A release of what is not pinned (or id 0) is harmless / named.
    objects.release(&[A]).await.expect("released again");
    let err = objects
        .release(&[ObjectId(0)])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("object_id is required"), "{err}");

    drop(objects);
    token.cancel();
    within(task).await.expect("node task").expect("clean stop");
    h.stop().await;
}
