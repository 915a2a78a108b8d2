//! Consumer-group commits in flight together (see [`CommitChains`]): which
//! commit the writer takes as of the same chain. Owned by the writer;
//! asked by [`super::groups`] at each commit.

use std::collections::HashMap;

/// The commits a subscriber has in flight at once all expect the group as
/// it last saw it settled (`expect_set` = the record that set it then),
/// though each commit before them sets it anew. Per group, the record the
/// last commit wrote and what that commit expected: a commit expecting
/// the same is of the same chain. Any other write to the group (a SUB that
/// moves it, a failure count, GROUPDEL) sets another record, which breaks
/// the chain by itself. Memory only: chains do not outlive connections.
#[derive(Debug, Default)]
pub(super) struct CommitChains(HashMap<(String, String), (u64, u64)>);

/// Chains kept at most; past it they are forgotten: the next chained
/// commit of each is refused and its subscription ends with the `ERR`, so
/// its unsettled batches are delivered again (a redelivery, never a loss).
const MAX_CHAINS: usize = 10_000;

impl CommitChains {
    /// Whether a commit expecting `want` may go on the group set by
    /// record `set_id`.
    pub(super) fn admits(&self, topic: &str, group: &str, set_id: u64, want: u64) -> bool {
        set_id == want
            || want != 0
                && self
                    .0
                    .get(&(topic.to_string(), group.to_string()))
                    .is_some_and(|&chain| chain == (set_id, want))
    }

    /// A commit expecting `want` wrote record `id`. One that expected the
    /// group absent (a SUB `-`) starts no chain: a second one must fail.
    pub(super) fn committed(&mut self, topic: &str, group: &str, id: u64, want: u64) {
        if want == 0 {
            return;
        }
        if self.0.len() >= MAX_CHAINS {
            self.0.clear();
        }
        self.0
            .insert((topic.to_string(), group.to_string()), (id, want));
    }
}
