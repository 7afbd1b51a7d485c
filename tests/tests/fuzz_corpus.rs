//! Replays every committed fuzz input through the harness its fuzz target
//! runs (`tether_tests::fuzz_harness`), on stable Rust: the files under
//! `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`. Also checks that
//! the committed `seed-*` files are what the encoders produce today.
//!
//! After a deliberate wire or key-format change, regenerate the seeds with
//! `TETHER_FUZZ_WRITE_SEEDS=1 cargo test -p tether-tests --test fuzz_corpus`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on setup failures

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use tether_tests::fuzz_harness::{TARGETS, seeds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files in `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("reading {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

fn replay(target: &str) {
    let (_, harness) = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .expect("a target of the harness");
    let corpus = files(&fuzz_dir().join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "fuzz/corpus/{target}/ is empty or missing: the corpus must be committed"
    );
    let regressions = files(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for path in corpus.iter().chain(&regressions) {
        let input = std::fs::read(path).unwrap();
        if std::panic::catch_unwind(|| harness(&input)).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs panicked: {failed:#?}",
        failed.len(),
        corpus.len() + regressions.len()
    );
}

macro_rules! replay_tests {
    ($($target:ident),* $(,)?) => {
        $(
            #[test]
            fn $target() {
                replay(stringify!($target));
            }
        )*
        const REPLAYED: &[&str] = &[$(stringify!($target)),*];
    };
}

replay_tests!(
    envelope,
    frame,
    handshake_server,
    handshake_client,
    discovery_token,
    discovery_txt,
    certificate,
    vehicle_request,
    pairing,
    setup_payload,
    gatt_segments,
    provisioning,
    ble_advert,
    binding,
    ota,
    devices,
    share_invite,
    automation_task,
    automation_state,
    revocation_list,
    relay_envelope,
    mailbox_letter,
);

#[test]
fn every_target_is_replayed() {
    let targets: BTreeSet<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(targets, REPLAYED.iter().copied().collect());
}

#[test]
fn committed_seeds_are_current() {
    let write = std::env::var_os("TETHER_FUZZ_WRITE_SEEDS").is_some();
    let seeds = seeds();
    let mut stale = Vec::new();
    for seed in &seeds {
        let path = fuzz_dir()
            .join("corpus")
            .join(seed.target)
            .join(&seed.file_name);
        if write {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &seed.bytes).unwrap();
        } else if std::fs::read(&path).ok().as_ref() != Some(&seed.bytes) {
            stale.push(format!("missing or different: {}", path.display()));
        }
    }
    // A seed-* file the generator no longer makes is stale too.
    let expected: BTreeSet<(&str, &str)> = seeds
        .iter()
        .map(|s| (s.target, s.file_name.as_str()))
        .collect();
    for (target, _) in TARGETS {
        for path in files(&fuzz_dir().join("corpus").join(target)) {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("seed-") && !expected.contains(&(target, name.as_str())) {
                if write {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    stale.push(format!("no longer generated: {}", path.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "fuzz seeds are stale (did an encoder, key or wire format change?):\n{}\n\
         regenerate with: TETHER_FUZZ_WRITE_SEEDS=1 cargo test -p tether-tests --test fuzz_corpus",
        stale.join("\n")
    );
}
