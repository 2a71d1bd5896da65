//! One kind's immutable snapshot: its objects, serialized, in blocks of about
//! [`BLOCK_BYTES`] ordered by key (`namespace/name`), each block one text of its items
//! joined by commas plus a fixed-size index entry per item.
//!
//! - `get` is two binary searches; a by-namespace list is a contiguous run of items, so
//!   its answer is a header, a slice or two of block text, and `]}`: no object is
//!   copied on the host, and the cost follows the answer, not the kind's size.
//! - A change rebuilds only the blocks it falls in; the others are shared with the
//!   previous snapshot. A whole list builds every block once.
//! - Selectors read an item's key (field selectors) and the labels' place in its text
//!   (label selectors), never the whole object.
//!
//! Over 400 lines on purpose: the block layout, the lookups that rely on it and the
//! incremental rebuild that keeps it are one invariant, read best in one place.

mod labels;

use std::cmp::Ordering;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use guest_adapter::selector::{FieldSelector, LabelSelector, ObjectFields};
use guest_adapter::{Answer, KindSnapshot, ResourceKind, Scope};
use serde_json::Value;

use super::object::{Changes, ObjectKey, PreparedObject};
use labels::Labels;

/// A block is closed once its text reaches this size: large enough that a kind of
/// 100,000 objects is ~1,000 blocks, small enough that rebuilding one is a few µs.
pub const BLOCK_BYTES: usize = 64 << 10;

/// Objects in key order, one text.
struct Block {
    /// The items' JSON, joined by commas.
    text: Bytes,
    /// The items' keys, one after the other.
    keys: String,
    items: Vec<Item>,
}

/// One object of a block: where its key ends in `keys` (it starts where the previous one
/// ends), and its text and its labels' text as offsets in the block's `text` (a block is
/// far below 4 GiB).
#[derive(Debug, Clone, Copy)]
struct Item {
    key_end: u32,
    start: u32,
    end: u32,
    labels_start: u32,
    labels_end: u32,
}

/// One item's parts, as blocks are built from.
struct ItemParts<'a> {
    key: &'a str,
    json: &'a [u8],
    labels: Range<usize>,
}

impl Block {
    fn key_range(&self, index: usize) -> Range<usize> {
        let start = match index {
            0 => 0,
            i => self.items[i - 1].key_end as usize,
        };
        start..self.items[index].key_end as usize
    }

    fn key(&self, index: usize) -> &str {
        &self.keys[self.key_range(index)]
    }

    fn first_key(&self) -> &str {
        self.key(0)
    }

    fn json(&self, item: &Item) -> &[u8] {
        &self.text[item.start as usize..item.end as usize]
    }

    fn parts(&self) -> impl Iterator<Item = ItemParts<'_>> {
        self.items.iter().enumerate().map(|(i, item)| ItemParts {
            key: self.key(i),
            json: self.json(item),
            labels: (item.labels_start - item.start) as usize
                ..(item.labels_end - item.start) as usize,
        })
    }

    /// The first item whose key is not below `key`.
    fn lower_bound(&self, key: &str) -> usize {
        partition(self.items.len(), |i| self.key(i) < key)
    }

    /// The labels of an item, for a label selector: parsed from their place in the text.
    fn labels(&self, item: &Item) -> Labels<'_> {
        Labels::parse(&self.text[item.labels_start as usize..item.labels_end as usize])
    }
}

/// Builds blocks of about [`BLOCK_BYTES`] from items in key order.
#[derive(Default)]
struct BlockBuilder {
    done: Vec<Arc<Block>>,
    text: Vec<u8>,
    keys: String,
    items: Vec<Item>,
}

impl BlockBuilder {
    fn push(&mut self, parts: ItemParts<'_>) {
        if !self.items.is_empty() {
            self.text.push(b',');
        }
        let start = self.text.len();
        self.text.extend_from_slice(parts.json);
        self.keys.push_str(parts.key);
        let offset = |at: usize| u32::try_from(at).expect("a block stays far below 4 GiB");
        self.items.push(Item {
            key_end: offset(self.keys.len()),
            start: offset(start),
            end: offset(self.text.len()),
            labels_start: offset(start + parts.labels.start),
            labels_end: offset(start + parts.labels.end),
        });
        if self.text.len() >= BLOCK_BYTES {
            self.close();
        }
    }

    fn close(&mut self) {
        if self.items.is_empty() {
            return;
        }
        let mut text = std::mem::take(&mut self.text);
        text.shrink_to_fit();
        let mut keys = std::mem::take(&mut self.keys);
        keys.shrink_to_fit();
        let mut items = std::mem::take(&mut self.items);
        items.shrink_to_fit();
        self.done.push(Arc::new(Block {
            text: Bytes::from(text),
            keys,
            items,
        }));
    }

    fn finish(mut self) -> Vec<Arc<Block>> {
        self.close();
        self.done
    }
}

/// A kind's objects at one moment. Immutable: changes make a new one.
pub struct KindIndex {
    kind: ResourceKind,
    scope: Scope,
    resource_version: u64,
    /// `{"apiVersion":..,"kind":"..List","metadata":{"resourceVersion":".."},"items":[`
    header: Bytes,
    blocks: Vec<Arc<Block>>,
    len: usize,
}

impl fmt::Debug for KindIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KindIndex")
            .field("kind", &self.kind)
            .field("objects", &self.len)
            .field("blocks", &self.blocks.len())
            .finish()
    }
}

impl KindIndex {
    /// An empty kind.
    pub fn new(kind: ResourceKind, scope: Scope) -> Self {
        Self::with_blocks(kind, scope, 0, Vec::new())
    }

    fn with_blocks(
        kind: ResourceKind,
        scope: Scope,
        resource_version: u64,
        blocks: Vec<Arc<Block>>,
    ) -> Self {
        let header = format!(
            r#"{{"apiVersion":{},"kind":{},"metadata":{{"resourceVersion":"{resource_version}"}},"items":["#,
            Value::from(kind.api_version.as_str()),
            Value::from(format!("{}List", kind.kind)),
        );
        let len = blocks.iter().map(|block| block.items.len()).sum();
        Self {
            kind,
            scope,
            resource_version,
            header: Bytes::from(header),
            blocks,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    /// What this snapshot keeps on the heap: block texts, keys and index entries.
    pub fn held_bytes(&self) -> usize {
        self.blocks
            .iter()
            .map(|block| {
                block.text.len()
                    + block.keys.capacity()
                    + block.items.capacity() * size_of::<Item>()
                    + size_of::<Block>()
            })
            .sum::<usize>()
            + self.blocks.capacity() * size_of::<Arc<Block>>()
    }

    /// The snapshot after `changes`; `resource_version` is the newest the changes
    /// carried, and the snapshot keeps the highest it has seen. Only the blocks the
    /// changes fall in are rebuilt.
    pub fn apply(&self, changes: &Changes, resource_version: u64) -> Self {
        let resource_version = self.resource_version.max(resource_version);
        let mut blocks = Vec::with_capacity(self.blocks.len() + 1);
        let mut changes = changes.iter().peekable();
        // The block a change falls in is the last whose first key is not above it; the
        // changes below the first block's first key go to the first block.
        for (i, block) in self.blocks.iter().enumerate() {
            let next_first = self.blocks.get(i + 1).map(|next| next.first_key());
            let mut mine = Vec::new();
            while let Some((key, _)) = changes.peek()
                && next_first.is_none_or(|next| key.as_str() < next)
            {
                mine.push(changes.next().expect("peeked"));
            }
            if mine.is_empty() {
                blocks.push(block.clone());
                continue;
            }
            let mut builder = BlockBuilder::default();
            merge(block.parts(), mine.into_iter(), &mut builder);
            blocks.extend(builder.finish());
        }
        if self.blocks.is_empty() {
            let mut builder = BlockBuilder::default();
            merge(std::iter::empty(), changes, &mut builder);
            blocks = builder.finish();
        }
        Self::with_blocks(self.kind.clone(), self.scope, resource_version, blocks)
    }

    /// Where `key` is, or would be: a block and an item in it.
    fn locate(&self, key: &str) -> (usize, usize) {
        let block =
            partition(self.blocks.len(), |b| self.blocks[b].first_key() <= key).saturating_sub(1);
        match self.blocks.get(block) {
            Some(found) => (block, found.lower_bound(key)),
            None => (0, 0),
        }
    }

    /// Appends the items of `block` from `range` that the selectors select, as few
    /// slices of its text as possible (consecutive items share one slice).
    fn select(
        block: &Block,
        range: Range<usize>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        answer: &mut Answer,
        first: &mut bool,
    ) {
        if range.is_empty() {
            return;
        }
        if labels.is_empty() && fields.is_empty() {
            // Everything in the range: one slice, commas included.
            let (start, end) = (
                block.items[range.start].start,
                block.items[range.end - 1].end,
            );
            if !std::mem::take(first) {
                answer.push_static(",");
            }
            answer.push(block.text.slice(start as usize..end as usize));
            return;
        }
        let mut run: Option<(usize, usize)> = None;
        let mut flush = |run: &mut Option<(usize, usize)>, answer: &mut Answer| {
            if let Some((start, end)) = run.take() {
                if !std::mem::take(first) {
                    answer.push_static(",");
                }
                answer.push(block.text.slice(start..end));
            }
        };
        for index in range {
            let item = &block.items[index];
            let selected = (fields.is_empty() || {
                let (namespace, name) = ObjectKey::split(block.key(index));
                fields.matches(ObjectFields { namespace, name })
            }) && (labels.is_empty() || {
                let found = block.labels(item);
                labels.matches(|key| found.get(key))
            });
            if selected {
                let (start, end) = (item.start as usize, item.end as usize);
                run = Some(run.map_or((start, end), |(run_start, _)| (run_start, end)));
            } else {
                flush(&mut run, answer);
            }
        }
        flush(&mut run, answer);
    }
}

impl KindSnapshot for KindIndex {
    fn kind(&self) -> &ResourceKind {
        &self.kind
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    fn list(
        &self,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Answer {
        // A whole scan has two pieces a block at most; a namespace's run, a few.
        let pieces = match namespace {
            None => 2 * self.blocks.len() + 2,
            Some(_) => 8,
        };
        let mut answer = Answer::with_capacity(pieces);
        answer.push(self.header.clone());
        let mut first = true;
        match namespace {
            None => {
                for block in &self.blocks {
                    Self::select(
                        block,
                        0..block.items.len(),
                        labels,
                        fields,
                        &mut answer,
                        &mut first,
                    );
                }
            }
            Some(namespace) => {
                // The namespace's items are one run of keys: from `namespace/` on, for
                // as long as they start with it.
                let (mut block, mut start) = self.locate(ObjectKey::new(namespace, "").as_str());
                while let Some(current) = self.blocks.get(block) {
                    let end = start
                        + (start..current.items.len())
                            .take_while(|&i| ObjectKey::split(current.key(i)).0 == namespace)
                            .count();
                    Self::select(current, start..end, labels, fields, &mut answer, &mut first);
                    if end < current.items.len() {
                        break;
                    }
                    (block, start) = (block + 1, 0);
                }
            }
        }
        answer.push_static("]}");
        answer
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Answer> {
        let key = ObjectKey::new(namespace, name);
        let (block, index) = self.locate(key.as_str());
        let block = self.blocks.get(block)?;
        let item = block.items.get(index)?;
        (block.key(index) == key.as_str())
            .then(|| Answer::whole(block.text.slice(item.start as usize..item.end as usize)))
    }
}

/// Merges a block's items with the changes that fall in it, both in key order.
fn merge<'a>(
    current: impl Iterator<Item = ItemParts<'a>>,
    changes: impl Iterator<Item = (&'a ObjectKey, &'a Option<PreparedObject>)>,
    builder: &mut BlockBuilder,
) {
    let mut current = current.peekable();
    let mut changes = changes.peekable();
    loop {
        let order = match (current.peek(), changes.peek()) {
            (None, None) => return,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(item), Some((key, _))) => item.key.cmp(key.as_str()),
        };
        if order != Ordering::Greater {
            let item = current.next().expect("peeked");
            if order == Ordering::Less {
                builder.push(item);
                continue;
            }
        }
        // A change: the new object, or nothing for a deletion.
        let (key, object) = changes.next().expect("peeked");
        if let Some(object) = object {
            builder.push(ItemParts {
                key: key.as_str(),
                json: &object.json,
                labels: object.labels.clone(),
            });
        }
    }
}

/// The first index in `0..len` for which `below` is false (`below` is true, then false).
fn partition(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut low, mut high) = (0, len);
    while low < high {
        let middle = low + (high - low) / 2;
        if below(middle) {
            low = middle + 1;
        } else {
            high = middle;
        }
    }
    low
}

#[cfg(test)]
mod tests;
