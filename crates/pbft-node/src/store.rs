//! A replica's state on disk: its pages as of its last stable checkpoint.
//!
//! Two files in the replica's state directory:
//!
//! - `pages`: page i of the state at byte offset i × 4096 (sparse: pages that
//!   were never written read as zeros);
//! - `checkpoint`: the checkpoint the pages belong to, a small record
//!   `magic "PBCK" | version u8 | seq u64 | digest [32] | pages u64 | check [32]`,
//!   its last field the digest (BLAKE3) of the others.
//!
//! At each stable checkpoint the host writes the pages that changed since the
//! checkpoint on disk (through a redo delta, [`Store::save_job`]; the first
//! save, with no checkpoint on disk, straight into `pages`), syncs them, then
//! replaces `checkpoint` atomically (a
//! temporary file, synced, renamed over the old one, the directory synced). A
//! crash at any point leaves a `checkpoint` record that is whole, old or new;
//! if it is old, the pages file may hold some newer pages (a torn write). The
//! core tells the two apart at restart by hashing the pages
//! ([`pbft::Replica::restore`]): intact, the replica resumes from the
//! checkpoint; damaged, it fetches only the pages whose digests differ from a
//! certified checkpoint. Nothing on disk is trusted further than that.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pbft::state::{Page, PagedState, PAGE_SIZE};
use pbft::{Digest, SavedState, SeqNo};

use crate::error::NodeError;

const MAGIC: &[u8; 4] = b"PBCK";
const VERSION: u8 = 1;
const RECORD_LEN: usize = 4 + 1 + 8 + 32 + 8 + 32;

/// What one save wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SaveStats {
    pub pages: u64,
    pub bytes: u64,
    /// Bytes written to the redo delta first (0 for a first save).
    pub delta_bytes: u64,
}

/// A replica's state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    pages: File,
    /// The checkpoint on disk.
    saved: SeqNo,
    /// Whether saves wait for the disk (fsync). Without, a save survives the
    /// process being killed (the kernel keeps what was written, renames stay
    /// atomic) but not a power loss: what `durability = "process"` promises.
    sync: bool,
}

impl Store {
    /// Opens (creating if needed) the state directory `dir`.
    pub fn open(dir: &Path) -> Result<Store, NodeError> {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::File { path: dir.to_path_buf(), source })?;
        let path = dir.join("pages");
        let pages = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|source| NodeError::File { path, source })?;
        // One replica per state directory: a second one would interleave its
        // pages and durable log with the first's.
        use std::os::fd::AsRawFd;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(pages.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(NodeError::io(
                format!("lock the state directory {} (is another replica using it?)", dir.display()),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Store { dir: dir.to_path_buf(), pages, saved: SeqNo(0), sync: true })
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    /// Reads the saved state for a replica whose state has `num_pages`
    /// pages: `None` if nothing was ever saved, or if the record is unreadable
    /// or for another state size (the replica then starts empty).
    pub fn load(&mut self, num_pages: u64) -> Result<Option<SavedState>, NodeError> {
        self.redo()?;
        let path = self.record_path();
        let mut record = Vec::new();
        match File::open(&path) {
            Ok(mut f) => f.read_to_end(&mut record).map_err(|source| NodeError::File { path: path.clone(), source })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(NodeError::File { path, source }),
        };
        let Some((seq, digest, pages)) = decode_record(&record) else {
            tracing::warn!(path = %path.display(), "unreadable checkpoint record: starting with empty state");
            return Ok(None);
        };
        if pages != num_pages {
            tracing::warn!(path = %path.display(), pages, num_pages, "checkpoint record for another state size: starting empty");
            return Ok(None);
        }
        let mut saved = Vec::new();
        let mut buf = Box::new([0u8; PAGE_SIZE]);
        let len = self.pages.metadata().map_err(|e| NodeError::io("reading the pages file", e))?.len();
        for index in 0..num_pages.min(len / PAGE_SIZE as u64) {
            self.pages
                .read_exact_at(&mut buf[..], index * PAGE_SIZE as u64)
                .map_err(|e| NodeError::io("reading the pages file", e))?;
            if buf.iter().any(|b| *b != 0) {
                saved.push((index, buf.clone()));
            }
        }
        self.saved = seq;
        Ok(Some(SavedState { seq, digest, pages: saved }))
    }

    /// Saves checkpoint `seq` (retained in `state`, with digest `digest`):
    /// writes the pages changed since the saved checkpoint, then the record.
    pub fn save(&mut self, state: &PagedState, seq: SeqNo, digest: Digest) -> Result<SaveStats, NodeError> {
        if seq <= self.saved {
            return Ok(SaveStats::default());
        }
        let job = SaveJob::collect(state, seq, digest, self.saved)?;
        self.save_job(&job)
    }

    /// Writes a job collected by [`SaveJob::collect`] (on another thread, so
    /// that the replica does not wait for the disk).
    ///
    /// The pages go first to a redo file, `pages.delta` (written whole,
    /// checksummed, synced, renamed into place), and only then into the pages
    /// file: a crash while the pages file is being written leaves a complete
    /// delta, which the next [`Store::load`] applies again; a crash before
    /// leaves the pages file untouched. Either way the pages on disk are
    /// those of a checkpoint whose record is whole, never a mixture.
    pub fn save_job(&mut self, job: &SaveJob) -> Result<SaveStats, NodeError> {
        if job.seq <= self.saved {
            return Ok(SaveStats::default());
        }
        if self.saved == SeqNo(0) {
            return self.save_first(job);
        }
        let delta = self.dir.join("pages.delta");
        let tmp = self.dir.join("pages.delta.tmp");
        let delta_bytes = write_delta(&tmp, job, self.sync).map_err(|source| NodeError::File { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, &delta).map_err(|source| NodeError::File { path: tmp.clone(), source })?;
        self.sync_dir()?;
        let stats = self.apply(job)?;
        self.write_record(job.seq, job.digest, job.num_pages)?;
        std::fs::remove_file(&delta).map_err(|source| NodeError::File { path: delta, source })?;
        self.saved = job.seq;
        Ok(SaveStats { delta_bytes, ..stats })
    }

    /// The first save, with no checkpoint on disk: there is nothing for a
    /// crash to spoil, so the pages go straight into the pages file, without
    /// the redo delta. A replica that fetched its whole state writes it once,
    /// not twice (measured: 0.65 s of 1.3 s for 256 MiB here). A record left
    /// behind (unreadable, or for another state size) goes first, so that a
    /// crash before the new record leaves none and the replica starts empty.
    fn save_first(&mut self, job: &SaveJob) -> Result<SaveStats, NodeError> {
        let record = self.record_path();
        match std::fs::remove_file(&record) {
            Ok(()) => self.sync_dir()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(NodeError::File { path: record, source }),
        }
        self.pages.set_len(0).map_err(|e| NodeError::io("emptying the pages file", e))?;
        let stats = self.apply(job)?;
        self.write_record(job.seq, job.digest, job.num_pages)?;
        self.saved = job.seq;
        Ok(stats)
    }

    /// Writes `job`'s pages into the pages file and syncs it.
    fn apply(&mut self, job: &SaveJob) -> Result<SaveStats, NodeError> {
        let mut stats = SaveStats::default();
        // Runs of consecutive pages go out in one write of up to WRITE_RUN pages.
        let mut run: Vec<u8> = Vec::with_capacity(WRITE_RUN * PAGE_SIZE);
        let mut run_start = 0u64;
        let flush = |run: &mut Vec<u8>, at: u64| -> Result<(), NodeError> {
            if !run.is_empty() {
                self.pages.write_all_at(run, at * PAGE_SIZE as u64).map_err(|e| NodeError::io("writing the pages file", e))?;
                run.clear();
            }
            Ok(())
        };
        for (index, page) in &job.pages {
            let follows = run_start + (run.len() / PAGE_SIZE) as u64 == *index;
            if !follows || run.len() >= WRITE_RUN * PAGE_SIZE {
                flush(&mut run, run_start)?;
                run_start = *index;
            }
            match page {
                Some(page) => run.extend_from_slice(&page[..]),
                None => run.resize(run.len() + PAGE_SIZE, 0),
            }
            stats.pages += 1;
            stats.bytes += PAGE_SIZE as u64;
        }
        flush(&mut run, run_start)?;
        if self.sync {
            self.pages.sync_data().map_err(|e| NodeError::io("syncing the pages file", e))?;
        }
        Ok(stats)
    }

    /// Replaces the checkpoint record atomically.
    fn write_record(&mut self, seq: SeqNo, digest: Digest, num_pages: u64) -> Result<(), NodeError> {
        let tmp = self.dir.join("checkpoint.tmp");
        let mut f = File::create(&tmp).map_err(|source| NodeError::File { path: tmp.clone(), source })?;
        f.write_all(&encode_record(seq, digest, num_pages))
            .and_then(|()| if self.sync { f.sync_all() } else { Ok(()) })
            .map_err(|source| NodeError::File { path: tmp.clone(), source })?;
        std::fs::rename(&tmp, self.record_path()).map_err(|source| NodeError::File { path: tmp, source })?;
        self.sync_dir()
    }

    fn sync_dir(&self) -> Result<(), NodeError> {
        if !self.sync {
            return Ok(());
        }
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|source| NodeError::File { path: self.dir.clone(), source })
    }

    /// Finishes a save a crash interrupted: a whole delta newer than the
    /// record is applied again and its record written; a partial one (the
    /// crash came before it was renamed into place) is removed.
    fn redo(&mut self) -> Result<(), NodeError> {
        let _ = std::fs::remove_file(self.dir.join("pages.delta.tmp"));
        let path = self.dir.join("pages.delta");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => return Err(NodeError::File { path, source }),
        };
        match read_delta(&bytes) {
            Some(job) => {
                tracing::info!(seq = job.seq.0, pages = job.pages.len(), "finishing a save the crash interrupted");
                self.apply(&job)?;
                self.write_record(job.seq, job.digest, job.num_pages)?;
            }
            None => tracing::warn!(path = %path.display(), "an unreadable save delta: ignored"),
        }
        std::fs::remove_file(&path).map_err(|source| NodeError::File { path, source })
    }
}

const DELTA_MAGIC: &[u8; 4] = b"PBDL";

/// `magic | version | seq | digest | num_pages | count | (index, page) * count | check`,
/// the check the digest of everything before it; written and synced.
/// Returns the bytes written.
fn write_delta(path: &Path, job: &SaveJob, sync: bool) -> std::io::Result<u64> {
    let mut out = std::io::BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut put = |out: &mut std::io::BufWriter<File>, b: &[u8]| -> std::io::Result<()> {
        hasher.update(b);
        written += b.len() as u64;
        out.write_all(b)
    };
    put(&mut out, DELTA_MAGIC)?;
    put(&mut out, &[VERSION])?;
    put(&mut out, &job.seq.0.to_le_bytes())?;
    put(&mut out, &job.digest.0)?;
    put(&mut out, &job.num_pages.to_le_bytes())?;
    put(&mut out, &(job.pages.len() as u64).to_le_bytes())?;
    for (index, page) in &job.pages {
        put(&mut out, &index.to_le_bytes())?;
        match page {
            Some(p) => put(&mut out, &p[..])?,
            None => put(&mut out, &[0u8; PAGE_SIZE])?,
        }
    }
    let check = *hasher.finalize().as_bytes();
    out.write_all(&check)?;
    let f = out.into_inner().map_err(|e| e.into_error())?;
    if sync {
        f.sync_data()?;
    }
    Ok(written + check.len() as u64)
}

fn read_delta(bytes: &[u8]) -> Option<SaveJob> {
    let body = bytes.len().checked_sub(32).map(|n| &bytes[..n])?;
    if blake3::hash(body).as_bytes()[..] != bytes[body.len()..] {
        return None;
    }
    let u64_at = |at: usize| -> Option<u64> { Some(u64::from_le_bytes(body.get(at..at + 8)?.try_into().ok()?)) };
    if body.get(..4)? != DELTA_MAGIC || *body.get(4)? != VERSION {
        return None;
    }
    let seq = SeqNo(u64_at(5)?);
    let digest = Digest(body.get(13..45)?.try_into().ok()?);
    let num_pages = u64_at(45)?;
    let count = u64_at(53)? as usize;
    let mut pages = Vec::with_capacity(count.min(1 << 20));
    let mut at = 61;
    for _ in 0..count {
        let index = u64_at(at)?;
        let page: Box<Page> = body.get(at + 8..at + 8 + PAGE_SIZE)?.try_into().ok().map(|p: &[u8; PAGE_SIZE]| Box::new(*p))?;
        pages.push((index, Some(Arc::from(page))));
        at += 8 + PAGE_SIZE;
    }
    (at == body.len()).then_some(SaveJob { seq, digest, num_pages, pages })
}

/// Pages written to the pages file in one call, at most (1 MiB).
const WRITE_RUN: usize = 256;

/// The pages of checkpoint `seq` that changed after the checkpoint on disk,
/// shared with the state (copy-on-write) so that the replica can go on
/// without copying them; `None` is a zero page.
#[derive(Clone, Debug)]
pub struct SaveJob {
    pub seq: SeqNo,
    pub digest: Digest,
    pub num_pages: u64,
    pub pages: Vec<(u64, Option<Arc<Page>>)>,
}

impl SaveJob {
    /// Takes the pages of the retained checkpoint `seq` modified after `after`.
    pub fn collect(state: &PagedState, seq: SeqNo, digest: Digest, after: SeqNo) -> Result<SaveJob, NodeError> {
        let state_error = |e| NodeError::io("saving", std::io::Error::other(e));
        let mut pages = Vec::new();
        for index in state.pages_modified_after(seq, after).map_err(state_error)? {
            pages.push((index, state.shared_page_at(seq, index).map_err(state_error)?));
        }
        Ok(SaveJob { seq, digest, num_pages: state.num_pages(), pages })
    }
}

/// A thread that writes save jobs in order, so that the replica's thread never
/// waits for the disk. At most a few jobs wait; when the disk falls behind
/// further, a job is skipped and the next one covers its pages.
pub struct Writer {
    jobs: Option<std::sync::mpsc::SyncSender<SaveJob>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The last checkpoint handed to the thread.
    queued: SeqNo,
}

impl Writer {
    /// Starts the thread; `saved` is the checkpoint already on disk.
    pub fn start(mut store: Store, saved: SeqNo) -> Writer {
        let (tx, rx) = std::sync::mpsc::sync_channel::<SaveJob>(2);
        let thread = std::thread::spawn(move || {
            for job in rx {
                match store.save_job(&job) {
                    Ok(s) => tracing::debug!(seq = job.seq.0, pages = s.pages, "state saved"),
                    Err(e) => tracing::warn!(seq = job.seq.0, error = %e, "could not save the state"),
                }
            }
        });
        Writer { jobs: Some(tx), thread: Some(thread), queued: saved }
    }

    /// Hands checkpoint `seq` to the thread; returns the pages queued (0 if
    /// the thread is busy and this checkpoint is skipped).
    pub fn save(&mut self, state: &PagedState, seq: SeqNo, digest: Digest) -> Result<u64, NodeError> {
        if seq <= self.queued {
            return Ok(0);
        }
        let job = SaveJob::collect(state, seq, digest, self.queued)?;
        let pages = job.pages.len() as u64;
        match self.jobs.as_ref().map(|tx| tx.try_send(job)) {
            Some(Ok(())) => {
                self.queued = seq;
                Ok(pages)
            }
            _ => Ok(0),
        }
    }
}

impl Drop for Writer {
    /// Waits for the jobs already queued, so that a clean stop saves them.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Saves without waiting for the disk (see the `sync` field).
    pub fn without_sync(mut self) -> Store {
        self.sync = false;
        self
    }

    /// The checkpoint on disk (0 if none).
    pub fn saved(&self) -> SeqNo {
        self.saved
    }
}

fn encode_record(seq: SeqNo, digest: Digest, pages: u64) -> Vec<u8> {
    let mut r = Vec::with_capacity(RECORD_LEN);
    r.extend_from_slice(MAGIC);
    r.push(VERSION);
    r.extend_from_slice(&seq.0.to_le_bytes());
    r.extend_from_slice(&digest.0);
    r.extend_from_slice(&pages.to_le_bytes());
    let check = Digest::of(&r);
    r.extend_from_slice(&check.0);
    r
}

fn decode_record(r: &[u8]) -> Option<(SeqNo, Digest, u64)> {
    if r.len() != RECORD_LEN || &r[..4] != MAGIC || r[4] != VERSION {
        return None;
    }
    let body = &r[..RECORD_LEN - 32];
    if Digest::of(body).0[..] != r[RECORD_LEN - 32..] {
        return None;
    }
    let seq = u64::from_le_bytes(r[5..13].try_into().ok()?);
    let digest = Digest(r[13..45].try_into().ok()?);
    let pages = u64::from_le_bytes(r[45..53].try_into().ok()?);
    Some((SeqNo(seq), digest, pages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with(writes: &[(u64, u8)], seq: u64) -> (PagedState, Digest) {
        let mut s = PagedState::new(64, pbft::state::TreeShape { fanout: 4, depth: 3 }).expect("state");
        s.take_checkpoint(SeqNo(0)).expect("checkpoint 0");
        for (page, byte) in writes {
            s.write(page * PAGE_SIZE as u64 + 7, &[*byte; 100]).expect("write");
        }
        let d = s.take_checkpoint(SeqNo(seq)).expect("checkpoint");
        (s, d)
    }

    #[test]
    fn saves_and_loads_only_changed_pages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        assert!(store.load(64).expect("load").is_none(), "nothing saved yet");
        let (mut s, d1) = state_with(&[(1, 1), (9, 2), (63, 3)], 8);
        let first = store.save(&s, SeqNo(8), d1).expect("save");
        assert_eq!((first.pages, first.delta_bytes), (3, 0), "the first save writes its pages once");
        s.write(9 * PAGE_SIZE as u64, &[4; 10]).expect("write");
        let d2 = s.take_checkpoint(SeqNo(16)).expect("checkpoint");
        let second = store.save(&s, SeqNo(16), d2).expect("save");
        assert_eq!(second.pages, 1, "only page 9 changed");
        assert!(second.delta_bytes > PAGE_SIZE as u64, "a later save goes through the redo delta");
        // magic, version, seq, digest, num_pages, count; (index, page); check.
        assert_eq!(second.delta_bytes, (4 + 1 + 8 + 32 + 8 + 8) + (8 + PAGE_SIZE as u64) + 32);
        assert!(Store::open(dir.path()).is_err(), "one store per directory at a time");

        drop(store);
        let mut again = Store::open(dir.path()).expect("reopen");
        let saved = again.load(64).expect("load").expect("saved");
        assert_eq!((saved.seq, saved.digest), (SeqNo(16), d2));
        assert_eq!(saved.pages.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 9, 63]);
        for (i, p) in &saved.pages {
            assert_eq!(&p[..], &s.page(*i).expect("page")[..]);
        }
        assert!(again.load(65).expect("load").is_none(), "another state size is not loaded");
    }

    #[test]
    fn a_save_cut_short_after_its_delta_is_finished_at_the_next_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let (mut s, d1) = state_with(&[(1, 1), (9, 2)], 8);
        store.save(&s, SeqNo(8), d1).expect("save");
        s.write(9 * PAGE_SIZE as u64, &[4; 10]).expect("write");
        s.write(20 * PAGE_SIZE as u64, &[5; 10]).expect("write");
        let d2 = s.take_checkpoint(SeqNo(16)).expect("checkpoint");
        // The crash: the delta is in place, the pages file half written (page
        // 9 only), the record still names checkpoint 8.
        let job = SaveJob::collect(&s, SeqNo(16), d2, SeqNo(8)).expect("collect");
        write_delta(&dir.path().join("pages.delta"), &job, true).expect("delta");
        store.pages.write_all_at(&s.page(9).expect("page")[..], 9 * PAGE_SIZE as u64).expect("torn");
        drop(store);
        let saved = Store::open(dir.path()).expect("open").load(64).expect("load").expect("saved");
        assert_eq!((saved.seq, saved.digest), (SeqNo(16), d2), "the interrupted save is finished");
        let mut restored = PagedState::new(64, s.shape()).expect("state");
        for (i, p) in &saved.pages {
            restored.replace_page(*i, p).expect("page");
        }
        assert_eq!(restored.take_checkpoint(SeqNo(16)).expect("checkpoint"), d2, "the pages are checkpoint 16's");
        assert!(!dir.path().join("pages.delta").exists());

        // A delta cut short (the crash came while it was written) is dropped,
        // and the pages and record it did not touch stand.
        let bytes = std::fs::read(dir.path().join("checkpoint")).expect("record");
        std::fs::write(dir.path().join("pages.delta"), b"PBDL partial").expect("partial delta");
        let saved = Store::open(dir.path()).expect("open").load(64).expect("load").expect("saved");
        assert_eq!(saved.seq, SeqNo(16));
        assert_eq!(std::fs::read(dir.path().join("checkpoint")).expect("record"), bytes);
    }

    #[test]
    fn a_first_save_replaces_whatever_an_unusable_checkpoint_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let (s, d) = state_with(&[(2, 9), (20, 8)], 8);
        store.save(&s, SeqNo(8), d).expect("save");
        drop(store);
        // The same directory for a state of another size: its checkpoint is
        // not loaded, and the first save leaves nothing of it behind.
        let mut store = Store::open(dir.path()).expect("open");
        assert!(store.load(32).expect("load").is_none(), "a checkpoint for another state size");
        let mut other = PagedState::new(32, pbft::state::TreeShape { fanout: 4, depth: 3 }).expect("state");
        other.take_checkpoint(SeqNo(0)).expect("checkpoint 0");
        other.write(5 * PAGE_SIZE as u64, &[7; 30]).expect("write");
        let d = other.take_checkpoint(SeqNo(40)).expect("checkpoint");
        assert_eq!(store.save(&other, SeqNo(40), d).expect("save").delta_bytes, 0);
        drop(store);
        let saved = Store::open(dir.path()).expect("open").load(32).expect("load").expect("saved");
        assert_eq!((saved.seq, saved.digest), (SeqNo(40), d));
        assert_eq!(saved.pages.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![5], "pages 2 and 20 of the old state are gone");
        assert!(Store::open(dir.path()).expect("open").load(64).expect("load").is_none(), "the old record is gone");
    }

    #[test]
    fn a_damaged_record_is_ignored_and_a_torn_page_write_is_visible() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path()).expect("open");
        let (s, d) = state_with(&[(2, 9)], 8);
        store.save(&s, SeqNo(8), d).expect("save");
        // A torn write: a page changed on disk after the record was written.
        store.pages.write_all_at(&[0xff; 16], 2 * PAGE_SIZE as u64).expect("tear");
        drop(store);
        let saved = Store::open(dir.path()).expect("open").load(64).expect("load").expect("saved");
        let mut restored = PagedState::new(64, s.shape()).expect("state");
        for (i, p) in &saved.pages {
            restored.replace_page(*i, p).expect("page");
        }
        assert_ne!(restored.take_checkpoint(SeqNo(8)).expect("checkpoint"), saved.digest, "the tear shows in the digest");
        // A record cut short or flipped is refused, not trusted.
        let path = dir.path().join("checkpoint");
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[7] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert!(Store::open(dir.path()).expect("open").load(64).expect("load").is_none());
        std::fs::write(&path, &bytes[..20]).expect("write");
        assert!(Store::open(dir.path()).expect("open").load(64).expect("load").is_none());
    }
}
