//! Watching a stream live: one reader per stream and process, fanned out to every watcher
//! through a bounded broadcast, so that a watcher costs a receiver, not a reader, and a slow
//! one misses messages (it is told) instead of holding memory.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::broadcast;

use crate::Message;

/// Messages one stream's watchers may lag behind the newest before they miss some: a
/// watcher further behind gets `RecvError::Lagged` and should start over.
pub const WATCH_BUFFER: usize = 1024;

/// The live readers of this process, one per watched stream.
#[derive(Default)]
pub(crate) struct Watchers {
    streams: Mutex<HashMap<String, broadcast::Sender<Message>>>,
}

impl Watchers {
    /// A receiver of `stream` when a reader runs for it; `None` when one must be started
    /// (then [`Watchers::start`]).
    pub(crate) fn join(&self, stream: &str) -> Option<broadcast::Receiver<Message>> {
        self.lock().get(stream).map(broadcast::Sender::subscribe)
    }

    /// Records the sender of a reader just started for `stream` and hands out its first
    /// receiver; if another reader started meanwhile, a receiver of that one instead (and
    /// `false`: the caller drops its own).
    pub(crate) fn start(
        &self,
        stream: &str,
        sender: broadcast::Sender<Message>,
    ) -> (broadcast::Receiver<Message>, bool) {
        let mut streams = self.lock();
        if let Some(running) = streams.get(stream) {
            return (running.subscribe(), false);
        }
        let rx = sender.subscribe();
        streams.insert(stream.to_owned(), sender);
        (rx, true)
    }

    /// Whether `stream`'s reader should go on: false (and forgotten) once nobody watches, so
    /// the next watcher starts a reader afresh.
    pub(crate) fn still_watched(&self, stream: &str, sender: &broadcast::Sender<Message>) -> bool {
        let mut streams = self.lock();
        if sender.receiver_count() > 0 {
            return true;
        }
        if streams.get(stream).is_some_and(|s| s.same_channel(sender)) {
            streams.remove(stream);
        }
        false
    }

    /// Forgets `stream`'s reader, which stopped: its watchers see the channel close.
    pub(crate) fn forget(&self, stream: &str, sender: &broadcast::Sender<Message>) {
        let mut streams = self.lock();
        if streams.get(stream).is_some_and(|s| s.same_channel(sender)) {
            streams.remove(stream);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Message>>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
