//! [`NodeConfig`]: everything a host sets to run a Keel node, loadable from a
//! TOML file. Defaults suit a 2-core development machine; every option is
//! documented in `docs/operating.md` and in `keel.example.toml`, and a bad
//! value is an error that names the option (`engine.ring_slots`, …).

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_core::{BackPressure, EngineConfig, Fusion, Pinning, WaitStrategy};
use keel_journal::{JournalConfig, Retention, SyncPolicy};
use keel_ledger::LedgerConfig;
use serde::Deserialize;

/// A node's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The journal: where, and how durable.
    pub journal: JournalSection,
    /// The pipeline: ring, waiting, threads.
    pub engine: EngineSection,
    /// The ledger's table capacities.
    pub ledger: LedgerSection,
    /// Snapshots: where, how many.
    pub snapshot: SnapshotSection,
    /// `[server]`, which `keel serve` reads (keel-server's `ServerConfig`):
    /// accepted and ignored here, so one file serves every command.
    pub server: ServerSection,
    /// `[shards]`: how a sharded node (`ShardedNode`) splits the ledger.
    pub shards: ShardsSection,
}

/// `[shards]`: read by `ShardedNode` (`keel run --shards`); a plain node
/// ignores it. Each shard is a whole node in `<journal.data_dir>/shard-<i>`
/// with the `[journal]`, `[engine]`, `[ledger]` and `[snapshot]` settings
/// (capacities are per shard).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShardsSection {
    /// Shards (1..=256).
    pub count: usize,
    /// The slot table's version (≥ 1): each shard journals the ownership
    /// it derives; a shard already holding another table refuses to start
    /// (moving slots is rebalancing, which is not built).
    pub table_version: u64,
    /// Per shard, the cores its lanes are pinned to (`engine.pin_cores`
    /// for that shard; missing or empty: not pinned).
    pub pin_cores: Vec<Vec<usize>>,
    /// Seconds a cross-shard transfer's reservation on the debit shard
    /// holds before it expires (1..=3600): how long a dead saga driver can
    /// keep funds reserved.
    pub reserve_timeout_seconds: u32,
    /// Tenants: a slot range and quotas each (`[[shards.tenants]]`).
    pub tenants: Vec<TenantSection>,
    /// How often the background saga recoverer reads the journals' new
    /// records (ms; 0: off, recovery only when the host calls
    /// `recover_sagas`).
    pub saga_recovery_interval_ms: u64,
    /// A saga without an end record whose begin is older than this (ms)
    /// is driven to its end by the recoverer: its caller is taken to have
    /// died. Longer than any saga takes (three round trips).
    pub saga_recovery_age_ms: u64,
}

impl Default for ShardsSection {
    fn default() -> Self {
        Self {
            count: 1,
            table_version: 1,
            pin_cores: Vec::new(),
            reserve_timeout_seconds: 60,
            tenants: Vec::new(),
            saga_recovery_interval_ms: 1_000,
            saga_recovery_age_ms: 5_000,
        }
    }
}

/// `[[shards.tenants]]`: one tenant's slot range and quotas.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSection {
    /// The tenant id (the command header's `tenant_id`).
    pub id: u32,
    /// The slots `[start, end)` its accounts hash into (absent: all 4096).
    #[serde(default)]
    pub slots: Option<[u16; 2]>,
    /// Commands per second (one second of burst; absent: unlimited).
    #[serde(default)]
    pub rate: Option<u32>,
    /// Commands in flight at once (absent: unlimited).
    #[serde(default)]
    pub in_flight_max: Option<u32>,
}

/// The `[server]` section, as far as the node is concerned: present or not,
/// never interpreted (keel-server parses it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerSection;

impl<'de> Deserialize<'de> for ServerSection {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| ServerSection)
    }
}

/// `[snapshot]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotSection {
    /// Snapshot directory; empty means `<journal.data_dir>/snapshots`.
    pub dir: PathBuf,
    /// Snapshots kept (newest first; at least 1).
    pub keep: usize,
    /// Write a snapshot at a clean shutdown (`keel run --snapshot`).
    pub on_shutdown: bool,
    /// While serving, a shadow replica writes a snapshot after this many
    /// commands (0: not by count). Costs a second copy of the state.
    pub every_commands: u64,
    /// While serving, after this many seconds with new commands (0: not by time).
    pub every_seconds: u64,
    /// Delete journal segments wholly covered by the oldest kept snapshot
    /// (needs the snapshotter: `every_commands` or `every_seconds`). A full
    /// replay from the first record is then no longer possible.
    pub drop_covered_segments: bool,
}

impl Default for SnapshotSection {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            keep: 3,
            on_shutdown: false,
            every_commands: 0,
            every_seconds: 0,
            drop_covered_segments: false,
        }
    }
}

/// When an acknowledgement is given (`journal.durability`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Durability {
    /// Group commit: each batch is written O_DIRECT|O_DSYNC before the BLP sees it.
    Sync,
    /// Written per batch, synced every `journal.async_interval_ms`.
    Async,
    /// Written to the OS only (survives a process crash, not a power cut).
    Os,
    /// No journal: nothing survives (benchmarks).
    None,
}

/// `[journal]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JournalSection {
    /// Journal directory (created if missing; recovered if it holds a journal).
    pub data_dir: PathBuf,
    /// Durability policy.
    pub durability: Durability,
    /// Sync interval for `async` (ms, 1..=10000).
    pub async_interval_ms: u64,
    /// BLAKE3 chain over records (tamper evidence, 32 bytes per record).
    pub chain: bool,
    /// Allow buffered I/O where direct I/O is unavailable (tmpfs). Development only.
    pub dev_allow_buffered_io: bool,
    /// Segment file size (MiB).
    pub segment_size_mib: u64,
    /// Group-commit write buffer (KiB): the largest single write.
    pub write_buffer_kib: usize,
    /// Keep only the newest N segments (0: keep all).
    pub keep_segments: usize,
}

impl Default for JournalSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("keel-data"),
            durability: Durability::Sync,
            async_interval_ms: 10,
            chain: false,
            dev_allow_buffered_io: false,
            segment_size_mib: 64,
            write_buffer_kib: 1024,
            keep_segments: 0,
        }
    }
}

/// How idle threads wait (`engine.wait_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum WaitArg {
    /// Spin: lowest latency, needs a core per thread.
    BusySpin,
    /// Spin briefly, then yield.
    SpinYield,
    /// Spin, yield, then park (the default: threads outnumber cores here).
    Blocking,
}

/// Stage-to-thread mapping (`engine.fusion`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[serde(rename_all = "kebab-case")]
pub enum FusionArg {
    /// Four stage threads.
    Separate,
    /// Two: journaller+replicator, BLP+publisher.
    Paired,
    /// One thread runs every stage.
    Single,
    /// Two: the journaller alone, replicator+BLP+publisher (a replicated
    /// leader's `paired` becomes this).
    Gated,
}

/// `[engine]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EngineSection {
    /// Ring slots (power of two, 64..=1048576).
    pub ring_slots: usize,
    /// Callers that may await acknowledgements at once.
    pub in_flight_max: usize,
    /// Idempotency window (keys remembered).
    pub dedup_entries: usize,
    /// How idle stage threads wait.
    pub wait_strategy: WaitArg,
    /// Stage-to-thread mapping.
    pub fusion: FusionArg,
    /// Pin lane i to the i-th core id listed (empty: no pinning).
    pub pin_cores: Vec<usize>,
    /// How long a submitter waits for ring space before `Busy` (ms; 0: fail at once).
    pub back_pressure_wait_ms: u64,
}

impl Default for EngineSection {
    fn default() -> Self {
        let engine = EngineConfig::default();
        Self {
            ring_slots: engine.ring_slots,
            in_flight_max: engine.in_flight_max,
            dedup_entries: engine.dedup_entries,
            wait_strategy: WaitArg::Blocking,
            fusion: FusionArg::Paired,
            pin_cores: Vec::new(),
            back_pressure_wait_ms: 100,
        }
    }
}

/// `[ledger]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerSection {
    /// Accounts the ledger holds (allocated at start).
    pub accounts_max: u32,
    /// Transfers the ledger holds (reserved at start; a full table rejects).
    pub transfers_max: u32,
    /// Touch every table page at start: seconds and the full tables' memory
    /// up front, no page faults on the hot path later (latency-critical
    /// hosts). Off: start-up is instant and memory follows the data.
    pub prefault: bool,
}

impl Default for LedgerSection {
    fn default() -> Self {
        let ledger = LedgerConfig::default();
        Self {
            accounts_max: ledger.accounts_max,
            transfers_max: ledger.transfers_max,
            prefault: false,
        }
    }
}

/// A configuration that could not be used; names the option.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown option, or a value of the wrong type
    /// (the message names the option and the line).
    #[error("config: {0}")]
    Parse(#[from] toml::de::Error),
    /// A value out of range.
    #[error("config option `{option}` = {value}: expected {expected}")]
    Invalid {
        /// The option, as `section.key`.
        option: String,
        /// The value given.
        value: String,
        /// What is allowed.
        expected: &'static str,
    },
}

/// The ledger settings recorded in the manifest of the journal in
/// `storage` (None: no manifest yet, or none recorded).
pub fn recorded_settings(
    storage: &impl keel_journal::Storage,
) -> Option<keel_ledger::JournalSettings> {
    let manifest = keel_journal::manifest::read_manifest(storage)?;
    keel_ledger::JournalSettings::decode(&manifest.settings)
}

/// This machine's physical memory in bytes (u64::MAX if unknown).
fn physical_memory_bytes() -> u64 {
    let read = |path| std::fs::read_to_string(path).ok();
    read("/proc/meminfo")
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(u64::MAX)
}

impl NodeConfig {
    /// Parses TOML text; missing options take their defaults.
    pub fn from_toml(text: &str) -> Result<Self, ConfigFileError> {
        let config: NodeConfig = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Checks every range; the error names the first bad option.
    pub fn validate(&self) -> Result<(), ConfigFileError> {
        let invalid = |option: &str, value: String, expected| {
            Err(ConfigFileError::Invalid {
                option: option.to_owned(),
                value,
                expected,
            })
        };
        let j = &self.journal;
        if !(1..=10_000).contains(&j.async_interval_ms) {
            return invalid(
                "journal.async_interval_ms",
                j.async_interval_ms.to_string(),
                "1..=10000",
            );
        }
        if !(1..=4096).contains(&j.segment_size_mib) {
            return invalid(
                "journal.segment_size_mib",
                j.segment_size_mib.to_string(),
                "1..=4096",
            );
        }
        if !(64..=65536).contains(&j.write_buffer_kib) || !j.write_buffer_kib.is_multiple_of(64) {
            return invalid(
                "journal.write_buffer_kib",
                j.write_buffer_kib.to_string(),
                "a multiple of 64 in 64..=65536",
            );
        }
        if j.write_buffer_kib as u64 > j.segment_size_mib * 1024 / 2 {
            return invalid(
                "journal.write_buffer_kib",
                j.write_buffer_kib.to_string(),
                "at most half of journal.segment_size_mib",
            );
        }
        if j.keep_segments == 1 {
            return invalid(
                "journal.keep_segments",
                "1".into(),
                "0 (keep all) or at least 2",
            );
        }
        if let Err(e) = self.engine_config().validate() {
            return invalid(&format!("engine.{}", e.option), e.value, e.expected);
        }
        if self.snapshot.keep == 0 {
            return invalid("snapshot.keep", "0".into(), "at least 1");
        }
        let snapshotter = self.snapshot.every_commands > 0 || self.snapshot.every_seconds > 0;
        if self.snapshot.drop_covered_segments && (!snapshotter || j.keep_segments > 0) {
            return invalid(
                "snapshot.drop_covered_segments",
                "true".into(),
                "snapshot.every_commands or every_seconds set, and journal.keep_segments = 0",
            );
        }
        let l = &self.ledger;
        if !(1..u32::MAX).contains(&l.accounts_max) {
            return invalid(
                "ledger.accounts_max",
                l.accounts_max.to_string(),
                "1..4294967295",
            );
        }
        if !(1..u32::MAX).contains(&l.transfers_max) {
            return invalid(
                "ledger.transfers_max",
                l.transfers_max.to_string(),
                "1..4294967295",
            );
        }
        let needed = keel_ledger::Ledger::table_bytes(self.ledger_config());
        if needed > physical_memory_bytes() {
            let option = match l.accounts_max >= l.transfers_max {
                true => ("ledger.accounts_max", l.accounts_max),
                false => ("ledger.transfers_max", l.transfers_max),
            };
            return invalid(
                option.0,
                option.1.to_string(),
                "capacities whose tables fit in this machine's memory \
                 (Ledger::table_bytes; about 160 bytes per transfer and 200 per account)",
            );
        }
        let sh = &self.shards;
        if !(1..=3600).contains(&sh.reserve_timeout_seconds) {
            return invalid(
                "shards.reserve_timeout_seconds",
                sh.reserve_timeout_seconds.to_string(),
                "1..=3600",
            );
        }
        if !(100..=3_600_000).contains(&sh.saga_recovery_age_ms) {
            return invalid(
                "shards.saga_recovery_age_ms",
                sh.saga_recovery_age_ms.to_string(),
                "100..=3600000",
            );
        }
        if sh.pin_cores.len() > sh.count {
            return invalid(
                "shards.pin_cores",
                format!("{} lists", sh.pin_cores.len()),
                "at most one list per shard",
            );
        }
        for (i, t) in sh.tenants.iter().enumerate() {
            if sh.tenants[..i].iter().any(|u| u.id == t.id) {
                return invalid("shards.tenants.id", t.id.to_string(), "each tenant once");
            }
            if t.rate == Some(0) || t.in_flight_max == Some(0) {
                return invalid(
                    "shards.tenants",
                    t.id.to_string(),
                    "rate and in_flight_max >= 1",
                );
            }
        }
        self.slot_table()?;
        Ok(())
    }

    /// The engine configuration this node runs with.
    pub fn engine_config(&self) -> EngineConfig {
        let e = &self.engine;
        EngineConfig {
            ring_slots: e.ring_slots,
            in_flight_max: e.in_flight_max,
            dedup_entries: e.dedup_entries,
            wait_strategy: match e.wait_strategy {
                WaitArg::BusySpin => WaitStrategy::BusySpin,
                WaitArg::SpinYield => WaitStrategy::spin_then_yield(),
                WaitArg::Blocking => WaitStrategy::default(),
            },
            fusion: match e.fusion {
                FusionArg::Separate => Fusion::Separate,
                FusionArg::Paired => Fusion::Paired,
                FusionArg::Single => Fusion::Single,
                FusionArg::Gated => Fusion::Gated,
            },
            pinning: match e.pin_cores.is_empty() {
                true => Pinning::None,
                false => Pinning::Cores(e.pin_cores.clone()),
            },
            back_pressure: match e.back_pressure_wait_ms {
                0 => BackPressure::Fail,
                ms => BackPressure::Wait(Duration::from_millis(ms)),
            },
            first_sequence: 0,
        }
    }

    /// The journal configuration (`None` for durability `none`).
    pub fn journal_config(&self) -> Option<JournalConfig> {
        let j = &self.journal;
        let sync = match j.durability {
            Durability::Sync => SyncPolicy::Sync,
            Durability::Async => SyncPolicy::Async(Duration::from_millis(j.async_interval_ms)),
            Durability::Os => SyncPolicy::None,
            Durability::None => return None,
        };
        Some(JournalConfig {
            segment_size: j.segment_size_mib << 20,
            write_buffer_bytes: j.write_buffer_kib << 10,
            sync,
            retention: match (j.keep_segments, self.snapshot.drop_covered_segments) {
                (_, true) => Retention::CoveredBySnapshots,
                (0, false) => Retention::KeepAll,
                (n, false) => Retention::KeepSegments(n),
            },
            chain: j.chain,
            settings: self.journal_settings().encode(),
            ..JournalConfig::default()
        })
    }

    /// Takes the format settings recorded in the journal in `data_dir` (its
    /// manifest), which readers must repeat whatever their own configuration
    /// says; returns the first option that differed (option, configured,
    /// recorded), for a note. Nothing changes where none are recorded.
    pub fn adopt_journal_settings(
        &mut self,
        storage: &impl keel_journal::Storage,
    ) -> Option<(&'static str, u64, u64)> {
        let recorded = recorded_settings(storage)?;
        let differed = self.journal_settings().difference(&recorded);
        self.ledger.accounts_max = recorded.ledger.accounts_max;
        self.ledger.transfers_max = recorded.ledger.transfers_max;
        self.engine.dedup_entries = recorded.dedup_entries as usize;
        differed
    }

    /// The settings a replay of this node's journal must repeat; stored in
    /// the journal's manifest when it is created.
    pub fn journal_settings(&self) -> keel_ledger::JournalSettings {
        keel_ledger::JournalSettings {
            ledger: self.ledger_config(),
            dedup_entries: self.engine.dedup_entries as u64,
        }
    }

    /// The configuration of the kill -9 crash loop's child (`keel
    /// crash-child`): 1 MiB segments so kills land near segment rolls, and
    /// small tables so each restart is quick.
    pub fn crash_loop(data_dir: PathBuf) -> Self {
        let mut config = Self::default();
        config.journal.data_dir = data_dir;
        config.journal.segment_size_mib = 1;
        config.journal.write_buffer_kib = 256;
        config.ledger.accounts_max = 16;
        config.ledger.transfers_max = 1 << 19;
        // Snapshots while serving, so kills also land mid-snapshot.
        config.snapshot.every_commands = 100;
        config
    }

    /// The sharded crash loop's node: `shards` shards of the crash loop's
    /// settings, a few accounts each, no snapshots while serving.
    pub fn sharded_crash_loop(data_dir: PathBuf, shards: usize) -> Self {
        let mut config = Self::crash_loop(data_dir);
        config.shards.count = shards;
        config.ledger.accounts_max = 64;
        config.snapshot.every_commands = 0;
        config
    }

    /// The snapshot directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        match self.snapshot.dir.as_os_str().is_empty() {
            true => self.journal.data_dir.join("snapshots"),
            false => self.snapshot.dir.clone(),
        }
    }

    /// The configuration of shard `index` of a sharded node: its own
    /// directories (`<data_dir>/shard-<i>`; snapshots likewise under an
    /// explicit `snapshot.dir`) and pinning.
    pub fn for_shard(&self, index: usize) -> NodeConfig {
        let mut config = self.clone();
        let name = format!("shard-{index}");
        config.journal.data_dir = self.journal.data_dir.join(&name);
        if !self.snapshot.dir.as_os_str().is_empty() {
            config.snapshot.dir = self.snapshot.dir.join(&name);
        }
        config.engine.pin_cores = self
            .shards
            .pin_cores
            .get(index)
            .cloned()
            .unwrap_or_default();
        config
    }

    /// The slot table `[shards]` describes.
    pub fn slot_table(&self) -> Result<keel_ledger::routing::SlotTable, ConfigFileError> {
        let tenants: Vec<(u32, u16, u16)> = self
            .shards
            .tenants
            .iter()
            .filter_map(|t| t.slots.map(|[start, end]| (t.id, start, end)))
            .collect();
        keel_ledger::routing::SlotTable::even(self.shards.table_version, self.shards.count, &tenants)
            .map_err(|e| ConfigFileError::Invalid {
                option: "shards".to_owned(),
                value: e.to_string(),
                expected: "1..=256 shards, table_version >= 1, distinct non-empty tenant slot ranges within 0..4096, at most 16",
            })
    }

    /// The ledger's capacities.
    pub fn ledger_config(&self) -> LedgerConfig {
        LedgerConfig {
            accounts_max: self.ledger.accounts_max,
            transfers_max: self.ledger.transfers_max,
            prefault: self.ledger.prefault,
        }
    }
}
