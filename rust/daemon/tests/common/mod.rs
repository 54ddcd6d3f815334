//! Helpers shared by the daemon's integration tests: opening sessions on a running head.
//! Each test crate includes this module and uses its own subset of it.
#![allow(dead_code)]

use bytes::Bytes;
use flame_core::client::Client;
use flame_core::ids::SessionId;
use flame_core::model::SessionSpec;
use flame_core::proto;

/// Open a session with exactly this spec.
pub async fn create_session(client: &Client, spec: SessionSpec) -> SessionId {
    let req = proto::CreateSessionRequest {
        spec: Some(spec.into()),
    };
    let info = client.frontend().create_session(req).await.unwrap();
    SessionId(info.into_inner().id)
}

/// Open a session of the echo application (`flame-echo-executor`) with default options.
pub async fn open_echo_session(client: &Client) -> SessionId {
    let spec = SessionSpec {
        application: "echo".into(),
        app_spec: Bytes::from_static(b"inline"),
        ..Default::default()
    };
    create_session(client, spec).await
}
