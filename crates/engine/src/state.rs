//! The in-memory catalog and how events change it.

use std::sync::Arc;

use berth_model::blueprint::CompiledBlueprint;
use berth_model::{
    Blueprint, BlueprintPermissions, Change, Credential, Definition, DefinitionKind, Entity, Event, Previous, Team,
    User,
};
use imbl::{OrdMap, OrdSet};

use crate::derived::DerivedCatalog;
use crate::index::{BlueprintIndex, Entry, IndexSpec, PropSpec, ScalarKey};
use crate::index_work::{Deferred, Op, Taken, Target, apply_all, count_value};
use crate::parallel::on_two_threads;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A blueprint with its compiled validators.
#[derive(Clone, Debug)]
pub struct BlueprintEntry {
    pub def: Arc<Blueprint>,
    pub compiled: Arc<CompiledBlueprint>,
    /// How its properties are indexed.
    pub index: Arc<IndexSpec>,
}

/// A relation edge seen from its target: `blueprint/identifier` points here through `relation`.
/// Every field is shared, so copying index nodes never allocates; the source blueprint and the relation are
/// one shared [`RelationOf`] per relation definition (two words per edge, not four).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Edge {
    kind: Arc<RelationOf>,
    pub identifier: Arc<str>,
}

/// A relation as edges name it: the blueprint that defines it and its name.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelationOf {
    pub blueprint: Arc<str>,
    pub relation: Arc<str>,
}

impl Edge {
    /// The blueprint of the entity the edge starts from.
    pub fn blueprint(&self) -> &Arc<str> {
        &self.kind.blueprint
    }

    /// The relation (of that blueprint) the edge follows.
    pub fn relation(&self) -> &Arc<str> {
        &self.kind.relation
    }
}

/// Index keys are `Arc<str>`: persistent-map nodes are copied when a write diverges from the published
/// view, and copying a node of `Arc<str>` keys is 64 reference-count increments, not 64 allocations.
type Key = Arc<str>;

/// One entry of the reverse-relation index: `edge` points at the entity `target` (of the set's blueprint).
/// Ordered by the target's hash, then the target, so a target's edges are one contiguous range and finding it
/// compares integers on the way down the tree rather than strings (a graph walk does this per node).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Link {
    hash: u64,
    target: Key,
    edge: Edge,
}

/// The hash a target's links are ordered by (fixed seed: the order only has to hold within one process).
fn target_hash(id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x6265_7274_6868_6173).hash_one(id)
}

/// Where a target's edges start in the reverse-relation index: before every link to the target `id` (compared
/// without building a [`Link`], so a lookup allocates nothing).
struct LinksOf<'a> {
    hash: u64,
    id: &'a str,
}

impl equivalent::Equivalent<Link> for LinksOf<'_> {
    fn equivalent(&self, _: &Link) -> bool {
        false
    }
}

impl equivalent::Comparable<Link> for LinksOf<'_> {
    fn compare(&self, link: &Link) -> std::cmp::Ordering {
        self.hash.cmp(&link.hash).then_with(|| self.id.cmp(&*link.target)).then(std::cmp::Ordering::Less)
    }
}

/// Where the sources of one relation (of one blueprint) into one target start in the reverse-relation index,
/// after the identifier `after` when given: a target's links are ordered by the edge, that is by (source
/// blueprint, relation, source identifier), so one relation's sources are one range in identifier order.
#[derive(Clone, Copy)]
struct SourcesOf<'a> {
    hash: u64,
    id: &'a str,
    blueprint: &'a str,
    relation: &'a str,
    after: Option<&'a str>,
}

impl equivalent::Equivalent<Link> for SourcesOf<'_> {
    fn equivalent(&self, _: &Link) -> bool {
        false
    }
}

impl equivalent::Comparable<Link> for SourcesOf<'_> {
    fn compare(&self, link: &Link) -> std::cmp::Ordering {
        use std::cmp::Ordering::{Greater, Less};
        self.hash
            .cmp(&link.hash)
            .then_with(|| self.id.cmp(&*link.target))
            .then_with(|| self.blueprint.cmp(&**link.edge.blueprint()))
            .then_with(|| self.relation.cmp(&**link.edge.relation()))
            .then_with(|| match self.after {
                None => Less,
                Some(after) => after.cmp(&*link.edge.identifier).then(Greater),
            })
    }
}

#[derive(Debug, Error)]
pub enum StateError {
    #[error("event {seq} does not follow the state at {state}")]
    OutOfOrder { seq: u64, state: u64 },
    #[error("event {seq}: {message}")]
    Invalid { seq: u64, message: String },
    #[error("snapshot: {0}")]
    Snapshot(String),
}

#[derive(Clone, Debug, Default)]
pub struct State {
    seq: u64,
    blueprints: OrdMap<String, BlueprintEntry>,
    entities: OrdMap<Key, OrdMap<Key, Arc<Entity>>>,
    /// Target blueprint → (target identifier, edge) for every edge pointing at its entities: one ordered set
    /// per blueprint rather than one per target entity, so a target with a few edges costs a few entries, not
    /// a B-tree node of its own. Edges share the keys of the entity maps (no allocation per edge).
    incoming: OrdMap<Key, OrdSet<Link>>,
    credentials: OrdMap<String, Credential>,
    /// Definition objects (pages, ...), by kind and identifier.
    definitions: OrdMap<(DefinitionKind, String), Arc<Definition>>,
    /// The runs waiting to be sent to their backend (`pendingExecution`), whose approvers wait to be told
    /// (`pendingNotification`), or whose backend's run is followed (`follow`), by id: what the invocation worker reads, without scanning every run. Rebuilt
    /// from the definitions, never stored.
    pending_runs: OrdSet<String>,
    /// The webhook events received and not processed yet, by identifier (rebuilt, never stored).
    pending_events: OrdSet<String>,
    teams: OrdMap<String, Team>,
    /// Member (a user's email or an app's client id) → the teams that list it: every authenticated request
    /// asks for its caller's teams, which a scan of every team's members made cost O(memberships).
    memberships: OrdMap<String, OrdSet<String>>,
    /// Email → user.
    users: OrdMap<String, User>,
    /// Blueprint → its entity permissions, when set (else [`BlueprintPermissions::defaults`]).
    permissions: OrdMap<String, Arc<BlueprintPermissions>>,
    signing_key: Option<String>,
    /// Blueprint → property (and `$title`) → ordered (value, identifier) entries.
    props: OrdMap<Key, BlueprintIndex>,
    /// Blueprint → property → value → how many index entries have it (counts and facets in O(values)).
    value_counts: OrdMap<Key, OrdMap<Key, OrdMap<ScalarKey, usize>>>,
    /// The writers (`createdBy`, `updatedBy`) and data sources entities name, each kept once and shared by
    /// every entity that names it; never shrinks, and holds at most [`MAX_SHARED_NAMES`].
    names: OrdSet<Key>,
    /// Index updates of entity writes not applied yet (see [`State::defer_indexes`]); empty between events
    /// unless deferring.
    work: Deferred,
    deferring: bool,
    /// The property indexes and value counts are not built yet (a state loaded by
    /// [`State::from_snapshot_without_property_indexes`]): reads answer `None` for them, so searches and
    /// aggregates scan, and writes leave them alone until [`State::build_property_indexes`].
    props_pending: bool,
    /// Blueprint → identifier → the sequence numbers of the events that wrote or deleted that entity, oldest
    /// first (deleted entities keep theirs): history, `?at=` and properties-history read an entity's own
    /// events instead of scanning the log.
    versions: OrdMap<Key, OrdMap<Key, Versions>>,
    /// Events before this sequence number are not in `versions` (a state loaded from a snapshot written
    /// before the index existed); 0 or 1: it is complete.
    versions_from: u64,
    /// Refused entity writes before this sequence number are not in `versions` (a snapshot written before
    /// refusals were indexed): the audit log scans that part of the log.
    refusals_from: u64,
    /// Every blueprint's derived properties and the aggregations' dependency index (see [`crate::derived`]),
    /// rebuilt after an event that writes or deletes a blueprint.
    derived: Arc<DerivedCatalog>,
    derived_stale: bool,
    /// Owner blueprint → owner identifier → its aggregation values, in the order of its spec. Never in a
    /// snapshot or the log: recomputed on load, refreshed after each event.
    aggregates: Aggregates,
    /// Entity writes since the last refresh whose blueprint feeds an aggregation: (blueprint, identifier,
    /// the version before). Empty between events unless deferring.
    agg_touched: Vec<Touched>,
    /// Every aggregation must be recomputed (a blueprint changed, or a snapshot was loaded).
    agg_rebuild: bool,
    /// Scorecard level ceilings (see [`crate::levels`]), refreshed with the aggregations; never stored.
    levels: crate::levels::Levels,
    /// Every ceiling must be recomputed (a scorecard or a blueprint changed, or a snapshot was loaded).
    levels_stale: bool,
    /// The relations indexed scorecard rules are read through (see [`crate::levels::read_through`]):
    /// (target blueprint, source blueprint, relation).
    level_through: Arc<Vec<(String, String, String)>>,
    /// Every (blueprint, identifier) that does not exist and that a relation may point at (a superset: the
    /// target of a link made while it was missing, or an entity deleted). An entity created outside it has
    /// no sources, which a refresh of derived data then does not look for ([`State::fresh`]). Never stored:
    /// gathered with the reverse-relation index on load, pruned when it grows ([`State::prune_unresolved`]).
    unresolved: Unresolved,
    /// Prune [`State::unresolved`] when it holds more than this.
    unresolved_prune_at: usize,
    /// Entities created since derived data was last refreshed that no relation points at (none did when they
    /// were created, and none was made to point at them since): their sources are known to be none. At most
    /// [`MAX_FRESH`]: an entity left out is one whose sources are looked for.
    fresh: Vec<(Key, Key)>,
    /// The entities the relations of entities written since derived data was last refreshed point at, as
    /// their links were made or unmade, when an aggregation's path passes through their blueprint (at most
    /// [`MAX_LINKED`], the versions in the entity maps: one written since is taken out): the refresh walks
    /// back from a written entity through them without looking them up again.
    linked: Vec<Arc<Entity>>,
}

/// Changes made in place, one per (owner blueprint, owner, aggregation index, target, whether it is taken
/// out (`true`) or put in): one list for all owners, grouped by owner when applied.
type InPlace<'a> = Vec<(&'a str, &'a str, usize, Arc<Entity>, bool)>;

/// How many owners one task of a full aggregation recompute takes.
const AGGREGATE_CHUNK: usize = 5_000;

/// The most entities [`State::fresh`] notes between two refreshes (a write's own few; a batch's others are
/// looked for as before, and every link made scans the list).
const MAX_FRESH: usize = 16;

/// The most link targets [`State::linked`] keeps between two refreshes (a write's own few; a batch's others
/// are looked up in the entity maps, and every write scans the list while it is not empty).
const MAX_LINKED: usize = 16;

/// [`State::unresolved`] is not pruned while it holds this many entries or fewer.
const UNRESOLVED_KEPT: usize = 4_096;

/// One owner blueprint's aggregation values: owner identifier → values in the order of its spec. Hashed, not
/// ordered: nothing reads them in order, and a write looks one up in a few node hops rather than comparing
/// its identifier with a score of others along a B-tree.
type OwnerValues = imbl::HashMap<Key, Arc<crate::derived::aggregation::Kept>>;

/// Every owner blueprint's kept aggregation values.
type Aggregates = OrdMap<Key, OwnerValues>;

/// Missing entities (blueprint, identifier) relations may point at (see `State::unresolved`).
type Unresolved = imbl::HashSet<(Key, Key)>;

/// An entity written since derived data was last refreshed: (blueprint, identifier, version before).
type Touched = (Key, Key, Option<Arc<Entity>>);

/// One entity's versions in the index: most entities are written once, so a single sequence number is kept
/// inline, and a (boxed) list only from the second version on: 16 bytes an entry either way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Versions {
    One(u64),
    Many(Box<imbl::Vector<u64>>),
}

const _: () = assert!(std::mem::size_of::<Versions>() == 16);

impl Versions {
    fn push(&mut self, seq: u64) {
        match self {
            Versions::One(first) => *self = Versions::Many(Box::new(imbl::vector![*first, seq])),
            Versions::Many(list) => list.push_back(seq),
        }
    }

    /// The sequence numbers, oldest first.
    pub fn seqs(&self) -> Vec<u64> {
        match self {
            Versions::One(seq) => vec![*seq],
            Versions::Many(list) => list.iter().copied().collect(),
        }
    }

    fn from_seqs(seqs: Vec<u64>) -> Option<Versions> {
        match seqs.as_slice() {
            [] => None,
            [one] => Some(Versions::One(*one)),
            _ => Some(Versions::Many(Box::new(seqs.into_iter().collect()))),
        }
    }
}

/// One entity's entry of the version index, as a snapshot holds it: `[blueprint, identifier, [seq, ...]]`.
type VersionRow = (String, String, Vec<u64>);

/// What a snapshot holds; the indexes are rebuilt on load.
///
/// Two layouts are read. The first (one JSON document, `entities` inline) is what Berth wrote before
/// snapshots were chunked. The current one is [`SNAPSHOT_MAGIC`], the length of this header as a decimal
/// The snapshot format this Berth writes and the newest it reads. A snapshot states its format in its
/// header (none: 1); a newer one is refused with a message that says so, rather than misread. New optional
/// fields do not need a new format; a change of an existing field's meaning does.
pub const SNAPSHOT_FORMAT: u64 = 1;

fn format_one() -> u64 {
    1
}

/// Refuses a snapshot header of a format newer than [`SNAPSHOT_FORMAT`] (read before the rest of the header,
/// whose shape a newer format may have changed).
fn check_snapshot_format(header: &[u8]) -> Result<(), StateError> {
    #[derive(Deserialize)]
    struct Format {
        #[serde(default = "format_one")]
        format: u64,
    }
    let format = serde_json::from_slice::<Format>(header).map(|f| f.format).unwrap_or(1);
    if format > SNAPSHOT_FORMAT {
        return Err(StateError::Snapshot(format!(
            "the snapshot was written by a newer Berth (snapshot format {format}; this one reads up to {SNAPSHOT_FORMAT}): run that Berth, or a newer one"
        )));
    }
    Ok(())
}

/// line, the header (JSON, `entities` empty, `chunks` the byte length of each entity chunk), then the chunks,
/// each a JSON array of entities: chunks are written and parsed on several threads.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    /// The snapshot format ([`SNAPSHOT_FORMAT`]); absent (1) in snapshots written before it was recorded.
    #[serde(default = "format_one")]
    format: u64,
    seq: u64,
    blueprints: Vec<Blueprint>,
    #[serde(default)]
    entities: Vec<Arc<Entity>>,
    /// Byte lengths of the entity chunks that follow the header (chunked layout only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    chunks: Vec<usize>,
    credentials: Vec<Credential>,
    #[serde(default)]
    teams: Vec<Team>,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    permissions: Vec<(String, BlueprintPermissions)>,
    signing_key: Option<String>,
    /// Definition objects; absent in snapshots written before they existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    definitions: Vec<Definition>,
    /// Byte lengths of the version-index chunks that follow the entity chunks (each a JSON array of
    /// [`VersionRow`]); absent in snapshots written before the index existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version_chunks: Option<Vec<usize>>,
    /// Where the version index starts (see [`State::versions`]).
    #[serde(default)]
    versions_from: u64,
    /// Where refused entity writes start to be in the version index; absent in snapshots written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refusals_from: Option<u64>,
    #[serde(skip)]
    version_rows: Vec<VersionRow>,
}

/// How many writer and data-source names the state keeps to share.
const MAX_SHARED_NAMES: usize = 10_000;

/// A blueprint's entities with their keys, as a snapshot load gathers them.
type Keyed = Vec<(Key, Arc<Entity>)>;

/// One entity changed between two versions of a state: (identifier, before, after).
pub type EntityChange<'a> = (&'a Arc<str>, Option<&'a Arc<Entity>>, Option<&'a Arc<Entity>>);

/// Deferred index updates below this many are applied on the writer's thread (a thread costs more).
const PARALLEL_UPDATES: usize = 1024;

/// A blueprint's gathered property-index entries (by property) and value counts.
struct Gathered {
    entries: std::collections::HashMap<Key, Vec<Entry>>,
    counts: OrdMap<Key, OrdMap<ScalarKey, usize>>,
}

/// One ordered set to build when indexes are built from scratch.
enum Task {
    Links(Key, Vec<Link>),
    Entries(Key, Key, Vec<Entry>),
}

enum Built {
    Links(Key, OrdSet<Link>),
    Entries(Key, Key, OrdSet<Entry>),
}

impl Task {
    fn len(&self) -> usize {
        match self {
            Task::Links(_, l) => l.len(),
            Task::Entries(_, _, l) => l.len(),
        }
    }

    fn build(self) -> Built {
        match self {
            Task::Links(bp, mut list) => {
                list.sort_unstable();
                Built::Links(bp, ordered_set(list))
            }
            Task::Entries(bp, prop, list) => Built::Entries(bp, prop, entries_set(list)),
        }
    }
}

/// A property's index from its entries, gathered in identifier order: a stable sort by value alone gives
/// (value, identifier) order without comparing identifiers; equal values then share one copy.
fn entries_set(mut list: Vec<Entry>) -> OrdSet<Entry> {
    list.sort_by(|a, b| a.value.cmp(&b.value));
    crate::index::share_equal_values(&mut list);
    ordered_set(list)
}

/// An ordered set of `sorted` items, inserted in near order ([`in_near_order`]).
fn ordered_set<T: Ord + Clone>(sorted: Vec<T>) -> OrdSet<T> {
    debug_assert!(sorted.windows(2).all(|w| w[0] <= w[1]));
    let mut set = OrdSet::new();
    in_near_order(sorted, |item| {
        set.insert(item);
    });
    set
}

/// Hands sorted `items` to `insert` in order, but shuffled within blocks of 2,048: each block lands on a few
/// neighbouring leaves of a B-tree (cache-friendly: several times faster than random order at a million
/// entries), while the shuffle keeps leaves as full as random inserts do (strictly ascending inserts split
/// every leaf at its middle and leave them half empty: twice the memory).
fn in_near_order<T>(items: Vec<T>, mut insert: impl FnMut(T)) {
    const BLOCK: usize = 2048;
    // A step coprime with the block length visits every position of a full block once.
    const STEP: usize = 1031;
    let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
    for block in slots.chunks_mut(BLOCK) {
        let n = block.len();
        let step = if n == BLOCK { STEP } else { 1 };
        for i in 0..n {
            if let Some(item) = block[(i * step) % n].take() {
                insert(item);
            }
        }
    }
}

/// The first bytes of a chunked snapshot.
const SNAPSHOT_MAGIC: &[u8] = b"berth-snapshot-chunked\n";
/// Entities per snapshot chunk.
const SNAPSHOT_CHUNK: usize = 20_000;

/// From how many entities a blueprint's index entries are gathered on two threads (a handful in tests, so that
/// the tests comparing built indexes with incrementally kept ones cover the split).
#[cfg(not(test))]
const PARALLEL_GATHER: usize = 50_000;
#[cfg(test)]
const PARALLEL_GATHER: usize = 8;

fn worker_failed() -> StateError {
    StateError::Snapshot("a worker thread failed".into())
}

impl State {
    /// The sequence number of the last applied event.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn blueprint(&self, id: &str) -> Option<&BlueprintEntry> {
        self.blueprints.get(id)
    }

    pub fn blueprints(&self) -> impl Iterator<Item = &BlueprintEntry> {
        self.blueprints.values()
    }

    pub fn entity(&self, blueprint: &str, id: &str) -> Option<&Arc<Entity>> {
        self.entities.get(blueprint).and_then(|m| m.get(id))
    }

    /// Entities of a blueprint, ordered by identifier.
    pub fn entities_of(&self, blueprint: &str) -> impl Iterator<Item = &Arc<Entity>> {
        self.entities.get(blueprint).into_iter().flat_map(|m| m.values())
    }

    /// Entities of a blueprint with identifiers greater than `after`, ordered by identifier.
    pub fn entities_after<'s: 'a, 'a>(
        &'s self,
        blueprint: &str,
        after: &'a str,
    ) -> impl Iterator<Item = &'s Arc<Entity>> + 'a {
        let map = self.entities.get(blueprint);
        map.into_iter().flat_map(move |m| {
            m.range::<_, str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)).map(|(_, e)| e)
        })
    }

    /// The entities of `blueprint` that differ between `older` (an earlier version of this state) and this
    /// one, in identifier order: (identifier, before, after). Walks only the parts of the map the two
    /// versions do not share, so a few writes since `older` cost a few steps, not the blueprint's size.
    pub fn entity_changes<'a>(&'a self, older: &'a State, blueprint: &str) -> Vec<EntityChange<'a>> {
        match (older.entities.get(blueprint), self.entities.get(blueprint)) {
            (None, None) => Vec::new(),
            (None, Some(new)) => new.iter().map(|(k, e)| (k, None, Some(e))).collect(),
            (Some(old), None) => old.iter().map(|(k, e)| (k, Some(e), None)).collect(),
            (Some(old), Some(new)) => old
                .diff(new)
                .map(|d| match d {
                    imbl::ordmap::DiffItem::Add(k, e) => (k, None, Some(e)),
                    imbl::ordmap::DiffItem::Update { old: (k, before), new: (_, after) } => {
                        (k, Some(before), Some(after))
                    }
                    imbl::ordmap::DiffItem::Remove(k, e) => (k, Some(e), None),
                })
                .collect(),
        }
    }

    pub fn entity_count(&self, blueprint: &str) -> usize {
        self.entities.get(blueprint).map_or(0, OrdMap::len)
    }

    pub fn total_entities(&self) -> usize {
        self.entities.values().map(OrdMap::len).sum()
    }

    /// Whether any relation points at entities of this blueprint (a walk downstream can stop here if not).
    pub fn is_relation_target(&self, blueprint: &str) -> bool {
        self.incoming.get(blueprint).is_some_and(|set| !set.is_empty())
    }

    /// Edges that point at an entity.
    pub fn incoming(&self, blueprint: &str, id: &str) -> impl Iterator<Item = &Edge> {
        let hash = target_hash(id);
        self.incoming.get(blueprint).into_iter().flat_map(move |set| {
            set.range((std::ops::Bound::Included(LinksOf { hash, id }), std::ops::Bound::Unbounded))
                .take_while(move |l| l.hash == hash && *l.target == *id)
                .map(|l| &l.edge)
        })
    }

    /// The identifiers of the `source` entities whose relation `relation` points at `id` (of `blueprint`), in
    /// identifier order, after `after` when given. Lazy: a page of a target with 100,000 sources reads the
    /// page, not the 100,000.
    pub fn sources<'s: 'a, 'a>(
        &'s self,
        blueprint: &str,
        id: &'a str,
        source: &'a str,
        relation: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = &'s Arc<str>> + 'a {
        crate::work_count::seek();
        let hash = target_hash(id);
        let start = SourcesOf { hash, id, blueprint: source, relation, after };
        self.incoming.get(blueprint).into_iter().flat_map(move |set| {
            set.range((std::ops::Bound::Included(start), std::ops::Bound::Unbounded))
                .take_while(move |l| {
                    l.hash == hash
                        && *l.target == *id
                        && **l.edge.blueprint() == *source
                        && **l.edge.relation() == *relation
                })
                .map(|l| {
                    crate::work_count::add(1);
                    &l.edge.identifier
                })
        })
    }

    /// The keys (blueprint, identifier) the state holds for an existing entity, borrowed.
    pub fn entity_key(&self, blueprint: &str, id: &str) -> Option<(&str, &str)> {
        let (bp, entities) = self.entities.get_key_value(blueprint)?;
        let (id, _) = entities.get_key_value(id)?;
        Some((bp, id))
    }

    /// The ordered index of a property (or of `$title`) of a blueprint.
    pub fn property_index(&self, blueprint: &str, property: &str) -> Option<&OrdSet<Entry>> {
        self.props.get(blueprint).and_then(|m| m.get(property))
    }

    /// Whether the property indexes and value counts are still to be built (see
    /// [`State::build_property_indexes`]): until then [`State::property_index`] and
    /// [`State::value_counts`] answer `None` and [`State::is_counted`] `false`, and readers scan.
    pub fn property_indexes_pending(&self) -> bool {
        self.props_pending
    }

    /// Whether a property's values are counted (an `enum` or a boolean: few values, the ones facets are
    /// made of). Unbounded properties (URLs, versions, free text) are not: a count per distinct value would
    /// cost an extra map entry per entity on every write.
    pub fn is_counted(&self, blueprint: &str, property: &str) -> bool {
        !self.props_pending
            && self.blueprints.get(blueprint).and_then(|b| b.index.get(property)).is_some_and(|p| p.counted)
    }

    /// How many entities of a blueprint have each value of a counted property ([`State::is_counted`]).
    pub fn value_counts(&self, blueprint: &str, property: &str) -> Option<&OrdMap<ScalarKey, usize>> {
        self.value_counts.get(blueprint).and_then(|m| m.get(property))
    }

    /// Whether a blueprint's property is a date-time (indexed by instant).
    pub fn is_date_time(&self, blueprint: &str, property: &str) -> bool {
        self.blueprints.get(blueprint).and_then(|b| b.index.get(property)).is_some_and(|p| p.date_time)
    }

    /// Queues the property-index updates of the entity `id` going from `old` to `new` (either may be absent).
    fn reindex(&mut self, blueprint: &Key, id: &Key, old: Option<&Entity>, new: Option<&Entity>) {
        if self.props_pending {
            return;
        }
        let Some(spec) = self.blueprints.get(&**blueprint).map(|b| Arc::clone(&b.index)) else { return };
        let before = old.map(|e| spec.entries_of(e)).unwrap_or_default();
        let after = new.map(|e| spec.entries_of(e)).unwrap_or_default();
        let same = |a: &(&PropSpec, ScalarKey), b: &(&PropSpec, ScalarKey)| a.0.name == b.0.name && a.1 == b.1;
        let target =
            |prop: &PropSpec| Target::Property { blueprint: Arc::clone(blueprint), property: Arc::clone(&prop.name) };
        for entry in &before {
            if !after.iter().any(|a| same(a, entry)) {
                let (prop, value) = entry;
                let op = Op::Unindex { value: value.clone(), id: Arc::clone(id), counted: prop.counted };
                self.work.push(target(prop), op);
            }
        }
        for entry in &after {
            if !before.iter().any(|b| same(b, entry)) {
                let (prop, value) = entry;
                let op = Op::Index { value: value.clone(), id: Arc::clone(id), counted: prop.counted };
                self.work.push(target(prop), op);
            }
        }
    }

    /// Defers the index updates of the events applied from now on until [`State::settle_indexes`]: a batch of
    /// writes then applies them together, on two threads. Meanwhile the entity maps are current but the
    /// property indexes, value counts and reverse-relation sets are not: only commands that read no more
    /// than blueprints and entities may run (see [`crate::Command::reads_indexes`]).
    pub fn defer_indexes(&mut self) {
        self.deferring = true;
    }

    /// Whether index updates are waiting.
    pub fn has_deferred_indexes(&self) -> bool {
        !self.work.is_empty()
    }

    /// Applies the waiting index updates and stops deferring. Each set gets its updates in order; different
    /// sets go to two threads when there are many. If a worker thread failed, the state is incomplete: the
    /// error says so and the state must be dropped.
    pub fn settle_indexes(&mut self) -> Result<(), StateError> {
        self.deferring = false;
        self.settle_index_work()?;
        self.refresh_derived();
        Ok(())
    }

    fn settle_index_work(&mut self) -> Result<(), StateError> {
        if self.work.is_empty() {
            return Ok(());
        }
        let work = std::mem::take(&mut self.work);
        let parallel = work.len() >= PARALLEL_UPDATES;
        let mut jobs: Vec<(Target, Taken, bool, Vec<Op>)> = work
            .into_groups()
            .into_iter()
            .map(|(target, ops)| {
                let (taken, existed) = self.take_set(&target);
                (target, taken, existed, ops)
            })
            .collect();
        let run = |(target, taken, existed, ops): (Target, Taken, bool, Vec<Op>)| {
            let (taken, keep) = apply_all(taken, existed, ops);
            (target, taken, keep)
        };
        let done = if parallel {
            jobs.sort_by_key(|job| std::cmp::Reverse(job.3.len()));
            on_two_threads(jobs, run)
                .ok_or_else(|| StateError::Invalid { seq: self.seq, message: "an index worker thread failed".into() })?
        } else {
            jobs.into_iter().map(run).collect()
        };
        for (target, taken, keep) in done {
            self.put_set(target, taken, keep);
        }
        Ok(())
    }

    /// Takes the set `target` names out of the state (empty if there is none), and whether it was there.
    fn take_set(&mut self, target: &Target) -> (Taken, bool) {
        match target {
            Target::Property { blueprint, property } => {
                let entries = self.props.get_mut(&**blueprint).and_then(|m| m.remove(&**property));
                let counts = self.value_counts.get_mut(&**blueprint).and_then(|m| m.remove(&**property));
                let existed = entries.is_some();
                (Taken::Property { entries: entries.unwrap_or_default(), counts }, existed)
            }
            Target::Links { blueprint } => {
                let links = self.incoming.remove(&**blueprint);
                let existed = links.is_some();
                (Taken::Links(links.unwrap_or_default()), existed)
            }
        }
    }

    /// Puts back a set [`State::take_set`] took (unless it was not there and nothing was added).
    fn put_set(&mut self, target: Target, taken: Taken, keep: bool) {
        match (target, taken) {
            (Target::Property { blueprint, property }, Taken::Property { entries, counts }) => {
                if let Some(counts) = counts {
                    self.value_counts.entry(Arc::clone(&blueprint)).or_default().insert(Arc::clone(&property), counts);
                }
                if keep {
                    self.props.entry(blueprint).or_default().insert(property, entries);
                }
            }
            (Target::Links { blueprint }, Taken::Links(links)) if keep => {
                self.incoming.insert(blueprint, links);
            }
            _ => {}
        }
    }

    /// Rebuilds a blueprint's property index (after its definition changed).
    fn rebuild_index(&mut self, blueprint: &str) {
        if self.props_pending {
            return;
        }
        let key = self.blueprint_name(blueprint);
        let Some(gathered) = self.gather_entries(blueprint) else {
            self.props.remove(blueprint);
            self.value_counts.remove(blueprint);
            return;
        };
        let index = gathered.entries.into_iter().map(|(name, list)| (name, entries_set(list))).collect();
        self.props.insert(Arc::clone(&key), index);
        self.value_counts.insert(key, gathered.counts);
    }

    /// Every property-index entry of a blueprint's entities (each property's in identifier order), and its
    /// value counts. A blueprint of [`PARALLEL_GATHER`] entities or more is read in two halves on two threads.
    fn gather_entries(&self, blueprint: &str) -> Option<Gathered> {
        let spec = Arc::clone(&self.blueprints.get(blueprint)?.index);
        let gather = |part: &mut dyn Iterator<Item = (&Key, &Arc<Entity>)>| {
            let mut entries: std::collections::HashMap<Key, Vec<Entry>> = std::collections::HashMap::new();
            let mut counts: OrdMap<Key, OrdMap<ScalarKey, usize>> = OrdMap::new();
            for (id, e) in part {
                for (prop, value) in spec.entries_of(e) {
                    let value = if prop.counted {
                        count_value(counts.entry(Arc::clone(&prop.name)).or_default(), value)
                    } else {
                        value
                    };
                    entries.entry(Arc::clone(&prop.name)).or_default().push(Entry { value, id: Arc::clone(id) });
                }
            }
            Gathered { entries, counts }
        };
        let Some(map) = self.entities.get(blueprint) else {
            return Some(gather(&mut std::iter::empty()));
        };
        let middle = (map.len() >= PARALLEL_GATHER).then(|| map.keys().nth(map.len() / 2)).flatten();
        let Some(middle) = middle else {
            return Some(gather(&mut map.iter()));
        };
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let halves = vec![(Unbounded, Excluded(Arc::clone(middle))), (Included(Arc::clone(middle)), Unbounded)];
        let mut halves =
            on_two_threads(halves, |range: (std::ops::Bound<Key>, std::ops::Bound<Key>)| gather(&mut map.range(range)))
                .unwrap_or_else(|| vec![gather(&mut map.iter())])
                .into_iter();
        let mut all = halves.next()?;
        for later in halves {
            for (prop, list) in later.entries {
                all.entries.entry(prop).or_default().extend(list);
            }
            for (prop, counts) in later.counts {
                let into = all.counts.entry(prop).or_default();
                for (value, n) in counts {
                    *into.entry(value).or_default() += n;
                }
            }
        }
        Some(all)
    }

    /// Every link of the reverse-relation index, by target blueprint.
    /// And every missing entity a link points at (see [`State::unresolved`]).
    fn gather_links(&self) -> (std::collections::HashMap<Key, Vec<Link>>, Unresolved) {
        let mut by_target: std::collections::HashMap<Key, Vec<Link>> = std::collections::HashMap::new();
        let mut unresolved = Unresolved::new();
        for (id, e) in self.entities.values().flat_map(|m| m.iter()) {
            for (bp, link, exists) in self.edges_of(id, e, None) {
                if !exists {
                    unresolved.insert((Arc::clone(&bp), Arc::clone(&link.target)));
                }
                by_target.entry(bp).or_default().push(link);
            }
        }
        (by_target, unresolved)
    }

    /// Builds the property indexes and value counts of a state loaded without them
    /// ([`State::from_snapshot_without_property_indexes`]), on two threads; a no-op when they are built.
    pub fn build_property_indexes(&mut self) -> Result<(), StateError> {
        if self.props_pending {
            self.props_pending = false;
            self.build_indexes(false, true)?;
        }
        Ok(())
    }

    /// Builds the reverse-relation index and (or) every property index from the entity maps, on two threads:
    /// the links and the entries are gathered side by side, then each ordered set (one per target blueprint,
    /// one per property) is built as a task, largest first, by whichever thread is free.
    fn build_indexes(&mut self, with_links: bool, with_props: bool) -> Result<(), StateError> {
        let failed = |_| StateError::Snapshot("building the indexes failed".into());
        let blueprints: Vec<Key> = if with_props { self.entities.keys().cloned().collect() } else { Vec::new() };
        let this = &*self;
        let (links, gathered) = std::thread::scope(|scope| {
            let links = scope.spawn(|| if with_links { this.gather_links() } else { Default::default() });
            let gathered: Vec<(Key, Gathered)> =
                blueprints.iter().filter_map(|bp| Some((Arc::clone(bp), this.gather_entries(bp)?))).collect();
            (links.join(), gathered)
        });
        let (links, unresolved) = links.map_err(failed)?;
        let mut tasks: Vec<Task> = links.into_iter().map(|(bp, list)| Task::Links(bp, list)).collect();
        let mut counts = Vec::new();
        for (bp, g) in gathered {
            tasks.extend(g.entries.into_iter().map(|(prop, list)| Task::Entries(Arc::clone(&bp), prop, list)));
            counts.push((bp, g.counts));
        }
        tasks.sort_by_key(|t| std::cmp::Reverse(t.len()));
        let built = on_two_threads(tasks, Task::build).ok_or_else(worker_failed)?;
        if with_links {
            self.incoming = OrdMap::new();
            self.unresolved = unresolved;
            self.unresolved_prune_at = self.unresolved.len() * 2;
        }
        if with_props {
            self.props = OrdMap::new();
            self.value_counts = counts.into_iter().collect();
        }
        for b in built {
            match b {
                Built::Links(bp, set) => {
                    self.incoming.insert(bp, set);
                }
                Built::Entries(bp, prop, set) => {
                    self.props.entry(bp).or_default().insert(prop, set);
                }
            }
        }
        Ok(())
    }

    pub fn credential(&self, client_id: &str) -> Option<&Credential> {
        self.credentials.get(client_id)
    }

    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.credentials.values()
    }

    pub fn team(&self, name: &str) -> Option<&Team> {
        self.teams.get(name)
    }

    /// Every team, by name.
    pub fn teams(&self) -> impl Iterator<Item = &Team> {
        self.teams.values()
    }

    pub fn user(&self, email: &str) -> Option<&User> {
        self.users.get(email)
    }

    /// Every user, by email.
    pub fn users(&self) -> impl Iterator<Item = &User> {
        self.users.values()
    }

    /// The names of the teams that list `member` (a user email or an app client id).
    pub fn teams_of(&self, member: &str) -> Vec<String> {
        self.memberships.get(member).map(|teams| teams.iter().cloned().collect()).unwrap_or_default()
    }

    /// Adds or replaces a team, keeping [`State::teams_of`]'s index of members in step.
    fn put_team(&mut self, team: Team) {
        self.remove_team(&team.name);
        for member in &team.members {
            self.memberships.entry(member.clone()).or_default().insert(team.name.clone());
        }
        self.teams.insert(team.name.clone(), team);
    }

    fn remove_team(&mut self, name: &str) {
        let Some(old) = self.teams.remove(name) else { return };
        for member in &old.members {
            if let Some(teams) = self.memberships.get_mut(member) {
                teams.remove(name);
                if teams.is_empty() {
                    self.memberships.remove(member);
                }
            }
        }
    }

    /// A blueprint's stored permissions (`None`: the defaults apply).
    pub fn stored_permissions(&self, blueprint: &str) -> Option<&Arc<BlueprintPermissions>> {
        self.permissions.get(blueprint)
    }

    /// A definition object (a page, ...).
    pub fn definition(&self, kind: DefinitionKind, identifier: &str) -> Option<&Arc<Definition>> {
        self.definitions.get(&(kind, identifier.to_string()))
    }

    /// Every definition object of a kind, in identifier order.
    pub fn definitions(&self, kind: DefinitionKind) -> impl Iterator<Item = &Arc<Definition>> {
        self.definitions.range((kind, String::new())..).take_while(move |((k, _), _)| *k == kind).map(|(_, d)| d)
    }

    /// Keeps [`State::pending_runs`] up to date with a definition about to be stored.
    fn note_pending(&mut self, d: &Definition) {
        if d.kind == DefinitionKind::WebhookEvent {
            if matches!(d.body.get("status").and_then(serde_json::Value::as_str), Some("pending" | "processing")) {
                self.pending_events.insert(d.identifier.clone());
            } else {
                self.pending_events.remove(&d.identifier);
            }
        }
        if d.kind == DefinitionKind::Run {
            let set = |key: &str| d.body.get(key) == Some(&serde_json::Value::Bool(true));
            let following = d.body.get("follow").is_some_and(|f| !f.is_null());
            if set("pendingExecution") || set("pendingNotification") || following {
                self.pending_runs.insert(d.identifier.clone());
            } else {
                self.pending_runs.remove(&d.identifier);
            }
        }
    }

    /// The webhook events waiting to be processed, by identifier.
    pub fn pending_events(&self) -> impl Iterator<Item = &String> {
        self.pending_events.iter()
    }

    /// How many of a webhook's events wait to be processed, counting at most `up_to`.
    /// Whether a request of `webhook` waits for the ingestion worker (status `pending`, not one being
    /// processed in its request).
    pub fn has_waiting_events(&self, webhook: &str) -> bool {
        let prefix = format!("{webhook}#");
        self.pending_events.range(prefix.clone()..).take_while(|id| id.starts_with(&prefix)).any(|id| {
            self.definition(DefinitionKind::WebhookEvent, id)
                .is_some_and(|d| d.body.get("status").and_then(serde_json::Value::as_str) == Some("pending"))
        })
    }

    pub fn pending_events_of(&self, webhook: &str, up_to: usize) -> usize {
        let prefix = format!("{webhook}#");
        self.pending_events.range(prefix.clone()..).take_while(|id| id.starts_with(&prefix)).take(up_to).count()
    }

    /// Whether run `id` is among [`State::pending_runs`].
    pub fn run_is_pending(&self, id: &str) -> bool {
        self.pending_runs.contains(id)
    }

    /// The runs waiting to be sent to their backend or to have their approvers told, by id.
    pub fn pending_runs(&self) -> impl Iterator<Item = &String> {
        self.pending_runs.iter()
    }

    /// The definition objects of a kind from identifier `from` on, in identifier order.
    pub fn definitions_from<'a>(
        &'a self,
        kind: DefinitionKind,
        from: &str,
    ) -> impl Iterator<Item = &'a Arc<Definition>> + 'a {
        self.definitions.range((kind, from.to_string())..).take_while(move |((k, _), _)| *k == kind).map(|(_, d)| d)
    }

    /// Every definition object, by kind then identifier.
    pub fn all_definitions(&self) -> impl Iterator<Item = &Arc<Definition>> {
        self.definitions.values()
    }

    pub fn signing_key(&self) -> Option<&str> {
        self.signing_key.as_deref()
    }

    /// The shared copy of a writer's or data source's name (a new one if no entity names it yet; applying the
    /// entity that carries it makes it the shared one).
    pub fn intern(&self, name: &str) -> Arc<str> {
        self.names.get(name).map_or_else(|| Arc::from(name), Arc::clone)
    }

    /// Swaps an entity's writer and data-source names for the shared copies, registering new ones.
    fn share_writer_names(&mut self, e: &mut Entity) {
        let mut share = |name: &mut Arc<str>| match self.names.get(&**name) {
            Some(shared) => *name = Arc::clone(shared),
            None => self.remember_name(name),
        };
        share(&mut e.created_by);
        share(&mut e.updated_by);
        if let Some(d) = &mut e.datasource {
            share(d);
        }
    }

    /// Registers an entity's writer and data-source names (an entity made by a write already shares them).
    fn register_writer_names(&mut self, e: &Entity) {
        for name in [Some(&e.created_by), Some(&e.updated_by), e.datasource.as_ref()].into_iter().flatten() {
            if !self.names.contains(&**name) {
                self.remember_name(name);
            }
        }
    }

    /// Keeps a new name to share, unless [`MAX_SHARED_NAMES`] are kept already (`$datasource` is whatever
    /// User-Agent a writer sends: past the cap, entities keep copies of their own rather than the set growing
    /// without bound).
    fn remember_name(&mut self, name: &Arc<str>) {
        if self.names.len() < MAX_SHARED_NAMES {
            self.names.insert(Arc::clone(name));
        }
    }

    /// The shared `Arc<str>` of a blueprint id, so entities do not each allocate it.
    pub fn blueprint_name(&self, id: &str) -> Arc<str> {
        self.entities.get_key_value(id).map(|(k, _)| Arc::clone(k)).unwrap_or_else(|| Arc::from(id))
    }

    /// The current version of the object `change` touches, if it exists (an event's `before`).
    pub fn previous_of(&self, change: &Change) -> Option<Previous> {
        match change {
            Change::EntityPut { entity } => {
                self.entity(&entity.blueprint, &entity.identifier).map(|e| Previous::Entity { entity: Arc::clone(e) })
            }
            Change::EntityDeleted { blueprint, identifier } => {
                self.entity(blueprint, identifier).map(|e| Previous::Entity { entity: Arc::clone(e) })
            }
            Change::BlueprintPut { blueprint } => self
                .blueprint(&blueprint.identifier)
                .map(|b| Previous::Blueprint { blueprint: Box::new((*b.def).clone()) }),
            Change::BlueprintDeleted { identifier } => {
                self.blueprint(identifier).map(|b| Previous::Blueprint { blueprint: Box::new((*b.def).clone()) })
            }
            Change::TeamPut { team } => self.team(&team.name).map(|t| Previous::Team { team: t.clone() }),
            Change::TeamDeleted { name } => self.team(name).map(|t| Previous::Team { team: t.clone() }),
            Change::UserPut { user } => self.user(&user.email).map(|u| Previous::User { user: u.clone() }),
            Change::UserDeleted { email } => self.user(email).map(|u| Previous::User { user: u.clone() }),
            Change::PermissionsSet { blueprint, .. } => {
                self.permissions.get(blueprint).map(|p| Previous::Permissions { permissions: Box::new((**p).clone()) })
            }
            Change::DefinitionPut { definition } => self
                .definition(definition.kind, &definition.identifier)
                .map(|d| Previous::Definition { definition: Arc::clone(d) }),
            Change::DefinitionDeleted { kind, identifier } => {
                self.definition(*kind, identifier).map(|d| Previous::Definition { definition: Arc::clone(d) })
            }
            _ => None,
        }
    }

    /// Applies an event the caller owns (one just decoded from the log): an entity it carries alone is
    /// adopted as it is, with the shared blueprint name, instead of being copied.
    pub fn apply_owned(&mut self, mut event: Event) -> Result<(), StateError> {
        if let Change::EntityPut { entity } = &mut event.change {
            let map = self.entities.get_key_value(&*entity.blueprint);
            let shared = map.map(|(bp, _)| Arc::clone(bp));
            // An update keeps the key the maps and indexes already hold.
            let key = map.and_then(|(_, m)| m.get_key_value(&*entity.identifier)).map(|(k, _)| Arc::clone(k));
            if let (Some(owned), Some(bp)) = (Arc::get_mut(entity), shared) {
                owned.blueprint = bp;
                if let Some(key) = key {
                    owned.identifier = key;
                }
                self.share_writer_names(owned);
            }
        }
        self.apply(&event)
    }

    /// Applies one event. Events must come in sequence order.
    pub fn apply(&mut self, event: &Event) -> Result<(), StateError> {
        if event.seq != self.seq + 1 {
            return Err(StateError::OutOfOrder { seq: event.seq, state: self.seq });
        }
        // Only entity writes are deferred (a refusal changes nothing): anything else sees (and may rebuild)
        // settled indexes.
        if self.deferring
            && !matches!(event.change, Change::EntityPut { .. } | Change::EntityDeleted { .. } | Change::Refused { .. })
        {
            self.settle_indexes()?;
            self.deferring = true;
        }
        self.apply_change(&event.change).map_err(|message| StateError::Invalid { seq: event.seq, message })?;
        self.record_version(&event.change, event.seq);
        self.seq = event.seq;
        if !self.deferring {
            self.settle_indexes()?;
        }
        Ok(())
    }

    /// The keys of an entity's entry in the version index (shared with the index where it has one).
    fn version_key(&self, blueprint: &str, identifier: &str) -> (Key, Key) {
        let bp = self.blueprint_name(blueprint);
        let id = self
            .versions
            .get(&*bp)
            .and_then(|m| m.get_key_value(identifier))
            .map_or_else(|| Arc::from(identifier), |(k, _)| Arc::clone(k));
        (bp, id)
    }

    /// Adds an entity event to the version index (keys shared with the entity maps where it still exists):
    /// writes, deletes, and refused attempts that name the entity (for the audit log; readers of versions
    /// skip them).
    fn record_version(&mut self, change: &Change, seq: u64) {
        let (bp, id): (Key, Key) = match change {
            Change::EntityPut { entity } => {
                let bp = self.blueprint_name(&entity.blueprint);
                let id = self
                    .entities
                    .get(&*bp)
                    .and_then(|m| m.get_key_value(&*entity.identifier))
                    .map_or_else(|| Arc::clone(&entity.identifier), |(k, _)| Arc::clone(k));
                (bp, id)
            }
            Change::EntityDeleted { blueprint, identifier } => self.version_key(blueprint, identifier),
            Change::Refused { resource, blueprint: Some(blueprint), identifier: Some(identifier), .. }
                if resource == "entity" =>
            {
                self.version_key(blueprint, identifier)
            }
            _ => return,
        };
        let entity_versions = self.versions.entry(bp).or_default();
        match entity_versions.get_mut(&*id) {
            Some(v) => v.push(seq),
            None => {
                entity_versions.insert(id, Versions::One(seq));
            }
        }
    }

    /// The sequence numbers of the events that wrote or deleted an entity, oldest first, and the first
    /// sequence number the index covers (older events of the entity, if any, must be read from the log).
    pub fn versions(&self, blueprint: &str, identifier: &str) -> (Option<&Versions>, u64) {
        (self.versions.get(blueprint).and_then(|m| m.get(identifier)), self.versions_from)
    }

    /// The sequence numbers of every event of the entities named `identifier` (of `blueprint`, or of any
    /// blueprint), refused attempts included, oldest first; and the first sequence number the index covers
    /// for all of them (older events must be read from the log).
    pub fn entity_events(&self, blueprint: Option<&str>, identifier: &str) -> (Vec<u64>, u64) {
        let mut seqs: Vec<u64> = match blueprint {
            Some(bp) => self.versions(bp, identifier).0.map(Versions::seqs).unwrap_or_default(),
            None => self.versions.values().filter_map(|m| m.get(identifier)).flat_map(Versions::seqs).collect(),
        };
        seqs.sort_unstable();
        (seqs, self.versions_from.max(self.refusals_from))
    }

    fn apply_change(&mut self, change: &Change) -> Result<(), String> {
        match change {
            Change::BlueprintPut { blueprint } => {
                let compiled = blueprint.compile().map_err(|e| e.to_string())?;
                self.entities.entry(Arc::from(blueprint.identifier.as_str())).or_default();
                self.blueprints.insert(
                    blueprint.identifier.clone(),
                    BlueprintEntry {
                        def: Arc::new((**blueprint).clone()),
                        compiled: Arc::new(compiled),
                        index: Arc::new(IndexSpec::of(
                            &blueprint.identifier,
                            &blueprint.schema.properties,
                            blueprint.relations.keys().cloned(),
                        )),
                    },
                );
                self.rebuild_index(&blueprint.identifier);
                self.derived_stale = true;
            }
            Change::BlueprintDeleted { identifier } => {
                if self.entity_count(identifier) > 0 {
                    return Err(format!("blueprint `{identifier}` still has entities"));
                }
                self.derived_stale = true;
                self.aggregates.remove(identifier.as_str());
                self.blueprints.remove(identifier);
                self.entities.remove(identifier.as_str());
                self.permissions.remove(identifier);
                self.props.remove(identifier.as_str());
                self.value_counts.remove(identifier.as_str());
            }
            Change::EntityPut { entity } => {
                let bp = self.blueprint_name(&entity.blueprint);
                if !self.blueprints.contains_key(&*bp) {
                    return Err(format!("entity `{}` of unknown blueprint `{bp}`", entity.identifier));
                }
                // Share the blueprint name across entities (events read from the log carry their own copy).
                let entity = if Arc::ptr_eq(&entity.blueprint, &bp) {
                    self.register_writer_names(entity);
                    Arc::clone(entity)
                } else {
                    let mut owned = (**entity).clone();
                    owned.blueprint = Arc::clone(&bp);
                    self.share_writer_names(&mut owned);
                    Arc::new(owned)
                };
                let map = self.entities.entry(Arc::clone(&bp)).or_default();
                // Keep the existing key when replacing (shared with the indexes), else make one.
                let id: Key = map
                    .get_key_value(&*entity.identifier)
                    .map(|(k, _)| Arc::clone(k))
                    .unwrap_or_else(|| Arc::clone(&entity.identifier));
                let old = map.insert(Arc::clone(&id), Arc::clone(&entity));
                let noted = self.notes_writes_of(&bp);
                self.forget_linked(&bp, &id);
                match &old {
                    Some(old) => self.unlink(&id, old, noted),
                    None => self.note_created(&bp, &id, noted),
                }
                self.link(&id, &entity, noted);
                self.reindex(&bp, &id, old.as_deref(), Some(&entity));
                if noted {
                    self.agg_touched.push((Arc::clone(&bp), Arc::clone(&id), old));
                }
            }
            Change::EntityDeleted { blueprint, identifier } => {
                let removed =
                    self.entities.get_mut(blueprint.as_str()).and_then(|m| m.remove_with_key(identifier.as_str()));
                match removed {
                    Some((id, old)) => {
                        let bp = self.blueprint_name(blueprint);
                        let noted = self.notes_writes_of(&bp);
                        self.forget_linked(&bp, &id);
                        self.unlink(&id, &old, noted);
                        self.note_deleted(&bp, &id);
                        self.reindex(&bp, &id, Some(&old), None);
                        if noted {
                            self.agg_touched.push((Arc::clone(&bp), Arc::clone(&id), Some(old)));
                        }
                    }
                    None => {
                        return Err(format!("entity `{blueprint}/{identifier}` does not exist"));
                    }
                }
            }
            Change::CredentialPut { credential } => {
                self.credentials.insert(credential.client_id.clone(), credential.clone());
            }
            Change::CredentialDeleted { client_id } => {
                self.credentials.remove(client_id);
            }
            Change::TeamPut { team } => self.put_team(team.clone()),
            Change::UserPut { user } => {
                self.users.insert(user.email.clone(), user.clone());
            }
            Change::UserDeleted { email } => {
                self.users.remove(email);
            }
            Change::TeamDeleted { name } => self.remove_team(name),
            Change::SigningKeySet { key } => self.signing_key = Some(key.clone()),
            Change::PermissionsSet { blueprint, permissions } => {
                if self.blueprints.get(blueprint).is_none() {
                    return Err(format!("permissions of unknown blueprint `{blueprint}`"));
                }
                self.permissions.insert(blueprint.clone(), Arc::new((**permissions).clone()));
            }
            Change::Refused { .. } => {}
            Change::DefinitionPut { definition } => {
                self.levels_stale |= definition.kind == DefinitionKind::Scorecard;
                self.note_pending(definition);
                self.definitions.insert((definition.kind, definition.identifier.clone()), Arc::clone(definition));
            }
            Change::DefinitionDeleted { kind, identifier } => {
                self.levels_stale |= *kind == DefinitionKind::Scorecard;
                if *kind == DefinitionKind::Run {
                    self.pending_runs.remove(identifier);
                }
                if *kind == DefinitionKind::WebhookEvent {
                    self.pending_events.remove(identifier);
                }
                self.definitions.remove(&(*kind, identifier.clone()));
            }
        }
        Ok(())
    }

    /// Whether a write of an entity of `blueprint` is noted for the next refresh of derived data (in
    /// `agg_touched`, with its old version): it may change derived data kept in the state (it feeds an
    /// aggregation, is judged by an indexed scorecard, or is read through by one), and no full recompute is
    /// due anyway.
    fn notes_writes_of(&self, blueprint: &str) -> bool {
        !self.agg_rebuild && self.feeds_derived(blueprint)
    }

    fn feeds_derived(&self, blueprint: &str) -> bool {
        !self.derived.deps(blueprint).is_empty()
            || self.levels.contains_key(blueprint)
            || self.level_through.iter().any(|(target, _, _)| *target == blueprint)
    }

    /// Every blueprint's derived properties and the aggregations' dependency index.
    pub fn derived(&self) -> &DerivedCatalog {
        &self.derived
    }

    /// An owner's aggregation values, in the order of its blueprint's spec.
    pub fn aggregate_values(&self, blueprint: &str, id: &str) -> Option<&Vec<serde_json::Value>> {
        self.aggregates.get(blueprint)?.get(id).map(|k| &k.values)
    }

    /// Brings derived data up to date after events (the indexes settled): rebuilds the derived catalog if a
    /// blueprint changed, then recomputes the aggregations of the owners the touched entities reach (or
    /// every one). Deterministic: the same events give the same values on every replica.
    fn refresh_derived(&mut self) {
        if self.derived_stale {
            self.derived_stale = false;
            let defs: Vec<Arc<Blueprint>> = self.blueprints.values().map(|b| Arc::clone(&b.def)).collect();
            self.derived = Arc::new(DerivedCatalog::build(defs.iter().map(|b| &**b), &self.derived));
            self.agg_rebuild = true;
            self.levels_stale = true;
        }
        let rejudge = if self.agg_rebuild {
            self.agg_rebuild = false;
            self.agg_touched.clear();
            self.recompute_all_aggregates();
            Vec::new()
        } else {
            self.refresh_aggregates()
        };
        if self.levels_stale {
            self.levels_stale = false;
            self.levels = crate::levels::build(self);
            self.level_through = Arc::new(crate::levels::read_through(&self.levels));
        } else if !rejudge.is_empty() {
            let mut levels = std::mem::take(&mut self.levels);
            crate::levels::refresh(self, &mut levels, &rejudge);
            self.levels = levels;
        }
        self.fresh.clear();
        self.linked.clear();
        self.prune_unresolved();
    }

    /// Recomputes the aggregations of the owners the touched entities reach; answers the entities whose
    /// scorecard marks may have changed, and why: the touched ones (written) and those owners (their
    /// aggregation values alone).
    fn refresh_aggregates(&mut self) -> Vec<(Key, Key, crate::levels::Rejudge)> {
        if self.agg_touched.is_empty() {
            return Vec::new();
        }
        let touched = std::mem::take(&mut self.agg_touched);
        let catalog = Arc::clone(&self.derived);
        // The kept values are changed apart from the state, which the rest only reads (through one finder,
        // which reads each set of sources once).
        let mut aggregates = std::mem::take(&mut self.aggregates);
        let rejudge = self.refreshed_aggregates(&catalog, &touched, &mut aggregates);
        self.aggregates = aggregates;
        rejudge
    }

    /// What [`State::refresh_aggregates`] does, with the kept values taken out of the state.
    fn refreshed_aggregates(
        &self,
        catalog: &DerivedCatalog,
        touched: &[Touched],
        aggregates: &mut Aggregates,
    ) -> Vec<(Key, Key, crate::levels::Rejudge)> {
        use crate::derived::aggregation::owners_of;
        let finder = crate::derived::aggregation::Finder::remembering(self, &self.fresh);
        // Owners recomputed from their sources, and owners changed in place. A target written at the end of
        // its path is taken out of its old owners' aggregations and put into its new owners' (walking a
        // domain's 50,000 deployments, or a service's own, per deployment write is what it avoids); a write
        // elsewhere on the path that changes it has its owners recomputed.
        let mut owners: std::collections::BTreeSet<(&str, &str)> = std::collections::BTreeSet::new();
        let mut in_place: InPlace<'_> = Vec::new();
        // Each written entity's version before the first write of the batch (a delta is the current one minus
        // that one, however many times it was written since).
        let mut before: std::collections::BTreeMap<(&Key, &Key), Option<&Arc<Entity>>> =
            std::collections::BTreeMap::new();
        for (bp, id, old) in touched {
            before.entry((bp, id)).or_insert(old.as_ref());
        }
        // And its version now (looked up once: the loops below read it for every dependency).
        let now: Vec<Option<Arc<Entity>>> = before.keys().map(|(bp, id)| self.entity(bp, id).cloned()).collect();
        // An entity between an owner and the target changes its owners by a delta when nothing else on the
        // aggregation's path (past the owner) was written with it (see `Agg::changes_through`).
        // (how many entities of each blueprint were written: a batch's are of few blueprints)
        let mut written: Vec<(&str, usize)> = Vec::new();
        for (bp, _) in before.keys() {
            match written.iter_mut().find(|(b, _)| *b == &***bp) {
                Some((_, n)) => *n += 1,
                None => written.push((bp, 1)),
            }
        }
        let written_of = |bp: &str| written.iter().find(|(b, _)| *b == bp).map_or(0, |(_, n)| *n);
        let through = |agg: &crate::derived::aggregation::Agg, position: usize| {
            agg.changes_through(position) && agg.path_blueprints[1..].iter().map(|b| written_of(b)).sum::<usize>() == 1
        };
        for (bp, id, old) in touched {
            // Aggregations of one owner along the same path reach the same owners: walked back once.
            let mut walked: Vec<(&str, &[crate::derived::aggregation::Step], usize)> = Vec::new();
            // Its version now, looked up for the first aggregation that is not kept by a delta (often none).
            let mut looked_up: Option<Option<&Entity>> = None;
            for dep in catalog.deps(bp) {
                let Some(agg) = catalog.spec(&dep.owner).and_then(|s| s.aggs.get(dep.agg)) else { continue };
                if agg.keeps_by_delta(dep.position) || through(agg, dep.position) {
                    continue;
                }
                let current = *looked_up.get_or_insert_with(|| self.entity(bp, id).map(|e| &**e));
                if agg.passes_through_unchanged(dep.position, old.as_deref(), current) {
                    continue;
                }
                let way = (dep.owner.as_str(), agg.steps.as_slice(), dep.position);
                if walked.contains(&way) {
                    continue;
                }
                walked.push(way);
                let versions = [current, old.as_deref()];
                for e in versions.into_iter().flatten() {
                    for owner in owners_of(self, agg, dep.position, e) {
                        owners.insert((dep.owner.as_str(), owner));
                    }
                }
            }
        }
        for (((bp, _), old), current) in before.iter().zip(&now) {
            // Aggregations of one owner along the same path reach the same owners: walked back once per version.
            // Keyed by what the first step back reads of the version (both versions, when it is the same).
            type Way<'a> = (&'a str, &'a [crate::derived::aggregation::Step], usize, Option<&'a serde_json::Value>);
            let mut walked: Vec<(Way<'_>, Vec<&str>)> = Vec::new();
            for dep in catalog.deps(bp) {
                let Some(agg) = catalog.spec(&dep.owner).and_then(|s| s.aggs.get(dep.agg)) else { continue };
                if !agg.keeps_by_delta(dep.position) {
                    continue;
                }
                // A rewrite that leaves the entity's part in this aggregation as it was changes nothing.
                if let (Some(o), Some(c)) = (old, current) {
                    if agg.part_of(self, o) == agg.part_of(self, c)
                        && agg.first_step_back(dep.position, o) == agg.first_step_back(dep.position, c)
                    {
                        continue;
                    }
                }
                let versions = [(*old, true), (current.as_ref(), false)];
                for (version, remove) in versions {
                    let Some(e) = version.filter(|e| agg.counts(self, e)) else { continue };
                    let way =
                        (dep.owner.as_str(), agg.steps.as_slice(), dep.position, agg.first_step_back(dep.position, e));
                    let at = match walked.iter().position(|(w, _)| *w == way) {
                        Some(at) => at,
                        None => {
                            walked.push((way, owners_of(self, agg, dep.position, e)));
                            walked.len() - 1
                        }
                    };
                    for owner in &walked[at].1 {
                        in_place.push((dep.owner.as_str(), owner, dep.agg, Arc::clone(e), remove));
                    }
                }
            }
        }
        // An entity between the owner and the target: its targets leave the owners its old version reached
        // and join those its new version reaches (a new service: its domain counts its deployments without
        // walking the domain's 45,000 others).
        for (((bp, _), old), current) in before.iter().zip(&now) {
            for dep in catalog.deps(bp) {
                let Some(agg) = catalog.spec(&dep.owner).and_then(|s| s.aggs.get(dep.agg)) else { continue };
                if !through(agg, dep.position)
                    || agg.passes_through_unchanged(dep.position, old.map(|o| &**o), current.as_deref())
                {
                    continue;
                }
                // Its targets first: when it has none (a new service), there is nothing to move.
                let Some(version) = current.as_ref().or(*old) else { continue };
                let targets: Vec<Arc<Entity>> = agg
                    .targets_from(&finder, dep.position, version)
                    .into_iter()
                    .filter(|t| agg.counts(self, t))
                    .cloned()
                    .collect();
                if targets.is_empty() {
                    continue;
                }
                let was = old.map(|e| owners_of(self, agg, dep.position, e)).unwrap_or_default();
                let is = current.as_ref().map(|e| owners_of(self, agg, dep.position, e)).unwrap_or_default();
                if was == is {
                    continue;
                }
                for (owners, remove) in [(&was, true), (&is, false)] {
                    for owner in owners {
                        in_place.extend(
                            targets.iter().map(|t| (dep.owner.as_str(), *owner, dep.agg, Arc::clone(t), remove)),
                        );
                    }
                }
            }
        }
        use crate::levels::Rejudge;
        let mut rejudge: Vec<(Key, Key, Rejudge)> =
            touched.iter().map(|(bp, id, _)| (Arc::clone(bp), Arc::clone(id), Rejudge::Written)).collect();
        // An entity a scorecard rule is read through that appeared or disappeared: its sources' ceilings
        // (which judged the rule when their relation led nowhere) are judged again.
        for (((bp, id), old), current) in before.iter().zip(&now) {
            if old.is_some() == current.is_some() {
                continue;
            }
            for (_, source, relation) in self.level_through.iter().filter(|(target, _, _)| **target == ***bp) {
                let key = self.blueprint_name(source);
                finder.each_source(bp, id, source, relation, |s| {
                    rejudge.push((Arc::clone(&key), Arc::clone(s), Rejudge::Written));
                });
            }
        }
        // An owner recomputed anyway is left to the recompute; one with nothing kept (it does not exist, or
        // its aggregation computes null) is recomputed if it exists.
        // By owner, and for each owner every old version out before any new one goes in (each old one is in
        // what is kept); a stable sort keeps the order they were noted in otherwise.
        in_place.sort_by(|a, b| (a.0, a.1, !a.4).cmp(&(b.0, b.1, !b.4)));
        for changes in in_place.chunk_by(|a, b| (a.0, a.1) == (b.0, b.1)) {
            let Some(&(bp, owner, ..)) = changes.first() else { continue };
            if owners.contains(&(bp, owner)) {
                continue;
            }
            let Some(spec) = catalog.spec(bp) else { continue };
            // Changed where it is kept (one walk down the owner map, the record copied only when a published
            // state shares it): Some(whether its scorecard marks may have changed), or None to recompute.
            // Marks change only when a value some rule reads moved across what the rule asks.
            let judged = self.levels.contains_key(bp);
            let changed = match aggregates.get_mut(bp).and_then(|m| m.get_mut(owner)) {
                None => None,
                // Every change has what it changes kept (else the owner is recomputed, left as it was).
                Some(kept)
                    if changes.iter().all(|(_, _, i, _, _)| {
                        spec.aggs.get(*i).is_some() && kept.accs.get(*i).is_some_and(Option::is_some)
                    }) =>
                {
                    let kept = Arc::make_mut(kept);
                    for (_, _, i, e, remove) in changes {
                        if let (Some(agg), Some(Some(acc))) = (spec.aggs.get(*i), kept.accs.get_mut(*i)) {
                            agg.account(acc, e, *remove);
                        }
                    }
                    // The values that changed, with what they were.
                    let mut moved: Vec<(usize, serde_json::Value)> = Vec::new();
                    for (i, agg) in spec.aggs.iter().enumerate() {
                        if let (Some(Some(acc)), Some(v)) = (kept.accs.get(i), kept.values.get_mut(i)) {
                            let value = agg.value_of(acc);
                            if *v != value {
                                moved.push((i, std::mem::replace(v, value)));
                            }
                        }
                    }
                    Some(
                        !moved.is_empty() && judged && {
                            let entity = || self.entity(bp, owner).map(|e| &**e);
                            crate::levels::aggregates_may_change_marks(self, bp, entity, &moved, &kept.values)
                        },
                    )
                }
                Some(_) => None,
            };
            match changed {
                Some(true) => rejudge.push((self.blueprint_name(bp), Arc::from(owner), Rejudge::Aggregates)),
                Some(false) => {}
                // Nothing kept (an owner that does not exist has nothing to change) or incomplete.
                None => {
                    if self.entity(bp, owner).is_some() {
                        owners.insert((bp, owner));
                    }
                }
            }
        }
        for (bp, id) in owners {
            self.recompute_owner(&finder, catalog, aggregates, bp, id);
            rejudge.push((self.blueprint_name(bp), Arc::from(id), Rejudge::Aggregates));
        }
        rejudge
    }

    /// The level ceilings of one scorecard of a blueprint, when it is indexed.
    pub fn card_levels(&self, blueprint: &str, scorecard: &str) -> Option<&crate::levels::CardLevels> {
        self.levels.get(blueprint)?.card(scorecard)
    }

    /// The level ceilings of a blueprint's indexed scorecards, when it has some.
    pub(crate) fn blueprint_levels(&self, blueprint: &str) -> Option<&crate::levels::BlueprintLevels> {
        self.levels.get(blueprint)
    }

    /// Recomputes one owner's aggregation values in `aggregates` (or forgets them, when it no longer exists).
    fn recompute_owner(
        &self,
        finder: &crate::derived::aggregation::Finder<'_>,
        catalog: &DerivedCatalog,
        aggregates: &mut Aggregates,
        blueprint: &str,
        id: &str,
    ) {
        let Some(spec) = catalog.spec(blueprint) else { return };
        let Some(owner) = self.entity(blueprint, id) else {
            if let Some(m) = aggregates.get_mut(blueprint) {
                m.remove(id);
            }
            return;
        };
        let values = crate::derived::aggregation::compute_all(finder, owner, &spec.aggs);
        let bp = self.blueprint_name(blueprint);
        let key = Arc::clone(&owner.identifier);
        aggregates.entry(bp).or_default().insert(key, Arc::new(values));
    }

    /// Recomputes every aggregation of every owner, each owner blueprint on its own (on two threads when
    /// there are several).
    fn recompute_all_aggregates(&mut self) {
        let catalog = Arc::clone(&self.derived);
        let owners: Vec<(Key, Arc<crate::derived::DerivedSpec>)> =
            catalog.owners().map(|(bp, spec)| (self.blueprint_name(bp), Arc::clone(spec))).collect();
        let this = &*self;
        // Every entity the paths pass through is found in a hash table built once.
        let on_paths: std::collections::BTreeSet<&str> = owners
            .iter()
            .flat_map(|(_, spec)| spec.aggs.iter().flat_map(|a| a.path_blueprints.iter().skip(1)))
            .map(String::as_str)
            .collect();
        let finder = crate::derived::aggregation::Finder::with_tables(this, on_paths);
        // Chunks of owners, computed on two threads. A blueprint of few owners (each over a large fan-in,
        // often) is split into as many chunks as it has owners, so both threads share it.
        let mut chunks: Vec<(usize, Vec<&Arc<Entity>>)> = Vec::new();
        for (i, (bp, _)) in owners.iter().enumerate() {
            let entities: Vec<&Arc<Entity>> = this.entities_of(bp).collect();
            let size = (entities.len() / 64).clamp(1, AGGREGATE_CHUNK);
            chunks.extend(entities.chunks(size).map(|c| (i, c.to_vec())));
        }
        let compute = |(i, entities): (usize, Vec<&Arc<Entity>>)| {
            let aggs = &owners[i].1.aggs;
            let values: Vec<(Key, Arc<crate::derived::aggregation::Kept>)> = entities
                .into_iter()
                .map(|e| {
                    (Arc::clone(&e.identifier), Arc::new(crate::derived::aggregation::compute_all(&finder, e, aggs)))
                })
                .collect();
            (i, values)
        };
        let computed = match on_two_threads(chunks.clone(), compute) {
            Some(done) => done,
            // A worker failed (a panic): compute on this thread, so a load never ends half-done.
            None => chunks.into_iter().map(compute).collect(),
        };
        let mut maps: Vec<OwnerValues> = owners.iter().map(|_| OwnerValues::new()).collect();
        for (i, values) in computed {
            if let Some(map) = maps.get_mut(i) {
                map.extend(values);
            }
        }
        self.aggregates = owners.into_iter().map(|(bp, _)| bp).zip(maps).collect();
    }

    /// The edges an entity (whose map key is `source`) makes: (target blueprint, link, whether the target
    /// exists). Every string is shared with the state: the source's key, the relation name of the
    /// blueprint's index spec, the target's key when the target exists. The targets found whose blueprint an
    /// aggregation's path passes through are added to `found`, when given, up to [`MAX_LINKED`].
    fn edges_of(&self, source: &Key, e: &Entity, mut found: Option<&mut Vec<Arc<Entity>>>) -> Vec<(Key, Link, bool)> {
        let Some(bp) = self.blueprints.get(&*e.blueprint) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (rel, value) in &e.relations {
            let (Some(def), Some(relation)) = (bp.def.relations.get(rel), bp.index.relation(rel)) else {
                continue;
            };
            let target_bp = self.blueprint_name(&def.target);
            let targets = self.entities.get(&*target_bp);
            for id in Entity::relation_targets(value) {
                let hit = targets.and_then(|m| m.get_key_value(id));
                let target = hit.map_or_else(|| Arc::from(id), |(k, _)| Arc::clone(k));
                if let (Some(found), Some((_, x))) = (found.as_deref_mut(), hit) {
                    if found.len() < MAX_LINKED && self.derived.walked_through(&def.target) {
                        found.push(Arc::clone(x));
                    }
                }
                let edge = Edge { kind: Arc::clone(relation), identifier: Arc::clone(source) };
                out.push((Arc::clone(&target_bp), Link { hash: target_hash(id), target, edge }, hit.is_some()));
            }
        }
        out
    }

    /// Links `e`'s relations; `noted`: its write is noted for the refresh, which reads the targets found.
    fn link(&mut self, source: &Key, e: &Entity, noted: bool) {
        let mut linked = std::mem::take(&mut self.linked);
        let edges = self.edges_of(source, e, noted.then_some(&mut linked));
        self.linked = linked;
        for (blueprint, link, exists) in edges {
            if !exists {
                self.unresolved.insert((Arc::clone(&blueprint), Arc::clone(&link.target)));
            } else if !self.fresh.is_empty() {
                self.fresh.retain(|(b, id)| !(**b == *blueprint && **id == *link.target));
            }
            self.work.push(Target::Links { blueprint }, Op::Link(link));
        }
    }

    /// Unlinks `e`'s relations (as [`State::link`]).
    fn unlink(&mut self, source: &Key, e: &Entity, noted: bool) {
        let mut linked = std::mem::take(&mut self.linked);
        let edges = self.edges_of(source, e, noted.then_some(&mut linked));
        self.linked = linked;
        for (blueprint, link, _) in edges {
            self.work.push(Target::Links { blueprint }, Op::Unlink(link));
        }
    }

    /// An entity found by its blueprint and identifier: first among the targets of the links made or unmade
    /// since the last refresh ([`State::linked`], a few, just read), else in the entity maps.
    pub(crate) fn entity_linked_or_found(&self, blueprint: &str, id: &str) -> Option<&Arc<Entity>> {
        self.linked
            .iter()
            .find(|x| *x.identifier == *id && *x.blueprint == *blueprint)
            .or_else(|| self.entity(blueprint, id))
    }

    /// Takes an entity written or deleted out of [`State::linked`] (the version there is no longer current).
    fn forget_linked(&mut self, blueprint: &str, id: &str) {
        if !self.linked.is_empty() {
            self.linked.retain(|x| !(*x.identifier == *id && *x.blueprint == *blueprint));
        }
    }

    /// Notes the creation of an entity that feeds derived data: fresh (its sources are none) unless a
    /// relation may point at it already. Called before its own links are made (one to itself is a source).
    /// `noted`: whether its write is noted for the refresh ([`State::notes_writes_of`]).
    fn note_created(&mut self, blueprint: &Key, id: &Key, noted: bool) {
        let pointed_at =
            !self.unresolved.is_empty() && self.unresolved.remove(&(Arc::clone(blueprint), Arc::clone(id))).is_some();
        if !pointed_at && noted && self.fresh.len() < MAX_FRESH {
            self.fresh.push((Arc::clone(blueprint), Arc::clone(id)));
        }
    }

    /// Notes the deletion of an entity: relations may still point at it.
    fn note_deleted(&mut self, blueprint: &Key, id: &Key) {
        self.fresh.retain(|(b, i)| !(**b == **blueprint && **i == **id));
        self.unresolved.insert((Arc::clone(blueprint), Arc::clone(id)));
    }

    /// Keeps in [`State::unresolved`] only what is still missing and pointed at (the indexes settled), when
    /// it has grown past twice what the last pruning kept: each entry is checked once per doubling.
    fn prune_unresolved(&mut self) {
        if self.unresolved.len() <= self.unresolved_prune_at.max(UNRESOLVED_KEPT) {
            return;
        }
        let kept: Unresolved = self
            .unresolved
            .iter()
            .filter(|(bp, id)| self.entity(bp, id).is_none() && self.incoming(bp, id).next().is_some())
            .cloned()
            .collect();
        self.unresolved_prune_at = kept.len() * 2;
        self.unresolved = kept;
    }

    /// Serialises the state (without indexes) for a snapshot, in the chunked layout (see `SnapshotData`).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, StateError> {
        self.to_snapshot_in(SNAPSHOT_CHUNK)
    }

    fn to_snapshot_in(&self, chunk_size: usize) -> Result<Vec<u8>, StateError> {
        let all: Vec<&Arc<Entity>> = self.entities.values().flat_map(|m| m.values()).collect();
        let groups: Vec<&[&Arc<Entity>]> = all.chunks(chunk_size.max(1)).collect();
        let chunks = on_two_threads(groups, serde_json::to_vec)
            .ok_or_else(worker_failed)?
            .into_iter()
            .collect::<Result<Vec<Vec<u8>>, _>>()
            .map_err(|e| StateError::Snapshot(e.to_string()))?;
        let data = SnapshotData {
            format: SNAPSHOT_FORMAT,
            seq: self.seq,
            blueprints: self.blueprints.values().map(|b| (*b.def).clone()).collect(),
            entities: Vec::new(),
            chunks: chunks.iter().map(Vec::len).collect(),
            credentials: self.credentials.values().cloned().collect(),
            teams: self.teams.values().cloned().collect(),
            users: self.users.values().cloned().collect(),
            permissions: self.permissions.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect(),
            signing_key: self.signing_key.clone(),
            definitions: self.definitions.values().map(|d| (**d).clone()).collect(),
            version_chunks: None,
            versions_from: 0,
            refusals_from: None,
            version_rows: Vec::new(),
        };
        // The version index, in chunks of its own after the entities.
        let rows: Vec<(&Key, &Key, &Versions)> =
            self.versions.iter().flat_map(|(bp, m)| m.iter().map(move |(id, seqs)| (bp, id, seqs))).collect();
        let row_groups: Vec<&[(&Key, &Key, &Versions)]> = rows.chunks(chunk_size.max(1)).collect();
        let version_chunks = on_two_threads(row_groups, |group| {
            let rows: Vec<(&str, &str, Vec<u64>)> =
                group.iter().map(|(bp, id, seqs)| (&***bp, &***id, seqs.seqs())).collect();
            serde_json::to_vec(&rows)
        })
        .ok_or_else(worker_failed)?
        .into_iter()
        .collect::<Result<Vec<Vec<u8>>, _>>()
        .map_err(|e| StateError::Snapshot(e.to_string()))?;
        let data = SnapshotData {
            version_chunks: Some(version_chunks.iter().map(Vec::len).collect()),
            versions_from: self.versions_from,
            refusals_from: Some(self.refusals_from),
            ..data
        };
        let header = serde_json::to_vec(&data).map_err(|e| StateError::Snapshot(e.to_string()))?;
        let body = chunks.iter().chain(&version_chunks).map(Vec::len).sum::<usize>();
        let mut out = Vec::with_capacity(header.len() + body + 64);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(format!("{}\n", header.len()).as_bytes());
        out.extend_from_slice(&header);
        for chunk in chunks.iter().chain(&version_chunks) {
            out.extend_from_slice(chunk);
        }
        Ok(out)
    }

    /// The snapshot's data, its entity chunks parsed on two threads (or the whole document, in the first
    /// layout).
    fn read_snapshot(bytes: &[u8]) -> Result<SnapshotData, StateError> {
        let bad = |m: &str| StateError::Snapshot(m.to_string());
        let Some(rest) = bytes.strip_prefix(SNAPSHOT_MAGIC) else {
            check_snapshot_format(bytes)?;
            return serde_json::from_slice(bytes).map_err(|e| StateError::Snapshot(e.to_string()));
        };
        let line = rest.iter().position(|b| *b == b'\n').ok_or_else(|| bad("the header length is missing"))?;
        let header_len: usize = std::str::from_utf8(&rest[..line])
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| bad("the header length is not a number"))?;
        let rest = &rest[line + 1..];
        let header = rest.get(..header_len).ok_or_else(|| bad("the header is cut short"))?;
        check_snapshot_format(header)?;
        let mut data: SnapshotData =
            serde_json::from_slice(header).map_err(|e| StateError::Snapshot(format!("header: {e}")))?;
        let mut body = &rest[header_len..];
        let mut take = |lens: &[usize], what: &str| -> Result<Vec<&[u8]>, StateError> {
            let mut slices = Vec::with_capacity(lens.len());
            for len in lens {
                if body.len() < *len {
                    return Err(bad(&format!("{what} chunk is cut short")));
                }
                let (chunk, tail) = body.split_at(*len);
                slices.push(chunk);
                body = tail;
            }
            Ok(slices)
        };
        let slices = take(&data.chunks, "an entity")?;
        let version_slices = take(data.version_chunks.as_deref().unwrap_or_default(), "a version-index")?;
        if !body.is_empty() {
            return Err(bad("bytes follow the last chunk"));
        }
        let parse = |chunk: &[u8]| serde_json::from_slice::<Vec<Arc<Entity>>>(chunk);
        for parsed in on_two_threads(slices, parse).ok_or_else(worker_failed)? {
            data.entities.extend(parsed.map_err(|e| StateError::Snapshot(format!("entities: {e}")))?);
        }
        let parse = |chunk: &[u8]| serde_json::from_slice::<Vec<VersionRow>>(chunk);
        for parsed in on_two_threads(version_slices, parse).ok_or_else(worker_failed)? {
            data.version_rows.extend(parsed.map_err(|e| StateError::Snapshot(format!("versions: {e}")))?);
        }
        Ok(data)
    }

    /// Rebuilds a state, indexes included, from a snapshot.
    pub fn from_snapshot(bytes: &[u8]) -> Result<State, StateError> {
        let mut state = State::from_snapshot_without_property_indexes(bytes)?;
        state.build_property_indexes()?;
        Ok(state)
    }

    /// Loads a snapshot with its reverse-relation index but without the property indexes (nearly half of a
    /// load): the server answers (by scanning) while [`State::build_property_indexes`] runs.
    pub fn from_snapshot_without_property_indexes(bytes: &[u8]) -> Result<State, StateError> {
        let data = State::read_snapshot(bytes)?;
        let mut state = State::default();
        for b in data.blueprints {
            state.apply_change(&Change::BlueprintPut { blueprint: Box::new(b) }).map_err(StateError::Snapshot)?;
        }
        let mut by_blueprint: std::collections::HashMap<Key, Keyed> = std::collections::HashMap::new();
        for mut e in data.entities {
            let bp = state.blueprint_name(&e.blueprint);
            // A parsed entity is owned here: adjusted in place rather than copied.
            let owned = Arc::make_mut(&mut e);
            owned.blueprint = Arc::clone(&bp);
            state.share_writer_names(owned);
            by_blueprint.entry(bp).or_default().push((Arc::clone(&e.identifier), e));
        }
        // Each blueprint's entity map is independent: built on two threads, the largest first.
        let mut lists: Vec<(Key, Keyed)> = by_blueprint.into_iter().collect();
        lists.sort_by_key(|(_, list)| std::cmp::Reverse(list.len()));
        let build = |(bp, mut list): (Key, Keyed)| {
            list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            let mut map = OrdMap::new();
            in_near_order(list, |(id, e)| {
                map.insert(id, e);
            });
            (bp, map)
        };
        for (bp, map) in on_two_threads(lists, build).ok_or_else(worker_failed)? {
            state.entities.insert(bp, map);
        }
        state.props_pending = true;
        state.build_indexes(true, false)?;
        for t in data.teams {
            state.put_team(t);
        }
        for (bp, p) in data.permissions {
            state.permissions.insert(bp, Arc::new(p));
        }
        for u in data.users {
            state.users.insert(u.email.clone(), u);
        }
        for c in data.credentials {
            state.credentials.insert(c.client_id.clone(), c);
        }
        state.signing_key = data.signing_key;
        for d in data.definitions {
            let d = Arc::new(d);
            state.note_pending(&d);
            state.definitions.insert((d.kind, d.identifier.clone()), d);
        }
        // The version index: as the snapshot holds it, or, from a snapshot written before it existed, only
        // for the events after the snapshot.
        if data.version_chunks.is_some() {
            state.versions_from = data.versions_from;
            state.refusals_from = data.refusals_from.unwrap_or(data.seq + 1);
            for (bp, id, seqs) in data.version_rows {
                let bp = state.blueprint_name(&bp);
                let id: Key = state
                    .entities
                    .get(&*bp)
                    .and_then(|m| m.get_key_value(id.as_str()))
                    .map_or_else(|| Arc::from(id.as_str()), |(k, _)| Arc::clone(k));
                if let Some(v) = Versions::from_seqs(seqs) {
                    state.versions.entry(bp).or_default().insert(id, v);
                }
            }
        } else {
            state.versions_from = data.seq + 1;
            state.refusals_from = data.seq + 1;
        }
        state.seq = data.seq;
        state.refresh_derived();
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state_with(n: usize) -> State {
        let mut state = State::default();
        let mut seq = 0;
        let mut apply = |state: &mut State, change: Change| {
            seq += 1;
            state.apply(&event(seq, change)).expect("applies");
        };
        let bp = stamped(json!({"identifier": "svc", "title": "Service",
            "schema": {"properties": {"n": {"type": "number"}, "lang": {"type": "string", "enum": ["go", "rust"]}}},
            "relations": {"dep": {"target": "svc", "required": false, "many": false}}}));
        let blueprint: Blueprint = serde_json::from_value(bp).expect("a blueprint");
        apply(&mut state, Change::BlueprintPut { blueprint: Box::new(blueprint) });
        for i in 0..n {
            let e = stamped(json!({"identifier": format!("s{i:03}"), "title": null, "blueprint": "svc",
                "properties": {"n": i, "lang": if i % 2 == 0 { "go" } else { "rust" }},
                "relations": {"dep": if i > 0 { json!(format!("s{:03}", i - 1)) } else { json!(null) }}}));
            let entity: Entity = serde_json::from_value(e).expect("an entity");
            apply(&mut state, Change::EntityPut { entity: Arc::new(entity) });
        }
        state
    }

    /// A change as the event at `seq`.
    fn event(seq: u64, change: Change) -> Event {
        Event {
            seq,
            time: berth_model::Timestamp::from_millis(0),
            actor: "me".into(),
            origin: berth_model::Origin::Api,
            run_id: None,
            change,
            before: None,
        }
    }

    /// The change that stores a scorecard definition (`blueprint#id`) with this body.
    fn scorecard_put(key: &str, body: serde_json::Value) -> Change {
        Change::DefinitionPut {
            definition: Arc::new(berth_model::Definition {
                kind: DefinitionKind::Scorecard,
                identifier: key.into(),
                body: Arc::new(body),
                created_at: berth_model::Timestamp::from_millis(0),
                updated_at: berth_model::Timestamp::from_millis(0),
                created_by: "me".into(),
                updated_by: "me".into(),
            }),
        }
    }

    /// An entity or blueprint body with the fields the server sets.
    fn stamped(mut v: serde_json::Value) -> serde_json::Value {
        for k in ["createdAt", "updatedAt"] {
            v[k] = json!("2026-11-26T10:00:00Z");
        }
        v["createdBy"] = json!("me");
        v["updatedBy"] = json!("me");
        v
    }

    /// A write of the deferral tests: `(delete, blueprint 0/1, id, value seed, relation target)`.
    type Write = (bool, u8, u8, u8, Option<u8>);

    /// Two blueprints (one pointing at the other and at itself) with counted, free-string, numeric and array
    /// properties, then `writes` as entity events from seq 3.
    fn deferral_events(writes: &[Write]) -> (Vec<Event>, Vec<Event>) {
        let bp = |v| Change::BlueprintPut { blueprint: Box::new(serde_json::from_value(stamped(v)).expect("bp")) };
        let setup = vec![
            event(
                1,
                bp(json!({"identifier": "svc", "title": "Service", "schema": {"properties": {
                "lang": {"type": "string", "enum": ["go", "rust", "java"]}, "version": {"type": "string"},
                "n": {"type": "number"}, "tags": {"type": "array"}}}})),
            ),
            event(
                2,
                bp(json!({"identifier": "dep", "title": "Deployment", "schema": {"properties": {
                "ok": {"type": "boolean"}, "version": {"type": "string"}}},
                "relations": {"service": {"target": "svc", "required": false, "many": false},
                              "previous": {"target": "dep", "required": false, "many": true}}})),
            ),
        ];
        let mut live = std::collections::BTreeSet::new();
        let mut events = Vec::new();
        for &(delete, bp, id, seed, target) in writes {
            let blueprint = if bp % 2 == 0 { "svc" } else { "dep" };
            let identifier = format!("{blueprint}-{}", id % 24);
            let seq = 3 + events.len() as u64;
            if delete {
                if live.remove(&(blueprint, identifier.clone())) {
                    events.push(event(seq, Change::EntityDeleted { blueprint: blueprint.into(), identifier }));
                }
                continue;
            }
            let relations = match (blueprint, target) {
                ("dep", Some(t)) => {
                    json!({"service": format!("svc-{}", t % 24), "previous": [format!("dep-{}", t % 5), "dep-1"]})
                }
                _ => json!({}),
            };
            let properties = if blueprint == "svc" {
                let lang = ["go", "rust", "java"][usize::from(seed % 3)];
                json!({"lang": lang, "version": format!("1.{}", seed % 7),
                       "n": seed % 11, "tags": [format!("t{}", seed % 4), format!("t{}", seed % 3)]})
            } else {
                json!({"ok": seed % 2 == 0, "version": format!("2.{}", seed % 5)})
            };
            let title = if seed % 4 == 0 { json!(null) } else { json!(format!("T{}", seed % 6)) };
            let entity: Entity = serde_json::from_value(stamped(json!({"identifier": identifier, "blueprint": blueprint,
                "title": title, "team": [format!("team{}", seed % 3)], "properties": properties, "relations": relations})))
            .expect("an entity");
            live.insert((blueprint, identifier));
            events.push(event(seq, Change::EntityPut { entity: Arc::new(entity) }));
        }
        (setup, events)
    }

    fn assert_same_indexes(a: &State, b: &State) {
        assert_eq!(a.props, b.props, "property indexes");
        assert_eq!(a.value_counts, b.value_counts, "value counts");
        assert_eq!(a.incoming, b.incoming, "reverse relations");
        assert_eq!(a.digest(), b.digest(), "entities");
    }

    /// The same events applied one at a time, and with index updates deferred and settled at `settle_at`
    /// (and at the end).
    fn one_by_one_and_deferred(writes: &[Write], settle_at: &[usize]) -> (State, State) {
        let (setup, events) = deferral_events(writes);
        let mut base = State::default();
        for e in &setup {
            base.apply(e).expect("setup applies");
        }
        let mut one = base.clone();
        for e in &events {
            one.apply(e).expect("applies");
        }
        let mut deferred = base;
        deferred.defer_indexes();
        for (i, e) in events.iter().enumerate() {
            if settle_at.contains(&i) {
                deferred.settle_indexes().expect("settles");
                deferred.defer_indexes();
            }
            deferred.apply(e).expect("applies deferred");
        }
        deferred.settle_indexes().expect("settles");
        assert!(!deferred.has_deferred_indexes());
        (one, deferred)
    }

    #[test]
    fn deferred_index_updates_on_two_threads_equal_one_by_one() {
        // Enough updates for the two-thread path (PARALLEL_UPDATES), with rewrites and deletes in between.
        let writes: Vec<Write> = (0..1500u32)
            .map(|i| {
                (i % 7 == 3, (i % 3) as u8, (i * 7 % 24) as u8, (i % 251) as u8, (i % 5 != 0).then_some((i % 23) as u8))
            })
            .collect();
        let (one, deferred) = one_by_one_and_deferred(&writes, &[]);
        assert!(one.property_index("svc", "lang").is_some_and(|s| !s.is_empty()));
        assert!(one.is_relation_target("svc") && one.is_relation_target("dep"));
        assert_same_indexes(&one, &deferred);
    }

    proptest::proptest! {
        /// Whatever teams are put and deleted, and after a snapshot round trip, a member's teams are the teams
        /// whose member lists name it, in name order.
        #[test]
        fn a_members_teams_follow_team_writes(
            edits in proptest::collection::vec(
                (0u8..4, proptest::option::of(proptest::collection::vec(0u8..5, 0..4))), 0..30),
        ) {
            let mut state = State::default();
            for (seq, (team, members)) in edits.into_iter().enumerate() {
                let name = format!("t{team}");
                let change = match members {
                    Some(members) => Change::TeamPut { team: Team {
                        name,
                        description: None,
                        members: members.iter().map(|m| format!("m{m}@x.io")).collect(),
                        created_at: berth_model::Timestamp::from_millis(0),
                        updated_at: berth_model::Timestamp::from_millis(0),
                    } },
                    None => Change::TeamDeleted { name },
                };
                state.apply(&event(seq as u64 + 1, change)).expect("applies");
            }
            let reloaded = State::from_snapshot(&state.to_snapshot().expect("snapshot")).expect("loads");
            for m in 0..5 {
                let member = format!("m{m}@x.io");
                let scanned: Vec<String> = state
                    .teams()
                    .filter(|t| t.members.contains(&member))
                    .map(|t| t.name.clone())
                    .collect();
                proptest::prop_assert_eq!(&state.teams_of(&member), &scanned);
                proptest::prop_assert_eq!(&reloaded.teams_of(&member), &scanned);
            }
        }

        #[test]
        fn deferred_index_updates_equal_one_by_one(
            writes in proptest::collection::vec(
                (proptest::bool::weighted(0.2), 0u8..2, 0u8..24, proptest::prelude::any::<u8>(), proptest::option::of(0u8..24)),
                0..400),
            settle_at in proptest::collection::vec(0usize..400, 0..4),
        ) {
            let (one, deferred) = one_by_one_and_deferred(&writes, &settle_at);
            assert_same_indexes(&one, &deferred);
        }

        /// Derived data kept incrementally equals derived data computed from scratch: after every write (one
        /// by one), after the same writes applied deferred with settles anywhere, and after a snapshot load.
        #[test]
        fn incremental_derived_values_equal_a_from_scratch_evaluation(
            writes in proptest::collection::vec(
                (proptest::bool::weighted(0.2), 0u8..3, 0u8..6, proptest::prelude::any::<u8>(), 0u8..7, 0u8..7),
                1..120),
            settle_at in proptest::collection::vec(0usize..120, 0..3),
        ) {
            let events = derived_events(&writes);
            let mut one = State::default();
            for e in &events {
                one.apply(e).expect("applies");
                assert_derived_from_scratch(&one);
            }
            let mut deferred = State::default();
            for (i, e) in events.iter().enumerate() {
                if settle_at.contains(&i) {
                    deferred.settle_indexes().expect("settles");
                }
                deferred.defer_indexes();
                deferred.apply(e).expect("applies");
            }
            deferred.settle_indexes().expect("settles");
            assert_derived_from_scratch(&deferred);
            proptest::prop_assert_eq!(&deferred.aggregates, &one.aggregates);
            let loaded = State::from_snapshot(&one.to_snapshot().expect("snapshot")).expect("loads");
            proptest::prop_assert_eq!(&loaded.aggregates, &one.aggregates);
            assert_derived_from_scratch(&loaded);
            for bp in ["dom", "svc", "dep"] {
                for e in one.entities_of(bp) {
                    let everything = &crate::derived::Everything;
                    proptest::prop_assert_eq!(
                        crate::derived::values(&one, e, everything),
                        crate::derived::values(&loaded, e, everything)
                    );
                }
            }
        }
    }

    /// Three blueprints (domain ← service ← deployment, services pointing at peers) whose aggregations use
    /// every kind of step (backwards, forwards, three hops) and a query, then the writes: `(delete, blueprint,
    /// id, number seed, relation target, second relation target)`.
    fn derived_events(writes: &[(bool, u8, u8, u8, u8, u8)]) -> Vec<Event> {
        let bp = |v| Change::BlueprintPut { blueprint: Box::new(serde_json::from_value(stamped(v)).expect("bp")) };
        let mut events = vec![
            event(
                1,
                bp(
                    json!({"identifier": "dom", "title": "Domain", "schema": {"properties": {"name": {"type": "string"}}}}),
                ),
            ),
            event(
                2,
                bp(
                    json!({"identifier": "svc", "title": "Service", "schema": {"properties": {"n": {"type": "number"}}},
                "relations": {"dom": {"target": "dom", "required": false, "many": false},
                              "peers": {"target": "svc", "required": false, "many": true}}}),
                ),
            ),
            event(
                3,
                bp(json!({"identifier": "dep", "title": "Deployment", "schema": {"properties": {
                "n": {"type": "number"}, "st": {"type": "string"}}},
                "relations": {"service": {"target": "svc", "required": false, "many": false},
                              "also": {"target": "svc", "required": false, "many": true}}})),
            ),
            event(
                4,
                bp(
                    json!({"identifier": "svc", "title": "Service", "schema": {"properties": {"n": {"type": "number"}}},
                "relations": {"dom": {"target": "dom", "required": false, "many": false},
                              "peers": {"target": "svc", "required": false, "many": true}},
                "mirrorProperties": {"domName": {"path": "dom.name"}},
                "aggregationProperties": {
                    "deps": {"target": "dep", "calculationSpec": {"func": "count", "calculationBy": "entities"},
                        "pathFilter": [{"fromBlueprint": "dep", "path": ["service"]}]},
                    "okSum": {"target": "dep", "calculationSpec": {"func": "sum", "calculationBy": "property", "property": "n"},
                        "pathFilter": [{"fromBlueprint": "dep", "path": ["service"]}],
                        "query": {"combinator": "and", "rules": [{"property": "st", "operator": "=", "value": "ok"}]}},
                    "median": {"target": "dep", "calculationSpec": {"func": "median", "calculationBy": "property", "property": "n"},
                        "pathFilter": [{"fromBlueprint": "dep", "path": ["service"]}]},
                    "avg": {"target": "dep", "calculationSpec": {"func": "average", "calculationBy": "property", "property": "n"},
                        "pathFilter": [{"fromBlueprint": "dep", "path": ["also"]}]},
                    "perDay": {"target": "dep", "calculationSpec": {"func": "average", "calculationBy": "entities",
                        "averageOf": "day", "measureTimeBy": "$updatedAt"},
                        "pathFilter": [{"fromBlueprint": "dep", "path": ["service"]}]},
                    "least": {"target": "dep", "calculationSpec": {"func": "min", "calculationBy": "property", "property": "n"},
                        "pathFilter": [{"fromBlueprint": "dep", "path": ["also"]}]},
                    "peerMax": {"target": "svc", "calculationSpec": {"func": "max", "calculationBy": "property", "property": "n"},
                        "pathFilter": [{"fromBlueprint": "svc", "path": ["peers"]}]}},
                "calculationProperties": {"label": {"type": "string",
                    "calculation": "\"\\(.properties.domName)/\\(.properties.deps)/\\(.properties.peerMax)\""}}}),
                ),
            ),
            event(
                5,
                bp(
                    json!({"identifier": "dom", "title": "Domain", "schema": {"properties": {"name": {"type": "string"}}},
                "aggregationProperties": {"all": {"target": "dep", "calculationSpec": {"func": "count", "calculationBy": "entities"},
                    "pathFilter": [{"fromBlueprint": "dep", "path": ["service", "dom"]}]},
                    // Through a many relation: a deployment may reach a domain through two services, so a
                    // service's write recomputes its domains rather than changing them by a delta.
                    "alsoAll": {"target": "dep", "calculationSpec": {"func": "count", "calculationBy": "entities"},
                    "pathFilter": [{"fromBlueprint": "dep", "path": ["also", "dom"]}]}}}),
                ),
            ),
            // A scorecard with local rules (a stored property, an aggregation, a relation) and one that is not
            // (a mirror): its ceilings are indexed, its levels judged. Its filter (on a stored property) leaves
            // some services out, whatever their aggregation values.
            event(
                6,
                scorecard_put(
                    "svc#card",
                    json!({"title": "Card", "filter": {"combinator": "and", "conditions": [
                        {"property": "n", "operator": "!=", "value": 3}]}, "rules": [
                    {"identifier": "n", "title": "n", "level": "Bronze", "query": {"combinator": "and", "conditions": [
                        {"property": "n", "operator": ">", "value": 1}]}},
                    {"identifier": "deps", "title": "deps", "level": "Silver", "query": {"combinator": "and", "conditions": [
                        {"property": "deps", "operator": ">", "value": 0}]}},
                    {"identifier": "dom", "title": "dom", "level": "Silver", "query": {"combinator": "and", "conditions": [
                        {"property": "domName", "operator": "isNotEmpty"}]}},
                    {"identifier": "ok", "title": "ok", "level": "Gold", "query": {"combinator": "and", "conditions": [
                        {"property": "okSum", "operator": ">=", "value": 2}, {"relation": "dom", "operator": "isNotEmpty"}]}}]}),
                ),
            ),
        ];
        let mut live: std::collections::BTreeSet<(u8, u8)> = std::collections::BTreeSet::new();
        for &(delete, b, id, seed, r1, r2) in writes {
            let (name, blueprint) = [("d", "dom"), ("s", "svc"), ("x", "dep")][b as usize];
            let identifier = format!("{name}{id}");
            let seq = events.len() as u64 + 1;
            let change = if delete && live.contains(&(b, id)) {
                live.remove(&(b, id));
                Change::EntityDeleted { blueprint: blueprint.into(), identifier }
            } else {
                live.insert((b, id));
                let target = |t: u8| {
                    if t >= 6 {
                        serde_json::Value::Null
                    } else {
                        json!(format!("{}{t}", if b == 2 { "s" } else { "d" }))
                    }
                };
                let (props, relations) = match b {
                    // A domain without a name fails the mirrored rule for every service of it.
                    0 if seed % 4 == 0 => (json!({}), json!({})),
                    0 => (json!({"name": format!("n{}", seed % 3)}), json!({})),
                    1 => (
                        json!({"n": seed % 7}),
                        json!({"dom": target(r1), "peers": [format!("s{}", r2 % 6), format!("s{}", r1 % 6)]}),
                    ),
                    _ => (
                        // Thirds: a sum in another order would differ in the last bit.
                        json!({"n": f64::from(seed % 5) / 3.0, "st": if seed % 2 == 0 { "ok" } else { "ko" }}),
                        json!({"service": target(r1), "also": [format!("s{}", r2 % 6), format!("s{}", (r1 + 1) % 6)]}),
                    ),
                };
                let mut entity =
                    stamped(json!({"identifier": identifier, "title": null, "blueprint": blueprint, "team": [],
                    "properties": props, "relations": relations}));
                // Deployments measured per day by when they were written.
                entity["updatedAt"] = json!(format!("2026-11-{:02}T10:00:00Z", 10 + seed % 9));
                Change::EntityPut { entity: Arc::new(serde_json::from_value(entity).expect("entity")) }
            };
            events.push(event(seq, change));
        }
        events
    }

    /// A search by scorecard level over more entities than the index gathers reads the ceilings lazily, in
    /// order, page after page, and finds exactly the entities at each level.
    #[test]
    fn pages_of_a_scorecard_level_are_read_from_the_ceilings_in_order() {
        let bp = |v| Change::BlueprintPut { blueprint: Box::new(serde_json::from_value(stamped(v)).expect("bp")) };
        let put =
            |bp: &str, id: String, props: serde_json::Value, rels: serde_json::Value| put_entity(bp, &id, props, rels);
        let mut changes = vec![
            bp(
                json!({"identifier": "team", "title": "Team", "schema": {"properties": {"oncall": {"type": "string"}}}}),
            ),
            bp(json!({"identifier": "svc", "title": "Service",
                "schema": {"properties": {"n": {"type": "number"}, "m": {"type": "number"}}},
                "relations": {"team": {"target": "team", "required": false, "many": false}},
                "mirrorProperties": {"oncall": {"path": "team.oncall"}}})),
            // Silver needs a rule on a mirrored value: read through `team`, judged once per team.
            scorecard_put(
                "svc#card",
                json!({"title": "Card", "rules": [
                {"identifier": "a", "title": "a", "level": "Bronze", "query": {"combinator": "and", "conditions": [
                    {"property": "n", "operator": ">", "value": 0}]}},
                {"identifier": "b", "title": "b", "level": "Silver", "query": {"combinator": "and", "conditions": [
                    {"property": "m", "operator": ">", "value": 0}]}},
                {"identifier": "o", "title": "o", "level": "Silver", "query": {"combinator": "and", "conditions": [
                    {"property": "oncall", "operator": "isNotEmpty"}]}},
                {"identifier": "c", "title": "c", "level": "Gold", "query": {"combinator": "and", "conditions": [
                    {"property": "n", "operator": ">", "value": 4}]}}]}),
            ),
        ];
        // Teams t0..t9, two without on-call; services of t0..t10 (t10 does not exist yet) or of none.
        for t in 0..10 {
            let props = if t % 4 == 3 { json!({}) } else { json!({"oncall": format!("p{t}")}) };
            changes.push(put("team", format!("t{t}"), props, json!({})));
        }
        for i in 0..2000u64 {
            let rels = if i % 13 == 0 { json!({}) } else { json!({"team": format!("t{}", i % 11)}) };
            changes.push(put("svc", format!("s{i:04}"), json!({"n": i % 7, "m": (i / 7) % 3}), rels));
        }
        let mut state = State::default();
        let apply = |state: &mut State, changes: Vec<Change>| {
            for change in changes {
                apply_next(state, change);
            }
        };
        apply(&mut state, changes);
        let now = berth_model::Timestamp::from_millis(0);
        let check = |state: &State| {
            let ctx = crate::search::Ctx::empty(state, now);
            for level in ["Basic", "Bronze", "Silver", "Gold"] {
                let want: Vec<String> = state
                    .entities_of("svc")
                    .filter(|e| crate::search::scorecard_value(&ctx, e, "card", None) == Some(json!(level)))
                    .map(|e| e.identifier.to_string())
                    .collect();
                let q = berth_model::query::Query::parse(&json!({"combinator": "and", "rules": [
                    {"scorecard": "card", "operator": "=", "value": level}]}))
                .expect("query");
                for page_size in [37, 500] {
                    let (mut found, mut from) = (Vec::new(), None::<String>);
                    loop {
                        let page =
                            crate::search::search_blueprint(state, "svc", Some(&q), now, from.as_deref(), page_size)
                                .expect("page");
                        found.extend(page.entities.iter().map(|e| e.identifier.to_string()));
                        match page.next {
                            Some(next) => from = Some(next),
                            None => break,
                        }
                    }
                    assert_eq!(found, want, "level {level}, pages of {page_size}");
                }
            }
        };
        check(&state);
        // The team the dangling services name appears; a team disappears; a team loses its on-call.
        apply(
            &mut state,
            vec![
                put("team", "t10".into(), json!({"oncall": "p10"}), json!({})),
                Change::EntityDeleted { blueprint: "team".into(), identifier: "t5".into() },
                put("team", "t1".into(), json!({}), json!({})),
            ],
        );
        check(&state);
    }

    /// An entity put of `bp`, stamped.
    fn put_entity(bp: &str, id: &str, props: serde_json::Value, rels: serde_json::Value) -> Change {
        let entity = stamped(json!({"identifier": id, "title": null, "blueprint": bp, "team": [],
            "properties": props, "relations": rels}));
        Change::EntityPut { entity: Arc::new(serde_json::from_value(entity).expect("entity")) }
    }

    /// Applies `change` as the state's next event.
    fn apply_next(state: &mut State, change: Change) {
        let seq = state.seq() + 1;
        state.apply(&event(seq, change)).expect("applies");
    }

    /// Services counting their deployments (`deps`), judged by the scorecard `svc#card` of `rules`, and the
    /// service `s` (`n` = 3) without deployments.
    fn services_counting_deployments(rules: Vec<serde_json::Value>) -> State {
        let bp = |v| Change::BlueprintPut { blueprint: Box::new(serde_json::from_value(stamped(v)).expect("bp")) };
        let changes = vec![
            bp(json!({"identifier": "svc", "title": "Service", "schema": {"properties": {"n": {"type": "number"}}}})),
            bp(json!({"identifier": "dep", "title": "Deployment", "schema": {"properties": {}},
                "relations": {"service": {"target": "svc", "required": false, "many": false}}})),
            bp(json!({"identifier": "svc", "title": "Service", "schema": {"properties": {"n": {"type": "number"}}},
                "aggregationProperties": {"deps": {"target": "dep",
                    "calculationSpec": {"func": "count", "calculationBy": "entities"}}}})),
            scorecard_put("svc#card", json!({"title": "Card", "rules": rules})),
            put_entity("svc", "s", json!({"n": 3}), json!({})),
        ];
        let mut state = State::default();
        for change in changes {
            apply_next(&mut state, change);
        }
        state
    }

    /// A deleted entity may still be pointed at: created again, it counts what points at it. What is noted
    /// as possibly pointed at is pruned to what still is once it grows, and a new entity nothing points at
    /// reads no sources at all.
    #[test]
    fn entities_pointed_at_while_missing_are_counted_when_created_and_the_rest_is_pruned() {
        let mut state = services_counting_deployments(vec![card_rule(
            "deployed",
            "Bronze",
            json!({"property": "deps", "operator": ">", "value": 0}),
        )]);
        // A deployment of a service that does not exist yet.
        apply_next(&mut state, put_entity("dep", "early", json!({}), json!({"service": "later"})));
        // Services created and deleted: each may be pointed at after, until the set is pruned.
        let many = UNRESOLVED_KEPT + 10;
        for i in 0..many {
            apply_next(&mut state, put_entity("svc", &format!("gone{i}"), json!({"n": 1}), json!({})));
        }
        apply_next(&mut state, put_entity("dep", "stays", json!({}), json!({"service": "gone0"})));
        for i in 0..many {
            let identifier = format!("gone{i}");
            apply_next(&mut state, Change::EntityDeleted { blueprint: "svc".into(), identifier });
        }
        // Pruned at its limit: what is left is what is missing and pointed at (two), plus the deletes since.
        assert!(state.unresolved.len() < 20, "{} noted", state.unresolved.len());
        assert!(state.unresolved.contains(&(Arc::from("svc"), Arc::from("later"))));
        assert!(state.unresolved.contains(&(Arc::from("svc"), Arc::from("gone0"))));
        for id in ["later", "gone0"] {
            apply_next(&mut state, put_entity("svc", id, json!({"n": 1}), json!({})));
            assert_eq!(state.aggregate_values("svc", id), Some(&vec![json!(1)]), "{id} counts its deployment");
        }
        crate::work_count::take_seeks();
        apply_next(&mut state, put_entity("svc", "new", json!({"n": 1}), json!({})));
        assert_eq!(
            crate::work_count::take_seeks(),
            0,
            "a new service nothing points at: its sources are not looked for"
        );
        assert_eq!(state.aggregate_values("svc", "new"), Some(&vec![json!(0)]));
        assert_derived_from_scratch(&state);
        // A batch (a replay) notes a few entities as fresh, not all it creates: each link made scans them.
        state.defer_indexes();
        for i in 0..100 {
            apply_next(&mut state, put_entity("svc", &format!("batch{i}"), json!({"n": 1}), json!({})));
            assert!(state.fresh.len() <= MAX_FRESH);
        }
        for i in (0..100).step_by(3) {
            let service = json!({"service": format!("batch{i}")});
            apply_next(&mut state, put_entity("dep", &format!("batch-dep{i}"), json!({}), service));
        }
        state.settle_indexes().expect("settles");
        assert_eq!(state.aggregate_values("svc", "batch0"), Some(&vec![json!(1)]));
        assert_eq!(state.aggregate_values("svc", "batch1"), Some(&vec![json!(0)]));
        assert_derived_from_scratch(&state);
    }

    /// A scorecard rule of one condition.
    fn card_rule(id: &str, level: &str, condition: serde_json::Value) -> serde_json::Value {
        json!({"identifier": id, "title": id, "level": level, "query": {"combinator": "and", "conditions": [condition]}})
    }

    /// The service `s`'s ceiling on `svc#card`, after checking every ceiling against a fresh judgement.
    fn ceiling_of_s(state: &State) -> Option<u8> {
        let card = state.card_levels("svc", "card").expect("indexed");
        let rebuilt = crate::levels::build(state);
        let fresh = rebuilt.get("svc").and_then(|g| g.card("card")).expect("indexed");
        assert_eq!(card.ceilings(), fresh.ceilings(), "as judged afresh");
        card.ceilings().into_iter().find(|(id, _)| *id == "s").map(|(_, c)| c)
    }

    /// A change of a service's aggregation values alone (a deployment written or deleted) judges again the
    /// rules that read them, and keeps the others' results: its level follows its deployments both ways.
    #[test]
    fn a_change_of_aggregation_values_alone_judges_again_the_rules_that_read_them() {
        // Bronze on a stored value; Silver and Gold each on the count, with a stored rule beside it.
        let mut state = services_counting_deployments(vec![
            card_rule("n", "Bronze", json!({"property": "n", "operator": ">", "value": 1})),
            card_rule("some", "Silver", json!({"property": "deps", "operator": ">", "value": 0})),
            card_rule("n3", "Silver", json!({"property": "n", "operator": ">", "value": 2})),
            card_rule("many", "Gold", json!({"property": "deps", "operator": ">", "value": 1})),
        ]);
        assert_eq!(ceiling_of_s(&state), Some(1), "no deployment: Bronze");
        let dep = |id: &str| put_entity("dep", id, json!({}), json!({"service": "s"}));
        apply_next(&mut state, dep("d1"));
        assert_eq!(ceiling_of_s(&state), Some(2), "one deployment: Silver");
        apply_next(&mut state, dep("d2"));
        assert_eq!(ceiling_of_s(&state), Some(3), "two: Gold");
        apply_next(&mut state, Change::EntityDeleted { blueprint: "dep".into(), identifier: "d1".into() });
        assert_eq!(ceiling_of_s(&state), Some(2), "one again: Silver");
        apply_next(&mut state, put_entity("dep", "d2", json!({}), json!({})));
        assert_eq!(ceiling_of_s(&state), Some(1), "its last one moved away: Bronze");
        // A write of the service itself judges it anew.
        apply_next(&mut state, put_entity("svc", "s", json!({"n": 2}), json!({})));
        apply_next(&mut state, dep("d3"));
        assert_eq!(ceiling_of_s(&state), Some(1), "n = 2 fails Silver's stored rule, whatever the count");
        // A count that moves without crossing what a rule asks (3 > 1 as 2 > 1 was) judges the service not
        // at all: only the deployment written is.
        apply_next(&mut state, dep("d4"));
        crate::work_count::take();
        apply_next(&mut state, dep("d5"));
        assert_eq!(crate::work_count::take(), 1, "the deployment alone is judged");
        assert_eq!(state.aggregate_values("svc", "s"), Some(&vec![json!(3)]));
        assert_eq!(ceiling_of_s(&state), Some(1));
    }

    /// A scorecard of more rules than a mark keeps results of is still indexed: its ceilings follow every
    /// change, each judged anew.
    #[test]
    fn a_scorecard_of_many_rules_is_indexed_and_judged_anew() {
        // 69 rules at Bronze on a stored value, one at Silver on the count: 70, more than 64.
        let mut rules: Vec<serde_json::Value> = (0..69)
            .map(|i| card_rule(&format!("n{i}"), "Bronze", json!({"property": "n", "operator": ">", "value": 1})))
            .collect();
        rules.push(card_rule("some", "Silver", json!({"property": "deps", "operator": ">", "value": 0})));
        let mut state = services_counting_deployments(rules);
        assert_eq!(ceiling_of_s(&state), Some(1), "no deployment: Bronze");
        apply_next(&mut state, put_entity("dep", "d1", json!({}), json!({"service": "s"})));
        assert_eq!(ceiling_of_s(&state), Some(3), "one deployment: Silver, and Gold (no rules) with it");
        apply_next(&mut state, Change::EntityDeleted { blueprint: "dep".into(), identifier: "d1".into() });
        assert_eq!(ceiling_of_s(&state), Some(1), "none again: Bronze");
        apply_next(&mut state, put_entity("svc", "s", json!({"n": 1}), json!({})));
        assert_eq!(ceiling_of_s(&state), Some(0), "n = 1 fails Bronze: Basic");
    }

    /// The four ordinary writes of `berth bench --standards` read a handful of entities to keep derived data
    /// current, however many the catalog holds: the deployment's service and domain change by a delta, a new
    /// service's deployments are read once, only the written service is judged again. A regression to a
    /// recount (a service's 30 deployments, the domain's 3,000) or to a rebuild of the levels (100 services) fails here, where
    /// the bench, which CI does not run, would only show it as a slower figure.
    #[test]
    fn ordinary_writes_read_a_handful_of_entities_whatever_the_catalog_holds() {
        let bp = |v| Change::BlueprintPut { blueprint: Box::new(serde_json::from_value(stamped(v)).expect("bp")) };
        let count = |name: &str, query: Option<serde_json::Value>| {
            let mut spec =
                json!({"target": "deployment", "calculationSpec": {"func": "count", "calculationBy": "entities"}});
            if let Some(q) = query {
                spec["query"] = q;
            }
            (name.to_string(), spec)
        };
        let mut service_aggs = serde_json::Map::new();
        for (name, spec) in [
            count("deploys", None),
            count(
                "failed",
                Some(
                    json!({"combinator": "and", "rules": [{"property": "status", "operator": "=", "value": "failed"}]}),
                ),
            ),
        ] {
            service_aggs.insert(name, spec);
        }
        service_aggs.insert(
            "medianDuration".into(),
            json!({"target": "deployment",
            "calculationSpec": {"func": "median", "calculationBy": "property", "property": "duration"}}),
        );
        let mut state = State::default();
        for change in [
            bp(
                json!({"identifier": "team", "title": "Team", "schema": {"properties": {"oncall": {"type": "string"}}}}),
            ),
            bp(
                json!({"identifier": "domain", "title": "Domain", "schema": {"properties": {"owner": {"type": "string"}}},
                "aggregationProperties": {"deploys": {"target": "deployment",
                    "calculationSpec": {"func": "count", "calculationBy": "entities"},
                    "pathFilter": [{"fromBlueprint": "deployment", "path": ["service", "system", "domain"]}]}}}),
            ),
            bp(json!({"identifier": "system", "title": "System", "schema": {"properties": {}},
                "relations": {"domain": {"target": "domain", "required": false, "many": false}}})),
            bp(json!({"identifier": "service", "title": "Service",
                "schema": {"properties": {"language": {"type": "string"}, "replicas": {"type": "number"}}},
                "relations": {"team": {"target": "team", "required": false, "many": false},
                    "system": {"target": "system", "required": false, "many": false}},
                "mirrorProperties": {"oncall": {"path": "team.oncall"}, "domainOwner": {"path": "system.domain.owner"}},
                "aggregationProperties": service_aggs})),
            bp(json!({"identifier": "deployment", "title": "Deployment", "schema": {"properties": {
                    "status": {"type": "string"}, "duration": {"type": "number"}}},
                "relations": {"service": {"target": "service", "required": true, "many": false}}})),
            scorecard_put(
                "service#card",
                json!({"title": "Card", "rules": [
                card_rule("lang", "Bronze", json!({"property": "language", "operator": "=", "value": "Go"})),
                card_rule("oncall", "Silver", json!({"property": "oncall", "operator": "isNotEmpty"})),
                card_rule("deploys", "Silver", json!({"property": "deploys", "operator": ">", "value": 10})),
                card_rule("healthy", "Gold", json!({"property": "failed", "operator": "<", "value": 5}))]}),
            ),
            put_entity("team", "t0", json!({"oncall": "pager"}), json!({})),
            put_entity("domain", "d0", json!({"owner": "ann"}), json!({})),
        ] {
            apply_next(&mut state, change);
        }
        for s in 0..4 {
            apply_next(&mut state, put_entity("system", &format!("sys{s}"), json!({}), json!({"domain": "d0"})));
        }
        let service = |i: usize| {
            put_entity(
                "service",
                &format!("svc{i:03}"),
                json!({"language": "Go", "replicas": i % 5}),
                json!({"team": "t0", "system": format!("sys{}", i % 4)}),
            )
        };
        for i in 0..100 {
            apply_next(&mut state, service(i));
        }
        let deployment = |d: usize, svc: usize| {
            put_entity(
                "deployment",
                &format!("dep{d:05}"),
                json!({"status": if d.is_multiple_of(7) { "failed" } else { "success" }, "duration": (d % 300) as f64}),
                json!({"service": format!("svc{svc:03}")}),
            )
        };
        for d in 0..3000 {
            apply_next(&mut state, deployment(d, d % 100));
        }
        assert_eq!(state.aggregate_values("domain", "d0").map(|v| v[0].clone()), Some(json!(3000)));
        crate::work_count::take();
        let writes = [
            ("deployment write", deployment(42, 42)),
            ("deployment moved", deployment(43, 7)),
            ("service write", service(5)),
            (
                "service created",
                put_entity("service", "svc-new", json!({"language": "Rust"}), json!({"team": "t0", "system": "sys1"})),
            ),
        ];
        let mut read = Vec::new();
        for (name, change) in writes {
            apply_next(&mut state, change);
            read.push((name, crate::work_count::take()));
        }
        for (name, n) in &read {
            assert!(*n <= 10, "a {name} read {n} entities to keep derived data current: {read:?}");
        }
        assert_derived_from_scratch(&state);
        assert!(state.linked.is_empty(), "the targets a write found are forgotten at its refresh");
        // A batch (a replay): deployments moved while their services move to a system of another domain. The
        // walks back read the services found when the links were made, never a version written over since.
        apply_next(&mut state, put_entity("domain", "d1", json!({"owner": "bob"}), json!({})));
        apply_next(&mut state, put_entity("system", "sys3", json!({}), json!({"domain": "d1"})));
        state.defer_indexes();
        for d in 0..40 {
            apply_next(&mut state, deployment(d, (d * 3) % 100));
            assert!(state.linked.len() <= MAX_LINKED);
        }
        for i in (0..100).step_by(9) {
            let moved = json!({"team": "t0", "system": "sys3"});
            apply_next(&mut state, put_entity("service", &format!("svc{i:03}"), json!({"language": "Go"}), moved));
        }
        for d in 40..60 {
            apply_next(&mut state, deployment(d, (d * 9) % 100));
        }
        apply_next(&mut state, Change::EntityDeleted { blueprint: "service".into(), identifier: "svc027".into() });
        state.settle_indexes().expect("settles");
        assert!(state.linked.is_empty());
        assert_derived_from_scratch(&state);
    }

    /// Every owner's kept aggregation values equal the values computed from scratch, and no other entity has any.
    fn assert_derived_from_scratch(state: &State) {
        // Every missing entity a relation points at is known to be pointed at (so one created later is not
        // taken for one without sources), and no entity is left fresh between refreshes.
        if !state.has_deferred_indexes() {
            for (bp, links) in &state.incoming {
                for link in links {
                    if state.entity(bp, &link.target).is_none() {
                        let key = (Arc::clone(bp), Arc::clone(&link.target));
                        assert!(
                            state.unresolved.contains(&key),
                            "{bp}/{} is pointed at, missing, not noted",
                            link.target
                        );
                    }
                }
            }
            assert!(state.fresh.is_empty(), "entities left fresh: {:?}", state.fresh);
        }
        let catalog = Arc::clone(&state.derived);
        for (bp, spec) in catalog.owners() {
            // A definition the catalog refused computes null on both sides: it would compare nothing.
            for agg in &spec.aggs {
                assert!(agg.error.is_none(), "{bp}.{} is refused: {:?}", agg.name, agg.error);
            }
            for e in state.entities_of(bp) {
                let fresh: Vec<serde_json::Value> =
                    spec.aggs.iter().map(|a| a.compute(state, e, &crate::derived::Everything)).collect();
                assert_eq!(
                    state.aggregate_values(bp, &e.identifier).map(|v| v.as_slice()),
                    Some(fresh.as_slice()),
                    "{bp}/{}",
                    e.identifier
                );
            }
            let kept = state.aggregates.get(bp).map_or(0, |m| m.len());
            assert_eq!(kept, state.entity_count(bp), "{bp}: values kept for entities that no longer exist");
        }
        // Scorecard ceilings: as a fresh judgement computes them, never below the level, and a search by
        // level (planned from them) finds exactly the entities at that level.
        let Some(card) = state.card_levels("svc", "card") else { return };
        let fresh = crate::levels::build(state);
        let rebuilt = fresh.get("svc").expect("indexed");
        assert_eq!(card.ceilings(), rebuilt.card("card").expect("indexed").ceilings());
        let kept = state.levels.get("svc").expect("indexed");
        assert_eq!(kept.ceilings(), rebuilt.ceilings());
        // Each rule result a mark keeps (some judged before the entity's aggregation values last changed) is
        // what a fresh judgement finds, where both judged the rule.
        let again = rebuilt.marks();
        for (id, marks) in kept.marks() {
            let Some(fresh) = again.get(id) else { continue };
            for (m, f) in marks.iter().zip(fresh.iter()) {
                if let (Some(m), Some(f)) = (m, f) {
                    assert!(m.agrees_with(f), "svc/{id}: rule results {m:?}, judged afresh {f:?}");
                }
            }
        }
        let ctx = crate::search::Ctx::empty(state, berth_model::Timestamp::from_millis(0));
        for level in ["Basic", "Bronze", "Silver", "Gold"] {
            let want: Vec<&str> = state
                .entities_of("svc")
                .filter(|e| crate::search::scorecard_value(&ctx, e, "card", None) == Some(json!(level)))
                .map(|e| &*e.identifier)
                .collect();
            let q = berth_model::query::Query::parse(&json!({"combinator": "and", "rules": [
                {"scorecard": "card", "operator": "=", "value": level}]}))
            .expect("query");
            let found = crate::search::search_blueprint(
                state,
                "svc",
                Some(&q),
                berth_model::Timestamp::from_millis(0),
                None,
                100,
            )
            .expect("searches");
            let found: Vec<&str> = found.entities.iter().map(|e| &*e.identifier).collect();
            assert_eq!(found, want, "level {level}");
        }
        for e in state.entities_of("svc") {
            let level =
                crate::search::scorecard_value(&ctx, e, "card", None).and_then(|v| v.as_str().map(str::to_string));
            let rank = level.and_then(|l| card.rank(&l));
            let ceiling = card.ceilings().into_iter().find(|(id, _)| *id == &*e.identifier).map(|(_, c)| c);
            assert!(rank <= ceiling, "{}: level {rank:?} above its ceiling {ceiling:?}", e.identifier);
        }
    }

    #[test]
    fn a_state_loaded_without_property_indexes_answers_by_scanning_then_builds_them() {
        let writes: Vec<Write> = (0..400u32)
            .map(|i| (i % 9 == 4, (i % 3) as u8, (i * 5 % 24) as u8, (i % 97) as u8, Some((i % 19) as u8)))
            .collect();
        let (setup, events) = deferral_events(&writes);
        let (first, rest) = events.split_at(events.len() / 2);
        let mut full = State::default();
        for e in setup.iter().chain(first) {
            full.apply(e).expect("applies");
        }
        let snapshot = full.to_snapshot().expect("serialises");
        let mut loaded = State::from_snapshot_without_property_indexes(&snapshot).expect("loads");
        assert!(loaded.property_indexes_pending());
        assert!(loaded.property_index("svc", "lang").is_none() && !loaded.is_counted("svc", "lang"));
        assert_eq!(loaded.incoming, full.incoming, "the reverse relations are built at once");
        // Writes meanwhile (deferred or not) leave the property indexes alone; searches scan.
        loaded.defer_indexes();
        for e in rest {
            full.apply(e).expect("applies");
            loaded.apply(e).expect("applies while pending");
        }
        loaded.settle_indexes().expect("settles");
        let now = berth_model::Timestamp::from_millis(0);
        for q in [
            json!({"combinator": "and", "rules": [{"property": "lang", "operator": "=", "value": "go"}]}),
            json!({"combinator": "and", "rules": [{"property": "n", "operator": ">", "value": 4}]}),
            json!({"combinator": "and", "rules": [{"property": "tags", "operator": "containsAny", "value": ["t1"]}]}),
        ] {
            let q = berth_model::query::Query::parse(&q).expect("a query");
            let ids = |st: &State| -> Vec<String> {
                crate::search::search_blueprint(st, "svc", Some(&q), now, None, 1000)
                    .expect("searches")
                    .entities
                    .iter()
                    .map(|e| e.identifier.to_string())
                    .collect()
            };
            let scanned: Vec<String> = crate::search::scan(&full, "svc", &q, now)
                .expect("scans")
                .iter()
                .map(|e| e.identifier.to_string())
                .collect();
            assert!(!scanned.is_empty());
            assert_eq!(ids(&loaded), scanned, "pending: by scanning");
            assert_eq!(ids(&full), scanned, "indexed");
        }
        loaded.build_property_indexes().expect("builds");
        assert!(!loaded.property_indexes_pending());
        assert_same_indexes(&full, &loaded);
    }

    #[test]
    fn deferring_settles_before_anything_but_entity_writes() {
        let (setup, events) = deferral_events(&[(false, 0, 1, 1, None), (false, 0, 2, 2, None)]);
        let mut state = State::default();
        state.apply(&setup[0]).expect("applies");
        state.defer_indexes();
        state.apply(&setup[1]).expect("a blueprint settles first");
        state.apply(&events[0]).expect("applies");
        assert!(state.has_deferred_indexes());
        assert!(state.property_index("svc", "lang").is_none_or(|s| s.is_empty()), "not yet visible");
        state.settle_indexes().expect("settles");
        assert_eq!(state.property_index("svc", "lang").map(|s| s.len()), Some(1));
    }

    #[test]
    fn chunked_snapshots_load_whatever_the_chunk_size() {
        let state = state_with(50);
        let reference = state.to_snapshot().expect("snapshot");
        for size in [1, 7, 50, 1000] {
            let bytes = state.to_snapshot_in(size).expect("snapshot");
            let loaded = State::from_snapshot(&bytes).expect("loads");
            assert_eq!(loaded.to_snapshot().expect("snapshot"), reference, "chunks of {size}");
            assert_eq!(loaded.incoming("svc", "s010").count(), 1);
            assert_eq!(loaded.value_counts("svc", "lang").map(|c| c.len()), Some(2));
        }
    }

    /// Entities share one copy of each writer's name, whether applied from the log or loaded from a snapshot.
    #[test]
    fn writer_names_are_shared() {
        let shared = |state: &State| {
            let all: Vec<&Arc<Entity>> = state.entities_of("svc").collect();
            all.windows(2).all(|w| Arc::ptr_eq(&w[0].created_by, &w[1].created_by))
                && all.iter().all(|e| Arc::ptr_eq(&e.created_by, &e.updated_by))
        };
        let state = state_with(10);
        assert!(shared(&state));
        assert!(Arc::ptr_eq(&state.intern("me"), &state.entities_of("svc").next().expect("one").created_by));
        let loaded = State::from_snapshot(&state.to_snapshot().expect("snapshot")).expect("loads");
        assert!(shared(&loaded));
    }

    #[test]
    fn the_shared_names_are_bounded() {
        let mut state = State::default();
        for i in 0..MAX_SHARED_NAMES + 50 {
            state.remember_name(&Arc::from(format!("agent/{i}").as_str()));
        }
        assert_eq!(state.names.len(), MAX_SHARED_NAMES);
        // A name past the cap is still answered, as an unshared copy.
        assert_eq!(&*state.intern("agent/99999"), "agent/99999");
    }

    #[test]
    fn snapshots_of_the_first_layout_still_load() {
        let state = state_with(20);
        let data = SnapshotData {
            format: 1,
            seq: state.seq,
            blueprints: state.blueprints.values().map(|b| (*b.def).clone()).collect(),
            entities: state.entities.values().flat_map(|m| m.values().cloned()).collect(),
            chunks: Vec::new(),
            credentials: Vec::new(),
            teams: Vec::new(),
            users: Vec::new(),
            permissions: Vec::new(),
            signing_key: None,
            definitions: Vec::new(),
            version_chunks: None,
            versions_from: 0,
            refusals_from: None,
            version_rows: Vec::new(),
        };
        let old = serde_json::to_vec(&data).expect("serialises");
        let loaded = State::from_snapshot(&old).expect("loads");
        assert_eq!(loaded.digest(), state.digest());
        // A snapshot from before the version index: the index covers only what follows it.
        assert_eq!(loaded.versions("svc", "s000"), (None, state.seq + 1));
        assert_eq!(loaded.entity_events(None, "s000"), (Vec::new(), state.seq + 1));
    }

    #[test]
    fn a_snapshot_states_its_format_and_a_newer_one_is_refused_whole() {
        let state = state_with(5);
        let bytes = state.to_snapshot().expect("snapshot");
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).to_string();
        assert!(text.contains(&format!("{{\"format\":{SNAPSHOT_FORMAT},")), "{text}");
        // Without the field (written before it was recorded): format 1.
        assert_eq!(State::from_snapshot(&bytes).expect("loads").digest(), state.digest());
        // A newer format, whose header this Berth would not even understand: refused, saying why.
        let newer = br#"{"format":2,"seq":"not what this Berth expects"}"#;
        let err = State::from_snapshot(newer).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("newer Berth") && err.contains("snapshot format 2"), "{err}");
        let mut chunked = SNAPSHOT_MAGIC.to_vec();
        chunked.extend_from_slice(format!("{}\n", newer.len()).as_bytes());
        chunked.extend_from_slice(newer);
        let err = State::from_snapshot(&chunked).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("newer Berth"), "{err}");
    }

    #[test]
    fn refused_entity_writes_are_indexed_with_the_entity_and_survive_snapshots() {
        let mut state = state_with(3);
        let refuse = |identifier: &str| Change::Refused {
            resource: "entity".into(),
            action: "CREATE".into(),
            blueprint: Some("svc".into()),
            identifier: Some(identifier.into()),
            code: Some(berth_model::ErrorCode::InvalidRequest),
            status: None,
            message: "no".into(),
        };
        let first = state.seq + 1;
        state.apply(&event(first, refuse("s001"))).expect("refusal");
        state.apply(&event(first + 1, refuse("never"))).expect("refusal of an entity that never existed");
        let app = Change::Refused {
            resource: "app".into(),
            action: "CREATE".into(),
            blueprint: Some("svc".into()),
            identifier: Some("s001".into()),
            code: None,
            status: Some(403),
            message: "no".into(),
        };
        state.apply(&event(first + 2, app)).expect("refusal of something else");
        let (seqs, from) = state.entity_events(Some("svc"), "s001");
        assert_eq!((seqs.len(), seqs.last(), from), (2, Some(&first), 0), "the write and the refusal: {seqs:?}");
        assert_eq!(state.entity_events(None, "never").0, vec![first + 1]);
        // Readers of versions see the refusal's number and skip it; a snapshot keeps it.
        let loaded = State::from_snapshot(&state.to_snapshot().expect("snapshot")).expect("loads");
        assert_eq!(loaded.entity_events(Some("svc"), "s001"), (seqs, 0));
    }

    #[test]
    fn the_version_index_follows_writes_and_deletes_and_survives_snapshots() {
        let mut state = state_with(3);
        let (seqs, from) = state.versions("svc", "s001");
        assert_eq!(from, 0);
        let created = seqs.expect("indexed").seqs();
        assert_eq!(created.len(), 1);
        let seq = state.seq + 1;
        state
            .apply(&event(seq, Change::EntityDeleted { blueprint: "svc".into(), identifier: "s001".into() }))
            .expect("delete");
        let seqs: Vec<u64> = state.versions("svc", "s001").0.expect("kept after delete").seqs();
        assert_eq!(seqs, vec![created[0], seq]);
        for chunk in [1, 2, SNAPSHOT_CHUNK] {
            let loaded = State::from_snapshot(&state.to_snapshot_in(chunk).expect("snapshot")).expect("loads");
            let again: Vec<u64> = loaded.versions("svc", "s001").0.expect("loaded").seqs();
            assert_eq!(again, seqs, "chunks of {chunk}");
            assert_eq!(loaded.to_snapshot().expect("snapshot"), state.to_snapshot().expect("snapshot"));
        }
    }

    #[test]
    fn damaged_chunked_snapshots_are_refused_not_misread() {
        let bytes = state_with(30).to_snapshot_in(7).expect("snapshot");
        for cut in [SNAPSHOT_MAGIC.len() + 1, SNAPSHOT_MAGIC.len() + 4, bytes.len() / 2, bytes.len() - 1] {
            assert!(State::from_snapshot(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.extend_from_slice(b"[]");
        assert!(State::from_snapshot(&extra).is_err(), "trailing bytes");
        let mut flipped = bytes;
        let last = flipped.len() - 2;
        flipped[last] = b'{';
        assert!(State::from_snapshot(&flipped).is_err(), "a damaged chunk");
    }
}
