//! Admission to an index's searches. usearch gives each concurrent search one of the search
//! contexts reserved in advance and fails a search when none is free, and it keeps the beam
//! width `ef` in the index itself, so `ef` may change only while no search runs. The gate
//! lets at most `slots` searches run at once, all with the same `ef`; callers past that wait.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// At most `slots` concurrent searches, all at one `ef`.
#[derive(Debug)]
pub(crate) struct Gate {
    state: Mutex<State>,
    freed: Condvar,
    slots: usize,
}

#[derive(Debug)]
struct State {
    ef: usize,
    active: usize,
}

impl Gate {
    /// A gate of `slots` (≥ 1) concurrent searches, with the index's `ef` currently `ef`.
    pub(crate) fn new(slots: usize, ef: usize) -> Self {
        Self {
            state: Mutex::new(State { ef, active: 0 }),
            freed: Condvar::new(),
            slots: slots.max(1),
        }
    }

    /// Runs `search` once a slot is free and no running search uses another `ef`, first
    /// calling `set_ef(ef)` (with no search running) when the index's `ef` differs. A caller
    /// asking for another `ef` than the running searches waits until they have all finished.
    pub(crate) fn run<T>(
        &self,
        ef: usize,
        set_ef: impl FnOnce(usize),
        search: impl FnOnce() -> T,
    ) -> T {
        let mut state = self.lock();
        while state.active == self.slots || (state.active > 0 && state.ef != ef) {
            state = self
                .freed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.ef != ef {
            set_ef(ef);
            state.ef = ef;
        }
        state.active += 1;
        drop(state);
        let _slot = Slot(self);
        search()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running search's slot, given back when dropped (also on panic).
struct Slot<'a>(&'a Gate);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().active -= 1;
        self.0.freed.notify_all();
    }
}
