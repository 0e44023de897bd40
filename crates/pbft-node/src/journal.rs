//! A replica's durable log on disk (see `pbft::journal`): the records the core
//! asks to persist, appended to segment files in the state directory, made
//! durable before the replica sends anything that depends on them.
//!
//! Files: `journal/SEQ.log`, one segment per stable checkpoint the replica
//! passed (SEQ, 20 digits, is the checkpoint the segment starts at). Each
//! record is framed as `length u32 | check [8] | record`, the check the first
//! 8 bytes of the record's BLAKE3 digest. A segment that starts at checkpoint
//! c can only hold records about sequence numbers up to c + L (L the log
//! window), so once the state of checkpoint h is on disk the segments with
//! c + L <= h are deleted: the journal stays bounded by the water marks.
//!
//! Reading at restart ([`Journal::open`]): a record cut short at the very end
//! of the newest segment is what a crash in the middle of an append leaves;
//! it was never followed by a datagram, so it is dropped and said. A record
//! whose check fails, or one cut short anywhere else, is damage: the whole
//! journal is set aside (renamed `journal.damaged`) and the replica rejoins
//! without it, as one that has forgotten what it said.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use pbft::journal::Record;
use pbft::{Digest, SeqNo};

use crate::error::NodeError;

/// How durable a record is before the replica sends what depends on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Nothing is recorded: a restarted replica has forgotten what it said
    /// (the papers' behaviour, for benchmarks against them).
    None,
    /// Records are written to the file (the kernel's page cache) before the
    /// datagrams leave: every replica process may be killed at once.
    #[default]
    Process,
    /// Records are written and `fdatasync`ed before the datagrams leave, one
    /// sync for everything one turn of the event loop produced: every
    /// replica may lose power at once.
    Power,
}

impl std::str::FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Durability, String> {
        [Durability::None, Durability::Process, Durability::Power]
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| format!("unknown durability {s:?}; one of: none, process, power"))
    }
}

impl Durability {
    pub fn name(self) -> &'static str {
        match self {
            Durability::None => "none",
            Durability::Process => "process",
            Durability::Power => "power",
        }
    }
}

/// Bytes of a record's frame before the record.
const FRAME: usize = 4 + 8;
/// The largest record any replica writes is a batch: far below this.
const MAX_RECORD: usize = 64 << 20;

/// What [`Journal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Found {
    pub segments: usize,
    pub records: usize,
    /// A record cut short at the end (a crash during an append), dropped.
    pub torn_tail: bool,
    /// Why the journal was set aside, if it was.
    pub damaged: Option<String>,
}

/// The journal of one replica.
pub struct Journal {
    dir: PathBuf,
    durability: Durability,
    window: u64,
    file: File,
    /// Where the current segment starts.
    start: SeqNo,
    /// Framed records not yet written.
    buf: Vec<u8>,
    /// Records written since the last sync.
    unsynced: bool,
}

fn segment_name(start: SeqNo) -> String {
    format!("{:020}.log", start.0)
}

fn io(path: &Path, source: std::io::Error) -> NodeError {
    NodeError::File { path: path.to_path_buf(), source }
}

impl Journal {
    /// Opens the journal in `state_dir`, returning it with the records it
    /// holds, oldest first (empty if it was missing or damaged), and what it
    /// found. `window` is the log window L.
    pub fn open(state_dir: &Path, durability: Durability, window: u64) -> Result<(Journal, Vec<Record>, Found), NodeError> {
        let dir = state_dir.join("journal");
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        let mut segments = list_segments(&dir)?;
        let mut found = Found { segments: segments.len(), ..Found::default() };
        let mut records = Vec::new();
        let last = segments.len().saturating_sub(1);
        for (k, (_, _, path)) in segments.iter().enumerate() {
            let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
            match read_records(&bytes, &mut records) {
                Ok(()) => {}
                Err(Damage::CutShort) if k == last => found.torn_tail = true,
                Err(d) => {
                    found.damaged = Some(format!("{}: {}", path.display(), d.describe()));
                    break;
                }
            }
        }
        if found.damaged.is_some() {
            records.clear();
            let aside = state_dir.join("journal.damaged");
            let _ = std::fs::remove_dir_all(&aside);
            std::fs::rename(&dir, &aside).map_err(|e| io(&dir, e))?;
            std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
            segments.clear();
        }
        found.records = records.len();
        // Appends go to a new segment: a torn tail stays where it is, read and
        // dropped again until the segment is deleted.
        let (start, restart) = segments.last().map_or((SeqNo(0), 0), |(s, r, _)| (*s, r + 1));
        let path = dir.join(format!("{:020}.{restart}.log", start.0));
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        sync_dir(&dir)?;
        Ok((Journal { dir, durability, window, file, start, buf: Vec::new(), unsynced: false }, records, found))
    }

    /// Adds records, to be written at the next [`Journal::sync`].
    pub fn append(&mut self, records: &[Record]) {
        for r in records {
            let body = r.encode();
            self.buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(&Digest::of(&body).0[..8]);
            self.buf.extend_from_slice(&body);
        }
    }

    /// Writes what was appended, without waiting for the disk: enough for
    /// records no datagram depends on yet (see [`Record::gates_sends`]); the
    /// next [`Journal::sync`] makes them durable with the rest.
    pub fn write(&mut self) -> Result<(), NodeError> {
        if !self.buf.is_empty() {
            self.file.write_all(&self.buf).map_err(|e| io(&self.dir, e))?;
            self.buf.clear();
            self.unsynced = true;
        }
        Ok(())
    }

    /// Writes what was appended, and syncs it (and anything written before)
    /// if the durability says so: after this the datagrams that depend on it
    /// may leave.
    pub fn sync(&mut self) -> Result<(), NodeError> {
        self.write()?;
        if self.unsynced && self.durability == Durability::Power {
            self.file.sync_data().map_err(|e| io(&self.dir, e))?;
        }
        self.unsynced = false;
        Ok(())
    }

    /// The state of checkpoint `saved` is on disk: a new segment starts, and
    /// the segments that can hold nothing above it within the window go.
    pub fn checkpoint_saved(&mut self, saved: SeqNo) -> Result<(), NodeError> {
        if saved <= self.start {
            return Ok(());
        }
        self.sync()?;
        let path = self.dir.join(segment_name(saved));
        self.file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| io(&path, e))?;
        self.start = saved;
        for (start, _, path) in list_segments(&self.dir)? {
            if start.0 + self.window <= saved.0 {
                std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
            }
        }
        sync_dir(&self.dir)
    }
}

/// The segment files, oldest first: by start, then by the order they were
/// opened in (a restart opens a new file at the same start, `START.N.log`).
fn list_segments(dir: &Path) -> Result<Vec<(SeqNo, u64, PathBuf)>, NodeError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let Some(stem) = name.strip_suffix(".log") else { continue };
        let mut parts = stem.split('.');
        let (Some(start), restart) = (parts.next().and_then(|s| s.parse::<u64>().ok()), parts.next()) else { continue };
        let restart = restart.and_then(|r| r.parse::<u64>().ok()).unwrap_or(0);
        out.push((SeqNo(start), restart, path));
    }
    out.sort();
    Ok(out)
}

enum Damage {
    CutShort,
    BadCheck,
    BadRecord(pbft::journal::JournalError),
}

impl Damage {
    fn describe(&self) -> String {
        match self {
            Damage::CutShort => "a record cut short".into(),
            Damage::BadCheck => "a record whose checksum does not match".into(),
            Damage::BadRecord(e) => format!("a record that does not decode ({e})"),
        }
    }
}

fn read_records(bytes: &[u8], out: &mut Vec<Record>) -> Result<(), Damage> {
    let mut at = 0;
    while at < bytes.len() {
        let Some(frame) = bytes.get(at..at + FRAME) else { return Err(Damage::CutShort) };
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        if len > MAX_RECORD {
            return Err(Damage::BadCheck);
        }
        let Some(body) = bytes.get(at + FRAME..at + FRAME + len) else { return Err(Damage::CutShort) };
        if Digest::of(body).0[..8] != frame[4..12] {
            return Err(Damage::BadCheck);
        }
        out.push(Record::decode(body).map_err(Damage::BadRecord)?);
        at += FRAME + len;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), NodeError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record of this replica installing view `v` (tag 15 of `pbft::journal`).
    fn record(v: u64) -> Record {
        Record::decode(&[&[15u8][..], &v.to_le_bytes()].concat()).expect("a view record")
    }

    fn segment_files(state: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(state.join("journal"))
            .expect("journal dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn records_come_back_in_order_across_restarts_and_old_segments_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, found, _) = Journal::open(dir.path(), Durability::Power, 16).expect("open");
        assert!(found.is_empty());
        j.append(&[record(1), record(2)]);
        j.sync().expect("sync");
        j.checkpoint_saved(SeqNo(8)).expect("saved 8");
        j.append(&[record(3)]);
        j.sync().expect("sync");
        drop(j);
        let (mut j, found, what) = Journal::open(dir.path(), Durability::Process, 16).expect("reopen");
        assert_eq!(found, vec![record(1), record(2), record(3)]);
        assert_eq!((what.records, what.torn_tail, what.damaged.clone()), (3, false, None));
        j.append(&[record(4)]);
        j.sync().expect("sync");
        // Checkpoint 16 is on disk: the segment that started at 0 can hold
        // nothing above it (0 + 16 <= 16) and goes; the one at 8 stays.
        j.checkpoint_saved(SeqNo(16)).expect("saved 16");
        drop(j);
        let files = segment_files(dir.path());
        assert!(files.iter().all(|f| !f.starts_with(&format!("{:020}", 0))), "{files:?}");
        let (_, found, _) = Journal::open(dir.path(), Durability::Process, 16).expect("reopen");
        assert_eq!(found, vec![record(3), record(4)]);
    }

    #[test]
    fn a_record_cut_short_at_the_end_is_dropped_and_a_flipped_byte_sets_the_journal_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut j, _, _) = Journal::open(dir.path(), Durability::Process, 16).expect("open");
        j.append(&[record(1), record(2)]);
        j.sync().expect("sync");
        drop(j);
        let file = dir.path().join("journal").join(&segment_files(dir.path())[0]);
        let bytes = std::fs::read(&file).expect("read");
        std::fs::write(&file, &bytes[..bytes.len() - 3]).expect("cut");
        let (_, found, what) = Journal::open(dir.path(), Durability::Process, 16).expect("reopen");
        assert_eq!(found, vec![record(1)]);
        assert!(what.torn_tail && what.damaged.is_none(), "{what:?}");

        let mut flipped = bytes.clone();
        flipped[FRAME + 2] ^= 0x40;
        std::fs::write(&file, &flipped).expect("flip");
        let (_, found, what) = Journal::open(dir.path(), Durability::Process, 16).expect("reopen");
        assert!(found.is_empty(), "a damaged journal is not replayed: {found:?}");
        assert!(what.damaged.as_deref().is_some_and(|d| d.contains("checksum")), "{what:?}");
        assert!(dir.path().join("journal.damaged").is_dir(), "set aside for inspection");
        let (_, found, what) = Journal::open(dir.path(), Durability::Process, 16).expect("open again");
        assert!(found.is_empty() && what.damaged.is_none(), "the next start finds a clean journal");
    }
}
