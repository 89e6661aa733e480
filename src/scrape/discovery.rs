//! File-based service discovery: `file_sd_configs` files (JSON or YAML
//! lists of `{targets, labels}`), globs in the file name allowed.
//!
//! Owns reading those files; polled by the manager every
//! `scrape::FILE_SD_POLL`. A file that cannot be read or parsed keeps the
//! groups it gave last (as Prometheus does) and the error is logged once
//! per change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::promcfg::{FileSdConfig, StaticConfig};

/// Largest file SD file read, in bytes (real ones are kilobytes).
pub const FILE_SD_BYTES_MAX: u64 = 16 << 20;

/// The last good groups of each file.
#[derive(Default)]
pub struct FileSd {
    last: HashMap<PathBuf, Vec<StaticConfig>>,
    failed: HashMap<PathBuf, String>,
}

impl FileSd {
    /// The groups of every file `sd` names, each with `__meta_filepath`.
    pub fn groups(&mut self, sd: &FileSdConfig) -> Vec<StaticConfig> {
        let mut out = Vec::new();
        for pattern in &sd.files {
            let Ok(paths) = glob::glob(pattern) else {
                continue;
            };
            for path in paths.filter_map(Result::ok) {
                match read(&path) {
                    Ok(groups) => {
                        self.failed.remove(&path);
                        self.last.insert(path.clone(), groups);
                    }
                    Err(e) => {
                        if self.failed.get(&path) != Some(&e) {
                            tracing::warn!(file = %path.display(), error = %e, "file_sd file not read; keeping its last targets");
                            self.failed.insert(path.clone(), e);
                        }
                    }
                }
                if let Some(groups) = self.last.get(&path) {
                    out.extend(groups.iter().cloned().map(|mut g| {
                        g.labels
                            .entry("__meta_filepath".into())
                            .or_insert_with(|| path.display().to_string());
                        g
                    }));
                }
            }
        }
        out
    }
}

fn read(path: &Path) -> Result<Vec<StaticConfig>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > FILE_SD_BYTES_MAX {
        return Err(format!("{len} bytes, more than the limit of {FILE_SD_BYTES_MAX}"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    if is_json {
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    } else {
        serde_yaml::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_yaml_files_give_groups_and_a_bad_file_keeps_the_last() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("a.json"),
            r#"[{"targets":["h:1"],"labels":{"env":"x"}}]"#,
        )
        .expect("write");
        std::fs::write(dir.path().join("b.yml"), "- targets: ['h:2']\n").expect("write");
        let sd = FileSdConfig {
            files: vec![
                format!("{}/*.json", dir.path().display()),
                format!("{}/*.yml", dir.path().display()),
            ],
            ..FileSdConfig::default()
        };
        let mut f = FileSd::default();
        let g = f.groups(&sd);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].labels.get("env").map(String::as_str), Some("x"));
        assert!(g[1].labels["__meta_filepath"].ends_with("b.yml"));
        std::fs::write(dir.path().join("a.json"), "not json").expect("write");
        assert_eq!(f.groups(&sd).len(), 2, "a broken file keeps its last targets");
    }
}
