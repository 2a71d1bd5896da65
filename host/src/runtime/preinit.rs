//! Pre-initialization, as Wizer does it: a module's start-up code runs once when the
//! policy is loaded, and every evaluation starts from a module whose memory and globals
//! are what that start-up left. A fresh instance then costs a copy-on-write mapping
//! instead of a run of the guest's runtime set-up and the memory growth that comes with
//! it.
//!
//! The module keeps its code, imports, exports, tables and custom sections byte for byte;
//! only its memory size, data segments, mutable globals and start function change. A
//! module is left alone, and initialized on every instantiation as before, when its state
//! cannot be captured whole: an imported or shared memory, more than one memory, passive
//! data, code that can change a table (whose contents are not captured), or globals of
//! reference type. The caller also keeps the ordinary start-up when start-up fails, exits,
//! reads a clock or makes a waPC host call: what it would capture would not hold for the
//! next evaluation. Random seeds drawn by start-up are drawn once per load.

use anyhow::Context;

use super::error::NotPreInitialized;
use std::ops::Range;
use wasm_encoder::{
    ConstExpr, DataCountSection, DataSection, ExportKind, ExportSection, GlobalSection, Ieee32,
    Ieee64, MemorySection, RawSection,
};
use wasmparser::{GlobalType, MemoryType, Operator, Parser, Payload, TypeRef, ValType};
use wasmtime::Val;

/// Names under which the instrumented module exports what the snapshot reads. They are
/// only ever seen by the copy that runs start-up.
const MEMORY_EXPORT: &str = "policy-server:pre-init:memory";
const GLOBAL_EXPORT_PREFIX: &str = "policy-server:pre-init:global:";

/// Zero runs at least this long split a data segment; shorter ones stay inside it.
const SEGMENT_GAP_BYTES: usize = 1024;

/// Far below wasmtime's limit of 100,000 data segments per module.
const MAX_SEGMENTS: usize = 1_000;

/// What a snapshot needs to know of the original module.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Globals the module imports: they come first in the global index space.
    imported_globals: u32,
    /// Index of each mutable global the module defines, in the global index space.
    mutable_globals: Vec<u32>,
}

/// The original module, with exports added so its memory and mutable globals can be read
/// after start-up.
pub(crate) struct Instrumented {
    pub(crate) plan: Plan,
    pub(crate) wasm: Vec<u8>,
}

impl Plan {
    /// Export names of the values a snapshot needs, in the order [`snapshot`] takes them.
    pub(crate) fn global_exports(&self) -> impl Iterator<Item = String> + '_ {
        self.mutable_globals
            .iter()
            .map(|index| format!("{GLOBAL_EXPORT_PREFIX}{index}"))
    }

    pub(crate) fn memory_export(&self) -> &'static str {
        MEMORY_EXPORT
    }
}

/// Checks that the module's state can be captured whole and adds the exports that read
/// it; or says why the module must be initialized the ordinary way.
pub(crate) fn instrument(wasm: &[u8]) -> Result<Instrumented, NotPreInitialized> {
    let unsupported = |reason: &str| Err(NotPreInitialized::Unsupported(reason.into()));
    let mut imported_globals = 0u32;
    let mut defined_memories = Vec::new();
    let mut mutable_globals = Vec::new();
    let mut export_section = None;

    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    match import?.ty {
                        TypeRef::Memory(_) => return unsupported("it imports its memory"),
                        TypeRef::Global(_) => imported_globals += 1,
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(memories) => {
                for memory in memories {
                    defined_memories.push(memory?);
                }
            }
            Payload::GlobalSection(globals) => {
                for (index, global) in globals.into_iter().enumerate() {
                    let ty = global?.ty;
                    if !ty.mutable {
                        continue;
                    }
                    if !is_number(ty.content_type) {
                        return unsupported("it has a mutable global of reference type");
                    }
                    mutable_globals.push(imported_globals + index as u32);
                }
            }
            Payload::ExportSection(exports) => export_section = Some(exports),
            Payload::DataSection(data) => {
                for datum in data {
                    if !matches!(datum?.kind, wasmparser::DataKind::Active { .. }) {
                        return unsupported("it has passive data segments");
                    }
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut operators = body.get_operators_reader()?;
                while !operators.eof() {
                    if let Some(what) = unsupported_operator(&operators.read()?) {
                        return unsupported(&format!("its code {what}"));
                    }
                }
            }
            _ => {}
        }
    }
    match defined_memories.as_slice() {
        [memory] if memory.shared => return unsupported("its memory is shared"),
        [memory] if memory.memory64 => return unsupported("its memory is 64-bit"),
        [_] => {}
        _ => return unsupported("it does not define exactly one memory"),
    }

    let plan = Plan {
        imported_globals,
        mutable_globals,
    };
    let mut exports = ExportSection::new();
    if let Some(existing) = export_section {
        for export in existing {
            let export = export?;
            exports.export(export.name, ExportKind::from(export.kind), export.index);
        }
    }
    exports.export(MEMORY_EXPORT, ExportKind::Memory, 0);
    for (name, &index) in plan.global_exports().zip(&plan.mutable_globals) {
        exports.export(&name, ExportKind::Global, index);
    }
    let wasm = rewrite(wasm, |id| match id {
        Section::Export => Edit::Replace(&exports),
        _ => Edit::Keep,
    })?;
    Ok(Instrumented { plan, wasm })
}

/// The original module, rewritten to start with `memory` (all of it, as start-up left it)
/// and with `globals` (the values of [`Plan::global_exports`], in order), and without a
/// start function.
pub(crate) fn snapshot(
    wasm: &[u8],
    plan: &Plan,
    memory: &[u8],
    globals: &[Val],
) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        globals.len() == plan.mutable_globals.len(),
        "expected {} globals, got {}",
        plan.mutable_globals.len(),
        globals.len()
    );
    let pages = (memory.len() as u64).div_ceil(PAGE_BYTES);

    let mut memories = MemorySection::new();
    let mut global_section = GlobalSection::new();
    for payload in Parser::new(0).parse_all(wasm) {
        match payload? {
            Payload::MemorySection(section) => {
                for memory in section {
                    memories.memory(grown(memory?, pages));
                }
            }
            Payload::GlobalSection(section) => {
                for (index, global) in section.into_iter().enumerate() {
                    let global = global?;
                    let index = plan.imported_globals + index as u32;
                    let init = match plan.mutable_globals.iter().position(|&g| g == index) {
                        Some(at) => constant(&globals[at], global.ty)?,
                        None => ConstExpr::try_from(global.init_expr)
                            .context("cannot re-encode a global initializer")?,
                    };
                    global_section.global(global.ty.try_into()?, &init);
                }
            }
            _ => {}
        }
    }

    let mut data = DataSection::new();
    for range in non_zero_runs(memory) {
        data.active(
            0,
            &ConstExpr::i32_const(range.start as i32),
            memory[range].iter().copied(),
        );
    }
    let data_count = DataCountSection { count: data.len() };
    rewrite(wasm, |id| match id {
        Section::Memory => Edit::Replace(&memories),
        Section::Global => Edit::Replace(&global_section),
        Section::Start => Edit::Drop,
        Section::DataCount => Edit::Replace(&data_count),
        Section::Data => Edit::Replace(&data),
        Section::Code => Edit::KeepThenInsertIfMissing(Section::Data, &data),
        _ => Edit::Keep,
    })
    .map_err(anyhow::Error::from)
}

const PAGE_BYTES: u64 = 64 << 10;

fn is_number(ty: ValType) -> bool {
    matches!(
        ty,
        ValType::I32 | ValType::I64 | ValType::F32 | ValType::F64 | ValType::V128
    )
}

/// Instructions whose effects a snapshot of memory and globals would not carry.
fn unsupported_operator(operator: &Operator) -> Option<&'static str> {
    match operator {
        Operator::TableSet { .. }
        | Operator::TableGrow { .. }
        | Operator::TableFill { .. }
        | Operator::TableCopy { .. }
        | Operator::TableInit { .. }
        | Operator::ElemDrop { .. } => Some("changes tables"),
        Operator::MemoryInit { .. } | Operator::DataDrop { .. } => Some("uses passive data"),
        _ => None,
    }
}

fn grown(memory: MemoryType, pages: u64) -> wasm_encoder::MemoryType {
    let mut memory = wasm_encoder::MemoryType::from(memory);
    memory.minimum = memory.minimum.max(pages);
    memory
}

fn constant(value: &Val, ty: GlobalType) -> anyhow::Result<ConstExpr> {
    Ok(match (value, ty.content_type) {
        (Val::I32(v), ValType::I32) => ConstExpr::i32_const(*v),
        (Val::I64(v), ValType::I64) => ConstExpr::i64_const(*v),
        (Val::F32(bits), ValType::F32) => ConstExpr::f32_const(Ieee32::new(*bits)),
        (Val::F64(bits), ValType::F64) => ConstExpr::f64_const(Ieee64::new(*bits)),
        (Val::V128(v), ValType::V128) => ConstExpr::v128_const(v.as_u128() as i128),
        (value, ty) => anyhow::bail!("a global of type {ty} read back as {value:?}"),
    })
}

/// The stretches of `memory` that hold anything but zeros, split where zeros run for
/// [`SEGMENT_GAP_BYTES`] or more; one stretch from the first to the last non-zero byte
/// when that would make more than [`MAX_SEGMENTS`]. Memory starts zeroed, so the zeros
/// outside the stretches need no segment.
fn non_zero_runs(memory: &[u8]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut current: Option<Range<usize>> = None;
    for (at, _) in memory.iter().enumerate().filter(|(_, byte)| **byte != 0) {
        current = match current {
            Some(run) if at - run.end < SEGMENT_GAP_BYTES => Some(run.start..at + 1),
            Some(run) => {
                runs.push(run);
                Some(at..at + 1)
            }
            None => Some(at..at + 1),
        };
    }
    runs.extend(current);
    if runs.len() > MAX_SEGMENTS {
        let whole = runs[0].start..runs[runs.len() - 1].end;
        return vec![whole];
    }
    runs
}

/// The sections [`rewrite`] may change, by their place in the binary format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Memory,
    Global,
    Export,
    Start,
    DataCount,
    Code,
    Data,
    Other,
}

impl Section {
    fn of(id: u8) -> Self {
        match id {
            5 => Self::Memory,
            6 => Self::Global,
            7 => Self::Export,
            8 => Self::Start,
            10 => Self::Code,
            11 => Self::Data,
            12 => Self::DataCount,
            _ => Self::Other,
        }
    }
}

enum Edit<'a> {
    Keep,
    Drop,
    Replace(&'a dyn wasm_encoder::Section),
    /// Keep this section, then add `section` unless the module already has one of that
    /// kind (a module without data gets its data section after its code).
    KeepThenInsertIfMissing(Section, &'a dyn wasm_encoder::Section),
}

/// Copies a module section by section, raw, except where `edit` says otherwise.
fn rewrite<'a>(
    wasm: &[u8],
    edit: impl Fn(Section) -> Edit<'a>,
) -> Result<Vec<u8>, wasmparser::BinaryReaderError> {
    let mut sections = Vec::new();
    for payload in Parser::new(0).parse_all(wasm) {
        sections.extend(payload?.as_section());
    }
    let present: Vec<Section> = sections.iter().map(|(id, _)| Section::of(*id)).collect();
    let mut module = wasm_encoder::Module::new();
    for (id, range) in sections {
        let raw = RawSection {
            id,
            data: &wasm[range],
        };
        match edit(Section::of(id)) {
            Edit::Keep => {
                module.section(&raw);
            }
            Edit::Drop => {}
            Edit::Replace(section) => {
                module.section(&SectionRef(section));
            }
            Edit::KeepThenInsertIfMissing(kind, section) => {
                module.section(&raw);
                if !present.contains(&kind) {
                    module.section(&SectionRef(section));
                }
            }
        }
    }
    Ok(module.finish())
}

/// Lets a `&dyn Section` go where `impl Section` is asked for.
struct SectionRef<'a>(&'a dyn wasm_encoder::Section);

impl wasm_encoder::Encode for SectionRef<'_> {
    fn encode(&self, sink: &mut Vec<u8>) {
        self.0.encode(sink);
    }
}

impl wasm_encoder::Section for SectionRef<'_> {
    fn id(&self) -> u8 {
        self.0.id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_runs_split_segments_only_when_long() {
        let mut memory = vec![0u8; 10_000];
        memory[10] = 1;
        memory[20] = 2; // a short gap: same segment
        memory[5_000] = 3; // a long gap: a new segment
        memory[9_999] = 4;
        assert_eq!(
            non_zero_runs(&memory),
            vec![10..21, 5_000..5_001, 9_999..10_000]
        );
        assert_eq!(non_zero_runs(&[0; 100]), Vec::<Range<usize>>::new());
        assert_eq!(non_zero_runs(&[7; 3]), vec![0..3]);
    }

    #[test]
    fn too_many_runs_become_one_segment() {
        let mut memory = vec![0u8; (MAX_SEGMENTS + 1) * 2 * SEGMENT_GAP_BYTES];
        for run in 0..=MAX_SEGMENTS {
            memory[run * 2 * SEGMENT_GAP_BYTES + 5] = 1;
        }
        let last = MAX_SEGMENTS * 2 * SEGMENT_GAP_BYTES + 5;
        assert_eq!(non_zero_runs(&memory), vec![5..last + 1]);
    }
}
