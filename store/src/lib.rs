//! kiln-store: the durable store of a kiln site.
//!
//! The interface is deliberately narrow (spec section 13): records go in as
//! [`Write`]s applied atomically in a [`Batch`], records come out through a few
//! load calls. [`Backend`] is that interface; [`sqlite::SqliteBackend`] is the
//! embedded implementation, and a PostgreSQL backend can sit beside it without
//! touching the actors.
//!
//! One thread owns the backend ([`writer::StoreHandle`]): every write and read
//! goes through it, so no rusqlite call ever runs on an async arbiter, and
//! many concurrent requests share one commit (group commit).

pub mod error;
pub mod records;
pub mod sqlite;
pub mod writer;

pub use error::StoreError;
pub use records::*;
pub use writer::StoreHandle;

/// One change to the store.
#[derive(Clone, Debug)]
pub enum Write {
    /// Insert a new node; fails with [`StoreError::Conflict`] when its uuid or
    /// name is taken.
    InsertNode(NodeRecord),
    /// Replace an existing node's record (every field); fails with
    /// [`StoreError::NotFound`] when it does not exist, and with
    /// [`StoreError::Conflict`] when a rename collides.
    UpdateNode(NodeRecord),
    /// Delete a node with its ports and history; NotFound if absent.
    DeleteNode(NodeId),
    /// Insert a port; Conflict when the MAC is taken, NotFound when its node
    /// does not exist.
    InsertPort(PortRecord),
    /// Delete a port by MAC address; NotFound if absent.
    DeletePort(String),
    /// Append one line to a node's history.
    AppendHistory(HistoryEntry),
}

/// Writes applied all together or not at all.
pub type Batch = Vec<Write>;

/// What a store can do. Implementations are used from one thread at a time.
pub trait Backend: Send + 'static {
    /// Applies every batch in one transaction, each batch all-or-nothing
    /// within it (a savepoint each), and makes the transaction durable before
    /// returning. Returns one result per batch, in order: a batch that failed
    /// changed nothing, the others are committed.
    fn commit(&mut self, batches: &[Batch]) -> Result<Vec<Result<(), StoreError>>, StoreError>;
    /// Every node.
    fn load_nodes(&mut self) -> Result<Vec<NodeRecord>, StoreError>;
    /// One node, by uuid.
    fn load_node(&mut self, id: NodeId) -> Result<Option<NodeRecord>, StoreError>;
    /// Every port, optionally only one node's, ordered by address.
    fn load_ports(&mut self, node: Option<NodeId>) -> Result<Vec<PortRecord>, StoreError>;
    /// The last `limit` history entries of a node, oldest first.
    fn load_history(&mut self, node: NodeId, limit: usize) -> Result<Vec<HistoryEntry>, StoreError>;
    /// Housekeeping: a WAL checkpoint.
    fn checkpoint(&mut self) -> Result<(), StoreError>;
}
