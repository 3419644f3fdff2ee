//! Reading the test mailboxes over IMAPS (Dovecot, certificate from RF_MAIL_CA_FILE, server name
//! "localhost"), the way an approver's mail client would. Dovecot writes a delivered mail within a
//! few ms, so polling with a deadline finds it promptly; nothing here sleeps a fixed time.
use std::{collections::HashSet, sync::Arc, time::Duration};

use futures_util::TryStreamExt;
use replyflow::mail::transport::tls_roots;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::helpers::{eventually, mail_env};

pub type Session = async_imap::Session<TlsStream<TcpStream>>;

/// Logs in as `user` (a local part like "mary", or a full address) over IMAPS.
pub async fn connect_imaps(user: &str) -> Session {
    let env = mail_env();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let roots = tls_roots(Some(&env.ca_file)).expect("trusting RF_MAIL_CA_FILE");
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(("127.0.0.1", env.imaps_port))
        .await
        .expect("connecting to Dovecot's IMAPS port");
    let server = ServerName::try_from("localhost").expect("server name");
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server, tcp)
        .await
        .expect(
            "TLS handshake with Dovecot (certificate for localhost, signed by RF_MAIL_CA_FILE)",
        );
    let mut client = async_imap::Client::new(tls);
    client
        .read_response()
        .await
        .expect("reading the IMAP greeting")
        .expect("an IMAP greeting");
    let address = env.address(user);
    client
        .login(&address, &env.password)
        .await
        .map_err(|(e, _)| e)
        .unwrap_or_else(|e| panic!("IMAP LOGIN as {address}: {e}"))
}

/// Sequence numbers of INBOX messages whose Message-ID header contains `id` (angle brackets
/// optional), as of now.
async fn search(session: &mut Session, id: &str) -> HashSet<u32> {
    let id = id.trim_matches(|c| c == '<' || c == '>');
    // SELECT again: a fresh view of the mailbox, new deliveries included.
    session.select("INBOX").await.expect("SELECT INBOX");
    session
        .search(format!("HEADER Message-ID \"{id}\""))
        .await
        .expect("SEARCH HEADER Message-ID")
}

/// How many messages in `user`'s INBOX carry Message-ID `id`.
pub async fn count_message_id(user: &str, id: &str) -> usize {
    let mut session = connect_imaps(user).await;
    let n = search(&mut session, id).await.len();
    let _ = session.logout().await;
    n
}

/// Waits (polling, at most `deadline`) until `user`'s INBOX holds a message with Message-ID
/// `id`, then returns every such message, raw (RFC822). Panics when none arrives in time.
pub async fn wait_for_message_id(user: &str, id: &str, deadline: Duration) -> Vec<Vec<u8>> {
    let mut session = connect_imaps(user).await;
    let found = eventually(deadline, async || {
        let found = search(&mut session, id).await;
        if found.is_empty() {
            Err(format!("no message with Message-ID {id} in {user}'s INBOX"))
        } else {
            Ok(found)
        }
    })
    .await;
    let mut seqs: Vec<u32> = found.into_iter().collect();
    seqs.sort_unstable();
    let set = seqs
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let messages: Vec<Vec<u8>> = session
        .fetch(&set, "BODY.PEEK[]")
        .await
        .expect("FETCH")
        .try_collect::<Vec<_>>()
        .await
        .expect("FETCH responses")
        .iter()
        .map(|fetch| fetch.body().expect("the message's bytes").to_vec())
        .collect();
    let _ = session.logout().await;
    messages
}

/// How many messages in `user`'s `folder` carry header `name` containing `value`, as of now.
pub async fn count_header(user: &str, folder: &str, name: &str, value: &str) -> usize {
    let mut session = connect_imaps(user).await;
    session
        .select(folder)
        .await
        .unwrap_or_else(|e| panic!("SELECT {folder}: {e}"));
    let n = session
        .search(format!("HEADER {name} \"{value}\""))
        .await
        .expect("SEARCH HEADER")
        .len();
    let _ = session.logout().await;
    n
}

/// Waits (polling, at most `deadline`) until `user`'s INBOX holds a message whose header `name`
/// contains `value`; returns the first such message, raw.
pub async fn wait_for_header(user: &str, name: &str, value: &str, deadline: Duration) -> Vec<u8> {
    let mut session = connect_imaps(user).await;
    let seq = eventually(deadline, async || {
        session.select("INBOX").await.expect("SELECT INBOX");
        let found = session
            .search(format!("HEADER {name} \"{value}\""))
            .await
            .expect("SEARCH HEADER");
        found
            .into_iter()
            .min()
            .ok_or_else(|| format!("no message with {name}: {value} in {user}'s INBOX"))
    })
    .await;
    let fetches: Vec<_> = session
        .fetch(seq.to_string(), "BODY.PEEK[]")
        .await
        .expect("FETCH")
        .try_collect()
        .await
        .expect("FETCH responses");
    let raw = fetches[0].body().expect("the message's bytes").to_vec();
    let _ = session.logout().await;
    raw
}
