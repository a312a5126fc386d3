//! The hash map of the pick path.

use std::collections::HashMap;

/// The maps of the pick path. foldhash instead of SipHash: a pick looks up a handful of short
/// keys (model, project names), where SipHash was most of its cost; the seed is still random
/// per process, and the model books are bounded, so crafted names cannot pile up.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
