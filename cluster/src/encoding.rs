//! How a [`ShardConfig`] is stored in etcd: JSON, so `etcdctl get` shows it
//! and an operator can read it; decoded with a typed error naming the key.

use keel_replication::{Policy, Quorum, ShardConfig};
use serde::{Deserialize, Serialize};

/// A stored value did not decode.
#[derive(Debug, thiserror::Error)]
#[error("{key}: not a Keel shard configuration: {problem}")]
pub struct DecodeError {
    /// The key read.
    pub key: String,
    /// What was wrong.
    pub problem: ConfigProblem,
}

/// What is wrong with a stored configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// Not the JSON Keel writes.
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// A policy name Keel does not know.
    #[error("unknown policy {0:?}")]
    UnknownPolicy(String),
    /// The leader is not a replica or not in sync.
    #[error("leader {0} is not among the replicas and the in-sync set")]
    LeaderOutside(u16),
    /// An in-sync member is not a replica.
    #[error("in-sync member {0} is not a replica")]
    InSyncNotReplica(u16),
}

#[derive(Serialize, Deserialize)]
struct Stored {
    epoch: u32,
    leader: u16,
    leader_incarnation: u64,
    replicas: Vec<u16>,
    isr: Vec<u16>,
    min_isr: u8,
    /// `sync:<k>`, `sync:all`, `mem:<k>`, `mem:all`, `async`.
    policy: String,
}

fn policy_name(policy: Policy) -> String {
    let quorum = |q: Quorum| match q {
        Quorum::All => "all".to_string(),
        Quorum::Followers(k) => k.to_string(),
    };
    match policy {
        Policy::Sync(q) => format!("sync:{}", quorum(q)),
        Policy::Mem(q) => format!("mem:{}", quorum(q)),
        Policy::Async => "async".into(),
    }
}

pub(crate) fn parse_policy(text: &str) -> Option<Policy> {
    if text == "async" {
        return Some(Policy::Async);
    }
    let (kind, quorum) = text.split_once(':')?;
    let quorum = match quorum {
        "all" => Quorum::All,
        k => Quorum::Followers(k.parse().ok()?),
    };
    match kind {
        "sync" => Some(Policy::Sync(quorum)),
        "mem" => Some(Policy::Mem(quorum)),
        _ => None,
    }
}

pub(crate) fn encode(config: &ShardConfig) -> Vec<u8> {
    let stored = Stored {
        epoch: config.epoch,
        leader: config.leader,
        leader_incarnation: config.leader_incarnation,
        replicas: config.replicas.clone(),
        isr: config.isr.clone(),
        min_isr: config.min_isr,
        policy: policy_name(config.policy),
    };
    serde_json::to_vec(&stored).expect("a plain struct always serializes")
}

pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<ShardConfig, DecodeError> {
    let fail = |problem: ConfigProblem| DecodeError {
        key: key.to_string(),
        problem,
    };
    let stored: Stored = serde_json::from_slice(bytes).map_err(|e| fail(e.into()))?;
    let policy = parse_policy(&stored.policy)
        .ok_or_else(|| fail(ConfigProblem::UnknownPolicy(stored.policy.clone())))?;
    if !stored.replicas.contains(&stored.leader) || !stored.isr.contains(&stored.leader) {
        return Err(fail(ConfigProblem::LeaderOutside(stored.leader)));
    }
    if let Some(&n) = stored.isr.iter().find(|n| !stored.replicas.contains(n)) {
        return Err(fail(ConfigProblem::InSyncNotReplica(n)));
    }
    Ok(ShardConfig {
        epoch: stored.epoch,
        leader: stored.leader,
        leader_incarnation: stored.leader_incarnation,
        replicas: stored.replicas,
        isr: stored.isr,
        min_isr: stored.min_isr,
        policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_round_trips_and_bad_values_are_typed_errors() {
        for policy in [
            Policy::Sync(Quorum::Followers(1)),
            Policy::Sync(Quorum::All),
            Policy::Mem(Quorum::Followers(2)),
            Policy::Mem(Quorum::All),
            Policy::Async,
        ] {
            let config = ShardConfig {
                epoch: 7,
                leader: 2,
                leader_incarnation: 9,
                replicas: vec![0, 1, 2],
                isr: vec![1, 2],
                min_isr: 2,
                policy,
            };
            assert_eq!(decode("k", &encode(&config)).unwrap(), config);
        }
        assert!(decode("k", b"{")
            .unwrap_err()
            .to_string()
            .starts_with("k: "));
        let bad = br#"{"epoch":1,"leader":5,"leader_incarnation":1,"replicas":[0],"isr":[0],"min_isr":1,"policy":"sync:1"}"#;
        assert!(matches!(
            decode("k", bad).unwrap_err().problem,
            ConfigProblem::LeaderOutside(5)
        ));
        let bad = br#"{"epoch":1,"leader":0,"leader_incarnation":1,"replicas":[0],"isr":[0],"min_isr":1,"policy":"quorum"}"#;
        assert!(matches!(
            decode("k", bad).unwrap_err().problem,
            ConfigProblem::UnknownPolicy(p) if p == "quorum"
        ));
        let bad = br#"{"epoch":1,"leader":0,"leader_incarnation":1,"replicas":[0],"isr":[0,3],"min_isr":1,"policy":"async"}"#;
        assert!(matches!(
            decode("k", bad).unwrap_err().problem,
            ConfigProblem::InSyncNotReplica(3)
        ));
    }
}
