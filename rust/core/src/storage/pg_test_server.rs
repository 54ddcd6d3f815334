//! A throw-away PostgreSQL server for tests (the engine's conformance tests and the daemon's
//! restart tests): Debian's server binaries (`/usr/lib/postgresql/<ver>/bin`) run a fresh
//! cluster in a temp dir on a free 127.0.0.1 port, with its unix socket inside that dir.
//!
//! PostgreSQL refuses to run as root, and tests run as root in CI: then every server command
//! runs as the `postgres` OS user (`runuser -u postgres --`) and the temp dir is handed to it.
//! Durability is switched off (`fsync=off`): a test server holds nothing worth a flush.
//!
//! [`PgServer::shared`] hands out one server per test process while any test holds it; the
//! last holder's drop stops it (`pg_ctl stop -m immediate`) and removes its dir, on a panic
//! too. Where no server can be run, it answers why, and the tests skip naming that reason.
//! Not for production use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The database role every test connects as (a superuser made by `initdb`, trust auth).
const ROLE: &str = "flame";

/// A running test server; stopped and deleted when dropped.
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// `Some("postgres")` when the commands run as that OS user (we are root).
    run_as: Option<String>,
    next_db: AtomicU64,
}

static SHARED: Mutex<Weak<PgServer>> = Mutex::new(Weak::new());

impl PgServer {
    /// The test process's server, started on first use; `Err(reason)` when none can run
    /// here (no server binaries, no `postgres` user to run them as under root): the caller
    /// skips naming it. A server that can run but fails to start panics.
    ///
    /// # Errors
    /// Why no server can run here.
    pub fn shared() -> Result<Arc<Self>, String> {
        let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slot.upgrade() {
            return Ok(s);
        }
        let s = Arc::new(Self::start()?);
        *slot = Arc::downgrade(&s);
        Ok(s)
    }

    /// Start a server of its own (a test that stops or restarts it); as [`PgServer::shared`].
    ///
    /// # Errors
    /// Why no server can run here.
    pub fn start() -> Result<Self, String> {
        let bin = find_bin_dir()?;
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some("postgres".to_string())
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("flame-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        // From here on a failure removes the dir (and a started server) through Drop.
        let mut server = Self {
            dir,
            bin,
            port: 0,
            run_as,
            next_db: AtomicU64::new(0),
        };
        if let Some(user) = &server.run_as {
            chown_to(&server.dir, user)?;
        }
        // From here on the binaries and the user exist: a failure is a test failure (a
        // panic, which still removes the dir through Drop), not a reason to skip.
        server
            .launch()
            .unwrap_or_else(|e| panic!("the PostgreSQL test server failed: {e}"));
        Ok(server)
    }

    fn launch(&mut self) -> Result<(), String> {
        let server = self;
        server.port = free_port()?;
        let data = server.dir.join("data");
        server.run(
            "initdb",
            &[
                "-D",
                path_str(&data)?,
                "-U",
                ROLE,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        )?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            server.port,
            path_str(&server.dir)?
        );
        let log = server.dir.join("server.log");
        server.run(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                path_str(&data)?,
                "-l",
                path_str(&log)?,
                "-o",
                &opts,
            ],
        )?;
        Ok(())
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL of the `postgres` database (always there).
    pub fn admin_url(&self) -> String {
        self.url("postgres")
    }

    /// A URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{ROLE}@127.0.0.1:{}/{db}", self.port)
    }

    /// Create an empty database of its own for one test and return its URL.
    ///
    /// # Errors
    /// When the server does not accept the `CREATE DATABASE`.
    pub fn fresh_database(&self) -> Result<String, String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        // The sync client runs a runtime of its own: keep it off any caller's tokio thread.
        let admin = self.admin_url();
        let sql = format!("CREATE DATABASE {name}");
        std::thread::spawn(move || -> Result<(), String> {
            let mut c = postgres::Client::connect(&admin, postgres::NoTls)
                .map_err(|e| format!("cannot connect to the test server: {e}"))?;
            c.batch_execute(&sql)
                .map_err(|e| format!("cannot create a test database: {e}"))
        })
        .join()
        .map_err(|_| "creating a test database panicked".to_string())??;
        Ok(self.url(&name))
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            return Err(format!(
                "{tool} failed ({}): {}{}\n{log}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if self.port != 0 && data.join("postmaster.pid").exists() {
            if let Some(d) = data.to_str() {
                let _ = self.run("pg_ctl", &["stop", "-m", "immediate", "-w", "-D", d]);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<ver>/bin` holding `initdb`, or `$FLAME_PG_BIN`.
fn find_bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("FLAME_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| {
            format!(
                "no PostgreSQL server binaries ({}: {e}); install Debian's `postgresql` package",
                root.display()
            )
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let ver = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((ver, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, b)| b).ok_or_else(|| {
        format!(
            "no PostgreSQL server binaries under {}; install Debian's `postgresql` package",
            root.display()
        )
    })
}

fn chown_to(dir: &Path, user: &str) -> Result<(), String> {
    let name = std::ffi::CString::new(user).map_err(|e| e.to_string())?;
    // SAFETY: getpwnam returns a pointer to static storage or null; read it at once.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "running as root, but there is no `{user}` OS user to run the test server as"
        ));
    }
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("cannot give {} to {user}: {e}", dir.display()))
}

fn free_port() -> Result<u16, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn path_str(p: &Path) -> Result<&str, String> {
    p.to_str()
        .ok_or_else(|| format!("temp path {} is not UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::PgServer;

    /// The fixture itself: a server starts, takes a database, and is gone after the drop.
    #[test]
    fn starts_serves_and_cleans_up() {
        let server = match PgServer::start() {
            Ok(s) => s,
            Err(why) => {
                eprintln!("skipped: {why}");
                return;
            }
        };
        let url = server.fresh_database().expect("a database");
        let dir = server.dir.clone();
        let n: i32 = std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
            c.query_one("SELECT 1 + 1", &[]).expect("query").get(0)
        })
        .join()
        .expect("thread");
        assert_eq!(n, 2);
        drop(server);
        assert!(!dir.exists(), "the server's dir is removed");
    }
}
