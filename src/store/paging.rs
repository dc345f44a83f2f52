//! One paging rule for the listings that go newest first with a cursor (jobs on both
//! backends): read one item more than the page ([`probe`]); when it came, the page is cut to its
//! size and the key of its last item is the cursor of the next page ([`cut`]).

use uuid::Uuid;

use super::JobPage;
use crate::job::Job;

/// How many items to read for a page of `limit`: one more, which tells whether a next page
/// exists.
pub fn probe(limit: usize) -> usize {
    limit.saturating_add(1)
}

/// Cuts `items`, read with [`probe`], to `limit`; returns the cursor of the next page (`key` of
/// the last item kept) when more items were read than fit, `None` at the end.
pub fn cut<T, C>(items: &mut Vec<T>, limit: usize, key: impl FnOnce(&T) -> Option<C>) -> Option<C> {
    if items.len() <= limit {
        return None;
    }
    items.truncate(limit);
    items.last().and_then(key)
}

impl JobPage {
    /// A page of jobs from jobs read with [`probe`] (newest first).
    pub fn from_probe(mut jobs: Vec<Job>, limit: usize) -> Self {
        let next_cursor: Option<Uuid> = cut(&mut jobs, limit, |j| Some(j.id));
        Self { jobs, next_cursor }
    }
}

#[cfg(test)]
mod tests {
    use super::{cut, probe};

    #[test]
    fn a_next_cursor_only_when_more_came() {
        let mut v: Vec<u32> = (1..=probe(3) as u32).collect();
        assert_eq!(cut(&mut v, 3, |x| Some(*x)), Some(3));
        assert_eq!(v, vec![1, 2, 3]);
        let mut v = vec![1, 2, 3];
        assert_eq!(cut(&mut v, 3, |x| Some(*x)), None);
        assert_eq!(v, vec![1, 2, 3]);
        let mut v = vec![1];
        assert_eq!(cut(&mut v, 0, |x| Some(*x)), None);
        assert!(v.is_empty());
    }
}
