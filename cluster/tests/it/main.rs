//! The control plane against a real etcd (started by scripts/ensure-etcd.sh;
//! `KEEL_ETCD_ENDPOINT`, default http://127.0.0.1:2379). Each test works
//! under its own cluster name, so tests never see each other's keys.

mod etcd;
mod failover;
mod partition;
mod peer_tls;
