//! The object store of the head's own node (#12): `flame-daemon start` and the embedded
//! cluster tell their clients on this machine where it is (`HelloReply.local_node_id` /
//! `node_socket`) — ready before the first hello — and the store is gone when the cluster
//! stops. A head with no node of its own tells no one.

mod common;

use std::time::Duration;

use flame_core::client::node_objects::NodeObjects;
use flame_core::ids::ObjectId;
use flame_daemon::session_manager::ManagerConfig;

use common::{admin_client, head_config, start_echo_cluster, start_head};

#[tokio::test(flavor = "multi_thread")]
async fn clients_of_the_local_cluster_learn_its_nodes_object_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = start_echo_cluster(dir.path(), 1, ManagerConfig::default()).await;
    let client = admin_client(&cluster.head, "local-node").await;
    let (node_id, socket) = client
        .local_node()
        .expect("the local node is known at once");
    assert!(node_id > 0);
    let socket = std::path::PathBuf::from(socket);
    let objects = NodeObjects::connect(&socket).await.expect("socket answers");
    let err = objects.pull(&[ObjectId(0x1_0000_0001)]).await.unwrap_err();
    assert!(err.to_string().contains("0x100000001"), "{err}");
    drop(objects);
    let memory = socket.parent().expect("memory dir").to_path_buf();
    let spill = std::fs::read_to_string(memory.join("spill_dir")).expect("spill dir note");
    drop(client);
    cluster.stop().await;
    assert!(!memory.exists(), "{} left behind", memory.display());
    assert!(
        !std::path::Path::new(&spill).exists(),
        "{spill} left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_head_without_a_node_names_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let head = start_head(head_config(dir.path(), ManagerConfig::default()))
        .await
        .expect("head");
    let client = admin_client(&head, "no-node").await;
    assert_eq!(client.local_node(), None);
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), head.stop())
        .await
        .expect("head stops");
}
