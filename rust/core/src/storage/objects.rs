//! The object store: large values (`flame.put`, task arguments too big to travel inline) kept
//! as one file each in a directory of the head, never in SQLite and never in the scheduler.
//!
//! A file is named by its [`ObjectId`] in hex and holds the object's bytes exactly as the
//! client serialized them. Files appear atomically: they are written under a temporary name
//! and renamed. A client on the same machine writes and reads the files itself (no copy
//! through gRPC); it knows it is on the same machine when it can read the directory's
//! `token` file and finds the token the head announced. Others go through the Frontend's
//! object RPCs, which use this type.
//!
//! Objects belong to the client whose id is in their high bits: they are deleted when that
//! client deletes them, or when its lease runs out (see the session manager). An object is
//! written once: storing an id that is already stored is refused, whoever asks, and the
//! stored bytes stay as they were (a reference handed out never changes meaning).
//!
//! The directory is 0700 and every file 0600 (see [`crate::private_files`]): objects are the
//! users' data. An object file is read only if this user owns it and nobody else can write
//! it, since clients unpickle what it holds.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{FlameError, Result};
use crate::ids::{ClientId, ObjectId};
use crate::private_files::{open_trusted, private_dir, private_options, write_private};

const TOKEN_FILE: &str = "token";

/// A directory of object files. Cheap to share (`Arc`); every method is a few syscalls.
#[derive(Debug)]
pub struct ObjectStore {
    dir: PathBuf,
    token: String,
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> FlameError {
    FlameError::Storage(format!("{what} {}: {e}", path.display()))
}

/// A token that tells this directory apart from any other: not a secret, just unique.
fn fresh_token() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

impl ObjectStore {
    /// Open (creating it if needed) the store in `dir`. A store keeps its token across
    /// restarts, so object references handed out before a restart stay valid.
    ///
    /// # Errors
    /// `Storage` naming the directory when it cannot be created or its token written.
    pub fn open(dir: &Path) -> Result<ObjectStore> {
        private_dir(dir)?;
        let token_path = dir.join(TOKEN_FILE);
        let token = match read_token(&token_path) {
            Some(t) => t,
            None => {
                let token = fresh_token();
                write_private(&token_path, token.as_bytes())?;
                token
            }
        };
        let dir = dir
            .canonicalize()
            .map_err(|e| io_error("object dir", dir, e))?;
        Ok(ObjectStore { dir, token })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a same-machine client must find in the directory's token file.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Where the object's file is (whether or not it exists).
    pub fn path(&self, id: ObjectId) -> PathBuf {
        self.dir.join(format!("{:016x}", id.0))
    }

    /// Start writing an object; nothing is visible until [`ObjectWriter::commit`].
    ///
    /// # Errors
    /// `InvalidArgument` for id 0 or an id owned by nobody; `AlreadyExists` if the id is
    /// stored already; `Storage` if the file cannot be created.
    pub fn writer(&self, id: ObjectId) -> Result<ObjectWriter> {
        if id.owner().0 == 0 {
            return Err(FlameError::InvalidArgument(format!(
                "object id {:#x} has no owner (its high 32 bits must be the client id)",
                id.0
            )));
        }
        let path = self.path(id);
        // Refused before a byte is read; `commit` checks again, atomically.
        if path.exists() {
            return Err(already_stored(id));
        }
        // One temporary name per upload: two uploads of one id never write the same file.
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".{:016x}.{n}.part", id.0));
        // Never truncate what is there: after a crash between `commit`'s link and the
        // unlink it may be a second name of a stored object. Unlink it, then create anew.
        let _ = fs::remove_file(&tmp);
        let file = private_options()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| io_error("object", &tmp, e))?;
        Ok(ObjectWriter {
            file,
            tmp,
            path,
            id,
            written: 0,
        })
    }

    /// Open an object for reading, if its file is one this user wrote.
    ///
    /// # Errors
    /// `NotFound` naming the object when it does not exist (never stored, or deleted);
    /// `FailedPrecondition` naming the object, its file and the file's owner when another
    /// user owns the file, others can write it, or it is a symbolic link.
    pub fn open_object(&self, id: ObjectId) -> Result<File> {
        let path = self.path(id);
        match open_trusted(&path) {
            Ok(Ok(file)) => Ok(file),
            Ok(Err(e)) => Err(FlameError::FailedPrecondition(format!(
                "object {:#x} cannot be read: {e}",
                id.0
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(FlameError::NotFound(format!(
                    "object {:#x} does not exist (it was deleted, or never stored)",
                    id.0
                )))
            }
            Err(e) => Err(io_error("object", &path, e)),
        }
    }

    /// Delete objects; ids that do not exist are skipped. Returns how many were deleted.
    pub fn delete(&self, ids: &[ObjectId]) -> usize {
        ids.iter()
            .filter(|id| fs::remove_file(self.path(**id)).is_ok())
            .count()
    }

    /// Delete every object of `owner` (and its unfinished uploads). Returns how many.
    pub fn delete_owner(&self, owner: ClientId) -> usize {
        let prefix = format!("{:08x}", owner.0);
        let mut deleted = 0;
        for path in self.files() {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.trim_start_matches('.').starts_with(&prefix) && fs::remove_file(&path).is_ok() {
                deleted += 1;
            }
        }
        deleted
    }

    /// The clients that own at least one object.
    pub fn owners(&self) -> BTreeSet<ClientId> {
        self.files()
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .filter_map(|name| u32::from_str_radix(name.trim_start_matches('.').get(..8)?, 16).ok())
            .filter(|owner| *owner != 0)
            .map(ClientId)
            .collect()
    }

    fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.file_name().is_some_and(|n| n != TOKEN_FILE))
            .collect()
    }
}

/// The token in `path`, if the file is ours, untampered and not empty; otherwise a new
/// one is written (a token planted by another user must not outlive a restart).
fn read_token(path: &Path) -> Option<String> {
    let mut file = match open_trusted(path) {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), "replacing the object token: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// An object being written; dropped without `commit`, it leaves nothing behind.
pub struct ObjectWriter {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
    id: ObjectId,
    written: u64,
}

fn already_stored(id: ObjectId) -> FlameError {
    FlameError::AlreadyExists(format!(
        "object {:#x} is already stored; an object is written once and never replaced \
         (put the new value under a new id)",
        id.0
    ))
}

impl ObjectWriter {
    /// Append bytes.
    ///
    /// # Errors
    /// `Storage` when the write fails (disk full...).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.file
            .write_all(data)
            .map_err(|e| io_error("object", &self.tmp, e))?;
        self.written += data.len() as u64;
        Ok(())
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Make the object visible under its id. A hard link, not a rename: it fails if the id
    /// exists, so two uploads of one id can never replace each other's bytes.
    ///
    /// # Errors
    /// `AlreadyExists` if the id was stored meanwhile; `Storage` when the file cannot be
    /// linked into place.
    pub fn commit(self) -> Result<u64> {
        fs::hard_link(&self.tmp, &self.path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => already_stored(self.id),
            _ => io_error("object", &self.tmp, e),
        })?;
        // The temporary name goes with `drop`.
        Ok(self.written)
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // After a commit the temporary name is gone and this fails harmlessly.
        let _ = fs::remove_file(&self.tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn id(owner: u32, n: u32) -> ObjectId {
        ObjectId(((owner as u64) << 32) | n as u64)
    }

    /// A stored object's bytes as text.
    fn read_text(store: &ObjectStore, object: ObjectId) -> String {
        let mut text = String::new();
        store
            .open_object(object)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        text
    }

    #[test]
    fn write_read_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let mut w = store.writer(id(3, 1)).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        assert!(
            store.open_object(id(3, 1)).is_err(),
            "invisible before commit"
        );
        assert_eq!(w.commit().unwrap(), 11);
        assert_eq!(read_text(&store, id(3, 1)), "hello world");
        assert_eq!(store.delete(&[id(3, 1), id(3, 2)]), 1);
        let err = store.open_object(id(3, 1)).unwrap_err();
        assert!(matches!(err, FlameError::NotFound(_)), "{err}");
        assert!(err.to_string().contains("0x300000001"), "{err}");
    }

    #[test]
    fn token_survives_reopen_and_owners_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let first = ObjectStore::open(dir.path()).unwrap();
        let second = ObjectStore::open(dir.path()).unwrap();
        assert_eq!(first.token(), second.token());
        for (owner, n) in [(1, 1), (1, 2), (2, 1)] {
            first.writer(id(owner, n)).unwrap().commit().unwrap();
        }
        let _unfinished = first.writer(id(5, 1)).unwrap();
        let owners: Vec<u32> = first.owners().into_iter().map(|c| c.0).collect();
        assert_eq!(owners, vec![1, 2, 5]);
        assert_eq!(first.delete_owner(ClientId(1)), 2);
        assert!(first.open_object(id(2, 1)).is_ok());
    }

    #[test]
    fn a_stored_id_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        let mut w = store.writer(id(3, 1)).unwrap();
        w.write(b"first").unwrap();
        // A second upload of the same id that started before the first one committed.
        let mut racing = store.writer(id(3, 1)).unwrap();
        racing.write(b"second").unwrap();
        w.commit().unwrap();
        let err = racing.commit().unwrap_err();
        assert!(matches!(err, FlameError::AlreadyExists(_)), "{err}");
        let err = store.writer(id(3, 1)).err().unwrap();
        assert!(err.to_string().contains("already stored"), "{err}");
        assert_eq!(read_text(&store, id(3, 1)), "first");
        assert!(store.owners().iter().all(|c| c.0 == 3));
        assert_eq!(
            dir.path().read_dir().unwrap().count(),
            2,
            "token + the object"
        );
    }

    #[test]
    fn files_are_private_and_an_untrusted_object_file_is_refused() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let objects = dir.path().join("objects");
        let store = ObjectStore::open(&objects).unwrap();
        store.writer(id(3, 1)).unwrap().commit().unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&objects), 0o700);
        assert_eq!(mode(&objects.join(TOKEN_FILE)), 0o600);
        assert_eq!(mode(&store.path(id(3, 1))), 0o600);
        fs::set_permissions(store.path(id(3, 1)), fs::Permissions::from_mode(0o646)).unwrap();
        let err = store.open_object(id(3, 1)).unwrap_err();
        assert!(matches!(err, FlameError::FailedPrecondition(_)), "{err}");
        let m = err.to_string();
        assert!(m.contains("object 0x300000001 cannot be read"), "{m}");
        assert!(
            m.contains(&store.path(id(3, 1)).display().to_string()),
            "{m}"
        );
    }

    #[test]
    fn ownerless_ids_and_abandoned_writes_are_refused_or_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStore::open(dir.path()).unwrap();
        assert!(matches!(
            store.writer(ObjectId(7)),
            Err(FlameError::InvalidArgument(_))
        ));
        drop(store.writer(id(4, 4)).unwrap());
        assert!(store.owners().is_empty(), "a dropped writer leaves no file");
    }
}
