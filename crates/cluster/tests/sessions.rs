//! Session stores: a cluster loads its sessions at start, saves them when
//! one starts, on an interval and at shutdown, and a restarted cluster
//! resumes from them instead of identifying.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shardwire_cluster::{
    Cluster, ClusterConfig, ClusterError, FileSessionStore, SessionStore, ShardSpec,
};
use shardwire_codec::Token;
use shardwire_shard::{Session, ShardEvent};
use shardwire_sim::Sim;
use twilight_model::gateway::Intents;

const WINDOW: Duration = Duration::from_millis(100);

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "shardwire-sessions-{}-{name}.json",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn sim(shards: u32) -> Sim {
    Sim::builder()
        .shards(shards)
        .max_concurrency(shards)
        .identify_window(WINDOW)
        .start()
        .await
        .unwrap()
}

fn config(sim: &Sim, store: Arc<dyn SessionStore>, interval: Duration) -> ClusterConfig {
    let mut config = ClusterConfig::new(Token::new(sim.token()), Intents::GUILDS);
    config.api_base = sim.api_url().to_owned();
    config.shards = ShardSpec::Recommended;
    config.identify_window = WINDOW;
    config.session_store = Some(store);
    config.session_save_interval = interval;
    config
}

/// Reads events until every shard of `0..shards` has had one `wanted`.
async fn until_each(cluster: &mut Cluster, shards: u32, wanted: impl Fn(&ShardEvent) -> bool) {
    let mut done = std::collections::BTreeSet::new();
    while done.len() < shards as usize {
        let (shard, event) = tokio::time::timeout(Duration::from_secs(10), cluster.next_event())
            .await
            .expect("an event in time")
            .expect("the stream goes on");
        if wanted(&event) {
            done.insert(shard);
        }
    }
}

fn is_ready(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Ready { .. })
}

fn is_resumed(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Resumed)
}

fn is_guild(event: &ShardEvent) -> bool {
    matches!(event, ShardEvent::Dispatch { event_type, .. } if event_type == "GUILD_CREATE")
}

/// Moves shard 0's session on: a voice state update, which the sim answers
/// with two dispatches. Returns the seq after them.
async fn more_dispatches(cluster: &mut Cluster) -> u64 {
    use twilight_model::gateway::payload::outgoing::UpdateVoiceState;
    use twilight_model::id::Id;
    let guild = Id::new(2 << 22);
    assert_eq!(cluster.sender().shard_for_guild(guild), 0);
    cluster
        .sender()
        .send_to_guild(guild, UpdateVoiceState::new(guild, None, false, false))
        .await
        .unwrap();
    loop {
        let (shard, event) = tokio::time::timeout(Duration::from_secs(10), cluster.next_event())
            .await
            .expect("an event in time")
            .expect("the stream goes on");
        if let (
            0,
            ShardEvent::Dispatch {
                event_type, seq, ..
            },
        ) = (shard, &event)
            && event_type == "VOICE_SERVER_UPDATE"
        {
            return *seq;
        }
    }
}

/// What the file holds now, read as a fresh process would.
async fn stored(path: &std::path::Path, shards: &[u32]) -> HashMap<u32, Session> {
    FileSessionStore::new(path).load(shards).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_restarted_from_its_session_file_resumes_where_the_last_one_stopped() {
    let sim = sim(2).await;
    let file = TempFile::new("restart");
    let store = Arc::new(FileSessionStore::new(&file.0));
    let mut cluster = Cluster::start(config(&sim, store, Duration::from_secs(3600)))
        .await
        .unwrap();
    until_each(&mut cluster, 2, is_guild).await;
    // Past what the save at READY holds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seq = more_dispatches(&mut cluster).await;
    let shutdown = cluster.shutdown(Duration::from_secs(5)).await;
    assert_eq!(shutdown.sessions[&0].seq, seq);
    assert!(shutdown.store_error.is_none(), "{:?}", shutdown.store_error);
    assert_eq!(shutdown.sessions.len(), 2);
    let saved = stored(&file.0, &[0, 1]).await;
    assert_eq!(
        saved, shutdown.sessions,
        "the file holds the exported sessions"
    );

    // A new process: only the file.
    let store = Arc::new(FileSessionStore::new(&file.0));
    let mut cluster = Cluster::start(config(&sim, store, Duration::from_secs(3600)))
        .await
        .unwrap();
    until_each(&mut cluster, 2, is_resumed).await;
    let observations = sim.observations();
    assert_eq!(
        observations.identifies.len(),
        2,
        "no identify after the restart"
    );
    let resumed: HashMap<String, u64> = observations
        .resumes
        .iter()
        .map(|resume| (resume.session_id.clone(), resume.seq))
        .collect();
    for session in saved.values() {
        assert_eq!(resumed.get(&session.session_id), Some(&session.seq));
    }
    drop(cluster);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_is_saved_when_it_starts_so_a_crash_still_resumes() {
    let sim = sim(2).await;
    let file = TempFile::new("crash");
    let store = Arc::new(FileSessionStore::new(&file.0));
    // An interval that never comes: only the start of a session saves.
    let mut cluster = Cluster::start(config(&sim, store, Duration::from_secs(3600)))
        .await
        .unwrap();
    until_each(&mut cluster, 2, is_ready).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stored(&file.0, &[0, 1]).await.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both sessions saved after READY"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A crash: no shutdown.
    drop(cluster);

    let store = Arc::new(FileSessionStore::new(&file.0));
    let mut cluster = Cluster::start(config(&sim, store, Duration::from_secs(3600)))
        .await
        .unwrap();
    until_each(&mut cluster, 2, is_resumed).await;
    assert_eq!(sim.observations().identifies.len(), 2);
    drop(cluster);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_sessions_are_saved_on_the_interval() {
    let sim = sim(1).await;
    let file = TempFile::new("interval");
    let store = Arc::new(FileSessionStore::new(&file.0));
    let mut cluster = Cluster::start(config(&sim, store, Duration::from_millis(50)))
        .await
        .unwrap();
    until_each(&mut cluster, 1, is_guild).await;
    // Past what the save at READY holds.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let seq = more_dispatches(&mut cluster).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let saved = stored(&file.0, &[0]).await;
        if saved.get(&0).is_some_and(|session| session.seq >= seq) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the seq saved within the interval: {saved:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(cluster);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_missing_file_holds_no_session_and_a_broken_one_is_an_error_naming_it() {
    let file = TempFile::new("broken");
    let store = FileSessionStore::new(&file.0);
    assert!(store.load(&[0, 1]).await.unwrap().is_empty());

    std::fs::write(&file.0, b"{\"0\": {\"session_id\": ").unwrap();
    let error = store.load(&[0]).await.unwrap_err().to_string();
    assert!(error.contains(&file.0.display().to_string()), "{error}");
    assert!(error.contains("delete it"), "{error}");

    let unusable = r#"{"0": {"session_id": " ", "seq": 3, "resume_url": "wss://x"}}"#;
    std::fs::write(&file.0, unusable).unwrap();
    let error = store.load(&[0]).await.unwrap_err().to_string();
    assert!(error.contains("shard 0"), "{error}");

    // A save replaces what cannot be read, keeping nothing of it.
    let session = Session::new("abc".into(), 7, "wss://resume.example".into()).unwrap();
    store.save(&[(1, Some(session.clone()))]).await.unwrap();
    assert_eq!(
        stored(&file.0, &[0, 1]).await,
        HashMap::from([(1, session)])
    );
    store.save(&[(1, None)]).await.unwrap();
    assert!(stored(&file.0, &[0, 1]).await.is_empty(), "forgotten");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_load_stops_the_start_before_any_identify() {
    let sim = sim(1).await;
    let file = TempFile::new("refused");
    std::fs::write(&file.0, b"not json").unwrap();
    let store = Arc::new(FileSessionStore::new(&file.0));
    let error = Cluster::start(config(&sim, store, Duration::from_secs(3600)))
        .await
        .unwrap_err();
    assert!(matches!(error, ClusterError::SessionStore(_)), "{error}");
    assert!(sim.observations().identifies.is_empty());
    sim.shutdown().await;
}
