//! Framed records in files: the on-disk format of the data directory.
//!
//! A record is `[length u32 LE][crc32 u32 LE][kind u8][JSON]`, where
//! `length` counts the kind byte and the JSON, and the CRC covers the length
//! and the payload. A reader stops at the first frame that is incomplete or
//! fails its CRC: a crash can only tear the tail of the file being appended,
//! and what precedes the tear is a valid prefix.
//!
//! The directory holds log segments `log-NNNNNNNNNN.tlog` and snapshots
//! `snapshot-NNNNNNNNNN.tsnap`. Snapshot N is the state before segment N, so
//! recovery loads the newest readable snapshot and replays the segments from
//! its number on.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The longest record accepted; anything longer is taken as corruption.
const MAX_RECORD: usize = 64 * 1024 * 1024;
const HEADER: usize = 8;

/// Appends one framed record to `out`.
pub fn frame_into(out: &mut Vec<u8>, kind: u8, json: &[u8]) {
    let len = (json.len() + 1) as u32;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&len.to_le_bytes());
    crc.update(&[kind]);
    crc.update(json);
    out.reserve(HEADER + 1 + json.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.push(kind);
    out.extend_from_slice(json);
}

/// One framed record.
pub fn frame(kind: u8, json: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(&mut out, kind, json);
    out
}

/// Reads framed records from a byte buffer, stopping at the first torn or
/// corrupt frame.
#[derive(Debug)]
pub struct Frames<'a> {
    data: &'a [u8],
    pos: usize,
    torn: bool,
}

impl<'a> Frames<'a> {
    /// Reads `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Frames {
            data,
            pos: 0,
            torn: false,
        }
    }

    /// How many bytes were valid records.
    pub fn valid_len(&self) -> usize {
        self.pos
    }

    /// Whether reading stopped before the end of the data.
    pub fn is_torn(&self) -> bool {
        self.torn || self.pos < self.data.len()
    }
}

impl<'a> Iterator for Frames<'a> {
    /// The kind byte and the JSON.
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.data[self.pos..];
        if rest.len() < HEADER + 1 {
            self.torn = !rest.is_empty();
            return None;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len == 0 || len > MAX_RECORD || rest.len() < HEADER + len {
            self.torn = true;
            return None;
        }
        let payload = &rest[HEADER..HEADER + len];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&rest[0..4]);
        hasher.update(payload);
        if hasher.finalize() != crc {
            self.torn = true;
            return None;
        }
        self.pos += HEADER + len;
        Some((payload[0], &payload[1..]))
    }
}

/// The kinds of file in a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A log segment.
    Log,
    /// A snapshot.
    Snapshot,
}

impl FileKind {
    fn extension(self) -> &'static str {
        match self {
            FileKind::Log => "tlog",
            FileKind::Snapshot => "tsnap",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            FileKind::Log => "log-",
            FileKind::Snapshot => "snapshot-",
        }
    }
}

/// The path of file number `n` of `kind`.
pub fn path(dir: &Path, kind: FileKind, n: u64) -> PathBuf {
    dir.join(format!("{}{n:010}.{}", kind.prefix(), kind.extension()))
}

/// The numbers of the files of `kind` in `dir`, ascending.
pub fn list(dir: &Path, kind: FileKind) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let number = name
            .strip_prefix(kind.prefix())
            .and_then(|rest| rest.strip_suffix(kind.extension()))
            .and_then(|rest| rest.strip_suffix('.'))
            .and_then(|digits| digits.parse().ok());
        if let Some(n) = number {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// Creates (or truncates) a file for appending, with owner-only permissions:
/// the data directory holds the events clients are owed.
pub fn create(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes `bytes` to `path` atomically: a temporary file, fsync, rename,
/// fsync of the directory. A crash leaves either the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Makes a directory's entries (new, renamed and removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three_records() -> Vec<u8> {
        let mut data = Vec::new();
        frame_into(&mut data, b'a', br#"{"n":1}"#);
        frame_into(&mut data, b'b', br#"{"n":22}"#);
        frame_into(&mut data, b'c', br#"{"n":333}"#);
        data
    }

    #[test]
    fn frames_round_trip() {
        let data = three_records();
        let mut frames = Frames::new(&data);
        let read: Vec<(u8, Vec<u8>)> = frames.by_ref().map(|(k, j)| (k, j.to_vec())).collect();
        assert_eq!(read.len(), 3);
        assert_eq!(read[1], (b'b', br#"{"n":22}"#.to_vec()));
        assert!(!frames.is_torn());
        assert_eq!(frames.valid_len(), data.len());
    }

    #[test]
    fn every_truncation_reads_a_valid_prefix() {
        let data = three_records();
        let ends: Vec<usize> = {
            let mut frames = Frames::new(&data);
            let mut ends = vec![0];
            while frames.next().is_some() {
                ends.push(frames.valid_len());
            }
            ends
        };
        for cut in 0..=data.len() {
            let mut frames = Frames::new(&data[..cut]);
            let count = frames.by_ref().count();
            let expected = ends.iter().filter(|&&e| e > 0 && e <= cut).count();
            assert_eq!(count, expected, "cut at {cut}");
            assert_eq!(frames.valid_len(), ends[expected]);
            assert_eq!(frames.is_torn(), !ends.contains(&cut), "cut at {cut}");
        }
    }

    #[test]
    fn every_flipped_byte_is_caught() {
        let data = three_records();
        for at in 0..data.len() {
            let mut bad = data.clone();
            bad[at] ^= 0x40;
            let frames = Frames::new(&bad);
            // Everything read is intact; reading stops at the damaged frame.
            for (kind, json) in frames {
                assert!(matches!(kind, b'a' | b'b' | b'c'), "byte {at}");
                assert!(json.starts_with(b"{\"n\":"), "byte {at}");
            }
        }
    }

    #[test]
    fn files_are_listed_in_order() {
        let dir = std::env::temp_dir().join(format!("tether-journal-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        for n in [3, 1, 12] {
            create(&path(&dir, FileKind::Log, n)).unwrap();
        }
        create(&path(&dir, FileKind::Snapshot, 2)).unwrap();
        fs::write(dir.join("log-junk.tlog"), b"").unwrap();
        assert_eq!(list(&dir, FileKind::Log).unwrap(), vec![1, 3, 12]);
        assert_eq!(list(&dir, FileKind::Snapshot).unwrap(), vec![2]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
