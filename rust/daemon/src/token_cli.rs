//! `flame-daemon token ...`: create, list and revoke tokens, and revoke a node, on a running
//! head through its admin RPCs. Run on the head's machine as its OS user it needs nothing:
//! the admin token is `<state_dir>/admin.token` and the CA `<state_dir>/tls/ca.pem`;
//! elsewhere give `--token` (or `FLAME_TOKEN`) and the CA is pinned by the token's
//! fingerprint.
//!
//! Node revocation is `token revoke-node NAME`, not `node revoke NAME`: `flame-daemon node`
//! is the command that runs a node, and a subcommand under it would make `node --head ...`
//! ambiguous; revoking a node is revoking its credentials, so it sits with the tokens.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use flame_core::auth::Token;
use flame_core::proto::{self, frontend_client::FrontendClient};
use flame_core::{FlameError, Result};

use crate::config::default_state_dir;
use crate::security::{ADMIN_TOKEN_FILE, TLS_DIR};

/// How long `token create --node` join tokens last unless `--expires` says otherwise.
pub const DEFAULT_JOIN_EXPIRY: Duration = Duration::from_secs(24 * 3600);

#[derive(Args, Debug, Clone)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub action: TokenAction,
    /// Address of the head.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub head: String,
    /// An admin token (default: $FLAME_TOKEN, else <state-dir>/admin.token).
    #[arg(long, global = true, env = "FLAME_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The head's state dir, where admin.token and tls/ca.pem are (default: the head's
    /// default, $FLAME_STATE_DIR or ~/.flame/state).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum TokenAction {
    /// Make a user token (--user NAME) or a join token for nodes (--node). Shown once: the
    /// head keeps only its hash.
    Create {
        /// The user the token names.
        #[arg(long, required_unless_present = "node", conflicts_with = "node")]
        user: Option<String>,
        /// The user may act on everything (other users' sessions, tokens, nodes).
        #[arg(long, conflicts_with = "node")]
        admin: bool,
        /// A join token: `flame-daemon node --join-token T` exchanges it for the node's
        /// certificate. It may join any number of nodes until it expires (default 24h).
        #[arg(long)]
        node: bool,
        /// How long the token is valid: 30d, 12h, 15m, 45s, or never (0). Default: never
        /// for user tokens, 24h for join tokens.
        #[arg(long)]
        expires: Option<String>,
    },
    /// List every token (never their secrets).
    List {
        /// JSON, one array of tokens.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id (as `token list` shows it); it is refused from then on.
    Revoke { id: u64 },
    /// Revoke every certificate and node token of a node and drop it now: its running
    /// tasks run again elsewhere.
    RevokeNode { name: String },
}

/// A duration as `--expires` takes it: `30d`, `12h`, `15m`, `45s`; `0` or `never` is
/// `None` (no expiry).
///
/// # Errors
/// `InvalidArgument` naming `flag` and the text.
pub fn parse_duration(flag: &str, text: &str) -> Result<Option<Duration>> {
    let t = text.trim();
    if t == "0" || t.eq_ignore_ascii_case("never") {
        return Ok(None);
    }
    let bad = || {
        FlameError::InvalidArgument(format!(
            "{flag} {text:?} is not a duration; use e.g. 30d, 12h, 15m, 45s, or never"
        ))
    };
    let unit = t.chars().last().ok_or_else(bad)?;
    let secs_per = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return Err(bad()),
    };
    let n: u64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
    let secs = n.checked_mul(secs_per).ok_or_else(bad)?;
    if secs == 0 {
        return Ok(None);
    }
    Ok(Some(Duration::from_secs(secs)))
}

/// Run `flame-daemon token ...`.
///
/// # Errors
/// Bad flags, no admin token, an unreachable head, or the head's refusal.
pub async fn run(args: TokenArgs) -> Result<()> {
    let state_dir = args.state_dir.clone().unwrap_or_else(default_state_dir);
    // Flags first: a bad one is reported without a token or a head.
    let spec = match &args.action {
        TokenAction::Create {
            user,
            admin,
            node,
            expires,
        } => {
            let expiry = match expires {
                Some(text) => parse_duration("--expires", text)?,
                None if *node => Some(DEFAULT_JOIN_EXPIRY),
                None => None,
            };
            Some(proto::TokenSpec {
                kind: if *node { "join" } else { "user" }.into(),
                user: user.clone().unwrap_or_default(),
                admin: *admin,
                expires_in_secs: expiry.map_or(0, |d| d.as_secs()),
            })
        }
        _ => None,
    };
    let token = admin_token(args.token.as_deref(), &state_dir)?;
    let mut head = connect(&args.head, &token, &state_dir).await?;
    let bearer = token.bearer();
    match args.action {
        TokenAction::Create { node, .. } => {
            let spec = spec.ok_or_else(|| FlameError::Internal("no token spec".into()))?;
            let created = head.create_token(authed(spec, &bearer)).await?.into_inner();
            let info = created.info.unwrap_or_default();
            println!("{}", describe(&info));
            if node {
                println!("join a node with:");
                println!(
                    "  flame-daemon node --head {} --join-token {}",
                    args.head, created.token
                );
            } else {
                println!("{}", created.token);
            }
        }
        TokenAction::List { json } => {
            let list = head
                .list_tokens(authed(proto::Empty {}, &bearer))
                .await?
                .into_inner();
            if json {
                let rows: Vec<_> = list.tokens.iter().map(json_of).collect();
                let text = serde_json::to_string_pretty(&rows)
                    .map_err(|e| FlameError::Internal(e.to_string()))?;
                println!("{text}");
            } else if list.tokens.is_empty() {
                println!("no tokens");
            } else {
                for t in &list.tokens {
                    println!("{}", describe(t));
                }
            }
        }
        TokenAction::Revoke { id } => {
            let info = head
                .revoke_token(authed(proto::TokenRef { id }, &bearer))
                .await?
                .into_inner();
            println!("revoked: {}", describe(&info));
        }
        TokenAction::RevokeNode { name } => {
            let target = proto::NodeRef { id: 0, name };
            let r = head
                .revoke_node(authed(target, &bearer))
                .await?
                .into_inner();
            println!(
                "node {} revoked ({} certificates and node tokens) and dropped",
                r.name, r.credentials
            );
        }
    }
    Ok(())
}

/// The admin token: `--token` / `$FLAME_TOKEN`, else `<state_dir>/admin.token`.
fn admin_token(given: Option<&str>, state_dir: &Path) -> Result<Token> {
    if let Some(text) = given {
        return Token::parse(text)
            .map_err(|e| FlameError::InvalidArgument(format!("--token: {e}")));
    }
    let path = state_dir.join(ADMIN_TOKEN_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        FlameError::InvalidArgument(format!(
            "no admin token: give --token or set FLAME_TOKEN, or run this on the head's \
             machine as its user ({}: {e})",
            path.display()
        ))
    })?;
    Token::parse(&text).map_err(|e| FlameError::InvalidArgument(format!("{}: {e}", path.display())))
}

/// A Frontend client for `address`; for `https://` trusting the cluster CA of the state
/// dir if it is the one the token names, else the CA pinned by the token's fingerprint.
async fn connect(
    address: &str,
    token: &Token,
    state_dir: &Path,
) -> Result<FrontendClient<Channel>> {
    let bad =
        |e: &dyn std::fmt::Display| FlameError::InvalidArgument(format!("--head {address:?}: {e}"));
    let mut endpoint = Endpoint::from_shared(address.to_string()).map_err(|e| bad(&e))?;
    if address.starts_with("https://") {
        let local = std::fs::read_to_string(state_dir.join(TLS_DIR).join("ca.pem")).ok();
        let local =
            local.filter(|pem| pem_fingerprint(pem).as_deref() == Some(&*token.ca_fingerprint));
        let ca_pem = match local {
            Some(pem) => pem,
            None => {
                flame_core::tls::fetch_pinned_ca(
                    address,
                    &token.ca_fingerprint,
                    Duration::from_secs(10),
                )
                .await?
            }
        };
        let host = endpoint.uri().host().unwrap_or_default().to_string();
        let tls = flame_core::tls::client_tls(&ca_pem, &host, None);
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
    }
    let channel = endpoint
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| FlameError::Unreachable {
            address: address.to_string(),
            reason: flame_core::error::error_chain(&e),
        })?;
    Ok(FrontendClient::new(channel))
}

/// The fingerprint of the first certificate of a PEM text.
fn pem_fingerprint(pem: &str) -> Option<String> {
    let parsed = ::pem::parse(pem).ok()?;
    Some(flame_core::auth::fingerprint(parsed.contents()))
}

fn authed<T>(msg: T, bearer: &str) -> Request<T> {
    let mut req = Request::new(msg);
    if let Ok(value) = bearer.parse() {
        req.metadata_mut()
            .insert(flame_core::auth::AUTHORIZATION_HEADER, value);
    }
    req
}

/// One line about a token: id, kind, whom it names, and its dates.
fn describe(t: &proto::TokenInfo) -> String {
    let who = match t.kind.as_str() {
        "user" if t.admin => format!("user {} (admin)", t.name),
        "user" => format!("user {}", t.name),
        "node" => format!("node {}", t.name),
        _ => "join (nodes)".to_string(),
    };
    let mut line = format!("token {:<4} {who}, created {}", t.id, date(t.created_ms));
    if t.revoked_ms != 0 {
        line.push_str(&format!(", REVOKED {}", date(t.revoked_ms)));
    } else if t.expires_ms == 0 {
        line.push_str(", never expires");
    } else if t.expires_ms <= now_ms() {
        line.push_str(&format!(", EXPIRED {}", date(t.expires_ms)));
    } else {
        line.push_str(&format!(", expires {}", date(t.expires_ms)));
    }
    line
}

fn json_of(t: &proto::TokenInfo) -> serde_json::Value {
    serde_json::json!({
        "id": t.id,
        "kind": t.kind,
        "name": t.name,
        "admin": t.admin,
        "created_ms": t.created_ms,
        "expires_ms": t.expires_ms,
        "revoked_ms": t.revoked_ms,
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A time in ms since the epoch as an HTTP date (`Tue, 01 Dec 2026 10:00:00 GMT`).
fn date(ms: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_written_and_bad_ones_name_the_flag() {
        let d = |t| parse_duration("--expires", t).unwrap();
        assert_eq!(d("30d"), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(d("12h"), Some(Duration::from_secs(12 * 3_600)));
        assert_eq!(d("15m"), Some(Duration::from_secs(900)));
        assert_eq!(d("45s"), Some(Duration::from_secs(45)));
        assert_eq!(d("0"), None);
        assert_eq!(d("never"), None);
        for bad in ["", "30", "3x", "d", "-1d", "1.5h", "99999999999999999999d"] {
            let err = parse_duration("--expires", bad).unwrap_err().to_string();
            assert!(
                err.contains("--expires") && err.contains("not a duration"),
                "{bad}: {err}"
            );
        }
    }
}
