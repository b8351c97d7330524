//! Window-state snapshots: one file per input partition and offset, written atomically and
//! checksummed, read back only when every check passes.
//!
//! A snapshot is copied while scoring goes on (see [`Store::begin_capture`]): it reflects every
//! message before `offset`, and some customers also hold later ones, up to the offset recorded
//! beside them. A restore loads it, then replays the partition from `offset`, skipping for each
//! customer what its copy already held; it is usable once the group has committed `complete_at`.
//!
//! Layout, little-endian: the header (magic, version, window check, seed check, partition,
//! offset, marks), then per customer (id length u16, id, last applied offset or `i64::MIN`,
//! event count u32, events as (ms i64, id hash u64, amount f64)), then the trailer
//! (complete_at, customers, events, and the xxh3-64 of every byte before it).

use std::collections::HashMap;
use std::fs::{self, File};
use std::hash::BuildHasher;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::decode::CustomerId;
use crate::store::{Marks, PartitionCapture, Store};
use crate::window::{CustomerWindows, Retention};

const MAGIC: &[u8; 8] = b"FRSCSNAP";
pub const VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4 + 8 + 1 + 8 + 8;
const TRAILER_BYTES: usize = 8 * 4;
const EVENT_BYTES: usize = 24;
/// Snapshots kept per partition: the newest may be ahead of the committed offset after a crash,
/// and then the one before it is used.
const KEEP: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("not a fraudscore snapshot")]
    NotASnapshot,
    #[error("format version {0}; this build reads version {VERSION}")]
    Version(u32),
    #[error("built for other windows or limits than the running model's")]
    OtherWindows,
    #[error("built with another transaction-id seed (the state directory's id-seed changed)")]
    OtherSeed,
    #[error("truncated")]
    Truncated,
    #[error("checksum mismatch: the file is damaged")]
    Checksum,
    #[error("malformed: {0}")]
    Malformed(&'static str),
}

impl SnapshotError {
    /// The `reason` label of `fraudscore_snapshots_ignored_total`.
    pub fn label(&self) -> &'static str {
        match self {
            SnapshotError::Io { .. } => "unreadable",
            SnapshotError::Version(_) => "version",
            SnapshotError::OtherWindows | SnapshotError::OtherSeed => "other_config",
            SnapshotError::NotASnapshot
            | SnapshotError::Truncated
            | SnapshotError::Checksum
            | SnapshotError::Malformed(_) => "damaged",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_owned(),
        source,
    }
}

/// What a state must match for a snapshot of it to be read back: the window configuration and
/// the transaction-id seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateCheck {
    windows: u64,
    seed: u64,
}

impl StateCheck {
    pub fn new(retention: &Retention, store: &Store) -> StateCheck {
        StateCheck {
            windows: xxh3_64(retention.describe().as_bytes()),
            seed: store.seed_check(),
        }
    }
}

/// The seed `state_seed` keeps in `state_dir`, if there is a readable one; never makes one.
pub fn existing_state_seed(state_dir: &Path) -> Option<u64> {
    let text = fs::read_to_string(state_dir.join("id-seed")).ok()?;
    u64::from_str_radix(text.trim(), 16).ok()
}

/// The transaction-id seed kept in the state directory, made on first use: snapshots hold keyed
/// hashes of transaction ids, readable only with the seed they were made with. A damaged seed
/// file is replaced (its snapshots are then ignored as built with another seed).
pub fn state_seed(state_dir: &Path) -> Result<u64, SnapshotError> {
    let path = state_dir.join("id-seed");
    let damaged = match fs::read(&path) {
        Ok(bytes) => match std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| u64::from_str_radix(t.trim(), 16).ok())
        {
            Some(seed) => return Ok(seed),
            None => {
                tracing::warn!(path = %path.display(), "the id-seed file is damaged; making a new one, existing snapshots will be ignored");
                true
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(source) => return Err(SnapshotError::Io { path, source }),
    };
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
    let tmp = state_dir.join(temporary_name("id-seed"));
    {
        let mut options = fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(io(&tmp))?;
        writeln!(file, "{seed:016x}").map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
    }
    if damaged {
        fs::rename(&tmp, &path).map_err(io(&path))?;
        return Ok(seed);
    }
    // Two instances sharing the directory may start together: the first seed in place wins.
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(seed),
        // Another instance put its seed in place first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(io(&path))?;
            u64::from_str_radix(text.trim(), 16).map_err(|_| SnapshotError::Malformed("id-seed"))
        }
        Err(e) => Err(SnapshotError::Io { path, source: e }),
    }
}

/// A temporary file name no other process or thread uses at the same time.
fn temporary_name(name: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}.tmp-{}-{n}", std::process::id())
}

/// One partition's state as a snapshot held it.
#[derive(Debug)]
pub struct Snapshot {
    pub partition: i32,
    /// Replay the partition from here.
    pub offset: i64,
    /// Usable only if the group committed at least this: every message a customer's copy holds
    /// is below it.
    pub complete_at: i64,
    pub marks: Option<Marks>,
    pub customers: Vec<(CustomerId, CustomerWindows)>,
    /// Customers copied after messages at or after `offset`: the last such offset of each.
    pub applied: HashMap<CustomerId, i64>,
    pub events: u64,
}

/// Where a topic's snapshots live: `<dir>/<topic>/<partition>/<offset>.snap`.
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    root: PathBuf,
}

impl SnapshotDir {
    pub fn new(state_dir: &Path, topic: &str) -> SnapshotDir {
        SnapshotDir {
            root: state_dir.join(topic),
        }
    }

    fn partition_dir(&self, partition: i32) -> PathBuf {
        self.root.join(partition.to_string())
    }

    /// The partition's snapshot files, newest offset first.
    pub fn list(&self, partition: i32) -> Vec<(i64, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.partition_dir(partition)) else {
            return Vec::new();
        };
        let mut found: Vec<(i64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let path = e.path();
                let offset = path
                    .file_name()?
                    .to_str()?
                    .strip_suffix(".snap")?
                    .parse()
                    .ok()?;
                Some((offset, path))
            })
            .collect();
        found.sort_unstable_by_key(|(offset, _)| std::cmp::Reverse(*offset));
        found
    }

    /// Starts a snapshot of one captured partition.
    pub fn writer(
        &self,
        capture: &PartitionCapture,
        check: StateCheck,
    ) -> Result<SnapshotWriter, SnapshotError> {
        let dir = self.partition_dir(capture.partition);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        let path = dir.join(format!("{:020}.snap", capture.offset));
        let tmp = dir.join(temporary_name(&format!("{:020}.snap", capture.offset)));
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let mut w = SnapshotWriter {
            out: BufWriter::with_capacity(1 << 20, file),
            hash: Xxh3::new(),
            tmp,
            path,
            offset: capture.offset,
            complete_at: capture.offset,
            customers: 0,
            events: 0,
            bytes: 0,
        };
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&check.windows.to_le_bytes());
        header.extend_from_slice(&check.seed.to_le_bytes());
        header.extend_from_slice(&capture.partition.to_le_bytes());
        header.extend_from_slice(&capture.offset.to_le_bytes());
        let marks = capture.marks;
        header.push(marks.is_some() as u8);
        header.extend_from_slice(&marks.map_or(0, |m| m.newest).to_le_bytes());
        header.extend_from_slice(&marks.map_or(0, |m| m.oldest).to_le_bytes());
        w.put(&header)?;
        Ok(w)
    }

    /// Deletes all but the newest [`KEEP`] snapshots of the partition, and temporary files left
    /// by a crash (old enough that no writer, of this instance or another, still fills them).
    pub fn prune(&self, partition: i32) {
        for (_, path) in self.list(partition).into_iter().skip(KEEP) {
            let _ = fs::remove_file(path);
        }
        let Ok(entries) = fs::read_dir(self.partition_dir(partition)) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let temporary = e.file_name().to_str().is_some_and(|n| n.contains(".tmp-"));
            let age = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if temporary && age.is_some_and(|a| a > std::time::Duration::from_secs(3600)) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// A snapshot being written to a temporary file; [`SnapshotWriter::finish`] puts it in place.
pub struct SnapshotWriter {
    out: BufWriter<File>,
    hash: Xxh3,
    tmp: PathBuf,
    path: PathBuf,
    offset: i64,
    complete_at: i64,
    customers: u64,
    events: u64,
    bytes: u64,
}

impl SnapshotWriter {
    fn put(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.hash.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes).map_err(io(&self.tmp))
    }

    /// Adds one customer; `applied` is the offset of the last message its copy holds, when that
    /// is at or after the snapshot's offset.
    pub fn customer(
        &mut self,
        id: &CustomerId,
        windows: &CustomerWindows,
        applied: Option<i64>,
    ) -> Result<(), SnapshotError> {
        let id = id.as_str().as_bytes();
        // Ids are capped far below this by the decoder; the check keeps the format honest.
        let id_len = u16::try_from(id.len()).map_err(|_| SnapshotError::Malformed("id"))?;
        let count = u32::try_from(windows.len()).map_err(|_| SnapshotError::Malformed("count"))?;
        let mut buf = Vec::with_capacity(2 + id.len() + 12 + windows.len() * EVENT_BYTES);
        buf.extend_from_slice(&id_len.to_le_bytes());
        buf.extend_from_slice(id);
        // An offset before the copy began (a consumer moved back) says nothing: the copy reflects it.
        let applied = applied.filter(|&a| a >= self.offset);
        buf.extend_from_slice(&applied.unwrap_or(i64::MIN).to_le_bytes());
        buf.extend_from_slice(&count.to_le_bytes());
        for (at, hash, amount) in windows.events() {
            buf.extend_from_slice(&at.to_le_bytes());
            buf.extend_from_slice(&hash.to_le_bytes());
            buf.extend_from_slice(&amount.to_le_bytes());
        }
        self.put(&buf)?;
        if let Some(applied) = applied {
            self.complete_at = self.complete_at.max(applied + 1);
        }
        self.customers += 1;
        self.events += windows.len() as u64;
        Ok(())
    }

    /// Writes the trailer, syncs, and renames the file into place (then syncs the directory, so
    /// the rename survives a power loss). Returns the file's size.
    pub fn finish(mut self) -> Result<u64, SnapshotError> {
        let mut trailer = Vec::with_capacity(TRAILER_BYTES);
        trailer.extend_from_slice(&self.complete_at.to_le_bytes());
        trailer.extend_from_slice(&self.customers.to_le_bytes());
        trailer.extend_from_slice(&self.events.to_le_bytes());
        self.put(&trailer)?;
        let checksum = self.hash.digest();
        self.out
            .write_all(&checksum.to_le_bytes())
            .map_err(io(&self.tmp))?;
        let file = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io(&self.tmp))?;
        file.sync_all().map_err(io(&self.tmp))?;
        drop(file);
        fs::rename(&self.tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        Ok(self.bytes + 8)
    }

    /// Gives up on this snapshot: the temporary file goes.
    pub fn abandon(self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Reads and checks a snapshot file for `partition` against the running state's `check`.
pub fn read(path: &Path, partition: i32, check: StateCheck) -> Result<Snapshot, SnapshotError> {
    let bytes = fs::read(path).map_err(io(path))?;
    decode(&bytes, partition, check)
}

/// Parses and checks a snapshot's bytes; never trusts a length it has not bounded.
pub fn decode(bytes: &[u8], partition: i32, check: StateCheck) -> Result<Snapshot, SnapshotError> {
    let mut r = Reader { bytes, at: 0 };
    if r.take(8)? != MAGIC {
        return Err(SnapshotError::NotASnapshot);
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    if bytes.len() < HEADER_BYTES + TRAILER_BYTES {
        return Err(SnapshotError::Truncated);
    }
    let body_end = bytes.len() - 8;
    let stored = u64::from_le_bytes(bytes[body_end..].try_into().expect("8 bytes"));
    if xxh3_64(&bytes[..body_end]) != stored {
        return Err(SnapshotError::Checksum);
    }
    if r.u64()? != check.windows {
        return Err(SnapshotError::OtherWindows);
    }
    if r.u64()? != check.seed {
        return Err(SnapshotError::OtherSeed);
    }
    if r.i32()? != partition {
        return Err(SnapshotError::Malformed("another partition's snapshot"));
    }
    let offset = r.i64()?;
    let has_marks = r.take(1)?[0] == 1;
    let (newest, oldest) = (r.i64()?, r.i64()?);
    let marks = has_marks.then_some(Marks { newest, oldest });

    let trailer = &bytes[body_end - (TRAILER_BYTES - 8)..body_end];
    let field = |i: usize| u64::from_le_bytes(trailer[i * 8..i * 8 + 8].try_into().expect("8"));
    let complete_at = field(0) as i64;
    let (customer_count, event_count) = (field(1), field(2));
    if complete_at < offset {
        return Err(SnapshotError::Malformed("complete_at before offset"));
    }

    let mut body = Reader {
        bytes: &bytes[..body_end - (TRAILER_BYTES - 8)],
        at: r.at,
    };
    let mut customers = Vec::new();
    let mut applied = HashMap::new();
    let mut events = 0u64;
    while body.at < body.bytes.len() {
        let id_len = body.u16()? as usize;
        let id = std::str::from_utf8(body.take(id_len)?)
            .map_err(|_| SnapshotError::Malformed("customer id not UTF-8"))?;
        let id = CustomerId::new(id);
        let last = body.i64()?;
        let n = body.u32()? as usize;
        let raw = body.take(n.checked_mul(EVENT_BYTES).ok_or(SnapshotError::Truncated)?)?;
        let windows = CustomerWindows::from_events(raw.chunks_exact(EVENT_BYTES).map(|e| {
            let f = |i: usize| <[u8; 8]>::try_from(&e[i * 8..i * 8 + 8]).expect("8 bytes");
            (
                i64::from_le_bytes(f(0)),
                u64::from_le_bytes(f(1)),
                f64::from_le_bytes(f(2)),
            )
        }))
        .ok_or(SnapshotError::Malformed("events out of order"))?;
        if last != i64::MIN {
            if last < offset || last >= complete_at {
                return Err(SnapshotError::Malformed("applied offset out of range"));
            }
            applied.insert(id.clone(), last);
        }
        events += n as u64;
        customers.push((id, windows));
    }
    if customers.len() as u64 != customer_count || events != event_count {
        return Err(SnapshotError::Malformed("counts disagree with the trailer"));
    }
    Ok(Snapshot {
        partition,
        offset,
        complete_at,
        marks,
        customers,
        applied,
        events,
    })
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self.at.checked_add(n).ok_or(SnapshotError::Truncated)?;
        let out = self
            .bytes
            .get(self.at..end)
            .ok_or(SnapshotError::Truncated)?;
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
}

/// What one round of snapshots wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub partitions: usize,
    pub bytes: u64,
    pub events: u64,
}

/// Copies the captured partitions out of the store into one snapshot each, in a single pass over
/// the customers, then ends the capture. A partition released meanwhile is not written.
pub fn write_round(
    dir: &SnapshotDir,
    store: &Store,
    captures: &[PartitionCapture],
    check: StateCheck,
) -> Result<Written, SnapshotError> {
    let result = copy(dir, store, captures, check);
    let spoiled = store.end_capture();
    let writers = result?;
    let mut written = Written::default();
    for (partition, w) in writers {
        if spoiled.contains(&partition) {
            w.abandon();
            continue;
        }
        written.events += w.events;
        written.bytes += w.finish()?;
        written.partitions += 1;
        dir.prune(partition);
    }
    Ok(written)
}

fn copy(
    dir: &SnapshotDir,
    store: &Store,
    captures: &[PartitionCapture],
    check: StateCheck,
) -> Result<Vec<(i32, SnapshotWriter)>, SnapshotError> {
    let mut writers = Vec::with_capacity(captures.len());
    for c in captures {
        writers.push((c.partition, dir.writer(c, check)?));
    }
    let partitions: Vec<i32> = captures.iter().map(|c| c.partition).collect();
    let mut failed = None;
    store.capture(&partitions, |partition, id, windows, applied| {
        if failed.is_some() {
            return;
        }
        if let Some((_, w)) = writers.iter_mut().find(|(p, _)| *p == partition) {
            if let Err(e) = w.customer(id, windows, applied) {
                failed = Some(e);
            }
        }
    });
    match failed {
        Some(e) => {
            for (_, w) in writers {
                w.abandon();
            }
            Err(e)
        }
        None => Ok(writers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::{EventTime, WindowLen};
    use proptest::prelude::*;

    const T0: i64 = 1_700_000_000_000;

    /// Customers and their events as (ms, id hash, amount).
    type Customers = Vec<(String, Vec<(i64, u64, f64)>)>;

    fn retention() -> Retention {
        Retention::new(WindowLen::parse("1h").unwrap(), 60_000).with_max_events(1000)
    }

    /// A store with `customers` on partition 0 (and one on partition 1), and a snapshot of
    /// partition 0 written into `dir`.
    fn filled(customers: &Customers) -> Store {
        let store = Store::with_seed(42);
        let r = retention();
        for (offset, (id, events)) in customers.iter().enumerate() {
            for &(at, hash, amount) in events {
                let at = EventTime::checked(at).unwrap();
                store.admit(0, at, r.horizon_ms()).unwrap();
                let _ = store.with_customer(0, offset as i64, &CustomerId::new(id.as_str()), |w| {
                    w.insert(at, hash, amount, &r)
                });
            }
        }
        let other = EventTime::checked(T0).unwrap();
        store.with_customer(1, 0, &CustomerId::new("elsewhere"), |w| {
            w.insert(other, 1, 1.0, &r).unwrap()
        });
        store
    }

    fn snapshot_bytes(store: &Store, dir: &tempfile::TempDir, offset: i64) -> (PathBuf, Vec<u8>) {
        let snapshots = SnapshotDir::new(dir.path(), "tx");
        let captures = store.begin_capture(&[(0, offset)]);
        let written = write_round(&snapshots, store, &captures, check(store)).unwrap();
        assert_eq!(written.partitions, 1);
        let (_, path) = snapshots.list(0).remove(0);
        let bytes = fs::read(&path).unwrap();
        (path, bytes)
    }

    fn check(store: &Store) -> StateCheck {
        StateCheck::new(&retention(), store)
    }

    fn customers() -> impl Strategy<Value = Customers> {
        prop::collection::vec(
            (
                "[a-z0-9]{1,12}",
                prop::collection::vec((0i64..3_600_000, any::<u64>(), 0.0f64..10_000.0), 0..20),
            ),
            0..20,
        )
        .prop_map(|cs| {
            cs.into_iter()
                .map(|(id, evs)| {
                    (
                        id,
                        evs.into_iter().map(|(t, h, a)| (T0 + t, h, a)).collect(),
                    )
                })
                .collect()
        })
    }

    fn held(store: &Store, id: &str) -> Option<Vec<(i64, u64, f64)>> {
        store.read_customer(id, |w| w.events().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the state, a snapshot read back holds exactly the partition's customers and
        /// events, and its marks.
        #[test]
        fn round_trip(cs in customers()) {
            let store = filled(&cs);
            let dir = tempfile::tempdir().unwrap();
            let (path, _) = snapshot_bytes(&store, &dir, 77);
            let snap = read(&path, 0, check(&store)).unwrap();
            prop_assert_eq!((snap.offset, snap.complete_at), (77, 77));
            prop_assert!(snap.applied.is_empty());
            let restored = Store::with_seed(42);
            restored.load_partition(0, snap.marks, snap.customers);
            for (id, _) in &cs {
                prop_assert_eq!(held(&restored, id), held(&store, id));
            }
            prop_assert!(held(&restored, "elsewhere").is_none());
            prop_assert_eq!(restored.horizons(), store.horizons().into_iter().filter(|(p, _)| *p == 0).collect::<Vec<_>>());
            prop_assert_eq!(restored.window_events() as u64, snap.events);
        }

        /// Any single flipped byte and any truncation is detected, never read as state.
        #[test]
        fn every_corruption_is_detected(cs in customers(), at in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>()) {
            let store = filled(&cs);
            let dir = tempfile::tempdir().unwrap();
            let (_, bytes) = snapshot_bytes(&store, &dir, 5);
            let mut flipped = bytes.clone();
            flipped[at.index(bytes.len())] ^= 1 << bit;
            prop_assert!(decode(&flipped, 0, check(&store)).is_err());
            let truncated = &bytes[..cut.index(bytes.len())];
            prop_assert!(decode(truncated, 0, check(&store)).is_err());
        }
    }

    #[test]
    fn the_seed_is_made_once_and_read_back_without_making_one() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(existing_state_seed(&state), None);
        assert!(!state.exists(), "reading must not make the directory");
        let seed = state_seed(&state).unwrap();
        assert_eq!(existing_state_seed(&state), Some(seed));
        assert_eq!(state_seed(&state).unwrap(), seed);
    }

    #[test]
    fn the_seed_is_kept_across_starts_and_a_damaged_one_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let seed = state_seed(dir.path()).unwrap();
        assert_eq!(state_seed(dir.path()).unwrap(), seed);
        fs::write(dir.path().join("id-seed"), "not hex").unwrap();
        assert_ne!(state_seed(dir.path()).unwrap(), seed);
    }

    #[test]
    fn wrong_version_windows_seed_or_partition_are_refused() {
        let cs = vec![("a".to_string(), vec![(T0, 1, 2.0)])];
        let store = filled(&cs);
        let dir = tempfile::tempdir().unwrap();
        let (_, bytes) = snapshot_bytes(&store, &dir, 1);
        assert!(decode(&bytes, 0, check(&store)).is_ok());

        let mut other_version = bytes.clone();
        other_version[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert!(matches!(
            decode(&other_version, 0, check(&store)),
            Err(SnapshotError::Version(2))
        ));
        let longer = Retention::new(WindowLen::parse("2h").unwrap(), 60_000).with_max_events(1000);
        assert!(matches!(
            decode(&bytes, 0, StateCheck::new(&longer, &store)),
            Err(SnapshotError::OtherWindows)
        ));
        let reseeded = Store::with_seed(43);
        assert!(matches!(
            decode(&bytes, 0, StateCheck::new(&retention(), &reseeded)),
            Err(SnapshotError::OtherSeed)
        ));
        assert!(decode(&bytes, 1, check(&store)).is_err());
    }

    /// A customer written during the copy is saved with the offset of its last message, which
    /// makes the snapshot complete only from there on.
    #[test]
    fn customers_touched_during_the_copy_carry_their_last_offset() {
        let store = filled(&Vec::new());
        let r = retention();
        let at = EventTime::checked(T0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::new(dir.path(), "tx");
        let captures = store.begin_capture(&[(0, 10)]);
        // The pipeline goes on: offsets 10 and 11 arrive while the copy runs.
        for (offset, id) in [(10, "x"), (11, "x")] {
            store.with_customer(0, offset, &CustomerId::new(id), |w| {
                w.insert(at, offset as u64, 1.0, &r).unwrap()
            });
        }
        write_round(&snapshots, &store, &captures, check(&store)).unwrap();
        let (_, path) = snapshots.list(0).remove(0);
        let snap = read(&path, 0, check(&store)).unwrap();
        assert_eq!((snap.offset, snap.complete_at), (10, 12));
        assert_eq!(snap.applied.get("x"), Some(&11));
    }

    #[test]
    fn a_partition_released_during_the_copy_is_not_written_and_old_ones_are_pruned() {
        let store = filled(&vec![("a".to_string(), vec![(T0, 1, 2.0)])]);
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotDir::new(dir.path(), "tx");
        for offset in [1, 2, 3] {
            let captures = store.begin_capture(&[(0, offset)]);
            write_round(&snapshots, &store, &captures, check(&store)).unwrap();
        }
        let offsets: Vec<i64> = snapshots.list(0).into_iter().map(|(o, _)| o).collect();
        assert_eq!(offsets, [3, 2]);
        let captures = store.begin_capture(&[(0, 4)]);
        store.release_partitions(&[0]);
        let written = write_round(&snapshots, &store, &captures, check(&store)).unwrap();
        assert_eq!(written.partitions, 0);
        assert_eq!(snapshots.list(0).len(), 2);
    }
}
