//! Checkpoint and backup decode: a series' open state
//! (`tsdb::head::decode_open_state_pub`), a whole checkpoint export stream
//! (`Db::summarize_export`, which decodes every record, chunk index,
//! open-state shard, label set and live chunk frame exactly as an import
//! and a later load would), and a backup file (`backup::format::
//! BackupReader`: prefix, header, frames, trailer, checksums; not the
//! encryption, which has its own module).
//!
//! The first byte picks the mode: 0 open state; 1 export as is; 2 export
//! with its checksums repaired; 3 backup as is; 4 backup with its
//! checksums repaired (see fuzz/src/lib.rs).
#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use promraft::backup::format::BackupReader;
use promraft::tsdb::Db;

fn backup(bytes: &[u8]) {
    let Ok(mut r) = BackupReader::open(bytes, None) else {
        return;
    };
    let mut content = Vec::new();
    if r.read_to_end(&mut content).is_ok() {
        assert!(r.is_done(), "content ended without the end frame");
        let _ = Db::summarize_export(&mut content.as_slice());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 5 {
        0 => {
            let _ = promraft::tsdb::head::decode_open_state_pub(rest);
        }
        1 => {
            let _ = Db::summarize_export(&mut &rest[..]);
        }
        2 => {
            let fixed = promraft_fuzz::repair_export(rest);
            let _ = Db::summarize_export(&mut fixed.as_slice());
        }
        3 => backup(rest),
        _ => backup(&promraft_fuzz::repair_backup(rest)),
    }
});
