//! The config-file store (`auth = "file"`): apps and grants listed in
//! `databus.toml` itself, for a deployment with no database. The file is
//! re-read on every refresh and on SIGHUP; a broken edit keeps the last good
//! grants serving, like an unreachable database would.

use std::path::{Path, PathBuf};

use super::{AuthStore, Grant, StoreError};
use crate::config::{ConfigError, RawConfig};

pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: &Path) -> FileStore {
        FileStore { path: path.to_owned() }
    }
}

impl AuthStore for FileStore {
    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }

    fn load(&mut self) -> Result<Vec<Grant>, StoreError> {
        let fail = |e: ConfigError| StoreError { store: self.describe(), cause: e.to_string() };
        let raw = RawConfig::read(&self.path).map_err(fail)?;
        raw.file_grants(&self.path).map_err(fail)
    }
}
