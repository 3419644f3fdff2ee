//! `--inbound-backlog N`: N replies wait in a fresh folder of the `--imap` account when the reader
//! starts; one pass of the real inbound worker is timed, and then what IMAP alone (FETCH and UID
//! MOVE of the same mail) costs, so the rest can be put down to ingestion.
use std::{path::Path, sync::Arc, time::Instant};

use anyhow::{Context, bail};
use futures_util::TryStreamExt;
use rustls_pki_types::ServerName;
use tokio::{net::TcpStream, task::JoinSet};
use tokio_rustls::{TlsConnector, client::TlsStream};

use super::{
    BenchArgs,
    inbound::{applied, prepare},
};
use crate::{
    mail::transport::tls_roots,
    workers::inbound::{ImapTls, InboundSource, InboundWorker},
    workflow::Workflow,
};

type Session = async_imap::Session<TlsStream<TcpStream>>;

pub(super) async fn backlog(
    args: &BenchArgs,
    addr: &str,
    workflow: &Arc<Workflow>,
    n: usize,
    backend: &str,
) -> anyhow::Result<()> {
    let url = args
        .imap
        .as_deref()
        .context("--inbound-backlog needs --imap")?;
    let InboundSource::Imap {
        tls,
        host,
        port,
        user,
        password,
        ..
    } = InboundSource::from_url(url)?
    else {
        bail!("--imap must be an imaps:// URL");
    };
    if tls != ImapTls::Implicit {
        bail!("--imap: only imaps:// (TLS from the first byte) is supported here");
    }
    let ca = args.ca_file.as_deref();
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (folder, done) = (format!("rf-bench-{run}"), format!("rf-bench-{run}-done"));

    let t = Instant::now();
    let replies = prepare(args, addr, workflow, n, true).await?;
    eprintln!(
        "prepared {n} tasks and replies in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut session = login(&host, port, &user, &password, ca).await?;
    session.create(&folder).await.context("CREATE")?;
    session.create(&done).await.context("CREATE")?;
    // A few connections append side by side: filling the mailbox is not what is measured.
    let chunks: Vec<Vec<Vec<u8>>> = replies
        .chunks(n.div_ceil(4))
        .map(|c| c.iter().map(|r| r.raw.clone()).collect())
        .collect();
    let mut appenders = JoinSet::new();
    for chunk in chunks {
        let (host, user, password, folder) =
            (host.clone(), user.clone(), password.clone(), folder.clone());
        let ca = ca.map(Path::to_path_buf);
        appenders.spawn(async move {
            let mut s = login(&host, port, &user, &password, ca.as_deref()).await?;
            for raw in chunk {
                s.append(&folder, None, None, &raw)
                    .await
                    .context("APPEND")?;
            }
            let _ = s.logout().await;
            anyhow::Ok(())
        });
    }
    while let Some(done) = appenders.join_next().await {
        done.context("an appender panicked")??;
    }
    eprintln!(
        "appended {n} replies to {folder} in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    let source = InboundSource::Imap {
        tls,
        host: host.clone(),
        port,
        user: user.clone(),
        password: password.clone(),
        folder: folder.clone(),
    };
    let worker = InboundWorker::new(workflow.clone(), source, done.clone(), args.ca_file.clone());
    let before = applied(workflow).await?;
    let started = Instant::now();
    let read = worker.run_once().await.context("the inbound pass")?;
    let wall = started.elapsed();
    let applied = applied(workflow).await? - before;

    // The same mail, IMAP alone: what FETCH (sizes, then bodies 100 per command, as the
    // reader does) and UID MOVE (100 per command) cost without any ingestion.
    session.select(&done).await.context("SELECT")?;
    let t = Instant::now();
    let sizes: Vec<_> = session
        .uid_fetch("1:*", "(UID RFC822.SIZE)")
        .await?
        .try_collect()
        .await?;
    let uids: Vec<u32> = sizes.iter().filter_map(|f| f.uid).collect();
    let mut bytes = 0usize;
    for chunk in uids.chunks(100) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let bodies: Vec<_> = session
            .uid_fetch(&set, "(UID BODY.PEEK[])")
            .await?
            .try_collect()
            .await?;
        bytes += bodies
            .iter()
            .filter_map(|f| f.body())
            .map(<[u8]>::len)
            .sum::<usize>();
    }
    let fetch = t.elapsed();
    let t = Instant::now();
    for chunk in uids.chunks(100) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        session.uid_mv(&set, &folder).await.context("UID MOVE")?;
    }
    let moves = t.elapsed();
    let _ = session.select("INBOX").await;
    let _ = session.delete(&folder).await;
    let _ = session.delete(&done).await;
    let _ = session.logout().await;

    let secs = wall.as_secs_f64().max(f64::EPSILON);
    println!(
        "replyflow bench --inbound-backlog: {n} replies waiting in an IMAP folder when the reader starts"
    );
    println!(
        "backend:            {backend}; approvers {}",
        args.approvers
    );
    println!("read / applied:     {read} / {applied}");
    println!("wall time:          {secs:.3} s (one pass: connect, SELECT, FETCH, ingest, MOVE)");
    println!("applied/s:          {:.1}", applied as f64 / secs);
    println!(
        "IMAP alone, same {} messages ({:.1} MB): FETCH sizes + bodies {:.3} s, UID MOVE {:.3} s ({:.0}% of the pass)",
        uids.len(),
        bytes as f64 / 1e6,
        fetch.as_secs_f64(),
        moves.as_secs_f64(),
        100.0 * (fetch + moves).as_secs_f64() / secs
    );
    println!(
        "ingestion:          ≈ {:.3} s, {:.2} ms per reply (the rest of the pass)",
        (secs - (fetch + moves).as_secs_f64()).max(0.0),
        1000.0 * (secs - (fetch + moves).as_secs_f64()).max(0.0) / n.max(1) as f64
    );
    if applied != n {
        bail!("{applied} of {n} replies applied");
    }
    Ok(())
}

async fn login(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    ca: Option<&Path>,
) -> anyhow::Result<Session> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(tls_roots(ca)?)
        .with_no_client_auth();
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let name = ServerName::try_from(host.to_string()).context("--imap host")?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let mut client = async_imap::Client::new(tls);
    client
        .read_response()
        .await
        .context("IMAP greeting")?
        .context("no IMAP greeting")?;
    client
        .login(user, password)
        .await
        .map_err(|(e, _)| e)
        .with_context(|| format!("IMAP LOGIN as {user}"))
}
