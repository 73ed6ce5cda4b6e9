//! Models as the API sees them: loaded in the background at start, awaited
//! by the requests that need them, and reported as unavailable (with the
//! reason) when loading failed.

use std::sync::Arc;

use engram_models::{Embedder, Llm};
use tokio::sync::OnceCell;

type Loader<T> = Arc<dyn Fn() -> Result<T, String> + Send + Sync>;

/// A value produced once by a blocking loader; every caller awaits the
/// same load.
pub struct Lazy<T> {
    cell: OnceCell<Result<T, String>>,
    load: Loader<T>,
}

impl<T: Send + Sync + 'static> Lazy<T> {
    /// A value that `load` (blocking) produces on first use.
    pub fn new(load: impl Fn() -> Result<T, String> + Send + Sync + 'static) -> Self {
        Self { cell: OnceCell::new(), load: Arc::new(load) }
    }

    /// The value, loading it on the blocking pool the first time.
    pub async fn get(&self) -> Result<&T, String> {
        self.cell
            .get_or_init(|| async {
                let load = self.load.clone();
                tokio::task::spawn_blocking(move || load())
                    .await
                    .unwrap_or_else(|err| Err(format!("loading panicked: {err}")))
            })
            .await
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The value if it has finished loading.
    pub fn loaded(&self) -> Option<&Result<T, String>> {
        self.cell.get()
    }
}

/// The daemon's models.
pub struct Models {
    /// The generator (local scheduler or remote client).
    pub llm: Lazy<Llm>,
    /// The embedding model.
    pub embedder: Lazy<Arc<Embedder>>,
    /// The generator's id in `/v1/models`.
    pub llm_id: String,
    /// The embedder's id in `/v1/models`.
    pub embedder_id: String,
}
