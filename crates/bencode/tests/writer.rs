//! The streaming writer's byte strings.

use lodestone_bencode::Writer;

#[test]
fn a_string_written_in_pieces_equals_one_written_whole() {
    let (mut whole, mut pieces) = (Vec::new(), Vec::new());
    Writer::new(&mut whole).bytes(b"hello, world");
    let mut w = Writer::new(&mut pieces);
    w.bytes_header(12);
    w.raw(b"hello, ");
    w.raw(b"world");
    assert_eq!(whole, b"12:hello, world");
    assert_eq!(pieces, whole);
}

#[test]
fn an_empty_string_has_a_zero_length() {
    let mut out = Vec::new();
    Writer::new(&mut out).bytes_header(0);
    assert_eq!(out, b"0:");
}
