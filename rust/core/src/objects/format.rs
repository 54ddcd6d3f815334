//! The object file format: a 64-byte header, then the object's bytes exactly as the client
//! serialized them. Every process that writes or maps object files (the node daemon in
//! Rust, clients and executors in Python — `flame/_object_file.py` mirrors this) uses it.
//!
//! The header lets a reader tell a whole object from a truncated or damaged file before
//! any byte of it reaches a task (clients unpickle what an object holds):
//!
//! | bytes  | what                                                       |
//! |--------|------------------------------------------------------------|
//! | 0..8   | magic `FLAMEOB1`                                           |
//! | 8..16  | object id, u64 little-endian (must match the file's name)  |
//! | 16..24 | length of the data that follows, u64 little-endian         |
//! | 24..28 | CRC-32 (IEEE) of bytes 0..24, u32 little-endian            |
//! | 28..64 | zero                                                       |
//!
//! 64 bytes keep the data as aligned in the file as in the serialized frame (buffers inside
//! a frame are aligned to 64 bytes from its start), so numpy views of a mapping stay aligned.

use crate::error::{FlameError, Result};
use crate::ids::ObjectId;

/// Size of the header in front of every object's data.
pub const HEADER_BYTES: usize = 64;
const MAGIC: &[u8; 8] = b"FLAMEOB1";

/// The header for an object of `len` data bytes.
pub fn header(id: ObjectId, len: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&id.0.to_le_bytes());
    h[16..24].copy_from_slice(&len.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Check a header read from the file of object `id` whose total size is `file_len`; the
/// data length on success.
///
/// # Errors
/// `FailedPrecondition` naming the object and what is wrong: not an object file, a header
/// that fails its checksum, another object's header, or a file shorter or longer than the
/// header says (truncated, or written over).
pub fn check(id: ObjectId, head: &[u8], file_len: u64) -> Result<u64> {
    let bad = |why: String| {
        Err(FlameError::FailedPrecondition(format!(
            "object {:#x} is damaged: {why}",
            id.0
        )))
    };
    if head.len() < HEADER_BYTES {
        return bad(format!(
            "its file has {} bytes, less than an object header ({HEADER_BYTES})",
            head.len()
        ));
    }
    if &head[0..8] != MAGIC {
        return bad("its file does not start with an object header".into());
    }
    let word = |at: usize| u64::from_le_bytes(head[at..at + 8].try_into().unwrap_or([0; 8]));
    let crc = u32::from_le_bytes(head[24..28].try_into().unwrap_or([0; 4]));
    if crc != crc32fast::hash(&head[0..24]) {
        return bad("its header fails its checksum".into());
    }
    if word(8) != id.0 {
        return bad(format!("its file holds object {:#x}", word(8)));
    }
    let len = word(16);
    let expected = len.saturating_add(HEADER_BYTES as u64);
    if file_len != expected {
        return bad(format!(
            "its file has {file_len} bytes where the header says {expected} (truncated or \
             overwritten)"
        ));
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_checks_and_every_damage_is_named() {
        let id = ObjectId(0x3_0000_0001);
        let h = header(id, 10);
        assert_eq!(check(id, &h, 74).unwrap(), 10);
        let msg = |r: Result<u64>| r.unwrap_err().to_string();
        assert!(msg(check(id, &h, 70)).contains("truncated"));
        assert!(msg(check(ObjectId(0x3_0000_0002), &h, 74)).contains("holds object 0x300000001"));
        let mut flipped = h;
        flipped[17] ^= 1;
        assert!(msg(check(id, &flipped, 74)).contains("checksum"));
        assert!(msg(check(id, &h[..10], 10)).contains("less than an object header"));
        assert!(msg(check(id, &[0u8; 64], 74)).contains("does not start"));
        assert!(msg(check(id, &h, 74 + 1)).contains("0x300000001 is damaged"));
    }

    #[test]
    fn the_python_writer_makes_the_same_header() {
        // Kept in step with flame/_object_file.py (python/tests/unit/test_object_file.py
        // checks the same bytes from the Python side).
        let h = header(ObjectId(0x0102_0304_0506_0708), 0x10);
        assert_eq!(
            hex(&h[..28]),
            "464c414d454f423108070605040302011000000000000000f6ac9f58"
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
