//! [`EventTail`] for the embedded backend: its commits are all this process's, announced by its
//! notices ([`NoticeTail`]).

use std::sync::Arc;

use super::SqliteStore;
use crate::store::tail::{EventTail, NoticeTail, TailReader};
use crate::store::Result;

impl EventTail for SqliteStore {
    fn event_tail(self: Arc<Self>) -> Result<Box<dyn TailReader>> {
        Ok(Box::new(NoticeTail::new(self)))
    }
}
