//! Reading an `arbitrary` script: the operations of one fuzz input. Shared
//! by the stateful checks; whoever includes them declares this module at
//! its crate root.

use arbitrary::{Arbitrary, Unstructured};

/// The operations `u` still holds, at most `max`: reading stops at the end
/// of the input or at the first bytes that do not form an operation.
pub fn ops<'a, 'u, O: Arbitrary<'a>>(
    u: &'u mut Unstructured<'a>,
    max: usize,
) -> impl Iterator<Item = O> + 'u
where
    'a: 'u,
{
    std::iter::from_fn(move || {
        if u.is_empty() {
            None
        } else {
            O::arbitrary(u).ok()
        }
    })
    .take(max)
}
