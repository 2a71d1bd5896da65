//! The waPC ABI boundary under arbitrary guest pointers and lengths: every (pointer,
//! length) pair a guest can pass is either a range inside its memory or an error, never
//! a panic and never host memory.

use proptest::prelude::*;

use super::abi::{read, write};

/// Memory sizes around the edges that matter (empty, one page, odd sizes).
fn memory_len() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(65_536), 0usize..200_000]
}

/// Pointers and lengths as a guest passes them: any i32, biased to the memory's edges.
fn guest_i32(memory_len: usize) -> impl Strategy<Value = i32> {
    let edge = memory_len as i32;
    prop_oneof![
        any::<i32>(),
        Just(edge),
        Just(edge.wrapping_sub(1)),
        Just(-1),
        Just(i32::MIN),
        0..=edge.max(0),
    ]
}

fn in_bounds(memory_len: usize, ptr: i32, len: usize) -> bool {
    (ptr as u32 as usize)
        .checked_add(len)
        .is_some_and(|end| end <= memory_len)
}

proptest! {
    #[test]
    fn reads_are_inside_guest_memory_or_an_error(
        (memory_len, ptr, len) in memory_len().prop_flat_map(|m| (Just(m), guest_i32(m), guest_i32(m)))
    ) {
        let memory = vec![7u8; memory_len];
        let len_bytes = len as u32 as usize;
        match read(&memory, ptr, len) {
            Ok(bytes) => {
                prop_assert!(in_bounds(memory_len, ptr, len_bytes));
                prop_assert_eq!(bytes.len(), len_bytes);
            }
            Err(err) => {
                prop_assert!(!in_bounds(memory_len, ptr, len_bytes));
                prop_assert!(err.to_string().contains("out-of-bounds"), "{err}");
            }
        }
    }

    #[test]
    fn writes_touch_only_the_range_asked_for_or_nothing(
        (memory_len, ptr) in memory_len().prop_flat_map(|m| (Just(m), guest_i32(m))),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut memory = vec![0u8; memory_len];
        let result = write(&mut memory, ptr, &payload);
        let start = ptr as u32 as usize;
        if in_bounds(memory_len, ptr, payload.len()) {
            prop_assert!(result.is_ok());
            prop_assert_eq!(&memory[start..start + payload.len()], &payload[..]);
            let untouched = memory[..start].iter().chain(&memory[start + payload.len()..]);
            prop_assert!(untouched.into_iter().all(|&b| b == 0));
        } else {
            prop_assert!(result.is_err());
            prop_assert!(memory.iter().all(|&b| b == 0));
        }
    }
}
