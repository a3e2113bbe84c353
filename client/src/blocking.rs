//! [`Client`]: the blocking face of [`AsyncClient`], driven by its own
//! current-thread tokio runtime (no threads of its own; one per client).

use keel_protocol::ReplyEntry;

use crate::{AsyncClient, ClientConfig, ClientError, Request};

/// One session over one connection, blocking.
#[derive(Debug)]
pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: AsyncClient,
}

impl Client {
    /// Connects and authenticates.
    pub fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError::Unknown {
                session: config.session,
                first_request: 1,
                reason: format!("cannot start the client's runtime: {e}"),
            })?;
        let inner = runtime.block_on(AsyncClient::connect(config))?;
        Ok(Client { runtime, inner })
    }

    /// This client's session id.
    pub fn session(&self) -> u64 {
        self.inner.session()
    }

    /// See [`AsyncClient::resumed`].
    pub fn resumed(&self) -> Option<u64> {
        self.inner.resumed()
    }

    /// See [`AsyncClient::new_session`].
    pub fn new_session(&mut self) {
        self.inner.new_session();
    }

    /// The number the next request will get.
    pub fn next_request(&self) -> u64 {
        self.inner.next_request()
    }

    /// See [`AsyncClient::set_next_request`].
    pub fn set_next_request(&mut self, request: u64) {
        self.inner.set_next_request(request);
    }

    /// See [`AsyncClient::call`].
    pub fn call(&mut self, requests: &[Request<'_>]) -> Result<Vec<ReplyEntry>, ClientError> {
        self.runtime.block_on(self.inner.call(requests))
    }
}
