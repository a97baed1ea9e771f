//! Store errors.

use crate::resources::ResourceError;

/// Why a store operation failed. Nothing is applied when one is returned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, corruption, lock).
    #[error("store: {0}")]
    Db(#[from] redb::Error),
    /// A stored value could not be decoded.
    #[error("store: corrupt record: {0}")]
    Corrupt(String),
    /// The resource or revision does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The request contradicts the store's content.
    #[error("{0}")]
    Conflict(String),
    /// A document is not valid.
    #[error(transparent)]
    Invalid(#[from] ResourceError),
}

macro_rules! db_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(redb::Error::from(e))
            }
        }
    )*};
}

db_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}
