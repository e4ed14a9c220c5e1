//! The order journal: an order's durable record before it is sent.
//!
//! An order must be written before it goes on the wire, so that a process killed
//! right after the send leaves a trace the next one reconciles. Writing that record
//! as the order's row costs a commit on the shared database (about 0.3 ms alone,
//! around 1 ms under the load of fill bookings on two cores); appending one line to a
//! local file and `fdatasync`ing it costs tens of µs. So the order is appended here,
//! sent, and its row is written beside the venue call; every reader of the order
//! (the reply, the user stream, reconciliation) waits for that row first.
//!
//! A journal belongs to one process and one database (its *scope*): the file is
//! `flock`ed while its process lives, and its header names the scope. Reconciliation
//! replays the journals of processes that are gone — their orders are written as
//! SUBMITTED if they are not already, and reconciliation then asks the venue about
//! them like any other — and removes them. A process that ends with every row
//! written removes its own.
//!
//! The file is preallocated (zeros, [`CAPACITY`]) and written in place: an append
//! that grew the file would make every `fdatasync` commit the file system's journal
//! too. The entries end at the first zero byte. When the space is used up and every
//! order in it has its row, the entries are zeroed and writing starts over; if rows
//! are still outstanding, the file grows instead.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::Arc;

use database::ledger::LedgerError;
use database::orders::{self, NewOrder, OrderIds, OrderKind};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use trading::position::OrderSide;

/// Orders written back into the database from the journal of a process that is gone.
pub const REPLAYED: &str = "greekstream_order_journal_replayed_total";
/// Journal lines or files that could not be used (`kind`: torn, corrupt, unreadable,
/// refused).
pub const JOURNAL_ERRORS: &str = "greekstream_order_journal_errors_total";

/// The space a journal file is preallocated with.
pub const CAPACITY: u64 = 4 << 20;
/// Appends start on a page boundary.
const PAGE: u64 = 4096;

const MAGIC: &str = "greekstream-orders";
const VERSION: u32 = 1;

/// When an entry is made durable against a machine crash.
///
/// Both survive the process being killed: the entry is in the kernel before the
/// order is sent. `Always` also survives the machine going down: each append is
/// `fdatasync`ed before it returns, which costs the disk's flush (on a virtual disk
/// that has been idle, around a millisecond). `Background` flushes right after the
/// append on a flusher thread (appends meanwhile share its next flush): a machine
/// crash can lose the orders sent in the last flush or two, which reconciliation then
/// finds on the venue as orphans of ours (cancelled if open, a desync alarm if
/// filled) instead of as orders of their sub-accounts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum JournalSync {
    #[default]
    Always,
    Background,
}

impl std::str::FromStr for JournalSync {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(JournalSync::Always),
            "background" => Ok(JournalSync::Background),
            _ => Err("expected always or background"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("order journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the order journal's writer has stopped")]
    Closed,
}

/// One order as the journal holds it: everything its row is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    pub id: String,
    pub client_order_id: String,
    pub sub_account_id: String,
    pub symbol: String,
    pub side: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub quantity: Decimal,
    pub price: Option<Decimal>,
    pub leverage: Decimal,
    pub reduce_only: bool,
    pub origin: String,
    pub request_id: Option<String>,
    pub sent_at_ms: i64,
    /// The position the order closes (absent in lines written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position_id: Option<String>,
    /// A close's own reason (absent when it has none, and in older lines).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_reason: Option<String>,
}

impl Entry {
    pub fn new(ids: &OrderIds, o: &NewOrder, sent_at_ms: i64) -> Self {
        Self {
            id: ids.id.clone(),
            client_order_id: ids.client_order_id.clone(),
            sub_account_id: o.sub_account_id.clone(),
            symbol: o.symbol.clone(),
            side: orders::side_str(o.side).to_owned(),
            kind: o.kind.as_str().to_owned(),
            quantity: o.quantity,
            price: o.price,
            leverage: o.leverage,
            reduce_only: o.reduce_only,
            origin: o.origin.clone(),
            request_id: o.request_id.clone(),
            position_id: o.position_id.clone(),
            close_reason: o.close_reason.clone(),
            sent_at_ms,
        }
    }

    /// The order back, or what about the line is wrong.
    pub fn order(&self) -> Result<(OrderIds, NewOrder), &'static str> {
        let side = match self.side.as_str() {
            "BUY" => OrderSide::Buy,
            "SELL" => OrderSide::Sell,
            _ => return Err("unknown side"),
        };
        let kind = OrderKind::parse(&self.kind).ok_or("unknown order type")?;
        let ids = OrderIds {
            id: self.id.clone(),
            client_order_id: self.client_order_id.clone(),
        };
        let o = NewOrder {
            sub_account_id: self.sub_account_id.clone(),
            symbol: self.symbol.clone(),
            side,
            kind,
            quantity: self.quantity,
            price: self.price,
            leverage: self.leverage,
            reduce_only: self.reduce_only,
            origin: self.origin.clone(),
            request_id: self.request_id.clone(),
            position_id: self.position_id.clone(),
            close_reason: self.close_reason.clone(),
        };
        o.check()?;
        Ok((ids, o))
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    journal: String,
    version: u32,
    scope: String,
}

/// The scope of a pool's database: host, port and database name.
pub fn scope_of(pool: &PgPool) -> String {
    let o = pool.connect_options();
    format!(
        "{}:{}/{}",
        o.get_host(),
        o.get_port(),
        o.get_database().unwrap_or("postgres")
    )
}

/// The file-name prefix of a scope's journals.
fn prefix_of(scope: &str) -> String {
    let safe: String = scope
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("orders-{safe}-")
}

/// This process's journal (one per executor).
pub struct Journal {
    path: PathBuf,
    writer: std::sync::Mutex<Writer>,
    /// Orders appended whose rows are not yet written.
    outstanding: Arc<AtomicU64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.path)
            .field("outstanding", &self.outstanding.load(SeqCst))
            .finish()
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

impl Journal {
    /// A new journal file of `scope` in `dir` (created if missing), locked for this
    /// process and its header durable (and, in the background mode, its flusher started).
    pub fn open(dir: &Path, scope: &str, sync: JournalSync) -> Result<Self, JournalError> {
        Self::open_with_capacity(dir, scope, sync, CAPACITY)
    }

    /// [`Journal::open`] with `capacity` bytes preallocated.
    pub fn open_with_capacity(
        dir: &Path,
        scope: &str,
        sync: JournalSync,
        capacity: u64,
    ) -> Result<Self, JournalError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let path = dir.join(format!(
            "{}{}-{}-{}.journal",
            prefix_of(scope),
            std::process::id(),
            chrono::Utc::now().timestamp_micros(),
            SEQ.fetch_add(1, SeqCst)
        ));
        let mut file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        file.try_lock().map_err(|e| JournalError::Io {
            path: path.clone(),
            source: io::Error::other(e.to_string()),
        })?;
        let mut header = serde_json::to_vec(&Header {
            journal: MAGIC.into(),
            version: VERSION,
            scope: scope.into(),
        })
        .expect("a header serializes");
        header.push(b'\n');
        let start = (header.len() as u64).next_multiple_of(PAGE);
        let capacity = capacity.max(start + PAGE);
        file.write_all(&header).map_err(io_err(&path))?;
        zero(&file, header.len() as u64, capacity).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        // The file's name must be as durable as its contents.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        let file = Arc::new(file);
        let flusher = match sync {
            JournalSync::Always => None,
            JournalSync::Background => Some(Flusher::start(file.clone(), &path)?),
        };
        let writer = Writer {
            file,
            path: path.clone(),
            offset: start,
            start,
            capacity,
            flusher,
        };
        Ok(Self {
            path,
            writer: std::sync::Mutex::new(writer),
            outstanding: Arc::default(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `entries` and returns once they are on disk (`fdatasync`).
    ///
    /// Blocking, on the caller's thread: a hand-off to a writer thread and back costs
    /// two wake-ups, more than the write (on a quiet machine, where the threads sleep
    /// between orders, several times more). Appends are serialized.
    pub fn append(&self, entries: &[Entry]) -> Result<(), JournalError> {
        let mut bytes = Vec::with_capacity(256 * entries.len());
        for e in entries {
            serde_json::to_writer(&mut bytes, e).expect("an entry serializes");
            bytes.push(b'\n');
        }
        let mut w = self.writer.lock().map_err(|_| JournalError::Closed)?;
        w.write(&bytes, entries.len() as u64, &self.outstanding)
            .map_err(io_err(&self.path))
    }

    /// `n` appended orders have their rows now.
    pub fn settled(&self, n: u64) {
        let _ = self
            .outstanding
            .fetch_update(SeqCst, SeqCst, |o| Some(o.saturating_sub(n)));
    }

    /// Orders appended whose rows are not written yet.
    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(SeqCst)
    }
}

impl Drop for Journal {
    /// Every order has its row: nothing here is needed any more. Otherwise the file
    /// stays for the next reconciliation to replay.
    fn drop(&mut self) {
        if let Some(f) = self.writer.get_mut().ok().and_then(|w| w.flusher.as_mut()) {
            f.stop();
        }
        if self.outstanding.load(SeqCst) == 0 {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

struct Writer {
    file: Arc<File>,
    path: PathBuf,
    /// Where the next entry goes; entries start at `start` (after the header).
    offset: u64,
    start: u64,
    /// The file's preallocated length.
    capacity: u64,
    /// [`JournalSync::Background`]'s.
    flusher: Option<Flusher>,
}

/// Flushes the journal on its own thread whenever something was written since its
/// last flush.
struct Flusher {
    state: Arc<(std::sync::Mutex<FlushState>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct FlushState {
    dirty: bool,
    stop: bool,
}

impl Flusher {
    fn start(file: Arc<File>, path: &Path) -> Result<Self, JournalError> {
        let state: Arc<(std::sync::Mutex<FlushState>, std::sync::Condvar)> = Arc::default();
        let shared = state.clone();
        let shown = path.display().to_string();
        let thread = std::thread::Builder::new()
            .name("order-journal-flush".into())
            .spawn(move || loop {
                let (lock, wake) = &*shared;
                let mut s = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !s.dirty && !s.stop {
                    s = wake.wait(s).unwrap_or_else(|p| p.into_inner());
                }
                if !s.dirty {
                    return;
                }
                s.dirty = false;
                drop(s);
                if let Err(e) = file.sync_data() {
                    metrics::counter!(JOURNAL_ERRORS, "kind" => "flush").increment(1);
                    tracing::error!(path = %shown, error = %e, "order journal flush failed");
                }
            })
            .map_err(io_err(path))?;
        Ok(Self {
            state,
            thread: Some(thread),
        })
    }

    fn written(&self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).dirty = true;
        wake.notify_one();
    }

    /// Flushes what is left and ends the thread.
    fn stop(&mut self) {
        let (lock, wake) = &*self.state;
        lock.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes zeros over `[from, to)`.
fn zero(file: &File, from: u64, to: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: usize = 64 << 10;
    let zeros = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
}

impl Writer {
    /// Writes `bytes` (`entries` orders) at the end of the entries, durably; counts
    /// them in `outstanding` (which only a writer, under its lock, adds to).
    fn write(&mut self, bytes: &[u8], entries: u64, outstanding: &AtomicU64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        // Each append on pages of its own: a write to a page the flusher is writing
        // out would wait for that write.
        let len = (bytes.len() as u64).next_multiple_of(PAGE);
        let mut grown = false;
        if self.offset + len > self.capacity {
            // Zero here means every entry written so far has its row, so none of
            // them is needed.
            if outstanding.load(SeqCst) == 0 {
                zero(&self.file, self.start, self.offset)?;
                self.offset = self.start;
                tracing::debug!(path = %self.path.display(), "order journal started over");
            }
            if self.offset + len > self.capacity {
                let to = (self.offset + len).max(self.capacity * 2);
                zero(&self.file, self.capacity, to)?;
                self.capacity = to;
                grown = true;
            }
        }
        let before = self.offset;
        let written = self.file.write_all_at(bytes, before);
        // The rest of the last page stays zero.
        self.offset += len;
        let result = written.and_then(|()| match (&self.flusher, grown) {
            (_, true) => self.file.sync_all(),
            (None, false) => self.file.sync_data(),
            (Some(f), false) => {
                f.written();
                Ok(())
            }
        });
        match result {
            Ok(()) => {
                outstanding.fetch_add(entries, SeqCst);
                Ok(())
            }
            Err(e) => {
                // No torn entry for the next one to follow.
                let _ = zero(&self.file, before, self.offset);
                self.offset = before;
                Err(e)
            }
        }
    }
}

/// What one journal file holds: its scope and its entries (zero bytes between and
/// after them are padding). A line without its newline is a torn append (its order
/// was never sent) and is left out; `bad` counts the other lines that are not
/// entries.
#[derive(Debug, Default, PartialEq)]
pub struct Contents {
    pub scope: Option<String>,
    pub entries: Vec<Entry>,
    pub torn: bool,
    pub bad: usize,
}

pub fn parse(text: &str) -> Contents {
    let mut c = Contents::default();
    let mut chunks = text.split('\0').filter(|c| !c.is_empty());
    let Some(first) = chunks.next() else {
        return c;
    };
    let mut lines = first.split_inclusive('\n');
    if let Some(h) = lines.next().filter(|h| h.ends_with('\n')) {
        c.scope = serde_json::from_str::<Header>(h)
            .ok()
            .filter(|h| h.journal == MAGIC && h.version == VERSION)
            .map(|h| h.scope);
    }
    for line in lines.chain(chunks.flat_map(|c| c.split_inclusive('\n'))) {
        if !line.ends_with('\n') {
            c.torn = true;
            continue;
        }
        match serde_json::from_str::<Entry>(line) {
            Ok(e) => c.entries.push(e),
            Err(_) => c.bad += 1,
        }
    }
    c
}

/// What [`replay`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    pub files: usize,
    pub orders: usize,
}

/// Writes back the orders of `scope`'s journals in `dir` whose processes are gone
/// (their files are not locked), then removes those files. An order whose row is
/// there already is left as it is. A database error stops the replay with the file
/// kept, for the next round; an entry the database refuses for good (its account
/// gone) is counted and logged, not retried.
pub async fn replay(dir: &Path, scope: &str, pool: &PgPool) -> Result<Replayed, LedgerError> {
    let mut done = Replayed::default();
    let prefix = prefix_of(scope);
    let Ok(listing) = std::fs::read_dir(dir) else {
        return Ok(done);
    };
    let mut paths: Vec<PathBuf> = listing
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".journal"))
        })
        .collect();
    paths.sort();
    for path in paths {
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else {
            continue;
        };
        // Locked: its process lives (this one's own journal among them).
        if file.try_lock().is_err() {
            continue;
        }
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                metrics::counter!(JOURNAL_ERRORS, "kind" => "unreadable").increment(1);
                tracing::error!(path = %path.display(), error = %e, "order journal unreadable");
                continue;
            }
        };
        let c = parse(&text);
        if c.scope.as_deref() != Some(scope) {
            // Another database's file under a colliding name, or no header: not ours.
            metrics::counter!(JOURNAL_ERRORS, "kind" => "corrupt").increment(1);
            tracing::error!(path = %path.display(), "order journal without this database's header: left alone");
            continue;
        }
        if c.torn {
            metrics::counter!(JOURNAL_ERRORS, "kind" => "torn").increment(1);
            tracing::warn!(path = %path.display(), "order journal ends in a torn line: that order was never sent");
        }
        if c.bad > 0 {
            metrics::counter!(JOURNAL_ERRORS, "kind" => "corrupt").increment(c.bad as u64);
            tracing::error!(path = %path.display(), lines = c.bad, "order journal lines that are not orders");
        }
        let mut written = 0;
        for e in &c.entries {
            let (ids, order) = match e.order() {
                Ok(x) => x,
                Err(why) => {
                    metrics::counter!(JOURNAL_ERRORS, "kind" => "refused").increment(1);
                    tracing::error!(client_order_id = %e.client_order_id, why, "journaled order not writable");
                    continue;
                }
            };
            match orders::insert_submitted(pool, &ids, &order, e.sent_at_ms, None).await {
                Ok(_) => written += 1,
                Err(err @ LedgerError::AccountNotFound(_)) => {
                    metrics::counter!(JOURNAL_ERRORS, "kind" => "refused").increment(1);
                    tracing::error!(client_order_id = %e.client_order_id, error = %err, "journaled order refused by the database");
                }
                Err(err) => return Err(err),
            }
        }
        metrics::counter!(REPLAYED).increment(written as u64);
        let _ = std::fs::remove_file(&path);
        done.files += 1;
        done.orders += written;
        tracing::info!(path = %path.display(), orders = written, "order journal of a stopped process replayed");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "gs-journal-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn entry(n: u8) -> Entry {
        let ids = OrderIds::from_random([n; 16]);
        let o = NewOrder {
            sub_account_id: "5f0c3c8e-1d2b-4c1a-9a51-0d6f3a7b2c11".into(),
            symbol: "BTCUSDT".into(),
            side: OrderSide::Sell,
            kind: OrderKind::Limit,
            quantity: "0.0021".parse().unwrap(),
            price: Some("60000.10".parse().unwrap()),
            leverage: 7.into(),
            reduce_only: true,
            origin: "BOT".into(),
            request_id: Some("req-1".into()),
            position_id: Some("0c1d2e3f-1d2b-4c1a-9a51-0d6f3a7b2c11".into()),
            close_reason: Some("BABYSITTER_TP".into()),
        };
        Entry::new(&ids, &o, 1_700_000_000_123)
    }

    fn read(path: &Path) -> Contents {
        parse(&std::fs::read_to_string(path).unwrap())
    }

    #[test]
    fn an_entry_gives_back_the_order_it_was_made_of() {
        let e = entry(3);
        let (ids, o) = e.order().unwrap();
        assert_eq!(Entry::new(&ids, &o, e.sent_at_ms), e);
        let line = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<Entry>(&line).unwrap(), e);
        let mut bad = e.clone();
        bad.origin = "SOMEONE".into();
        assert!(bad.order().is_err(), "what the row would refuse is refused");
    }

    #[test]
    fn a_torn_last_line_is_left_out_and_other_garbage_is_counted() {
        let header = r#"{"journal":"greekstream-orders","version":1,"scope":"h:5432/db"}"#;
        let good = serde_json::to_string(&entry(1)).unwrap();
        let text = format!("{header}\n{good}\nnot json\n{}", &good[..good.len() / 2]);
        let c = parse(&text);
        assert_eq!(c.scope.as_deref(), Some("h:5432/db"));
        assert_eq!(c.entries, vec![entry(1)]);
        assert!(c.torn);
        assert_eq!(c.bad, 1);
        // A torn header: the file is nobody's.
        assert_eq!(parse(&header[..10]).scope, None);
        assert_eq!(
            parse("{\"journal\":\"other\",\"version\":1,\"scope\":\"x\"}\n").scope,
            None
        );
    }

    #[test]
    fn appended_entries_are_on_disk_and_the_file_is_locked_while_it_lives() {
        for sync in [JournalSync::Always, JournalSync::Background] {
            appended_entries_are_kept(sync);
        }
        assert_eq!("background".parse(), Ok(JournalSync::Background));
        assert!("sometimes".parse::<JournalSync>().is_err());
    }

    fn appended_entries_are_kept(sync: JournalSync) {
        let dir = scratch();
        let j = Journal::open(&dir, "h:5432/db", sync).unwrap();
        j.append(&[entry(1), entry(2)]).unwrap();
        j.append(&[entry(3)]).unwrap();
        let c = read(j.path());
        assert_eq!(c.scope.as_deref(), Some("h:5432/db"));
        assert_eq!(c.entries, vec![entry(1), entry(2), entry(3)]);
        assert!(!c.torn);
        assert_eq!(j.outstanding(), 3);
        let other = File::open(j.path()).unwrap();
        assert!(other.try_lock().is_err(), "a live journal is locked");
        // Two rows written, one not: the file outlives its journal.
        j.settled(2);
        let path = j.path().to_owned();
        drop(j);
        assert_eq!(read(&path).entries.len(), 3);
        assert!(other.try_lock().is_ok(), "its process is gone");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_journal_whose_rows_are_all_written_starts_over_when_full_and_is_removed_at_the_end() {
        let dir = scratch();
        let j = Journal::open_with_capacity(&dir, "s", JournalSync::Always, 3 * PAGE).unwrap();
        // A page for the header and one per append: the third append grows the
        // file to six pages, the fifth fills them.
        for n in 0..5 {
            j.append(&[entry(n)]).unwrap();
        }
        assert_eq!(read(j.path()).entries.len(), 5, "nothing settled: all kept");
        j.settled(5);
        j.append(&[entry(9)]).unwrap();
        assert_eq!(read(j.path()).entries, vec![entry(9)], "started over");
        assert_eq!(read(j.path()).scope.as_deref(), Some("s"));
        j.settled(1);
        let path = j.path().to_owned();
        drop(j);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
