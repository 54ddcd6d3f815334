//! Transfers against real object servers on 127.0.0.1: an object arrives whole and in
//! order when its stream is cut mid-object (resumed from the bytes received), when the
//! first holder refuses or is gone (the next one sends it), and a holder that sends more
//! than the object's size is never believed.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use super::transfer::{fetch, put, Dialer, CHUNK_BYTES};
use crate::error::FlameError;
use crate::ids::ObjectId;
use crate::proto::node_objects_server::{NodeObjects, NodeObjectsServer};
use crate::proto::{self, FetchRequest, ObjectChunk};

/// An object server holding one object in memory. `cut_after` chunks into a stream it
/// ends the stream with an error, for the first `cuts` streams; `refuse` answers every call
/// with PERMISSION_DENIED; `extra` sends one byte more than the object has.
#[derive(Default)]
struct Holder {
    data: Vec<u8>,
    cut_after: usize,
    cuts: AtomicU32,
    refuse: bool,
    extra: bool,
    offsets: Mutex<Vec<u64>>,
    stored: Mutex<Vec<u8>>,
}

type Chunks = Pin<Box<dyn Stream<Item = Result<ObjectChunk, Status>> + Send>>;

#[tonic::async_trait]
impl NodeObjects for Arc<Holder> {
    type FetchStream = Chunks;

    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<Chunks>, Status> {
        if self.refuse {
            return Err(Status::permission_denied(
                "object 0x500000001 belongs to user bob",
            ));
        }
        let offset = req.into_inner().offset;
        self.offsets.lock().unwrap().push(offset);
        let mut data = self.data[offset as usize..].to_vec();
        if self.extra {
            data.push(0);
        }
        let cut = self.cuts.load(Ordering::SeqCst) > 0;
        if cut {
            self.cuts.fetch_sub(1, Ordering::SeqCst);
        }
        let mut out: Vec<Result<ObjectChunk, Status>> = data
            .chunks(CHUNK_BYTES)
            .map(|c| {
                Ok(ObjectChunk {
                    object_id: 0,
                    data: Bytes::copy_from_slice(c),
                })
            })
            .collect();
        if cut {
            out.truncate(self.cut_after);
            out.push(Err(Status::unavailable("connection cut")));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    async fn put(
        &self,
        req: Request<Streaming<ObjectChunk>>,
    ) -> Result<Response<proto::ObjectStored>, Status> {
        let mut s = req.into_inner();
        let mut id = 0;
        while let Some(c) = s.message().await? {
            if id == 0 {
                id = c.object_id;
            }
            self.stored.lock().unwrap().extend_from_slice(&c.data);
        }
        let size = self.stored.lock().unwrap().len() as u64;
        Ok(Response::new(proto::ObjectStored {
            object_id: id,
            size,
        }))
    }

    async fn seal(
        &self,
        _: Request<proto::ObjectStored>,
    ) -> Result<Response<proto::Empty>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn pull(
        &self,
        _: Request<proto::PullRequest>,
    ) -> Result<Response<proto::ObjectLocations>, Status> {
        Err(Status::unimplemented("test"))
    }

    async fn release(
        &self,
        _: Request<proto::PullRequest>,
    ) -> Result<Response<proto::Empty>, Status> {
        Err(Status::unimplemented("test"))
    }
}

/// A running server of `holder`; stopped when the guard drops.
struct Running {
    holder: proto::ObjectHolder,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn serve(name: &str, holder: Arc<Holder>) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = CancellationToken::new();
    let until = stop.clone();
    let service = NodeObjectsServer::new(holder).max_encoding_message_size(4 << 20);
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), until.cancelled())
            .await
            .unwrap();
    });
    Running {
        holder: proto::ObjectHolder {
            node_id: 1,
            node_name: name.into(),
            address: format!("http://127.0.0.1:{port}"),
        },
        stop,
    }
}

fn object(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

fn dialer() -> Dialer {
    Dialer::new(None, None, None, Duration::from_secs(5))
}

const ID: ObjectId = ObjectId(0x5_0000_0001);

/// Fetch object `ID` of `len` bytes from `holders`: the name of the node that sent it and
/// the bytes, or why not.
async fn fetch_from(
    holders: &[proto::ObjectHolder],
    len: usize,
) -> Result<(String, Vec<u8>), FlameError> {
    let mut got = Vec::new();
    let from = fetch(&dialer(), ID, len as u64, holders, &mut got).await?;
    Ok((from.node_name.clone(), got))
}

#[tokio::test]
async fn a_stream_cut_mid_object_resumes_from_the_bytes_received() {
    let data = object(5 * CHUNK_BYTES + 123);
    let holder = Arc::new(Holder {
        data: data.clone(),
        cut_after: 2,
        cuts: AtomicU32::new(1),
        ..Default::default()
    });
    let a = serve("a", holder.clone()).await;
    let (from, got) = fetch_from(std::slice::from_ref(&a.holder), data.len())
        .await
        .unwrap();
    assert_eq!(from, "a");
    assert!(got == data, "the bytes differ after a resume");
    // Asked from the start, then from where the cut left off (two whole chunks in).
    assert_eq!(*holder.offsets.lock().unwrap(), [0, 2 * CHUNK_BYTES as u64]);
}

#[tokio::test]
async fn a_refusing_or_stopped_holder_is_left_for_the_next() {
    let data = object(CHUNK_BYTES + 5);
    let refusing = serve(
        "r",
        Arc::new(Holder {
            data: data.clone(),
            refuse: true,
            ..Default::default()
        }),
    )
    .await;
    let stopped = serve(
        "s",
        Arc::new(Holder {
            data: data.clone(),
            ..Default::default()
        }),
    )
    .await;
    let gone = stopped.holder.clone();
    drop(stopped);
    let good = serve(
        "g",
        Arc::new(Holder {
            data: data.clone(),
            ..Default::default()
        }),
    )
    .await;
    let holders = [refusing.holder.clone(), gone, good.holder.clone()];
    let (from, got) = fetch_from(&holders, data.len()).await.unwrap();
    assert_eq!(from, "g");
    assert!(got == data);

    // Only refusals: the refusal is what the caller hears, naming the object.
    let err = fetch_from(&holders[..1], data.len()).await.unwrap_err();
    assert!(
        matches!(&err, FlameError::PermissionDenied(m) if m.contains("0x500000001")),
        "{err}"
    );
}

#[tokio::test]
async fn a_holder_that_keeps_cutting_or_sends_too_much_is_not_believed() {
    let data = object(3 * CHUNK_BYTES);
    let cutting = serve(
        "c",
        Arc::new(Holder {
            data: data.clone(),
            cut_after: 0,
            cuts: AtomicU32::new(100),
            ..Default::default()
        }),
    )
    .await;
    let err = fetch_from(std::slice::from_ref(&cutting.holder), data.len())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("0x500000001") && msg.contains("node c"),
        "{msg}"
    );

    let long = serve(
        "l",
        Arc::new(Holder {
            data: data.clone(),
            extra: true,
            ..Default::default()
        }),
    )
    .await;
    let err = fetch_from(std::slice::from_ref(&long.holder), data.len())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("which has"), "{err}");
}

#[tokio::test]
async fn a_put_sends_every_part_in_order() {
    let holder = Arc::new(Holder::default());
    let a = serve("a", holder.clone()).await;
    let parts = vec![
        Bytes::from(object(CHUNK_BYTES + 1)),
        Bytes::from_static(b"tail"),
    ];
    let size = put(&dialer(), &a.holder, ID, parts.clone()).await.unwrap();
    assert_eq!(size, CHUNK_BYTES as u64 + 5);
    assert_eq!(
        *holder.stored.lock().unwrap(),
        [&parts[0][..], &parts[1][..]].concat()
    );
}
