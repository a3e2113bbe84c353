//! The dependency direction written in docs/ARCHITECTURE.md, checked over
//! `cargo metadata`: core depends on no workspace crate; nothing depends on
//! harness or perf; every workspace package is named `keel-<dir>`.

use std::collections::BTreeMap;

fn workspace() -> BTreeMap<String, Vec<String>> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .no_deps()
        .exec()
        .expect("cargo metadata");
    let members: Vec<String> = metadata
        .workspace_packages()
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    metadata
        .workspace_packages()
        .iter()
        .map(|p| {
            let deps = p
                .dependencies
                .iter()
                .filter(|d| {
                    members.contains(&d.name) && d.kind == cargo_metadata::DependencyKind::Normal
                })
                .map(|d| d.name.clone())
                .collect();
            (p.name.to_string(), deps)
        })
        .collect()
}

/// Allowed workspace dependencies per package (normal dependencies only).
const ALLOWED: &[(&str, &[&str])] = &[
    ("keel-core", &[]),
    ("keel-codecs", &[]),
    ("keel-journal", &["keel-core"]),
    ("keel-ledger", &["keel-core", "keel-codecs"]),
    (
        "keel-projector",
        &["keel-core", "keel-journal", "keel-codecs", "keel-ledger"],
    ),
    (
        "keel-node",
        &["keel-core", "keel-journal", "keel-codecs", "keel-ledger"],
    ),
    ("keel-protocol", &[]),
    // The replication protocol is sans-I/O: no workspace crate at all.
    ("keel-replication", &[]),
    // The node process of a replicated shard: the control plane (etcd),
    // the replica driver, and the engine and client server it starts on
    // promotion. The `keel` binary (harness) stays free of etcd and protoc.
    (
        "keel-cluster",
        &[
            "keel-core",
            "keel-replication",
            "keel-replicator",
            "keel-journal",
            "keel-ledger",
            "keel-node",
            "keel-protocol",
            "keel-server",
        ],
    ),
    // The binding of the protocol to the journal: no etcd, no network.
    (
        "keel-replicator",
        &["keel-core", "keel-journal", "keel-replication"],
    ),
    // The server is a producer on the engine; it needs no journal or node.
    ("keel-server", &["keel-core", "keel-protocol"]),
    // A client links the protocol only: no engine, journal, node or server.
    ("keel-client", &["keel-protocol"]),
    (
        "keel-harness",
        &[
            "keel-protocol",
            "keel-server",
            "keel-client",
            "keel-core",
            "keel-journal",
            "keel-codecs",
            "keel-ledger",
            "keel-node",
            "keel-projector",
        ],
    ),
    (
        "keel-perf",
        &[
            "keel-core",
            "keel-journal",
            "keel-codecs",
            "keel-ledger",
            "keel-node",
            "keel-projector",
            "keel-harness",
            "keel-client",
        ],
    ),
];

#[test]
fn dependencies_point_one_way() {
    let packages = workspace();
    assert!(packages.contains_key("keel-core"));
    for (package, deps) in &packages {
        let allowed = ALLOWED
            .iter()
            .find(|(name, _)| name == package)
            .unwrap_or_else(|| panic!("{package} is not in the architecture table"))
            .1;
        for dep in deps {
            assert!(
                allowed.contains(&dep.as_str()),
                "{package} must not depend on {dep}"
            );
        }
    }
    for (package, deps) in &packages {
        if package != "keel-perf" {
            assert!(
                !deps.iter().any(|d| d == "keel-perf"),
                "{package} depends on perf"
            );
        }
        assert!(
            !deps.iter().any(|d| d == "keel-harness") || package == "keel-perf",
            "{package} depends on harness"
        );
    }
}

#[test]
fn packages_are_named_after_their_directory() {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .no_deps()
        .exec()
        .expect("cargo metadata");
    for package in metadata.workspace_packages() {
        let dir = package
            .manifest_path
            .parent()
            .and_then(|p| p.file_name())
            .expect("package directory");
        assert_eq!(package.name.as_str(), format!("keel-{dir}"));
    }
}

/// The declared `rust-version` is true: no dependency built for Linux
/// needs a newer compiler (only one toolchain is installable here, so the
/// MSRV is checked against what the dependencies declare).
#[test]
fn the_declared_rust_version_covers_every_dependency() {
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .other_options(vec![
            "--filter-platform".into(),
            "x86_64-unknown-linux-gnu".into(),
        ])
        .exec()
        .expect("cargo metadata");
    let resolved: std::collections::BTreeSet<_> = metadata
        .resolve
        .as_ref()
        .expect("resolve")
        .nodes
        .iter()
        .map(|n| n.id.clone())
        .collect();
    let declared = metadata
        .workspace_packages()
        .iter()
        .map(|p| p.rust_version.clone().expect("every package declares one"))
        .min()
        .expect("packages");
    for p in &metadata.packages {
        if let (true, Some(needed)) = (resolved.contains(&p.id), &p.rust_version) {
            assert!(
                *needed <= declared,
                "{} {} needs Rust {needed}, the workspace declares {declared}",
                p.name,
                p.version
            );
        }
    }
}

/// What an embedding host links: `keel-node` alone (as cargo resolves it
/// for that package) pulls in no projector, database driver, async
/// runtime, command-line parser or progress bars.
#[test]
fn an_embedding_host_links_no_projector_database_or_cli() {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "keel-node",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo tree");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: std::collections::BTreeSet<&str> = tree
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains("keel-node"), "{tree}");
    for banned in [
        "keel-projector",
        "keel-harness",
        "mysql_async",
        "tokio",
        "clap",
        "indicatif",
        "env_logger",
    ] {
        assert!(!crates.contains(banned), "keel-node links {banned}");
    }
}
