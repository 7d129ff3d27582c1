//! Answering ut_metadata requests (BEP 9), sans IO.
//!
//! With the verified info dictionary in hand, a request gets a `data`
//! message carrying a slice of it; without it, or for a piece that does not
//! exist, or once the peer has used up its budget, a `reject`. The budget
//! is BEP 9's flood protection: a peer fetching the metadata needs each
//! piece about once, so a small multiple of the piece count is generous,
//! and a peer asking for more is only wasting our upload.

use crate::message::{Message, PIECE_SIZE, piece_count};

/// Requests per connection served beyond `pieces × per_piece`, so tiny
/// metadata still tolerates a retry or two.
const SLACK: u32 = 8;

/// How many requests one connection may have answered with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestBudget {
    per_piece: u32,
    served: u32,
}

impl RequestBudget {
    /// A fresh budget allowing `per_piece` answers per metadata piece (plus
    /// a little slack) over the connection's lifetime.
    pub fn new(per_piece: u32) -> Self {
        Self {
            per_piece,
            served: 0,
        }
    }

    /// Data messages sent so far on this connection.
    pub fn served(&self) -> u32 {
        self.served
    }
}

impl Default for RequestBudget {
    /// Four answers per piece.
    fn default() -> Self {
        Self::new(4)
    }
}

/// The answer to a request for piece `piece`, given the verified info
/// dictionary if we have it. The returned `Data` borrows from `metadata`.
pub fn respond<'m>(
    metadata: Option<&'m [u8]>,
    budget: &mut RequestBudget,
    piece: u32,
) -> Message<'m> {
    let reject = Message::Reject { piece };
    let Some(metadata) = metadata else {
        return reject;
    };
    // Metadata we hold was bounded when fetched or loaded; anything that
    // does not fit BEP 9's integer sizes is simply not served.
    let Ok(size) = u32::try_from(metadata.len()) else {
        return reject;
    };
    let limit = piece_count(size)
        .saturating_mul(budget.per_piece)
        .saturating_add(SLACK);
    if budget.served >= limit {
        return reject;
    }
    let Some(start) = piece.checked_mul(PIECE_SIZE).filter(|&s| s < size) else {
        return reject;
    };
    let end = start.saturating_add(PIECE_SIZE).min(size);
    budget.served += 1;
    Message::Data {
        piece,
        total_size: Some(u64::from(size)),
        data: &metadata[start as usize..end as usize],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(len: usize) -> Vec<u8> {
        (0..len).map(|i| i as u8).collect()
    }

    #[test]
    fn serves_each_piece_with_exact_bounds() {
        let info = info(2 * PIECE_SIZE as usize + 10);
        let mut budget = RequestBudget::default();
        let total = Some(info.len() as u64);
        assert_eq!(
            respond(Some(&info), &mut budget, 0),
            Message::Data {
                piece: 0,
                total_size: total,
                data: &info[..PIECE_SIZE as usize]
            }
        );
        assert_eq!(
            respond(Some(&info), &mut budget, 2),
            Message::Data {
                piece: 2,
                total_size: total,
                data: &info[2 * PIECE_SIZE as usize..]
            }
        );
        assert_eq!(budget.served(), 2);
    }

    #[test]
    fn rejects_without_metadata_or_out_of_range() {
        let info = info(100);
        let mut budget = RequestBudget::default();
        assert_eq!(respond(None, &mut budget, 0), Message::Reject { piece: 0 });
        assert_eq!(
            respond(Some(&info), &mut budget, 1),
            Message::Reject { piece: 1 }
        );
        assert_eq!(
            respond(Some(&info), &mut budget, u32::MAX),
            Message::Reject { piece: u32::MAX }
        );
        assert_eq!(
            respond(Some(&[]), &mut budget, 0),
            Message::Reject { piece: 0 }
        );
        assert_eq!(budget.served(), 0);
    }

    #[test]
    fn flooding_peer_is_rejected_after_its_budget() {
        let info = info(3 * PIECE_SIZE as usize);
        let mut budget = RequestBudget::new(2);
        let limit = 3 * 2 + SLACK;
        for i in 0..limit {
            assert!(matches!(
                respond(Some(&info), &mut budget, i % 3),
                Message::Data { .. }
            ));
        }
        assert_eq!(
            respond(Some(&info), &mut budget, 0),
            Message::Reject { piece: 0 }
        );
        assert_eq!(budget.served(), limit);
    }

    #[test]
    fn served_pieces_reassemble_through_the_codec() {
        let info = info(5 * PIECE_SIZE as usize - 1);
        let mut budget = RequestBudget::default();
        let mut out = Vec::new();
        for piece in 0..5 {
            let bytes = respond(Some(&info), &mut budget, piece).to_vec();
            match Message::decode(&bytes) {
                Ok(Message::Data { piece: p, data, .. }) if p == piece => {
                    out.extend_from_slice(data)
                }
                other => panic!("piece {piece}: {other:?}"),
            }
        }
        assert_eq!(out, info);
    }
}
