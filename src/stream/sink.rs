//! Where a rendition's finished parts and segments go: the live store (served while
//! the stream runs) or a directory (`mirror record`). The media path is the same for
//! both; only the sink differs.

use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;

use crate::store::{self, Store};

/// Why a sink could not keep media.
#[derive(Debug, thiserror::Error)]
#[error("writing {path}: {source}")]
pub struct SinkError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub source: std::io::Error,
}

/// Takes finished media by its name.
pub trait MediaSink: Send {
    /// `chunks` (a part, or a segment as its parts) are complete under `name`.
    fn put(
        &mut self,
        name: &str,
        chunks: Vec<Bytes>,
        completed: SystemTime,
    ) -> Result<(), SinkError>;
}

/// The live store, under the stream's name.
pub struct StoreSink {
    /// The stream the keys are made for.
    pub stream: String,
    /// The store.
    pub store: Store,
}

impl MediaSink for StoreSink {
    fn put(
        &mut self,
        name: &str,
        chunks: Vec<Bytes>,
        completed: SystemTime,
    ) -> Result<(), SinkError> {
        self.store
            .insert(store::key(&self.stream, name), chunks, completed);
        Ok(())
    }
}

/// Files in a directory, one per part and segment, named as they are served.
pub struct DirectorySink {
    /// The directory (it exists).
    pub dir: PathBuf,
}

impl DirectorySink {
    /// Writes `chunks` as the file `name`.
    pub fn write(&self, name: &str, chunks: &[&[u8]]) -> Result<(), SinkError> {
        use std::io::Write as _;
        let path = self.dir.join(name);
        let io = |source| SinkError {
            path: path.clone(),
            source,
        };
        let mut file = std::fs::File::create(&path).map_err(io)?;
        for chunk in chunks {
            file.write_all(chunk).map_err(io)?;
        }
        Ok(())
    }
}

impl MediaSink for DirectorySink {
    fn put(&mut self, name: &str, chunks: Vec<Bytes>, _: SystemTime) -> Result<(), SinkError> {
        let slices: Vec<&[u8]> = chunks.iter().map(|c| &c[..]).collect();
        self.write(name, &slices)
    }
}
