//! Rule files: promraft accepts the files `promtool check rules` (Debian's
//! Prometheus 2.42) accepts and refuses the ones it refuses; the shipped
//! self-monitoring rules (`deploy/promraft-rules.yml`) pass promtool's
//! check and their unit tests (`promtool test rules`).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use promraft::rules::file::RuleFile;

/// promtool on a few small files takes well under a second.
const PROMTOOL_TIMEOUT: Duration = Duration::from_secs(60);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn promtool(test: &str, args: &[&str], dir: &Path) -> Option<common::CommandOutput> {
    let bin = common::peer("promtool", test)?;
    Some(common::run_command(
        Command::new(bin).args(args).current_dir(dir),
        PROMTOOL_TIMEOUT,
    ))
}

#[test]
fn promraft_and_promtool_agree_on_every_fixture() {
    let dir = repo("tests/fixtures/rules");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture directory")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 9, "fixtures missing: {files:?}");
    for f in files {
        let name = f.file_name().expect("name").to_string_lossy().to_string();
        let ours = RuleFile::load(&f);
        let want_ok = name.starts_with("good");
        assert_eq!(ours.is_ok(), want_ok, "{name}: promraft says {ours:?}");
        let Some(out) = promtool(
            "promraft_and_promtool_agree_on_every_fixture",
            &["check", "rules", &name],
            &dir,
        ) else {
            return;
        };
        assert_eq!(
            out.status.success(),
            want_ok,
            "{name}: promtool says {}{}; promraft says {ours:?}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let deploy = repo("deploy");
    RuleFile::load(&deploy.join("promraft-rules.yml")).expect("promraft accepts its own rules");
    let test = "shipped_rules_pass_promtool_check_and_their_unit_tests";
    let Some(check) = promtool(test, &["check", "rules", "promraft-rules.yml"], &deploy) else {
        return;
    };
    assert!(
        check.status.success(),
        "promtool check rules: {}{}",
        check.stdout,
        check.stderr
    );
    let unit = promtool(test, &["test", "rules", "promraft-rules.test.yml"], &deploy).expect("promtool found above");
    assert!(
        unit.status.success(),
        "promtool test rules: {}{}",
        unit.stdout,
        unit.stderr
    );
}
