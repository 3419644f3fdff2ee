//! `file:DIR`: one `.eml` file per mail, named after its Message-ID, so that writing the same
//! mail twice (a retry after a crash) leaves one file. The zero-configuration default.
use std::path::PathBuf;

use anyhow::Context as _;
use sha2::{Digest, Sha256};

use super::{SendError, Transport, smtp::envelope};

/// Writes each mail to `DIR/<message id>.eml` (write to a temp file, then rename: a reader never
/// sees half a mail, and a second write of the same mail replaces the first).
#[derive(Debug)]
pub(super) struct FileTransport {
    dir: PathBuf,
}

impl FileTransport {
    pub(super) fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("mail.outbound: cannot create {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// A file name from the Message-ID (angle brackets dropped, anything unusual in a file name
    /// replaced), or from the message's hash when it has none.
    fn file_name(message_id: &str, raw: &[u8]) -> String {
        let id = message_id
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let stem: String = if id.is_empty() {
            let digest = Sha256::digest(raw);
            digest[..16].iter().map(|b| format!("{b:02x}")).collect()
        } else {
            id.chars()
                .take(200)
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "@.-_+=".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect()
        };
        // A leading dot would hide the file, and ".." must never name a directory.
        let stem = stem.trim_start_matches('.');
        format!("{stem}.eml")
    }
}

#[tonic::async_trait]
impl Transport for FileTransport {
    async fn send(
        &self,
        envelope_from: &str,
        to: &str,
        message_id: &str,
        raw: &[u8],
    ) -> Result<String, SendError> {
        // Same rules as SMTP, so that switching transports changes no outcome.
        envelope(envelope_from, to)?;
        let name = Self::file_name(message_id, raw);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let io = |what: &str, e: std::io::Error| {
            SendError::Transient(format!("{what} {}: {e}", path.display()))
        };
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| io("creating the directory of", e))?;
        tokio::fs::write(&tmp, raw)
            .await
            .map_err(|e| io("writing", e))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(|e| io("renaming into", e))?;
        Ok(format!("written to {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use crate::delivery::outbound::from_url;

    #[tokio::test]
    async fn the_file_transport_writes_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("outbox/nested");
        let t = from_url(&format!("file:{}", out.display()), None, 1).unwrap();
        assert!(out.is_dir(), "from_url creates the directory");
        let answer = t
            .send(
                "a@replyflow.test",
                "b@replyflow.test",
                "<m1@replyflow.test>",
                b"first",
            )
            .await
            .unwrap();
        let path = out.join("m1@replyflow.test.eml");
        assert!(answer.contains(&path.display().to_string()), "{answer}");
        assert_eq!(std::fs::read(&path).unwrap(), b"first");
        t.send(
            "a@replyflow.test",
            "b@replyflow.test",
            "<m1@replyflow.test>",
            b"second",
        )
        .await
        .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let files: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert_eq!(files.len(), 1, "one file per mail, no temp files left");
        // Odd characters never escape the directory.
        t.send(
            "a@replyflow.test",
            "b@replyflow.test",
            "<../../x/y@z>",
            b"third",
        )
        .await
        .unwrap();
        assert!(out.join("_.._x_y@z.eml").is_file());
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2);
        // No Message-ID: named by content, so the same mail still lands in one file.
        t.send("a@replyflow.test", "b@replyflow.test", "", b"anon")
            .await
            .unwrap();
        t.send("a@replyflow.test", "b@replyflow.test", "", b"anon")
            .await
            .unwrap();
        assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    }
}
