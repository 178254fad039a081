//! A reachability probe for an IPMI BMC, sent before each ipmitool run.
//!
//! Why: ipmitool bounds a silent BMC only by its retransmissions (`-R`, `-N`),
//! which are sized for a live but slow BMC; on a hall with hundreds of dead
//! BMCs that costs seconds per call per node. The probe is the message every
//! IPMI session starts with, *Get Channel Authentication Capabilities*, sent
//! without a session over RMCP (IPMI v2.0 section 22.13): a live BMC answers
//! at once and unauthenticated, so the probe costs one UDP round trip, and a
//! dead one is known within `connect_timeout`. Nothing in it is secret.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::UdpSocket;

/// RMCP header (version 6, no ack, class IPMI), an IPMI v1.5 session header
/// with no authentication and no session, and the request: responder BMC
/// (0x20), NetFn App (0x06 << 2), requester 0x81, command 0x38 for the
/// current channel (0x0e) with the IPMI v2.0 bit, at administrator level;
/// each part with its two's-complement checksum.
pub const GET_CHANNEL_AUTH_CAPABILITIES: [u8; 23] = [
    0x06, 0x00, 0xff, 0x07, // RMCP
    0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0x09, // auth type, sequence, session id, length
    0x20, 0x18, 0xc8, 0x81, 0x00, 0x38, 0x8e, 0x04, 0xb5, // the message
];

/// Sends per probe: the first at once, the others spread over the wait, so
/// one lost datagram does not fail a live BMC.
const SENDS: u32 = 3;

/// Why a BMC was found unreachable; the text completes "cannot reach the
/// BMC at HOST:PORT: ...".
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot resolve the address: {0}")]
    Resolve(io::Error),
    #[error("the address resolves to nothing")]
    NoAddress,
    #[error("nothing listens on its UDP port (connection refused)")]
    Refused,
    #[error("no answer to an IPMI probe within {0} s (connect_timeout)")]
    Silent(u64),
    #[error("{0}")]
    Io(io::Error),
}

/// Waits at most `within` for the BMC at `host:port` to answer a probe.
pub async fn probe(host: &str, port: u16, within: Duration) -> Result<(), ProbeError> {
    let silent = || ProbeError::Silent(within.as_secs_f64().ceil() as u64);
    let resolved = tokio::time::timeout(within, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| silent())?
        .map_err(ProbeError::Resolve)?
        .next()
        .ok_or(ProbeError::NoAddress)?;
    let local: SocketAddr = if resolved.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local).await.map_err(ProbeError::Io)?;
    socket.connect(resolved).await.map_err(ProbeError::Io)?;
    let gap = within / SENDS;
    let mut reply = [0u8; 512];
    for _ in 0..SENDS {
        match socket.send(&GET_CHANNEL_AUTH_CAPABILITIES).await {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(ProbeError::Refused),
            Err(e) => return Err(ProbeError::Io(e)),
            Ok(_) => {}
        }
        match tokio::time::timeout(gap, socket.recv(&mut reply)).await {
            Ok(Ok(n)) if is_ipmi_reply(&reply[..n]) => return Ok(()),
            // Something else answered on the port: wait out this round.
            Ok(Ok(_)) => tokio::time::sleep(gap / 2).await,
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => return Err(ProbeError::Refused),
            Ok(Err(e)) => return Err(ProbeError::Io(e)),
            Err(_) => {}
        }
    }
    Err(silent())
}

/// An RMCP datagram of class IPMI: the BMC answered (with capabilities or an
/// error code, either way it is there).
fn is_ipmi_reply(datagram: &[u8]) -> bool {
    datagram.len() >= 4 && datagram[0] == 0x06 && datagram[3] & 0x1f == 0x07
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checksum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)).wrapping_neg()
    }

    #[test]
    fn the_request_checksums_are_right() {
        let msg = &GET_CHANNEL_AUTH_CAPABILITIES[14..];
        assert_eq!(usize::from(GET_CHANNEL_AUTH_CAPABILITIES[13]), msg.len());
        assert_eq!(checksum(&msg[..2]), msg[2]);
        assert_eq!(checksum(&msg[3..8]), msg[8]);
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_and_a_silent_one_times_out() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let refused = probe("127.0.0.1", port, Duration::from_secs(2)).await;
        assert!(matches!(refused, Err(ProbeError::Refused)), "{refused:?}");

        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = silent.local_addr().unwrap().port();
        let got = probe("127.0.0.1", port, Duration::from_millis(300)).await;
        assert!(matches!(got, Err(ProbeError::Silent(1))), "{got:?}");
        // It was asked SENDS times.
        let mut buf = [0u8; 64];
        for _ in 0..SENDS {
            let n = silent.try_recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &GET_CHANNEL_AUTH_CAPABILITIES);
        }
    }

    #[tokio::test]
    async fn an_answer_of_class_ipmi_is_reachable() {
        let bmc = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = bmc.local_addr().unwrap().port();
        let answer = async {
            let mut buf = [0u8; 64];
            let (_, from) = bmc.recv_from(&mut buf).await.unwrap();
            // Not IPMI first (ignored), then a reply.
            bmc.send_to(b"hello", from).await.unwrap();
            bmc.send_to(&[0x06, 0x00, 0xff, 0x07, 0x00], from).await.unwrap();
        };
        let (got, ()) = tokio::join!(probe("127.0.0.1", port, Duration::from_secs(3)), answer);
        got.unwrap();
    }
}
