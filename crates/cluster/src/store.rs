//! Where a cluster keeps its sessions between runs, so that a restarted
//! process resumes instead of identifying: the [`SessionStore`] trait and a
//! file-backed store.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use shardwire_shard::Session;

use crate::sender::Shared;

/// What a [`SessionStore`] failed at, in its own words.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`SessionStore`] method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Keeps a cluster's sessions between runs. The cluster
/// [`load`](SessionStore::load)s at start (shards with a stored session
/// resume), and [`save`](SessionStore::save)s when a session starts or
/// ends, every [`ClusterConfig::session_save_interval`](crate::ClusterConfig::session_save_interval)
/// while they move on, and at [`Cluster::shutdown`](crate::Cluster::shutdown).
///
/// A stored session's `seq` never runs ahead of what the cluster's stream
/// handed out, so resuming from it loses nothing; one saved a while ago
/// only replays more.
///
/// [`FileSessionStore`] keeps them in a JSON file; `shardwire-nats` keeps
/// them in a JetStream KV bucket.
pub trait SessionStore: Send + Sync {
    /// The stored sessions of these shards (those it has).
    fn load<'a>(&'a self, shards: &'a [u32]) -> StoreFuture<'a, HashMap<u32, Session>>;

    /// Stores each shard's session, or forgets it (`None`: the session
    /// ended, the shard will identify).
    fn save<'a>(&'a self, changes: &'a [(u32, Option<Session>)]) -> StoreFuture<'a, ()>;
}

/// The largest session file read: far more than a million shards' worth
/// would need is refused rather than read into memory.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// Sessions in a JSON file, `{"<shard id>": {"session_id", "seq",
/// "resume_url"}, …}`, rewritten whole through a temporary file and a
/// rename, so a crash mid-write leaves the previous file.
///
/// A missing file holds no session. One that does not parse is an error at
/// load that names the file: delete it to identify afresh.
#[derive(Debug)]
pub struct FileSessionStore {
    path: PathBuf,
    /// The file's content as last read or written.
    sessions: tokio::sync::Mutex<Option<BTreeMap<u32, Session>>>,
}

impl FileSessionStore {
    /// A store in `path` (created at the first save).
    #[must_use]
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            sessions: tokio::sync::Mutex::new(None),
        }
    }

    /// The file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_file(path: &Path) -> Result<BTreeMap<u32, Session>, StoreError> {
    use std::io::Read;
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(error) => return Err(format!("reading {}: {error}", path.display()).into()),
    };
    let mut text = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|error| format!("reading {}: {error}", path.display()))?;
    let unusable = |why: String| -> StoreError {
        format!(
            "the session file {} {why}; delete it to identify afresh",
            path.display()
        )
        .into()
    };
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(unusable(format!("is over {MAX_FILE_BYTES} bytes")));
    }
    let sessions: BTreeMap<u32, Session> = serde_json::from_slice(&text)
        .map_err(|error| unusable(format!("is not a session file ({error})")))?;
    for (shard, session) in &sessions {
        session.check().map_err(|error| {
            unusable(format!(
                "holds an unusable session of shard {shard}: {error}"
            ))
        })?;
    }
    Ok(sessions)
}

fn write_file(path: &Path, sessions: &BTreeMap<u32, Session>) -> Result<(), StoreError> {
    let failed = |error: std::io::Error| -> StoreError {
        format!("writing the session file {}: {error}", path.display()).into()
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    let text = serde_json::to_vec_pretty(sessions)?;
    std::fs::write(&temporary, text).map_err(failed)?;
    std::fs::rename(&temporary, path).map_err(failed)
}

impl SessionStore for FileSessionStore {
    fn load<'a>(&'a self, shards: &'a [u32]) -> StoreFuture<'a, HashMap<u32, Session>> {
        Box::pin(async move {
            let path = self.path.clone();
            let read = tokio::task::spawn_blocking(move || read_file(&path)).await??;
            let found = shards
                .iter()
                .filter_map(|shard| Some((*shard, read.get(shard)?.clone())))
                .collect();
            *self.sessions.lock().await = Some(read);
            Ok(found)
        })
    }

    fn save<'a>(&'a self, changes: &'a [(u32, Option<Session>)]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let mut cached = self.sessions.lock().await;
            let mut sessions = match cached.take() {
                Some(sessions) => sessions,
                None => {
                    let path = self.path.clone();
                    // An unreadable file is replaced: what is saved now is newer.
                    tokio::task::spawn_blocking(move || read_file(&path).unwrap_or_default())
                        .await?
                }
            };
            for (shard, session) in changes {
                match session {
                    Some(session) => sessions.insert(*shard, session.clone()),
                    None => sessions.remove(shard),
                };
            }
            let path = self.path.clone();
            let written = tokio::task::spawn_blocking(move || {
                write_file(&path, &sessions).map(|()| sessions)
            })
            .await?;
            let sessions = written?;
            *cached = Some(sessions);
            Ok(())
        })
    }
}

/// Saves a cluster's sessions while it runs: when `changed` is notified (a
/// session started or ended) and every `interval`, only what moved since
/// the last save.
pub(crate) async fn keep_saved(
    shared: Weak<Shared>,
    store: Arc<dyn SessionStore>,
    changed: Arc<tokio::sync::Notify>,
    interval: Duration,
    mut saved: BTreeMap<u32, Session>,
) {
    // The event that notified is handed to the consumer just after.
    const SETTLE: Duration = Duration::from_millis(50);
    loop {
        tokio::select! {
            () = changed.notified() => tokio::time::sleep(SETTLE).await,
            () = tokio::time::sleep(interval) => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let ids: Vec<u32> = shared.read().shards.keys().copied().collect();
        let now = shared.sessions();
        drop(shared);
        let changes = changes(&saved, &now, &ids);
        if changes.is_empty() {
            continue;
        }
        match store.save(&changes).await {
            Ok(()) => saved = now,
            Err(error) => tracing::warn!(%error, "saving the sessions failed; retrying later"),
        }
    }
}

/// What to save so that the store holds `now` for the shards `ids`.
pub(crate) fn changes(
    saved: &BTreeMap<u32, Session>,
    now: &BTreeMap<u32, Session>,
    ids: &[u32],
) -> Vec<(u32, Option<Session>)> {
    ids.iter()
        .filter_map(|id| {
            let current = now.get(id);
            (saved.get(id) != current).then(|| (*id, current.cloned()))
        })
        .collect()
}
