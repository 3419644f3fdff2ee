//! `maildir:DIR`: every file in `DIR/new` and `DIR/cur` is read and, once ingested, renamed into
//! `DIR/.<processed_folder>/cur/` (a Maildir++ sub-folder) with the Seen flag. Files are taken
//! in name order, which Maildir makes roughly delivery order.
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::{
    Content, FETCH_BATCH, FETCH_BATCH_BYTES, Fetched, MAILDIR_POLL, MAX_INBOUND_BYTES, MailSource,
};
use crate::workflow::inbound::MAX_HEADER_BYTES;

/// A Maildir directory as a [`MailSource`].
#[derive(Debug)]
pub struct MaildirSource {
    dir: PathBuf,
    processed: PathBuf,
    /// The files of this pass, name and path, in order; `next` is the first not yet read.
    files: Vec<(String, PathBuf)>,
    next: usize,
    /// The last batch's files: where each is and where it goes once handled.
    pending: Vec<(PathBuf, PathBuf)>,
}

impl MaildirSource {
    pub fn new(dir: PathBuf, processed_folder: &str) -> Self {
        Self {
            processed: dir.join(format!(".{processed_folder}")),
            dir,
            files: Vec::new(),
            next: 0,
            pending: Vec::new(),
        }
    }

    fn target(&self, name: &str) -> PathBuf {
        self.processed.join("cur").join(processed_name(name))
    }
}

#[tonic::async_trait]
impl MailSource for MaildirSource {
    fn transport(&self) -> &'static str {
        "maildir"
    }

    async fn open(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    async fn begin_pass(&mut self) -> anyhow::Result<()> {
        for folder in [&self.dir, &self.processed] {
            for sub in ["new", "cur", "tmp"] {
                tokio::fs::create_dir_all(folder.join(sub))
                    .await
                    .with_context(|| format!("creating {}", folder.join(sub).display()))?;
            }
        }
        let mut files = Vec::new();
        for sub in ["new", "cur"] {
            let mut entries = tokio::fs::read_dir(self.dir.join(sub))
                .await
                .with_context(|| format!("listing {}", self.dir.join(sub).display()))?;
            while let Some(entry) = entries.next_entry().await? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || !entry.file_type().await?.is_file() {
                    continue;
                }
                files.push((name, entry.path()));
            }
        }
        files.sort();
        self.files = files;
        self.next = 0;
        self.pending.clear();
        Ok(())
    }

    async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<Fetched>>> {
        self.pending.clear();
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while let Some((name, path)) = self.files.get(self.next).cloned() {
            let size = match tokio::fs::metadata(&path).await {
                Ok(m) => m.len(),
                // Gone meanwhile (another reader, or the user's client): not ours any more.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    self.next += 1;
                    continue;
                }
                Err(e) => return Err(e).with_context(|| format!("stat {}", path.display())),
            };
            let too_large = size > MAX_INBOUND_BYTES as u64;
            // A full batch, or an oversized file behind it, ends the batch: files stay in order.
            if !batch.is_empty()
                && (too_large || batch.len() >= FETCH_BATCH || bytes + size > FETCH_BATCH_BYTES)
            {
                break;
            }
            self.next += 1;
            let read = if too_large {
                read_head(&path).await
            } else {
                tokio::fs::read(&path).await
            };
            let raw = match read {
                Ok(raw) => raw,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
            };
            let content = if too_large {
                let header = crate::workflow::inbound::header_block(&raw).to_vec();
                Content::TooLarge { header, size }
            } else {
                bytes += size;
                Content::Mail(raw)
            };
            let target = self.target(&name);
            self.pending.push((path.clone(), target));
            batch.push(Fetched {
                origin: path.display().to_string(),
                content,
            });
            if too_large {
                break;
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    async fn settle(&mut self, handled: &[bool]) -> anyhow::Result<()> {
        for ((path, target), _) in self.pending.iter().zip(handled).filter(|(_, ok)| **ok) {
            move_file(path, target).await?;
        }
        self.pending.clear();
        Ok(())
    }

    async fn end_pass(&mut self) -> anyhow::Result<()> {
        self.files.clear();
        Ok(())
    }

    async fn wait(&mut self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(MAILDIR_POLL) => {}
        }
        Ok(())
    }

    async fn close(&mut self) {}
}

/// Moves an ingested file into the processed folder; one already gone is fine.
async fn move_file(path: &Path, target: &Path) -> anyhow::Result<()> {
    match tokio::fs::rename(path, target).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("moving {} to {}", path.display(), target.display()))
        }
    }
}

/// The first [`MAX_HEADER_BYTES`] of a file: enough for any header block, never the whole of
/// a huge mail.
async fn read_head(path: &Path) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let mut head = Vec::new();
    file.take(MAX_HEADER_BYTES as u64)
        .read_to_end(&mut head)
        .await?;
    Ok(head)
}

/// A file name in the processed folder's cur/: Maildir's info suffix with the Seen flag.
fn processed_name(name: &str) -> String {
    match name.split_once(":2,") {
        Some((base, flags)) if flags.contains('S') => format!("{base}:2,{flags}"),
        Some((base, flags)) => {
            let mut flags: Vec<char> = flags.chars().chain(['S']).collect();
            flags.sort_unstable();
            format!("{base}:2,{}", flags.into_iter().collect::<String>())
        }
        None => format!("{name}:2,S"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass hands out the files in name order; only those settled as handled move, with the
    /// Seen flag, and the failed one is read again by the next pass.
    #[tokio::test]
    async fn handled_files_move_and_failed_ones_stay_for_the_next_pass() {
        let dir = tempfile::tempdir().unwrap();
        let inbox = dir.path().join("inbox");
        let mut source = MaildirSource::new(inbox.clone(), "Processed");
        source.begin_pass().await.unwrap();
        for name in ["2.b.host", "1.a.host:2,R"] {
            std::fs::write(
                inbox.join("new").join(name),
                format!("Subject: {name}\r\n\r\nx"),
            )
            .unwrap();
        }
        source.begin_pass().await.unwrap();
        let batch = source.next_batch().await.unwrap().expect("a batch");
        let origins: Vec<&str> = batch.iter().map(|f| f.origin.as_str()).collect();
        assert!(
            origins[0].ends_with("1.a.host:2,R") && origins[1].ends_with("2.b.host"),
            "{origins:?}"
        );
        assert!(
            matches!(&batch[1].content, Content::Mail(raw) if raw.starts_with(b"Subject: 2.b.host"))
        );
        source.settle(&[true, false]).await.unwrap();
        assert!(source.next_batch().await.unwrap().is_none());
        source.end_pass().await.unwrap();
        assert!(inbox.join(".Processed/cur/1.a.host:2,RS").is_file());
        assert!(inbox.join("new/2.b.host").is_file());

        source.begin_pass().await.unwrap();
        let again = source
            .next_batch()
            .await
            .unwrap()
            .expect("the failed file again");
        assert_eq!(again.len(), 1);
        assert!(again[0].origin.ends_with("2.b.host"));
    }

    #[test]
    fn processed_files_are_flagged_seen() {
        assert_eq!(processed_name("1.2.host"), "1.2.host:2,S");
        assert_eq!(processed_name("1.2.host:2,RF"), "1.2.host:2,FRS");
        assert_eq!(processed_name("1.2.host:2,S"), "1.2.host:2,S");
    }
}
