//! The bare change-stream relay of figure 2 (issue 17): the baseline showing what
//! correctness costs. A plain program that follows local's change stream (post-images,
//! `updateLookup`) and, for whatever events have arrived (up to [`BATCH`]), sends one
//! bulk of `replaceOne` upserts by `_id` to cloud (one `update` command; a run of
//! deletes becomes one `delete` command), in event order. No conflict handling, no
//! checkpoints, no echo filtering, no state database: one direction only.
//!
//! Reading and writing overlap, as in the daemon (its stream reader and its worker are
//! separate tasks): a reader task turns events into writes and queues them, the writer
//! takes what is queued. It runs as a child process of the harness, like the daemon,
//! so the two are measured alike ([`Relay::start`], [`Relay::stop`]).

use std::io::{BufRead, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bson::{rawdoc, RawArrayBuf, RawBson, RawBsonRef, RawDocumentBuf};
use futures::StreamExt;
use mongodb::options::FullDocumentType;
use mongodb::{Client, Database};
use tempfile::TempDir;
use tokio::sync::mpsc;

use crate::ctx::Ctx;
use crate::daemon::DaemonSpec;
use crate::proc::{tail, Running};
use crate::throughput::BATCH;

/// Source and target collections, as the daemon of figure 2 is configured.
const SOURCE: &str = "local_data";
const TARGET: &str = "cloud_data";
/// Writes queued between the reader and the writer at most (the daemon's
/// `queue_capacity` in figure 2).
const QUEUE: usize = 100_000;
/// How long one `getMore` waits on the server (the daemon's value).
const MAX_AWAIT: Duration = Duration::from_millis(500);
/// What the relay prints on stdout once its change stream is open.
const READY: &str = "relay ready";

/// One write to cloud: the document to put under `id`, or `None` for a delete.
struct Write {
    /// `_id` of the changed document.
    id: RawBson,
    /// Its post-image (inserts, replaces, updates); `None`: deleted.
    doc: Option<RawDocumentBuf>,
}

/// The write a change event asks for, if any (an update whose document is already
/// gone has no post-image: its delete follows).
fn write_of(event: &RawDocumentBuf) -> anyhow::Result<Option<Write>> {
    let op = event.get_str("operationType")?;
    let id = match event.get_document("documentKey")?.get("_id")? {
        Some(id) => id.to_raw_bson(),
        None => bail!("{op} event without documentKey._id"),
    };
    let doc = match op {
        "insert" | "replace" | "update" => match event.get("fullDocument")? {
            Some(RawBsonRef::Document(d)) => Some(d.to_raw_document_buf()),
            _ => return Ok(None),
        },
        "delete" => None,
        _ => return Ok(None),
    };
    Ok(Some(Write { id, doc }))
}

/// Sends `writes` to `coll` in order: each run of upserts as one `update` command of
/// replacements with `upsert: true`, each run of deletes as one `delete` command.
async fn send(db: &Database, coll: &str, writes: &mut Vec<Write>) -> anyhow::Result<()> {
    let mut writes = writes.drain(..).peekable();
    while let Some(first) = writes.next() {
        let deletes = first.doc.is_none();
        let mut statements = RawArrayBuf::new();
        let mut next = Some(first);
        while let Some(w) = next {
            statements.push(match w.doc {
                Some(d) => rawdoc! { "q": { "_id": w.id }, "u": d, "upsert": true },
                None => rawdoc! { "q": { "_id": w.id }, "limit": 1 },
            });
            next = writes.next_if(|w| w.doc.is_none() == deletes);
        }
        let (verb, list) = if deletes {
            ("delete", "deletes")
        } else {
            ("update", "updates")
        };
        let mut command = RawDocumentBuf::new();
        command.append(verb, coll);
        command.append(list, statements);
        command.append("ordered", true);
        let reply = db.run_raw_command(command).await?;
        if let Some(e) = reply.get("writeErrors") {
            bail!("{verb} on {coll} failed: {e}");
        }
    }
    Ok(())
}

/// The relay program (child process): `db.local_data` on `uri` → `db.cloud_data` on
/// `cloud_uri`, until killed.
pub async fn relay(uri: &str, cloud_uri: &str, db: &str) -> anyhow::Result<()> {
    let source = Client::with_uri_str(uri)
        .await?
        .database(db)
        .collection::<bson::Document>(SOURCE);
    let target = Client::with_uri_str(cloud_uri).await?.database(db);
    let mut stream = source
        .watch()
        .full_document(FullDocumentType::UpdateLookup)
        .max_await_time(MAX_AWAIT)
        .batch_size(BATCH as u32)
        .await?
        .with_type::<RawDocumentBuf>();
    println!("{READY}");
    std::io::stdout().flush()?;

    let (tx, mut rx) = mpsc::channel::<Write>(QUEUE);
    let reader = tokio::spawn(async move {
        while let Some(event) = stream.next().await {
            if let Some(w) = write_of(&event?)? {
                if tx.send(w).await.is_err() {
                    break;
                }
            }
        }
        anyhow::Ok(())
    });
    let mut writes = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut writes, BATCH).await > 0 {
        send(&target, TARGET, &mut writes).await?;
    }
    reader.await?
}

/// The relay running as a child process of the harness.
pub struct Relay {
    /// The process (reaped by [`Relay::stop`]).
    proc: Running,
    /// Holds its stderr log; removed on drop.
    dir: TempDir,
}

impl Relay {
    /// Starts the relay on `spec`'s database and layout (both collections next to each
    /// other unless `spec.split`, as the daemon would run), and waits until its change
    /// stream is open.
    pub async fn start(ctx: &Ctx, spec: &DaemonSpec) -> anyhow::Result<Relay> {
        let dir = tempfile::tempdir()?;
        let log = std::fs::File::create(dir.path().join("relay.log"))?;
        let cloud_uri = if spec.split { &ctx.cloud_uri } else { &ctx.uri };
        let mut child = Command::new(&ctx.me)
            .args(["relay", "--uri", &ctx.uri, "--cloud-uri", cloud_uri])
            .args(["--db", &spec.db])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("cannot start the relay")?;
        let relay = Relay {
            proc: Running::new(&child),
            dir,
        };
        let out = child.stdout.take().context("no stdout pipe")?;
        // Blocking read of the first line; EOF (the relay died) ends it too.
        let first = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).map(|_| line)
        });
        match tokio::time::timeout(Duration::from_secs(60), first).await {
            Ok(Ok(Ok(line))) if line.trim() == READY => Ok(relay),
            _ => bail!("the relay did not start: {}", relay.log_tail()),
        }
    }

    /// The end of the relay's log.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default();
        tail(&log, 1500).to_string()
    }

    /// Stops it (SIGTERM: it has nothing to save) and returns its peak RSS in KiB; fails
    /// if it had died before.
    pub async fn stop(mut self) -> anyhow::Result<u64> {
        let (code, rss) = self.proc.terminate().await?;
        if code != -libc::SIGTERM {
            bail!("the relay exited with {code}: {}", self.log_tail());
        }
        Ok(rss)
    }
}
