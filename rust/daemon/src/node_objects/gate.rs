//! Who may use a node's object server (README "Security", #12): a peer node with its
//! certificate (mutual TLS, verified against the cluster CA by the TLS layer) may read and
//! write any object; anyone else needs a bearer token, which the node does not judge
//! itself — it asks the head (`AuthorizeObjects`, with the node's own credentials), which
//! knows the tokens and who owns each object's client, and remembers the answer for
//! [`REMEMBER`] per (token, owning client). On plaintext (loopback) clusters peers come
//! with their node tokens, which the head answers for the same way.
//!
//! Cost: one head round trip per token and owner a minute; a transfer of any size is one
//! check. A revocation at the head reaches every node (`NodeCommand.access_revoked`, also
//! sent when a node registers), which forgets every answer at once and refuses the revoked
//! node certificates ([`Gate::revoked`]): revoked credentials stop working on the nodes
//! when the head stops accepting them, not up to [`REMEMBER`] later or until a restart.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flame_core::auth::{AUTHORIZATION_HEADER, BEARER_PREFIX};
use flame_core::ids::ObjectId;
use flame_core::proto;
use tonic::{Code, Request, Status};

use super::HeadWatch;

/// How long an answer of the head is kept.
pub const REMEMBER: Duration = Duration::from_secs(60);
/// Most answers kept (the cache starts over beyond it).
const MAX_ANSWERS: usize = 10_000;

/// What a caller presented, taken out of its request before the request is consumed.
#[derive(Clone, Debug)]
pub enum Credential {
    /// A node certificate the TLS layer verified: its node's name and fingerprint.
    Peer { name: String, fingerprint: String },
    /// A bearer token, to be checked by the head.
    Bearer(String),
}

/// The credential of `req`.
///
/// # Errors
/// `UNAUTHENTICATED` for no credentials, or an `authorization` header that is not
/// `Bearer <token>`.
pub fn credential<T>(req: &Request<T>) -> Result<Credential, Status> {
    if let Some(cert) = flame_core::tls::peer_node(req) {
        return Ok(Credential::Peer {
            name: cert.name,
            fingerprint: cert.fingerprint,
        });
    }
    let Some(value) = req.metadata().get(AUTHORIZATION_HEADER) else {
        return Err(Status::unauthenticated(
            "this node's object server needs credentials: a bearer token (or, for a node, \
             its certificate)",
        ));
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix(BEARER_PREFIX))
        .map(|t| Credential::Bearer(t.to_string()))
        .ok_or_else(|| {
            Status::unauthenticated(format!(
                "the {AUTHORIZATION_HEADER} header must read '{BEARER_PREFIX}<token>'"
            ))
        })
}

/// An answer of the head: allowed, or the refusal to repeat.
/// A refusal also keeps the object it named, so that a later refusal names its own object.
type Answer = Result<(), (Code, String, u64)>;

/// The object server's authorization, backed by the head.
pub struct Gate {
    /// The head's Frontend with the node's own credentials (`None`: not connected yet).
    head: HeadWatch,
    answers: Mutex<HashMap<(String, u32), (Instant, Answer)>>,
    /// Bumped by every revocation: an answer asked for before it is not kept.
    revocations: AtomicU64,
    /// Fingerprints of revoked node certificates.
    revoked_certs: Mutex<HashSet<String>>,
}

impl Gate {
    pub fn new(head: HeadWatch) -> Self {
        Self {
            head,
            answers: Mutex::default(),
            revocations: AtomicU64::new(0),
            revoked_certs: Mutex::default(),
        }
    }

    /// Credentials were revoked at the head: `cert_fingerprints` (every revoked node
    /// certificate) are refused from now on, and every remembered answer goes.
    pub fn revoked(&self, cert_fingerprints: Vec<String>) {
        *self.revoked_certs.lock().unwrap_or_else(|e| e.into_inner()) =
            cert_fingerprints.into_iter().collect();
        self.forget_answers();
    }

    /// Credentials were revoked at the head: every remembered answer goes, and answers to
    /// questions asked before now are not kept either.
    pub fn forget_answers(&self) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        self.revocations.fetch_add(1, Ordering::SeqCst);
        answers.clear();
    }

    /// `credential` may read (or, with `write`, store) `ids`.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` for a token the head refuses; `PERMISSION_DENIED` naming the object
    /// whose owner is not the token's user; `UNAVAILABLE` when the head cannot be asked.
    pub async fn check(
        &self,
        credential: &Credential,
        ids: &[ObjectId],
        write: bool,
    ) -> Result<(), Status> {
        let token = match credential {
            Credential::Peer { name, fingerprint } => {
                let revoked = self.revoked_certs.lock().unwrap_or_else(|e| e.into_inner());
                if revoked.contains(fingerprint) {
                    return Err(Status::unauthenticated(format!(
                        "the certificate of node {name} was revoked"
                    )));
                }
                return Ok(());
            }
            Credential::Bearer(t) => t,
        };
        let mut owners: Vec<u32> = ids.iter().map(|id| id.owner().0).collect();
        owners.sort_unstable();
        owners.dedup();
        for owner in owners {
            let of_owner: Vec<u64> = ids
                .iter()
                .filter(|id| id.owner().0 == owner)
                .map(|id| id.0)
                .collect();
            let answer = match self.remembered(token, owner) {
                Some(a) => a,
                None => self.ask(token, owner, of_owner.clone(), write).await?,
            };
            if let Err((code, message, named)) = answer {
                let own = format!("{:#x}", of_owner[0]);
                return Err(Status::new(
                    code,
                    message.replace(&format!("{named:#x}"), &own),
                ));
            }
        }
        Ok(())
    }

    fn remembered(&self, token: &str, owner: u32) -> Option<Answer> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        let (at, answer) = answers.get(&(token.to_string(), owner))?;
        (at.elapsed() < REMEMBER).then(|| answer.clone())
    }

    /// Ask the head about the objects of one owning client, and remember its answer (a
    /// refusal too: a wrong token must not cost a head call per request). Failures to reach
    /// the head are not remembered.
    async fn ask(
        &self,
        token: &str,
        owner: u32,
        ids: Vec<u64>,
        write: bool,
    ) -> Result<Answer, Status> {
        let head = self.head.borrow().as_ref().map(|l| l.frontend.clone());
        let Some(mut head) = head else {
            return Err(Status::unavailable(
                "this node is not connected to its head yet, so it cannot check tokens",
            ));
        };
        let req = proto::ObjectAccess {
            token: token.to_string(),
            object_ids: ids,
            write,
        };
        let first = req.object_ids.first().copied().unwrap_or_default();
        let asked_at = self.revocations.load(Ordering::SeqCst);
        let answer = match head.authorize_objects(req).await {
            Ok(_) => Ok(()),
            Err(s) if matches!(s.code(), Code::Unauthenticated | Code::PermissionDenied) => {
                Err((s.code(), s.message().to_string(), first))
            }
            Err(s) => {
                return Err(Status::unavailable(format!(
                    "this node could not ask its head whether the token may use the objects: {}",
                    s.message()
                )))
            }
        };
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if self.revocations.load(Ordering::SeqCst) != asked_at {
            return Ok(answer); // a revocation came meanwhile: used once, not kept
        }
        if answers.len() >= MAX_ANSWERS {
            answers.clear();
        }
        answers.insert((token.to_string(), owner), (Instant::now(), answer.clone()));
        Ok(answer)
    }
}
