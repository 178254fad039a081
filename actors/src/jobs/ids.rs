//! Where the queue's job ids come from, decided without I/O.
//!
//! Why it is shaped so: an id is unique for the life of the site, and an
//! operator types it (`kiln job show 42`). A store one process owns (SQLite)
//! lets that process go on from the largest id ever stored, one at a time,
//! without asking anybody. A store several members share (PostgreSQL,
//! issue #23) cannot: two members counting from the same maximum would
//! give one id to two jobs. There each member takes a block of ids from the
//! store ([`kiln_store::Backend::job_id_block`]) and gives them out itself;
//! asking the store once per block keeps a submission free of an extra
//! round trip, and the next block is asked for ahead of need (when less
//! than half of one is left), so a submission waits for it only when the
//! store could not be reached for that long. Ids are then increasing per
//! member, not across members, and a member's ids skip the blocks of the
//! others (and the rest of its own block when it stops).

use kiln_store::JobId;

use crate::KilnError;

/// How many ids a member takes from a shared store at once.
pub const BLOCK: u64 = 100_000;

/// The ids a queue may give out.
#[derive(Debug)]
pub(super) struct JobIds {
    /// The next id of the current range.
    next: u64,
    /// Where the current range ends (exclusive); `None`: it never does.
    end: Option<u64>,
    /// A block fetched ahead: first id and size, used once the current
    /// range is.
    spare: Option<(u64, u64)>,
    /// The size of a block; 0 when ids do not come in blocks.
    block: u64,
    /// A block was asked for and has not arrived (nor failed).
    asked: bool,
    /// The last id given out (or the one before the first).
    last: u64,
}

impl JobIds {
    /// Ids without end after `last` (the largest stored): one process owns
    /// the store.
    pub(super) fn after(last: u64) -> JobIds {
        JobIds { next: last + 1, end: None, spare: None, block: 0, asked: false, last }
    }

    /// Ids in blocks of `size`, starting with the block at `first`.
    pub(super) fn blocks(first: u64, size: u64) -> JobIds {
        let size = size.max(1);
        JobIds {
            next: first,
            end: Some(first + size),
            spare: None,
            block: size,
            asked: false,
            last: first.saturating_sub(1),
        }
    }

    /// Whether ids come in blocks (the store is shared).
    pub(super) fn shared(&self) -> bool {
        self.block > 0
    }

    /// How many ids can be given now.
    pub(super) fn left(&self) -> u64 {
        match self.end {
            None => u64::MAX,
            Some(end) => end - self.next + self.spare.map_or(0, |(_, n)| n),
        }
    }

    /// The last id given out: every id up to it is taken (by this queue or,
    /// on a shared store, by another member).
    pub(super) fn last_given(&self) -> u64 {
        self.last
    }

    /// Refuses a submission of `n` jobs when fewer ids are left, before any
    /// id is given out.
    pub(super) fn check(&self, n: usize) -> Result<(), KilnError> {
        if (n as u64) <= self.left() { Ok(()) } else { Err(self.refusal(n)) }
    }

    /// Why a submission of `n` jobs finds too few ids.
    fn refusal(&self, n: usize) -> KilnError {
        let left = self.left();
        KilnError::Unavailable(format!(
            "no job ids left: {left} of this member's block remain for {n} job(s), and the next block of {} has not \
             come from the store yet{}; retry shortly",
            self.block,
            if self.asked { " (it is being fetched)" } else { "" }
        ))
    }

    /// The next id; refused as [`JobIds::check`] refuses when none is left.
    pub(super) fn take(&mut self) -> Result<JobId, KilnError> {
        if self.end == Some(self.next) {
            let Some((first, size)) = self.spare.take() else { return Err(self.refusal(1)) };
            self.next = first;
            self.end = Some(first + size);
        }
        let id = self.next;
        self.next += 1;
        self.last = id;
        Ok(JobId(id))
    }

    /// The size of the block to fetch now, if one should be: ids come in
    /// blocks, less than half of one is left and none is on its way. Once
    /// it says so, it does not again until the block arrives or fails.
    pub(super) fn want_block(&mut self) -> Option<u64> {
        if !self.shared() || self.asked || self.left() >= self.block.div_ceil(2) {
            return None;
        }
        self.asked = true;
        Some(self.block)
    }

    /// A block fetched from the store: used once the current range is.
    pub(super) fn add_block(&mut self, first: u64, size: u64) {
        self.asked = false;
        if self.spare.is_some() || size == 0 {
            // Asked for once per spare: not expected; the ids are lost, never given twice.
            return;
        }
        if self.end == Some(self.next) {
            self.next = first;
            self.end = Some(first + size);
        } else {
            self.spare = Some((first, size));
        }
    }

    /// The block could not be fetched: the next admission asks again.
    pub(super) fn block_failed(&mut self) {
        self.asked = false;
    }
}
