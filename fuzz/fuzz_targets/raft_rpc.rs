//! Raft RPC decode: the protobuf request of every RPC a node serves and
//! the bincode inside it, as the server decodes them
//! (`raft::rpc_decode::decode_rpc`), and the stored log entry
//! (`raft::entry_format::decode_entry`) with its write payload
//! (`raft::command::Command::decode_write`).
//!
//! The first byte picks the mode: 0-6 an RPC (`Rpc::ALL`), 7 a stored
//! entry as is, 8 a stored entry whose CRC the target computes, 9 a write
//! payload (snappy + bincode).
#![no_main]

use libfuzzer_sys::fuzz_target;
use promraft::raft::command::Command;
use promraft::raft::entry_format::{decode_entry, encode_entry};
use promraft::raft::rpc_decode::{decode_rpc, Rpc};

fn entry(b: &[u8]) {
    let Ok(e) = decode_entry(b) else { return };
    if let openraft::EntryPayload::Normal(Command::Write { payload }) = &e.payload {
        let _ = Command::decode_write(payload);
    }
    // What decodes must encode, and decode again to the same entry.
    let again = encode_entry(&e).expect("a decoded entry encodes");
    let back = decode_entry(&again).expect("an encoded entry decodes");
    assert_eq!(format!("{back:?}"), format!("{e:?}"), "entry changed in a round trip");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 10 {
        m @ 0..=6 => {
            let _ = decode_rpc(Rpc::ALL[usize::from(m)], rest);
        }
        7 => entry(rest),
        8 => {
            let mut b = crc32fast::hash(rest).to_be_bytes().to_vec();
            b.extend_from_slice(rest);
            entry(&b);
        }
        _ => {
            let _ = Command::decode_write(rest);
        }
    }
});
