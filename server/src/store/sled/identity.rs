//! The server's VAPID identity on sled: the contact is a value of the settings tree, the
//! private key a file beside the database, mode 0600, that operators can see and back
//! up. A key file others can read (copied by hand, say) is made private again.

use std::{
    fs,
    io::Write,
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::Path,
};

use async_trait::async_trait;

use super::{SledStore, VAPID_SUBJECT};
use crate::store::{ServerIdentity, StoreError};

/// The private key's file name inside the data dir.
pub const KEY_FILE: &str = "vapid_private_key.pem";

#[async_trait]
impl ServerIdentity for SledStore {
    async fn vapid_subject(&self) -> Result<Option<String>, StoreError> {
        self.subject()
    }

    async fn set_vapid_subject(&self, subject: &str) -> Result<(), StoreError> {
        self.commit(|| {
            self.settings.insert(VAPID_SUBJECT, subject.as_bytes())?;
            Ok(())
        })
        .await
    }

    async fn vapid_private_key(&self) -> Result<Option<String>, StoreError> {
        let path = &self.key_file;
        if !path.exists() {
            return Ok(None);
        }
        let io = |source| StoreError::KeyFile {
            path: path.clone(),
            source,
        };
        tighten_permissions(path).map_err(io)?;
        fs::read_to_string(path).map(Some).map_err(io)
    }

    /// One process opens the data dir: nobody can keep another key meanwhile.
    async fn offer_vapid_private_key(&self, pem: &str) -> Result<String, StoreError> {
        match self.vapid_private_key().await? {
            Some(kept) => Ok(kept),
            None => {
                self.replace_vapid_private_key(pem).await?;
                Ok(pem.to_owned())
            }
        }
    }

    async fn replace_vapid_private_key(&self, pem: &str) -> Result<(), StoreError> {
        let path = &self.key_file;
        let io = |source| StoreError::KeyFile {
            path: path.clone(),
            source,
        };
        let staged = path.with_extension("pem.new");
        let _ = fs::remove_file(&staged);
        write_private(&staged, pem.as_bytes()).map_err(io)?;
        fs::rename(&staged, path).map_err(io)
    }

    fn vapid_key_place(&self) -> String {
        format!("the key file {}", self.key_file.display())
    }
}

/// Writes a new file only its owner can read, and waits until it is on disk.
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

fn tighten_permissions(path: &Path) -> std::io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "VAPID key file was readable by others; setting mode 0600");
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
