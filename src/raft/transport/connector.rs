//! How a node opens connections to its peers: the network seam (DESIGN
//! decision 8).
//!
//! Every outgoing connection of the transport is made here. [`TcpConnector`]
//! is the production one; the simulator supplies a [`Connector`] whose
//! channel dials turmoil's simulated TCP (with
//! `tonic::transport::Endpoint::connect_with_connector_lazy`), and the rest
//! of the transport runs unchanged.

use tonic::transport::{Channel, Endpoint};

use super::{Error, CONNECT_TIMEOUT, KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT};

/// Opens channels to peers.
pub trait Connector: Send + Sync + 'static {
    /// A channel to `addr` (`host:port`). It must connect lazily: openraft
    /// creates clients for members that may be down, and a call on a channel
    /// whose peer cannot be reached must fail with `Unavailable`, not hang.
    fn channel(&self, addr: &str) -> Result<Channel, Error>;
}

impl Connector for std::sync::Arc<dyn Connector> {
    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        self.as_ref().channel(addr)
    }
}

/// Plain HTTP/2 over TCP.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl TcpConnector {
    /// The endpoint for `addr` with promraft's connection settings.
    pub fn endpoint(addr: &str) -> Result<Endpoint, Error> {
        let bad = |reason: String| Error::Address {
            addr: addr.to_string(),
            reason,
        };
        if addr.is_empty() || addr.contains('/') {
            return Err(bad("expected host:port".into()));
        }
        Ok(Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true))
    }
}

impl Connector for TcpConnector {
    fn channel(&self, addr: &str) -> Result<Channel, Error> {
        Ok(Self::endpoint(addr)?.connect_lazy())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rejects_addresses_that_are_not_host_port() {
        assert!(TcpConnector.channel("127.0.0.1:1").is_ok());
        assert!(TcpConnector.channel("").is_err());
        assert!(TcpConnector.channel("http://x:1").is_err());
    }
}
