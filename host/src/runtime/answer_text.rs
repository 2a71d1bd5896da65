//! An [`Answer`] lowered into a component as a WIT `string`, copied piece by piece from
//! the cache's bytes into the guest's allocation: the same single copy a waPC guest gets.
//!
//! This implements wasmtime's lowering traits, whose items are public but hidden: the
//! type check is `str`'s own, and for any string encoding but UTF-8 (which Rust, Python
//! and JavaScript components use) the answer is joined first and lowered as a `str`.

use std::mem::MaybeUninit;

use guest_adapter::Answer;
use wasmtime::component::__internal::{
    CanonicalAbiInfo, InstanceType, InterfaceType, LowerContext,
    wasmtime_environ::component::StringEncoding,
};
use wasmtime::component::{ComponentType, Lower};
use wasmtime::{Result, ValRaw};

/// An answer, as a WIT `string`.
pub struct AnswerText(pub Answer);

// SAFETY: the representation, ABI and type check are `str`'s; the lowerings below write
// what `str`'s do (a pointer and a length, in the same places).
unsafe impl ComponentType for AnswerText {
    type Lower = <str as ComponentType>::Lower;

    const ABI: CanonicalAbiInfo = <str as ComponentType>::ABI;

    fn typecheck(ty: &InterfaceType, types: &InstanceType<'_>) -> Result<()> {
        <str as ComponentType>::typecheck(ty, types)
    }
}

/// The longest string the canonical ABI can hold.
const MAX_STRING_BYTES: usize = (1 << 31) - 1;

impl AnswerText {
    /// Copies the pieces into one guest allocation: (address, length).
    fn lower_utf8<T>(&self, cx: &mut LowerContext<'_, T>) -> Result<(usize, usize)> {
        let len = self.0.len();
        if len > MAX_STRING_BYTES {
            wasmtime::bail!("an answer of {len} bytes is too large for a component");
        }
        let ptr = cx.realloc(0, 0, 1, len)?;
        let memory = cx.as_slice_mut();
        let Some(destination) = memory.get_mut(ptr..).and_then(|rest| rest.get_mut(..len)) else {
            wasmtime::bail!("the guest's allocator returned memory out of bounds");
        };
        self.0.copy_to(destination);
        Ok((ptr, len))
    }

    fn joined(&self) -> String {
        self.0.to_text()
    }
}

// SAFETY: see `ComponentType` above.
unsafe impl Lower for AnswerText {
    fn linear_lower_to_flat<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        dst: &mut MaybeUninit<Self::Lower>,
    ) -> Result<()> {
        if cx.options().string_encoding != StringEncoding::Utf8 {
            return <str as Lower>::linear_lower_to_flat(&self.joined(), cx, ty, dst);
        }
        let (ptr, len) = self.lower_utf8(cx)?;
        // Written as `str` writes them: i64 slots, right for memory32 and memory64.
        dst.write([ValRaw::i64(ptr as i64), ValRaw::i64(len as i64)]);
        Ok(())
    }

    fn linear_lower_to_memory<T>(
        &self,
        cx: &mut LowerContext<'_, T>,
        ty: InterfaceType,
        offset: usize,
    ) -> Result<()> {
        if cx.options().string_encoding != StringEncoding::Utf8 {
            return <str as Lower>::linear_lower_to_memory(&self.joined(), cx, ty, offset);
        }
        let (ptr, len) = self.lower_utf8(cx)?;
        *cx.get::<4>(offset) = u32::try_from(ptr)?.to_le_bytes();
        *cx.get::<4>(offset + 4) = u32::try_from(len)?.to_le_bytes();
        Ok(())
    }
}
