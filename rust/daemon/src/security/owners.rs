//! Who owns what, as the authorization checks need it on every call: the user of each
//! session (its `user`, stored with the session; cached here because it never changes) and
//! the user of each client id (recorded at the client's hello; objects carry their client's
//! id in their high 32 bits, so this is who owns an object).

use std::collections::HashMap;
use std::sync::RwLock;

use flame_core::ids::SessionId;

/// Entries kept per map before it starts over (owners are looked up again on a miss).
const MAX_ENTRIES: usize = 200_000;

/// Session and client owners of one head.
#[derive(Default)]
pub struct Owners {
    sessions: RwLock<HashMap<u64, String>>,
    clients: RwLock<HashMap<u32, String>>,
}

fn put<K: std::hash::Hash + Eq>(map: &RwLock<HashMap<K, String>>, k: K, user: &str) {
    let mut m = map.write().unwrap_or_else(|e| e.into_inner());
    if m.len() >= MAX_ENTRIES {
        m.clear();
    }
    m.insert(k, user.to_string());
}

impl Owners {
    /// The user of `session`, if known here.
    pub fn session(&self, session: SessionId) -> Option<String> {
        let m = self.sessions.read().unwrap_or_else(|e| e.into_inner());
        m.get(&session.0).cloned()
    }

    pub fn set_session(&self, session: SessionId, user: &str) {
        put(&self.sessions, session.0, user);
    }

    /// The user whose client got `client` at its hello, if known.
    pub fn client(&self, client: u32) -> Option<String> {
        let m = self.clients.read().unwrap_or_else(|e| e.into_inner());
        m.get(&client).cloned()
    }

    pub fn set_client(&self, client: u32, user: &str) {
        put(&self.clients, client, user);
    }
}
