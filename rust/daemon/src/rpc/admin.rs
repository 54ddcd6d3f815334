//! The Frontend's security calls (#11): `Discover`, `JoinNode` and the admin-only token and
//! node-revocation calls. Being built on the `tokens` branch; until then each answers
//! UNIMPLEMENTED naming itself.

use tonic::{Request, Response, Status};

use flame_core::proto;

fn not_yet<T>(call: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!(
        "{call} is not available yet"
    )))
}

pub async fn discover(_: Request<proto::Empty>) -> Result<Response<proto::DiscoverReply>, Status> {
    not_yet("Discover")
}

pub async fn join_node(
    _: Request<proto::JoinRequest>,
) -> Result<Response<proto::JoinReply>, Status> {
    not_yet("JoinNode")
}

pub async fn create_token(
    _: Request<proto::TokenSpec>,
) -> Result<Response<proto::TokenCreated>, Status> {
    not_yet("CreateToken")
}

pub async fn list_tokens(_: Request<proto::Empty>) -> Result<Response<proto::TokenList>, Status> {
    not_yet("ListTokens")
}

pub async fn revoke_token(
    _: Request<proto::TokenRef>,
) -> Result<Response<proto::TokenInfo>, Status> {
    not_yet("RevokeToken")
}

pub async fn revoke_node(
    _: Request<proto::NodeRef>,
) -> Result<Response<proto::RevokedNode>, Status> {
    not_yet("RevokeNode")
}
