//! With the `tonic` feature, a [`DrainingStream`] is a connection tonic can serve: it has the
//! connect info of the stream inside (`TcpConnectInfo`, `UdsConnectInfo`), so `remote_addr()`
//! works in handlers.

use tonic::transport::server::Connected;

use super::DrainingStream;

#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl<S: Connected> Connected for DrainingStream<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.get_ref().connect_info()
    }
}
