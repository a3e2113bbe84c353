//! `IoThread`: a listener and the thread that serves it on a tokio
//! current-thread runtime (inside a `LocalSet`, so tasks need not be
//! `Send`), stopped through a watch channel and joined on drop. The client
//! I/O thread and the metrics endpoint are both one.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::ServerError;

/// A serving thread; dropping it stops and joins it.
#[derive(Debug)]
pub(crate) struct IoThread {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl IoThread {
    /// Binds `addr`, then runs `serve(listener, stop)` on a new thread named
    /// `name` until it returns (it should once `stop` changes).
    pub(crate) fn start<F, Fut>(name: &str, addr: SocketAddr, serve: F) -> Result<Self, ServerError>
    where
        F: FnOnce(TcpListener, watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let listener = {
            let _guard = runtime.enter();
            let std_listener = std::net::TcpListener::bind(addr)
                .map_err(|source| ServerError::Bind { addr, source })?;
            std_listener
                .set_nonblocking(true)
                .map_err(ServerError::Runtime)?;
            TcpListener::from_std(std_listener).map_err(ServerError::Runtime)?
        };
        let local_addr = listener.local_addr().map_err(ServerError::Runtime)?;
        let (stop, stop_rx) = watch::channel(false);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, serve(listener, stop_rx));
            })
            .map_err(ServerError::Runtime)?;
        Ok(Self {
            local_addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address bound (useful with port 0).
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Signals the thread to stop and waits for it.
    pub(crate) fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
