//! [`ShardedNode`]: `[shards] count` ledger nodes in one process, each
//! with its own journal, snapshots, engine, lanes and metrics
//! (`<data_dir>/shard-<i>`), and the [`ShardedClient`] that routes to them
//! by slot, splits batches by shard and runs cross-shard transfers as
//! sagas (ADR 0014).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keel_core::quota::{Quota, QuotaPermit};
use keel_core::PendingAck;
use keel_ledger::client::{block_on, check_shard};
use keel_ledger::commands::{self, command_type, TransferStatus};
use keel_ledger::routing::{Ownership, SlotTable};
use keel_ledger::{
    account_flags, transfer_flags, Account, ClientError, CreateAccountResult, CreateTransferResult,
    Ledger, LedgerClient, Transfer,
};

use crate::config::{ConfigFileError, NodeConfig};
use crate::node::{LedgerNode, NodeError, NodeJournal, NodeReplicator};
use crate::saga::{self, Saga, SagaOutcome, SagaRecovery, SagaStatus, Sagas};

/// What a shard hands back at shutdown.
pub type ShardStopped =
    keel_core::Stopped<Ledger, NodeJournal, NodeReplicator, keel_core::NoopSink>;

/// Why a sharded node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardedNodeError {
    /// The configuration is invalid (names the option).
    #[error(transparent)]
    Config(#[from] ConfigFileError),
    /// A shard did not start.
    #[error("shard {shard}: {source}")]
    Shard {
        /// The shard.
        shard: usize,
        /// Why.
        source: NodeError,
    },
    /// The background saga recoverer could not start.
    #[error("saga recoverer: {0}")]
    Recoverer(String),
    /// Installing a shard's ownership failed.
    #[error("shard {shard}: installing its slot ownership: {source}")]
    Ownership {
        /// The shard.
        shard: usize,
        /// Why.
        source: ClientError,
    },
    /// The shard's journal holds another slot table than the configured one.
    #[error(
        "shard {shard} holds slot table version {installed} (fingerprint {installed_fingerprint:#x}), \
         but [shards] describes version {configured} (fingerprint {configured_fingerprint:#x}): \
         moving slots between shards (rebalancing) is not built, so the table cannot change"
    )]
    TableChanged {
        /// The shard.
        shard: usize,
        /// The version its journal installed.
        installed: u64,
        /// Its fingerprint.
        installed_fingerprint: u64,
        /// The configured version.
        configured: u64,
        /// What the configured table gives this shard.
        configured_fingerprint: u64,
    },
}

/// Why a sharded call failed (a business rejection is not an error: it is
/// in the per-event codes).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// A shard refused or could not take a command.
    #[error("shard {shard}: {source}")]
    Client {
        /// The shard.
        shard: u16,
        /// Why.
        source: ClientError,
    },
    /// A linked chain names accounts on more than one shard (atomicity
    /// holds within a shard only); nothing of the batch was submitted.
    #[error("event {index}: its linked chain names accounts on more than one shard")]
    ChainSpansShards {
        /// The first event of the chain.
        index: usize,
    },
    /// A cross-shard transfer carries flags a saga cannot honour (pending,
    /// post, void, balancing, closing, imported, linked); nothing of the
    /// batch was submitted.
    #[error("event {index}: a cross-shard transfer must be a plain transfer (flags {flags:#x})")]
    CrossShardFlags {
        /// The event.
        index: usize,
        /// Its flags.
        flags: u16,
    },
    /// The tenant's quota is spent; nothing was submitted.
    #[error("tenant {tenant} throttled: retry after {retry_after:?}")]
    Throttled {
        /// The tenant.
        tenant: u32,
        /// How long to wait.
        retry_after: Duration,
    },
    /// `transfer_cross` of a transfer whose accounts are on one shard (or
    /// name none): send it with `create_transfers`.
    #[error("not a cross-shard transfer: its accounts are on shard {shard}")]
    NotCrossShard {
        /// The shard.
        shard: u16,
    },
    /// Another caller (or a recovery) of this process is driving this saga.
    #[error("saga {saga:#x} is being driven by another caller")]
    SagaInFlight {
        /// The saga id.
        saga: u128,
    },
    /// A clearing account could not be created.
    #[error("shard {shard}: clearing account refused: {code}")]
    Clearing {
        /// The shard.
        shard: u16,
        /// Its result.
        code: CreateAccountResult,
    },
    /// A saga step got an answer that fits no state the saga can be in
    /// (the saga stays open; a recovery resumes it).
    #[error("shard {shard}: saga step answered {code}")]
    Step {
        /// The shard.
        shard: u16,
        /// The answer.
        code: CreateTransferResult,
    },
    /// Reading a journal for saga recovery failed.
    #[error("saga recovery: {0}")]
    Recovery(String),
}

impl ShardError {
    pub(crate) fn client(shard: u16, source: ClientError) -> Self {
        Self::Client { shard, source }
    }
}

/// State every client of one sharded node shares.
#[derive(Debug)]
struct Shared {
    table: SlotTable,
    quotas: HashMap<u32, Arc<Quota>>,
    sagas: Arc<Sagas>,
}

/// `count` ledger nodes, one per shard, routed by slot.
#[derive(Debug)]
pub struct ShardedNode {
    /// Dropped first: it submits to the shards.
    recoverer: Option<saga::Recoverer>,
    shards: Vec<LedgerNode>,
    configs: Vec<NodeConfig>,
    shared: Arc<Shared>,
}

impl ShardedNode {
    /// Starts every shard (each recovers on its own: snapshot plus its
    /// journal's tail), installs each one's ownership if its journal holds
    /// none yet (refusing a different table), and starts the background
    /// saga recoverer (`shards.saga_recovery_interval_ms`), which finishes
    /// the sagas a previous run left open once they are older than
    /// `saga_recovery_age_ms` ([`ShardedNode::recover_sagas`] does at once).
    pub fn start(config: &NodeConfig) -> Result<Self, ShardedNodeError> {
        config.validate()?;
        let table = config.slot_table()?;
        let mut shards = Vec::with_capacity(table.shards());
        let mut configs = Vec::with_capacity(table.shards());
        for shard in 0..table.shards() {
            let shard_config = config.for_shard(shard);
            let node = LedgerNode::start_ledger(&shard_config)
                .map_err(|source| ShardedNodeError::Shard { shard, source })?;
            install_ownership(&node, &table, shard)?;
            shards.push(node);
            configs.push(shard_config);
        }
        let quotas = config
            .shards
            .tenants
            .iter()
            .filter(|t| t.rate.is_some() || t.in_flight_max.is_some())
            .map(|t| (t.id, Arc::new(Quota::new(t.rate, t.in_flight_max))))
            .collect();
        let sagas = Arc::new(Sagas::new(config.shards.reserve_timeout_seconds));
        let mut node = Self {
            recoverer: None,
            shards,
            configs,
            shared: Arc::new(Shared {
                table,
                quotas,
                sagas,
            }),
        };
        let interval = config.shards.saga_recovery_interval_ms;
        let followed: Option<Vec<saga::Followed>> = node
            .shards
            .iter()
            .zip(&node.configs)
            .map(|(shard, config)| {
                Some(saga::Followed {
                    dir: config.journal.data_dir.clone(),
                    status: shard.journal_status()?,
                    client: shard.client(),
                })
            })
            .collect();
        if let (true, Some(followed)) = (interval > 0, followed) {
            let recoverer = saga::Recoverer::spawn(
                Arc::clone(&node.shared.sagas),
                followed,
                Duration::from_millis(interval),
                Duration::from_millis(config.shards.saga_recovery_age_ms),
            )
            .map_err(ShardedNodeError::Recoverer)?;
            node.recoverer = Some(recoverer);
        }
        Ok(node)
    }

    /// What the background saga recoverer did (`None`: not running —
    /// `saga_recovery_interval_ms = 0`, or no journal).
    pub fn recoverer_stats(&self) -> Option<&saga::RecovererStats> {
        self.recoverer.as_ref().map(|r| &*r.stats)
    }

    /// A routing client for one host thread, sending as `tenant`.
    pub fn client(&self, tenant: u32) -> ShardedClient {
        ShardedClient {
            clients: self.clients(tenant),
            quota: self.shared.quotas.get(&tenant).cloned(),
            shared: Arc::clone(&self.shared),
            tenant,
        }
    }

    fn clients(&self, tenant: u32) -> Vec<LedgerClient> {
        self.shards
            .iter()
            .map(|n| n.client().with_tenant(tenant))
            .collect()
    }

    /// The shards, in index order.
    pub fn shards(&self) -> &[LedgerNode] {
        &self.shards
    }

    /// The slot table the node routes by.
    pub fn table(&self) -> &SlotTable {
        &self.shared.table
    }

    /// Finds every saga begun in a shard's journal and not ended, and
    /// drives it to its end now (sagas a caller of this process is driving
    /// are skipped): after a crash, before serving, so no reservation
    /// waits for the background recoverer's age.
    pub fn recover_sagas(&self) -> Result<SagaRecovery, ShardError> {
        let journals: Vec<_> = self
            .shards
            .iter()
            .zip(&self.configs)
            .filter_map(|(node, config)| {
                let status = node.journal_status()?;
                Some((config.journal.data_dir.clone(), status.durable_next()))
            })
            .collect();
        saga::recover(&self.shared.sagas, &journals, &mut self.clients(0))
    }

    /// Drains and stops every shard (each writing a snapshot of its final
    /// state if `snapshot.on_shutdown`); returns each one's final state.
    pub fn shutdown(mut self) -> Result<Vec<ShardStopped>, (usize, NodeError)> {
        drop(self.recoverer.take());
        let mut stopped = Vec::with_capacity(self.shards.len());
        let mut failed = None;
        let shards = std::mem::take(&mut self.shards);
        for (i, (node, config)) in shards.into_iter().zip(&self.configs).enumerate() {
            let result = match config.snapshot.on_shutdown {
                true => node.shutdown_with_snapshot(config).map(|(s, _)| s),
                false => node.shutdown().map_err(NodeError::from),
            };
            match result {
                Ok(s) => stopped.push(s),
                Err(e) => failed = failed.or(Some((i, e))),
            }
        }
        match failed {
            None => Ok(stopped),
            Some(e) => Err(e),
        }
    }
}

fn install_ownership(
    node: &LedgerNode,
    table: &SlotTable,
    shard: usize,
) -> Result<(), ShardedNodeError> {
    let wanted = table.ownership(shard as u16);
    let mut client = node.client();
    let failed = |source| ShardedNodeError::Ownership { shard, source };
    // Version 0 asks what the journal installed (and changes nothing): a
    // newer configured table must not be installed over an older one,
    // which would move slots without their accounts.
    let probe = Ownership {
        table_version: 0,
        ..wanted
    };
    let (installed, installed_fingerprint) = match client.set_ownership(&probe) {
        Err(ClientError::WrongShard {
            table_version,
            fingerprint,
        }) => (table_version, fingerprint),
        Ok(_) => unreachable!("version 0 is never installed"),
        Err(source) => return Err(failed(source)),
    };
    match installed {
        0 => client.set_ownership(&wanted).map(drop).map_err(failed),
        _ if (installed, installed_fingerprint) == (wanted.table_version, wanted.fingerprint()) => {
            Ok(())
        }
        _ => Err(ShardedNodeError::TableChanged {
            shard,
            installed,
            installed_fingerprint,
            configured: wanted.table_version,
            configured_fingerprint: wanted.fingerprint(),
        }),
    }
}

/// Where one event of a batch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Shard(u16),
    Saga { debit: u16, credit: u16 },
}

/// One thread's client of a [`ShardedNode`] (one [`LedgerClient`] per
/// shard, all as one tenant).
#[derive(Debug)]
pub struct ShardedClient {
    clients: Vec<LedgerClient>,
    shared: Arc<Shared>,
    quota: Option<Arc<Quota>>,
    tenant: u32,
}

impl ShardedClient {
    /// The shard account `id` lives on.
    pub fn shard_of(&self, id: u128) -> u16 {
        self.shared.table.shard(self.tenant, id)
    }

    fn admit(&self, cost: usize) -> Result<Option<QuotaPermit>, ShardError> {
        match &self.quota {
            None => Ok(None),
            Some(q) => q
                .admit(cost.clamp(1, u32::MAX as usize) as u32)
                .map(Some)
                .map_err(|retry_after| ShardError::Throttled {
                    tenant: self.tenant,
                    retry_after,
                }),
        }
    }

    /// Creates accounts, each on its shard: the batch is split by shard
    /// (and into commands), submitted to every shard at once, and the
    /// results come back in the caller's order. A linked chain must stay on
    /// one shard.
    pub fn create_accounts(&mut self, accounts: &[Account]) -> Result<Vec<u8>, ShardError> {
        let routes: Vec<Route> = accounts
            .iter()
            .map(|a| Route::Shard(self.shard_of(a.id)))
            .collect();
        let linked = |i: usize| accounts[i].flags & account_flags::LINKED != 0;
        check_chains(&routes, linked)?;
        let mut codes = vec![0u8; accounts.len()];
        self.submit_split(
            command_type::CREATE_ACCOUNTS,
            &routes,
            linked,
            commands::ACCOUNTS_PER_COMMAND_MAX,
            |client, idx: &[usize]| {
                let part: Vec<Account> = idx.iter().map(|&i| accounts[i]).collect();
                client.create_accounts_async(&part, Default::default())
            },
            &mut codes,
        )?;
        Ok(codes)
    }

    /// Applies transfers: those whose accounts share a shard go to it (split
    /// and submitted to every shard at once); a transfer between two shards
    /// runs as a saga (its code is the saga's: `ok` once committed). A post
    /// or void naming no account goes to the shard holding its pending
    /// transfer. Results come back in the caller's order.
    pub fn create_transfers(&mut self, transfers: &[Transfer]) -> Result<Vec<u8>, ShardError> {
        let mut routes = Vec::with_capacity(transfers.len());
        for (index, t) in transfers.iter().enumerate() {
            let route = self.route_transfer(t)?;
            if let Route::Saga { .. } = route {
                check_plain(index, t)?;
            }
            routes.push(route);
        }
        let linked = |i: usize| transfers[i].flags & transfer_flags::LINKED != 0;
        check_chains(&routes, linked)?;
        let mut codes = vec![0u8; transfers.len()];
        let sagas: Vec<usize> = (0..routes.len())
            .filter(|&i| matches!(routes[i], Route::Saga { .. }))
            .collect();
        let _permit = self.admit(
            transfers
                .len()
                .div_ceil(commands::TRANSFERS_PER_COMMAND_MAX),
        )?;
        // Single-shard commands go out first; the sagas run while they are
        // in the rings.
        let pending = self.submit_parts(
            &routes,
            linked,
            commands::TRANSFERS_PER_COMMAND_MAX,
            |client, idx: &[usize]| {
                let part: Vec<Transfer> = idx.iter().map(|&i| transfers[i]).collect();
                client.create_transfers_async(&part, Default::default())
            },
        )?;
        // All of the call's sagas run together: each phase's commands for
        // every saga are in the rings at once.
        // A transfer repeated in the call runs once; each copy gets its
        // outcome, as a retry would.
        if !sagas.is_empty() {
            let mut first: HashMap<u128, usize> = HashMap::new();
            let mut list: Vec<Saga> = Vec::new();
            for &i in &sagas {
                first.entry(transfers[i].id).or_insert_with(|| {
                    list.push(self.describe(&transfers[i]));
                    list.len() - 1
                });
            }
            let outcomes =
                saga::run_many(&self.shared.sagas, &mut self.clients, &list, true, None)?
                    .expect("not abandoned");
            for &i in &sagas {
                codes[i] = outcomes[first[&transfers[i].id]].code() as u8;
            }
        }
        collect(command_type::CREATE_TRANSFERS, pending, &mut codes)?;
        Ok(codes)
    }

    /// Runs one transfer between accounts of two shards as a saga and
    /// returns how it ended. Its id is the saga id: a retry with the same
    /// transfer repeats no step (each is answered `exists`) and returns the
    /// same outcome (one refused for a transient reason answers
    /// `id_already_failed` then, as a retried TigerBeetle transfer does).
    /// A transfer that is not one (accounts on one shard, or flags) is
    /// refused with [`ShardError::NotCrossShard`] or
    /// [`ShardError::CrossShardFlags`], nothing submitted.
    pub fn transfer_cross(&mut self, transfer: &Transfer) -> Result<SagaOutcome, ShardError> {
        match self.route_transfer(transfer)? {
            Route::Shard(shard) => return Err(ShardError::NotCrossShard { shard }),
            Route::Saga { .. } => check_plain(0, transfer)?,
        }
        let _permit = self.admit(1)?;
        self.saga(transfer)
    }

    /// Fault injection for tests: runs the first `steps` steps (1..=4) of
    /// the saga and stops as a driver that died there would, leaving it
    /// for [`ShardedNode::recover_sagas`]. Returns the outcome if the saga
    /// ended before (a refused reservation).
    #[doc(hidden)]
    pub fn transfer_cross_abandoned(
        &mut self,
        transfer: &Transfer,
        steps: u8,
    ) -> Result<Option<SagaOutcome>, ShardError> {
        let saga = self.describe(transfer);
        saga::run(
            &self.shared.sagas,
            &mut self.clients,
            &saga,
            true,
            Some(steps),
        )
    }

    fn describe(&self, transfer: &Transfer) -> Saga {
        Saga {
            transfer: *transfer,
            debit_shard: self.shard_of(transfer.debit_account_id),
            credit_shard: self.shard_of(transfer.credit_account_id),
            timeout: self.shared.sagas.reserve_timeout,
        }
    }

    fn saga(&mut self, transfer: &Transfer) -> Result<SagaOutcome, ShardError> {
        let saga = self.describe(transfer);
        let outcome = saga::run(&self.shared.sagas, &mut self.clients, &saga, true, None)?;
        Ok(outcome.expect("not abandoned"))
    }

    /// Where the saga of cross-shard transfer `transfer` stands (e.g. after
    /// the caller crashed mid-way).
    pub fn saga_status(&mut self, transfer: &Transfer) -> Result<SagaStatus, ShardError> {
        let s1 = self.shard_of(transfer.debit_account_id);
        let s2 = self.shard_of(transfer.credit_account_id);
        saga::status(&mut self.clients, transfer.id, s1, s2)
    }

    /// An account's balances, from its shard.
    pub fn lookup_account(
        &mut self,
        id: u128,
    ) -> Result<Option<commands::AccountBalance>, ShardError> {
        let shard = self.shard_of(id);
        self.clients[usize::from(shard)]
            .lookup_account(id)
            .map_err(|e| ShardError::client(shard, e))
    }

    /// A transfer's state and the shard holding it (a transfer id does not
    /// say where it is: every shard is asked).
    pub fn lookup_transfer(
        &mut self,
        id: u128,
    ) -> Result<Option<(u16, TransferStatus)>, ShardError> {
        for (shard, client) in self.clients.iter_mut().enumerate() {
            let shard = shard as u16;
            if let Some(status) = client
                .lookup_transfer(id)
                .map_err(|e| ShardError::client(shard, e))?
            {
                return Ok(Some((shard, status)));
            }
        }
        Ok(None)
    }

    fn route_transfer(&mut self, t: &Transfer) -> Result<Route, ShardError> {
        let named = [t.debit_account_id, t.credit_account_id]
            .map(|id| (id != 0).then(|| self.shard_of(id)));
        Ok(match named {
            [Some(d), Some(c)] if d != c => Route::Saga {
                debit: d,
                credit: c,
            },
            [Some(s), _] | [None, Some(s)] => Route::Shard(s),
            // A post or void naming no account: where its pending transfer
            // is (shard 0 answers `pending_transfer_not_found` if nowhere).
            [None, None] => match t.pending_id {
                0 => Route::Shard(0),
                pending => Route::Shard(self.lookup_transfer(pending)?.map_or(0, |(s, _)| s)),
            },
        })
    }

    fn submit_split(
        &mut self,
        kind: u16,
        routes: &[Route],
        linked: impl Fn(usize) -> bool,
        per_command: usize,
        submit: impl FnMut(&mut LedgerClient, &[usize]) -> Result<PendingAck, ClientError>,
        codes: &mut [u8],
    ) -> Result<(), ShardError> {
        let _permit = self.admit(routes.len().div_ceil(per_command))?;
        let pending = self.submit_parts(routes, linked, per_command, submit)?;
        collect(kind, pending, codes)
    }

    /// Submits each shard's events (cut into commands without cutting a
    /// chain) and returns the acknowledgements to wait for, with the
    /// caller's indices of each command's events.
    #[allow(clippy::type_complexity)]
    fn submit_parts(
        &mut self,
        routes: &[Route],
        linked: impl Fn(usize) -> bool,
        per_command: usize,
        mut submit: impl FnMut(&mut LedgerClient, &[usize]) -> Result<PendingAck, ClientError>,
    ) -> Result<Vec<(u16, Vec<usize>, PendingAck)>, ShardError> {
        let mut pending = Vec::new();
        for shard in 0..self.clients.len() as u16 {
            let mine: Vec<usize> = (0..routes.len())
                .filter(|&i| routes[i] == Route::Shard(shard))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let parts = commands::split_batch(mine.len(), per_command, |j| linked(mine[j]))
                .map_err(|e| ShardError::client(shard, e.into()))?;
            for range in parts {
                let idx = mine[range].to_vec();
                let ack = submit(&mut self.clients[usize::from(shard)], &idx)
                    .map_err(|e| ShardError::client(shard, e))?;
                pending.push((shard, idx, ack));
            }
        }
        Ok(pending)
    }
}

/// Waits for every command and puts its per-event codes at the caller's
/// indices.
fn collect(
    kind: u16,
    pending: Vec<(u16, Vec<usize>, PendingAck)>,
    codes: &mut [u8],
) -> Result<(), ShardError> {
    for (shard, idx, ack) in pending {
        let ack = block_on(ack).map_err(|e| ShardError::client(shard, e.into()))?;
        check_shard(&ack).map_err(|e| ShardError::client(shard, e))?;
        let results = commands::event_results(kind, &ack.outcome)
            .map_err(|e| ShardError::client(shard, e.into()))?;
        for (&i, &code) in idx.iter().zip(results.codes()) {
            codes[i] = code;
        }
    }
    Ok(())
}

/// Refuses a cross-shard transfer a saga cannot honour.
fn check_plain(index: usize, t: &Transfer) -> Result<(), ShardError> {
    match t.flags == 0 && t.pending_id == 0 && t.timeout == 0 {
        true => Ok(()),
        false => Err(ShardError::CrossShardFlags {
            index,
            flags: t.flags,
        }),
    }
}

/// Refuses a linked chain whose events do not all go to one shard.
fn check_chains(routes: &[Route], linked: impl Fn(usize) -> bool) -> Result<(), ShardError> {
    let mut start = 0;
    while start < routes.len() {
        let mut end = start;
        while end + 1 < routes.len() && linked(end) {
            end += 1;
        }
        let chain = &routes[start..=end];
        let one_shard = match chain[0] {
            Route::Shard(s) => chain.iter().all(|r| *r == Route::Shard(s)),
            Route::Saga { .. } => chain.len() == 1 && !linked(start),
        };
        if !one_shard {
            return Err(ShardError::ChainSpansShards { index: start });
        }
        start = end + 1;
    }
    Ok(())
}
