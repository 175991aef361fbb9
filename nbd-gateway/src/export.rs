//! Exports (what a client connects to) and the catalogs that name them.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::backend::ExportBackend;

/// One export: a named backend plus how it may be used.
pub struct Export {
    name: String,
    description: String,
    read_only: bool,
    backend: Arc<dyn ExportBackend>,
}

impl std::fmt::Debug for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Export")
            .field("name", &self.name)
            .field("read_only", &self.read_only)
            .field("size", &self.backend.size())
            .finish_non_exhaustive()
    }
}

impl Export {
    /// A new export over `backend`.
    pub fn new(name: impl Into<String>, backend: Arc<dyn ExportBackend>) -> Self {
        Self {
            name: name.into(),
            description: String::new(),
            read_only: false,
            backend,
        }
    }

    /// Sets a human-readable description (sent as `NBD_INFO_DESCRIPTION`).
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Makes the export read-only: writes fail with `NBD_EPERM`.
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// The export's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The export's description (may be empty).
    pub fn desc(&self) -> &str {
        &self.description
    }

    /// Whether writes are refused.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.backend.size()
    }

    /// The storage.
    pub fn backend(&self) -> &Arc<dyn ExportBackend> {
        &self.backend
    }
}

/// A source of exports. Lookups may touch the filesystem: the server calls them from
/// `spawn_blocking`.
pub trait ExportCatalog: Send + Sync {
    /// The names of every export, for `NBD_OPT_LIST`.
    ///
    /// # Errors
    /// If the catalog cannot be read.
    fn list(&self) -> crate::Result<Vec<String>>;
    /// Opens the named export; `Ok(None)` if there is none by that name. The empty name is the
    /// default export, if the catalog has one.
    ///
    /// # Errors
    /// If the catalog cannot be read.
    fn open(&self, name: &str) -> crate::Result<Option<Arc<Export>>>;
}

/// A fixed set of exports held in memory.
#[derive(Debug, Default)]
pub struct StaticCatalog {
    exports: BTreeMap<String, Arc<Export>>,
}

impl StaticCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an export under its name.
    pub fn insert(&mut self, export: Export) -> Arc<Export> {
        let e = Arc::new(export);
        self.exports.insert(e.name().to_owned(), Arc::clone(&e));
        e
    }
}

impl ExportCatalog for StaticCatalog {
    fn list(&self) -> crate::Result<Vec<String>> {
        Ok(self.exports.keys().cloned().collect())
    }

    fn open(&self, name: &str) -> crate::Result<Option<Arc<Export>>> {
        Ok(self.exports.get(name).cloned())
    }
}
